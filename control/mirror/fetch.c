/*
 * One file from the parent: a conditional GET, the body into an unnamed
 * temporary file in the file's own directory, fsync, then rename over the
 * old one. The file's ETag at the parent is kept in its user.beacon.etag
 * attribute, set on the temporary before the rename, so the name and the
 * ETag it carries always change together.
 */
#include "mirror-internal.h"

#include "beacon/log.h"
#include "beacon/parentconn.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define BODY_BUF 65536u

/* The ETag held for the file now at leaf, "" when none (no file, not a
 * regular file, no attribute); *size its size. */
static void held_etag(int dirfd, const char *leaf, char *etag, size_t len, uint64_t *size)
{
	struct open_how how = {.flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
	int fd = (int)syscall(SYS_openat2, dirfd, leaf, &how, sizeof how);
	struct stat st;
	etag[0] = '\0';
	*size = 0;
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		ssize_t n = fgetxattr(fd, MIRROR_XATTR, etag, len - 1);
		etag[n > 0 ? n : 0] = '\0';
		*size = (uint64_t)st.st_size;
	}
	close(fd);
}

static int send_get(struct mirror_round *r, const char *path, const char *held)
{
	char target[3 * MIRROR_PATH_MAX], head[3 * MIRROR_PATH_MAX + 512], err[256];
	parent_pct_encode(target, sizeof target, path, true);
	int n = snprintf(head, sizeof head,
			 "GET /ManageSoftDL/%s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n", target,
			 parent_conn_authority(r->conn), held[0] ? "If-None-Match: " : "", held,
			 held[0] ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof head ||
	    parent_conn_write(r->conn, head, (size_t)n, err, sizeof err)) {
		mirror_round_error(r, "GET %s: %s", path,
				   n < 0 || (size_t)n >= sizeof head ? "too long" : err);
		return -1;
	}
	return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Exactly len body bytes into fd. 0; -1 the connection failed (r says);
 * -2 the disk failed (errno). */
static int receive(struct mirror_round *r, const char *path, int fd, uint64_t len)
{
	static _Thread_local char buf[BODY_BUF];
	char err[256];
	for (uint64_t got = 0; got < len;) {
		size_t want = len - got < BODY_BUF ? (size_t)(len - got) : BODY_BUF;
		long n = parent_conn_read(r->conn, buf, want, err, sizeof err);
		if (n < 0) {
			mirror_round_error(
				r, "GET %s: body cut short at %" PRIu64 " of %" PRIu64 " bytes: %s",
				path, got, len, err);
			return -1;
		}
		if (write_all(fd, buf, (size_t)n))
			return -2;
		got += (uint64_t)n;
	}
	if (parent_conn_has_extra(r->conn)) {
		mirror_round_error(r, "GET %s: body longer than its Content-Length %" PRIu64, path,
				   len);
		return -1;
	}
	return 0;
}

/* The temporary gets a name only once whole and synced, and at once
 * becomes the file: an agent never finds a partial one under any name. */
static int put_in_place(int dirfd, int tmp, const char *leaf)
{
	static atomic_uint seq;
	char proc[64], name[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", tmp);
	snprintf(name, sizeof name, MIRROR_TEMP_PREFIX "%d-%u", (int)getpid(),
		 atomic_fetch_add(&seq, 1));
	if (linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW) != 0)
		return -1;
	if (renameat(dirfd, name, dirfd, leaf) != 0) {
		int e = errno;
		unlinkat(dirfd, name, 0);
		errno = e;
		return -1;
	}
	return fsync(dirfd);
}

/* The parent's mtime when the bytes are the version its manifest named,
 * so Last-Modified here is the parent's; a newer version keeps "now", so
 * that an agent's If-Modified-Since never matches older bytes. */
static int stamp(int tmp, const struct mirror_entry *e, const struct parent_answer *a)
{
	if (a->etag[0] && !strcmp(a->etag, e->etag)) {
		struct timespec t[2] = {
			{.tv_nsec = UTIME_OMIT},
			{.tv_sec = e->mtime_ns / 1000000000, .tv_nsec = e->mtime_ns % 1000000000}};
		if (e->mtime_ns >= 0 && futimens(tmp, t) != 0)
			return -1;
	}
	if (a->etag[0] && fsetxattr(tmp, MIRROR_XATTR, a->etag, strlen(a->etag), 0) != 0)
		return -1;
	return 0;
}

/* A 200: the body into place. 0, -1 (the connection is done for). */
static int replace(struct mirror_round *r, const struct mirror_entry *e, int dirfd,
		   const char *leaf, const struct parent_answer *a)
{
	if (a->content_length < 0) {
		mirror_round_error(r, "GET %s: no Content-Length", e->path);
		return -1;
	}
	int tmp = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
	if (tmp < 0) {
		mirror_round_error(r, "%s: temporary file: %s", e->path, strerror(errno));
		return -1; /* its body is still on the wire */
	}
	/* A write that failed mid-body leaves the rest of it on the wire: the
	 * connection is done for. One that failed after it is only this
	 * file's. */
	int rc = receive(r, e->path, tmp, (uint64_t)a->content_length);
	bool body_read = rc == 0;
	if (rc == 0 && (fsync(tmp) != 0 || stamp(tmp, e, a) != 0 || put_in_place(dirfd, tmp, leaf)))
		rc = -2;
	if (rc == -2)
		mirror_round_error(r, "%s: write: %s", e->path, strerror(errno));
	close(tmp);
	if (rc)
		return body_read ? 0 : -1;
	r->synced++;
	r->bytes += (uint64_t)a->content_length;
	log_info("mirror: %s: %" PRIu64 " bytes, ETag %s", e->path, (uint64_t)a->content_length,
		 a->etag[0] ? a->etag : "none");
	return 0;
}

static int answer(struct mirror_round *r, const struct mirror_entry *e, int dirfd, const char *leaf)
{
	struct parent_answer a;
	char err[256];
	if (parent_conn_read_head(r->conn, &a, err, sizeof err)) {
		mirror_round_error(r, "GET %s: %s", e->path, err);
		return -1;
	}
	int rc = 0;
	if (a.status == 200) {
		rc = replace(r, e, dirfd, leaf, &a);
	} else if (a.status == 304 || a.status == 404) {
		/* 404: gone since the manifest; the next round removes it. */
		rc = a.content_length > 0 ? parent_conn_skip_body(r->conn, &a, err, sizeof err) : 0;
	} else {
		mirror_round_error(r, "GET %s: parent answered %d %s", e->path, a.status, a.reason);
		rc = a.content_length >= 0 ? parent_conn_skip_body(r->conn, &a, err, sizeof err)
					   : -1;
	}
	if (a.close)
		parent_conn_close(r->conn);
	return rc;
}

int mirror_fetch_file(struct mirror_round *r, const struct mirror_entry *e)
{
	const char *leaf;
	int dirfd = mirror_open_dir(r->root, e->path, &leaf);
	if (dirfd < 0) {
		mirror_round_error(r, "%s: its directory: %s", e->path, strerror(-dirfd));
		return 0;
	}
	char held[96], err[256];
	uint64_t size;
	held_etag(dirfd, leaf, held, sizeof held, &size);
	int rc = 0;
	if (held[0] && !strcmp(held, e->etag) && size == e->size)
		goto done; /* the manifest already answered */
	if (parent_conn_open(r->conn, err, sizeof err)) {
		mirror_round_error(r, "%s", err);
		rc = -1;
		goto done;
	}
	rc = send_get(r, e->path, held) ? -1 : answer(r, e, dirfd, leaf);
done:
	close(dirfd);
	return rc;
}
