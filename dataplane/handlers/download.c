/*
 * The download handler (handlers/handler.h): GET or HEAD
 * /ManageSoftDL/<path>, a regular file below the download directory, sent
 * as output drains, with RFC 9110's validators (ETag, Last-Modified),
 * conditional answers (304) and single byte ranges (206, 416).
 *
 * A file comes from the worker's hot-file cache (handlers/filecache.h) or
 * from one openat2 below the download directory. Either way the response
 * holds that one version (the entry's bytes, or the open fd) until its
 * last byte: a file renamed over meanwhile is the next request's.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "beacon/config.h"
#include "beacon/log.h"
#include "conn/conn.h"
#include "handlers/filecache.h"
#include "worker-internal.h"

#define DOWNLOAD_CHUNK (16 * 1024)
#define NS_PER_S 1000000000ll

static int open_download(struct conn *c, const char *path, struct stat *st)
{
	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer,
	 * and the whole worker with it; this way the open returns at once and
	 * fstat refuses anything but a regular file before a byte is read.
	 * On a regular file O_NONBLOCK changes nothing. */
	struct open_how how = {.flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, c->w->download_dirfd, path, &how, sizeof how);
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		return -ENOENT;
	}
	return fd;
}

/* The file a response is made of: its version, and its bytes (a cache
 * entry, else the open fd). */
struct served {
	struct file_version v;
	struct filecache_entry *entry;
	int fd;
};

/* From the cache (no open at all), else one openat2, offered to the cache.
 * False: no such regular file. */
static bool find_file(struct conn *c, const char *path, struct served *f)
{
	struct worker *w = c->w;
	f->entry = filecache_get(w->download_cache, w->download_dirfd, path);
	f->fd = -1;
	if (f->entry) {
		counter_add(&w->counters.download_cache_hits, 1);
		f->v = f->entry->version;
		return true;
	}
	struct stat st;
	int fd = open_download(c, path, &st);
	if (fd < 0)
		return false;
	file_version_of(&st, &f->v);
	f->entry = filecache_offer(w->download_cache, path, fd, &st);
	if (f->entry)
		close(fd);
	else
		f->fd = fd;
	return true;
}

static void served_release(struct conn *c, struct served *f)
{
	filecache_put(c->w->download_cache, f->entry);
	f->entry = NULL;
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

/*
 * The validators of one version. The ETag names the exact bytes: size,
 * mtime in ns, and a mix of device, inode and ctime, each of which a
 * change of the bytes moves (rename: new inode; write in place: new
 * mtime and ctime, ctime even when mtime is set back). That makes it
 * strong (RFC 9110 8.8.1).
 *
 * Both validators need the version to have settled. The kernel stamps
 * times with a coarse clock (a tick of a few ms), so two writes in one
 * tick can share every stamp; and Last-Modified has whole seconds, so a
 * second version within the same second would carry the first one's date
 * and an agent polling with If-Modified-Since would get 304 for the old
 * bytes until the next change. A version changed less than two seconds
 * ago (a second, plus a tick of lag) therefore gets neither: its answers
 * are always whole, and the agent's next poll fetches it once more.
 */
#define SETTLE_NS (2 * NS_PER_S)

struct validators {
	bool settled; /* else etag and last_modified are empty */
	char etag[80];
	char last_modified[HTTP_DATE_LEN + 1];
	int64_t last_modified_s;
};

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static void validators_of(const struct file_version *v, struct validators *val)
{
	struct timespec ts = {0};
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now_ns = (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
	int64_t changed = v->mtime_ns > v->ctime_ns ? v->mtime_ns : v->ctime_ns;
	*val = (struct validators){.settled = now_ns - changed >= SETTLE_NS};
	if (!val->settled)
		return;
	uint64_t id = mix64(v->dev ^ mix64(v->ino ^ mix64((uint64_t)v->ctime_ns)));
	snprintf(val->etag, sizeof val->etag, "\"%" PRIx64 "-%" PRIx64 "-%016" PRIx64 "\"", v->size,
		 (uint64_t)v->mtime_ns, id);
	val->last_modified_s = v->mtime_ns / NS_PER_S; /* settled: before now, before Date */
	http_date_format(val->last_modified_s, val->last_modified);
}

/* RFC 9110 13.2.2 steps 1 and 2: If-Match decides when present, else
 * If-Unmodified-Since. A version that changed under SETTLE_NS ago has no
 * validators to vouch for, so a tag or a date cannot be confirmed against
 * it: 412, and the client asks again (only "*" holds, the file exists). */
static bool precondition_failed(const struct http_conditional *cond, const struct validators *val)
{
	if (cond->if_match_lines) {
		unsigned n = cond->if_match_lines < HTTP_INM_LINES ? cond->if_match_lines
								   : HTTP_INM_LINES;
		for (unsigned i = 0; i < n; i++)
			if (http_etag_list_match_strong(cond->if_match[i], val->etag))
				return false;
		return true;
	}
	int64_t since;
	if (!cond->if_unmodified_since.p || http_date_parse(cond->if_unmodified_since, &since) != 0)
		return false; /* absent, or not a date: ignored (13.1.4) */
	return !val->settled || val->last_modified_s > since;
}

/* RFC 9110 13.2.2 steps 3 and 4: If-None-Match decides when present, and
 * If-Modified-Since is then not looked at. */
static bool not_modified(const struct http_conditional *cond, const struct validators *val)
{
	if (cond->if_none_match_lines) {
		unsigned n = cond->if_none_match_lines < HTTP_INM_LINES ? cond->if_none_match_lines
									: HTTP_INM_LINES;
		for (unsigned i = 0; i < n; i++)
			if (http_etag_list_match(cond->if_none_match[i], val->etag))
				return true;
		return false;
	}
	int64_t since;
	return val->settled && cond->if_modified_since.p &&
	       http_date_parse(cond->if_modified_since, &since) == 0 &&
	       val->last_modified_s <= since;
}

/* Step 5: a Range applies to GET only (RFC 9110 14.2), and with If-Range
 * only while the client's version is still the one here. */
static enum http_range_result wanted_range(const struct http_request *req,
					   const struct validators *val, uint64_t size,
					   uint64_t *first, uint64_t *last)
{
	const struct http_conditional *cond = &req->cond;
	if (req->method != HTTP_GET || !cond->range.p)
		return HTTP_RANGE_NONE;
	if (cond->if_range.p && (!val->settled || !http_if_range_match(cond->if_range, val->etag,
								       val->last_modified_s, true)))
		return HTTP_RANGE_NONE;
	return http_range_parse(cond->range, size, first, last);
}

/* The head of a 200, 206 or 304; false when it could not be queued. */
static bool write_head(struct conn *c, int status, const struct validators *val, uint64_t first,
		       uint64_t last, uint64_t size)
{
	char extra[320];
	int n = val->settled ? snprintf(extra, sizeof extra,
					"ETag: %s\r\nLast-Modified: %s\r\nAccept-Ranges: bytes\r\n",
					val->etag, val->last_modified)
			     : snprintf(extra, sizeof extra, "Accept-Ranges: bytes\r\n");
	if (status == 206 && n > 0 && (size_t)n < sizeof extra)
		n += snprintf(extra + n, sizeof extra - (size_t)n,
			      "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", first,
			      last, size);
	if (n < 0 || (size_t)n >= sizeof extra)
		return false;
	struct http1_response r = {.status = status,
				   .content_type = "application/octet-stream",
				   .content_length = status == 304 ? 0 : last - first + 1,
				   .extra = extra,
				   .close = !c->h1.keep_alive,
				   .cache_control = c->w->cfg->download_cache_control};
	if (status == 200 && size == 0)
		r.content_length = 0;
	return http1_write_head(c, &r);
}

static void range_not_satisfiable(struct conn *c, uint64_t size)
{
	char extra[64];
	snprintf(extra, sizeof extra, "Content-Range: bytes */%" PRIu64 "\r\n", size);
	http1_respond(c, 416, extra, "no byte of the file is in the requested range", false);
}

/* The answer is fixed: send its head, then its body as output drains. */
static void respond(struct conn *c, const struct http_request *req, struct served *f, int status,
		    const struct validators *val, uint64_t first, uint64_t last)
{
	uint64_t size = f->v.size;
	if (!write_head(c, status, val, first, last, size)) {
		served_release(c, f);
		conn_close(c);
		return;
	}
	if (status != 304)
		counter_add(&c->w->counters.downloads, 1);
	if (status == 304 || req->method == HTTP_HEAD || size == 0) {
		served_release(c, f);
		conn_flush(c);
		http1_request_done(c);
		return;
	}
	c->req.download.fd = f->fd;
	c->req.download.entry = f->entry;
	c->req.download.off = first;
	c->req.download.left = last - first + 1;
	conn_set_state(c, CONN_RESPONSE);
}

static void download_head(struct conn *c, const struct http_request *req,
			  const struct http_route *route)
{
	c->req.download = (struct download_state){.fd = -1};
	if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
		http1_respond(c, 405, "Allow: GET, HEAD\r\n", "downloads take GET or HEAD", true);
		return;
	}
	if (c->w->download_dirfd < 0) {
		http1_respond(c, 404, NULL, "no download directory configured", false);
		return;
	}
	struct served f;
	if (!find_file(c, route->path, &f)) {
		http1_respond(c, 404, NULL, "no such file", false);
		return;
	}
	struct validators val;
	validators_of(&f.v, &val);
	uint64_t size = f.v.size, first = 0, last = size ? size - 1 : 0;
	int status = 200;
	if (precondition_failed(&req->cond, &val)) {
		served_release(c, &f);
		http1_respond(c, 412, NULL, "the file is not the version the request names", false);
		return;
	}
	if (not_modified(&req->cond, &val)) {
		status = 304;
	} else {
		switch (wanted_range(req, &val, size, &first, &last)) {
		case HTTP_RANGE_PART:
			status = 206;
			break;
		case HTTP_RANGE_UNSATISFIABLE:
			served_release(c, &f);
			range_not_satisfiable(c, size);
			return;
		case HTTP_RANGE_NONE:
			break;
		}
	}
	respond(c, req, &f, status, &val, first, last);
}

/* The next piece of the body: from the entry's bytes, else a pread of the
 * fd (policy files are small and in the page cache: a pread here costs
 * less than a round trip through the ring). */
static ssize_t next_piece(struct conn *c, const uint8_t **at, size_t want)
{
	struct download_state *d = &c->req.download;
	if (d->entry) {
		*at = d->entry->data + d->off;
		return (ssize_t)want;
	}
	ssize_t n = pread(d->fd, c->w->scratch, want, (off_t)d->off);
	*at = c->w->scratch;
	return n;
}

static void download_drop(struct conn *c)
{
	struct download_state *d = &c->req.download;
	filecache_put(c->w->download_cache, d->entry);
	d->entry = NULL;
	if (d->fd >= 0) {
		close(d->fd);
		d->fd = -1;
	}
}

static bool download_writable(struct conn *c)
{
	struct download_state *d = &c->req.download;
	while (d->left && conn_out_room(c) >= DOWNLOAD_CHUNK + 256) {
		size_t want = d->left < DOWNLOAD_CHUNK ? (size_t)d->left : DOWNLOAD_CHUNK;
		const uint8_t *at;
		ssize_t n = next_piece(c, &at, want);
		if (n <= 0) {
			/* The file shrank under us (written in place): the
			 * promised length cannot be kept, so the client must
			 * see the connection end short. */
			log_warn("%s: download read failed: %s", c->peer,
				 n ? strerror(errno) : "EOF");
			conn_close(c);
			return false;
		}
		if (!conn_write(c, at, (size_t)n)) {
			conn_close(c);
			return false;
		}
		d->off += (uint64_t)n;
		d->left -= (uint64_t)n;
		counter_add(&c->w->counters.download_bytes, (uint64_t)n);
	}
	conn_flush(c);
	if (d->left)
		return false; /* wait for the transport to drain */
	download_drop(c);
	http1_request_done(c);
	return true;
}

const struct handler download_handler = {
	.head = download_head,
	.writable = download_writable,
	.drop = download_drop,
};

void download_etag(const struct file_version *v, char *out, size_t len)
{
	struct validators val;
	validators_of(v, &val);
	snprintf(out, len, "%s", val.etag);
}
