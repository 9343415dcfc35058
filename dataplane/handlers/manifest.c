/*
 * The download manifest (handlers/handler.h): GET or HEAD
 * /ManageSoftDL-index lists every file a child beacon mirrors from this
 * one's download directory (control/mirror), one line each:
 *
 *   beacond-manifest 1
 *   <size> <mtime ns> <ETag, or - while unsettled> <path below the root>
 *
 * Only a child beacon ([upstream] children, by certificate fingerprint,
 * as the upload side judges Beacon-* fields) gets it; anyone else, agents
 * included, gets 403: the list of every device's policy file is not an
 * agent's business. The path no download can have (it is not below
 * /ManageSoftDL/), so no file shadows it.
 *
 * Listed: regular files whose every component is a name the download
 * route accepts (http_name_valid), not through a symlink, at most
 * MANIFEST_DEPTH_MAX directories deep and under 1024 bytes of path, and not
 * a mirror's temporary (MIRROR_TEMP_PREFIX). Bounded: MANIFEST_FILES_MAX
 * files and MANIFEST_BYTES_MAX bytes; a tree past either gets 500 and a
 * log line rather than a list cut short, which would make the child delete
 * what is missing from it. The walk runs on the worker: only a child can
 * start it, once per sync round.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "beacon/config.h"
#include "beacon/http.h"
#include "beacon/log.h"
#include "beacon/tls.h"
#include "conn/conn.h"
#include "handlers/filecache.h"
#include "worker-internal.h"

#define MANIFEST_FILES_MAX 100000u
#define MANIFEST_BYTES_MAX (16u << 20)
#define MANIFEST_DEPTH_MAX 16u
#define MANIFEST_CHUNK (16 * 1024)
#define MIRROR_TEMP_PREFIX ".beacon-mirror-"

static bool peer_is_child(const struct config *cfg, const struct tls_peer *p)
{
	for (unsigned i = 0; i < cfg->upstream_n_children; i++)
		if (memcmp(cfg->upstream_child_sha256[i], p->cert_sha256, 32) == 0)
			return true;
	return false;
}

struct walk {
	char *buf;
	size_t len, cap;
	unsigned files;
	bool over; /* past a bound */
	char path[1024];
};

static bool append(struct walk *w, const char *line, size_t n)
{
	if (w->len + n > MANIFEST_BYTES_MAX) {
		w->over = true;
		return false;
	}
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64 * 1024;
		while (cap < w->len + n)
			cap *= 2;
		char *p = realloc(w->buf, cap);
		if (!p)
			return false;
		w->buf = p;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, line, n);
	w->len += n;
	return true;
}

static bool add_file(struct walk *w, const struct stat *st)
{
	if (++w->files > MANIFEST_FILES_MAX) {
		w->over = true;
		return false;
	}
	struct file_version v;
	char etag[96], line[sizeof w->path + 160];
	file_version_of(st, &v);
	download_etag(&v, etag, sizeof etag);
	int n = snprintf(line, sizeof line, "%" PRIu64 " %" PRId64 " %s %s\n", v.size, v.mtime_ns,
			 etag[0] ? etag : "-", w->path);
	return n > 0 && (size_t)n < sizeof line && append(w, line, (size_t)n);
}

static bool listable(const char *name)
{
	size_t n = strlen(name);
	return http_name_valid(name, n) &&
	       strncmp(name, MIRROR_TEMP_PREFIX, sizeof MIRROR_TEMP_PREFIX - 1) != 0;
}

static bool walk_dir(struct walk *w, int fd, size_t plen, unsigned depth);

/* One entry of a directory; false stops the walk (a bound, no memory). */
static bool walk_entry(struct walk *w, int dirfd, const char *name, size_t plen, unsigned depth)
{
	struct stat st;
	size_t n = strlen(name), at = plen ? plen + 1 : 0;
	if (!listable(name) || at + n >= sizeof w->path ||
	    fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return true;
	if (plen)
		w->path[plen] = '/';
	memcpy(w->path + at, name, n + 1);
	bool go_on = true;
	if (S_ISREG(st.st_mode)) {
		go_on = add_file(w, &st);
	} else if (S_ISDIR(st.st_mode) && depth < MANIFEST_DEPTH_MAX) {
		int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub >= 0)
			go_on = walk_dir(w, sub, at + n, depth + 1);
	}
	w->path[plen] = '\0';
	return go_on;
}

/* Takes fd. */
static bool walk_dir(struct walk *w, int fd, size_t plen, unsigned depth)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return true;
	}
	bool go_on = true;
	for (struct dirent *e; go_on && (e = readdir(d));)
		go_on = walk_entry(w, dirfd(d), e->d_name, plen, depth);
	closedir(d);
	return go_on;
}

static const char manifest_magic[] = "beacond-manifest 1\n";

/* The manifest of the download directory into *w; 0, or the status to
 * answer (500 past a bound or out of memory). */
static int build(struct conn *c, struct walk *w)
{
	*w = (struct walk){0};
	int root = openat(c->w->download_dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0 || !append(w, manifest_magic, sizeof manifest_magic - 1))
		return 500;
	if (walk_dir(w, root, 0, 0))
		return 0;
	if (w->over)
		log_warn("%s: download manifest refused: the tree is past %u files or %u bytes",
			 c->peer, MANIFEST_FILES_MAX, MANIFEST_BYTES_MAX);
	free(w->buf);
	w->buf = NULL;
	return 500;
}

static void manifest_head(struct conn *c, const struct http_request *req,
			  const struct http_route *route)
{
	(void)route;
	c->req.manifest = (struct manifest_state){0};
	if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
		http1_respond(c, 405, "Allow: GET, HEAD\r\n", "the manifest takes GET or HEAD",
			      true);
		return;
	}
	if (!peer_is_child(c->w->cfg, conn_tls_peer(c))) {
		http1_respond(c, 403, NULL,
			      "the download manifest is for child beacons ([upstream] children)",
			      false);
		return;
	}
	if (c->w->download_dirfd < 0) {
		http1_respond(c, 404, NULL, "no download directory configured", false);
		return;
	}
	struct walk w;
	if (build(c, &w)) {
		http1_respond(c, 500, NULL, "the download tree is too large for one manifest",
			      false);
		return;
	}
	struct http1_response r = {.status = 200,
				   .content_type = "text/plain; charset=utf-8",
				   .content_length = w.len,
				   .close = !c->h1.keep_alive,
				   .cache_control = "no-store"};
	if (!http1_write_head(c, &r)) {
		free(w.buf);
		conn_close(c);
		return;
	}
	if (req->method == HTTP_HEAD) {
		free(w.buf);
		conn_flush(c);
		http1_request_done(c);
		return;
	}
	c->req.manifest = (struct manifest_state){.buf = w.buf, .len = w.len};
	conn_set_state(c, CONN_RESPONSE);
}

static void manifest_drop(struct conn *c)
{
	free(c->req.manifest.buf);
	c->req.manifest = (struct manifest_state){0};
}

static bool manifest_writable(struct conn *c)
{
	struct manifest_state *m = &c->req.manifest;
	while (m->off < m->len && conn_out_room(c) >= MANIFEST_CHUNK + 256) {
		size_t n = m->len - m->off < MANIFEST_CHUNK ? m->len - m->off : MANIFEST_CHUNK;
		if (!conn_write(c, m->buf + m->off, n)) {
			conn_close(c);
			return false;
		}
		m->off += n;
	}
	conn_flush(c);
	if (m->off < m->len)
		return false; /* wait for the transport to drain */
	manifest_drop(c);
	http1_request_done(c);
	return true;
}

const struct handler manifest_handler = {
	.head = manifest_head,
	.writable = manifest_writable,
	.drop = manifest_drop,
};
