/*
 * The download handler (handlers/handler.h): GET or HEAD
 * /ManageSoftDL/<path>, a regular file below the download directory, sent
 * as output drains.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "beacon/log.h"
#include "conn/conn.h"
#include "worker-internal.h"

#define DOWNLOAD_CHUNK (16 * 1024)

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
	struct stat st = {0};
	int fd = open_download(c, route->path, &st);
	if (fd < 0) {
		http1_respond(c, 404, NULL, "no such file", false);
		return;
	}
	struct http1_response r = {.status = 200,
				   .content_type = "application/octet-stream",
				   .content_length = (uint64_t)st.st_size,
				   .close = !c->h1.keep_alive};
	if (!http1_write_head(c, &r)) {
		close(fd);
		conn_close(c);
		return;
	}
	counter_add(&c->w->counters.downloads, 1);
	if (req->method == HTTP_HEAD || st.st_size == 0) {
		close(fd);
		conn_flush(c);
		http1_request_done(c);
		return;
	}
	c->req.download.fd = fd;
	c->req.download.left = (uint64_t)st.st_size;
	conn_set_state(c, CONN_RESPONSE);
}

/* Policy files are small and live in the page cache: a pread here costs
 * less than a round trip through the ring. */
static bool download_writable(struct conn *c)
{
	struct download_state *d = &c->req.download;
	while (d->left && conn_out_room(c) >= DOWNLOAD_CHUNK + 256) {
		size_t want = d->left < DOWNLOAD_CHUNK ? (size_t)d->left : DOWNLOAD_CHUNK;
		ssize_t n = read(d->fd, c->w->scratch, want);
		if (n <= 0) {
			log_warn("%s: download read failed: %s", c->peer,
				 n ? strerror(errno) : "EOF");
			conn_close(c);
			return false;
		}
		if (!conn_write(c, c->w->scratch, (size_t)n)) {
			conn_close(c);
			return false;
		}
		d->left -= (uint64_t)n;
		counter_add(&c->w->counters.download_bytes, (uint64_t)n);
	}
	conn_flush(c);
	if (d->left)
		return false; /* wait for the transport to drain */
	close(d->fd);
	d->fd = -1;
	http1_request_done(c);
	return true;
}

static void download_drop(struct conn *c)
{
	if (c->req.download.fd >= 0) {
		close(c->req.download.fd);
		c->req.download.fd = -1;
	}
}

const struct handler download_handler = {
	.head = download_head,
	.writable = download_writable,
	.drop = download_drop,
};
