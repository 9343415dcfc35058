/*
 * One agent connection: TLS handshake, then HTTP/1.1 requests, each an
 * upload streamed into the store, a download from the download directory,
 * or an error status. Everything here runs on the connection's worker and
 * advances from callbacks: bytes in, bytes sent, store space, store commit,
 * timer.
 *
 * Memory per connection: the struct and wolfSSL's session (a few KiB) while
 * idle; while a request is active also `buf` (max_header_bytes, at least
 * 16 KiB + one TLS record) and `out` (CONN_OUT_BYTES). Both are freed when the
 * connection goes idle again.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "beacon/config.h"
#include "beacon/http.h"
#include "beacon/log.h"
#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/snapshot.h"
#include "worker-internal.h"

#define LINGER_MS 2000
#define DOWNLOAD_CHUNK (16 * 1024)

enum conn_state {
	ST_HANDSHAKE,
	ST_HEAD,     /* reading a request head */
	ST_BODY,     /* streaming an upload body into the store */
	ST_COMMIT,   /* body complete; waiting for the store to make it durable */
	ST_DOWNLOAD, /* sending a file */
	ST_CLOSING,  /* last bytes out, then close */
};

struct conn {
	struct worker *w;
	struct transport_conn *tc;
	struct tls_session *tls;
	struct conn *next, **pprev;
	struct conn *flush_next; /* the worker's list of connections to send */
	struct timer timer;

	/* Ciphertext the TLS layer did not take yet (we were not reading):
	 * bytes [stash_off, stash_len) of a buffer of stash_cap. */
	uint8_t *stash;
	size_t stash_off, stash_len, stash_cap;

	/* Plaintext: request heads, then body bytes, in one buffer. */
	uint8_t *buf;
	size_t buf_cap, buf_off, buf_len;

	/* Ciphertext out; [0, out_inflight) is with the transport. */
	uint8_t *out;
	size_t out_len, out_inflight;

	/* The request in progress. */
	struct http_chunked chunk;
	const uint8_t *held; /* chunk data the store has not taken yet */
	size_t held_len;
	struct store_upload *upload;
	uint64_t body_left; /* Content-Length bodies */
	uint64_t body_total;
	uint64_t commit_started_us;
	uint64_t file_left;
	int file_fd;
	enum conn_state state;
	unsigned depth; /* entry points on the stack: free only at 0 */

	bool in_handshake;
	bool flush_queued; /* on the worker's flush list, holding a depth */
	bool paused;
	bool keep_alive;
	bool head_started; /* bytes of a head have arrived: header timeout runs */
	bool advancing;
	bool transport_gone;
	bool store_busy; /* a store callback is still owed to us */
	bool chunked;
	bool upload_blocked;
	bool head_request;  /* the request in progress is a HEAD: answers carry no body */
	uint64_t trust_generation; /* of the newest snapshot this peer was checked against */
	uint8_t source[16]; /* the per-source limits' key */
	char peer[64];
};

static void conn_run(struct conn *c);
static void conn_free(struct conn *c);

/* Every entry point (transport, store and timer callbacks) brackets its
 * work with these, so a connection is freed only once nothing of it is on
 * the stack. */
static void conn_enter(struct conn *c)
{
	c->depth++;
}

static void conn_leave(struct conn *c)
{
	if (--c->depth == 0 && c->transport_gone && !c->store_busy)
		conn_free(c);
}

static uint64_t now_ms(const struct conn *c)
{
	return c->w->timers.now_ms;
}

/* ---- output ---- */

static size_t tls_out(void *arg, const uint8_t *data, size_t len)
{
	struct conn *c = arg;
	if (!c->out) {
		c->out = buf_pool_take(&c->w->out_bufs);
		if (!c->out)
			return 0;
	}
	size_t room = CONN_OUT_BYTES - c->out_len;
	size_t n = len < room ? len : room;
	memcpy(c->out + c->out_len, data, n);
	c->out_len += n;
	return n;
}

static void conn_send_queued(struct conn *c)
{
	if (c->out_inflight || !c->out_len || c->transport_gone)
		return;
	if (transport_send(c->tc, c->out, c->out_len) == 0)
		c->out_inflight = c->out_len;
}

/* Output leaves once per connection per worker turn: everything a turn
 * queues (the end of a handshake, a ticket, a response and its
 * close_notify, arriving in separate completions) goes out in one send,
 * one segment for the peer to take. The list holds a depth, so a queued
 * connection outlives the turn. */
static void conn_flush(struct conn *c)
{
	if (c->flush_queued || c->out_inflight || !c->out_len || c->transport_gone)
		return;
	c->flush_queued = true;
	conn_enter(c);
	c->flush_next = c->w->flush_head;
	c->w->flush_head = c;
}

void conn_flush_queued(struct worker *w)
{
	while (w->flush_head) {
		struct conn *c = w->flush_head;
		w->flush_head = c->flush_next;
		c->flush_next = NULL;
		c->flush_queued = false;
		conn_send_queued(c);
		conn_leave(c);
	}
}

static size_t out_room(const struct conn *c)
{
	return CONN_OUT_BYTES - c->out_len;
}

/* ---- closing ---- */

static void linger_expired(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	conn_enter(c);
	if (!c->transport_gone)
		transport_abort(c->tc);
	conn_leave(c);
}

static void upload_drop(struct conn *c)
{
	if (c->upload) {
		store_upload_abort(c->upload);
		c->upload = NULL;
	}
	if (c->file_fd >= 0) {
		close(c->file_fd);
		c->file_fd = -1;
	}
}

/* The transport closes once every queued byte went out. */
static void conn_close_when_flushed(struct conn *c)
{
	if (c->state == ST_CLOSING && !c->out_len && !c->transport_gone)
		transport_close(c->tc);
}

/* Sends what is queued, then closes gracefully (bounded by LINGER_MS). */
static void conn_close(struct conn *c)
{
	if (c->state == ST_CLOSING)
		return;
	bool handshake_done = c->state != ST_HANDSHAKE;
	upload_drop(c);
	c->state = ST_CLOSING;
	timer_arm(&c->w->timers, &c->timer, now_ms(c) + LINGER_MS, linger_expired);
	if (handshake_done && !c->transport_gone)
		tls_session_shutdown(c->tls); /* close_notify: the peer sees a clean end */
	conn_flush(c);
	conn_close_when_flushed(c);
}

/* ---- responses ---- */

static void count_status(struct conn *c, int status)
{
	if (status >= 500)
		counter_add(&c->w->counters.responses_5xx, 1);
	else if (status >= 400)
		counter_add(&c->w->counters.responses_4xx, 1);
}

static bool conn_write(struct conn *c, const void *data, size_t len)
{
	const uint8_t *p = data;
	while (len) {
		ssize_t n = tls_session_write(c->tls, p, len);
		if (n <= 0) {
			log_warn("%s: cannot queue %zu response bytes (%s)", c->peer, len,
				 n == TLS_WANT_WRITE ? "send buffer full" : tls_session_error(c->tls));
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Headers of every response head, one list. An upload API's answers are
 * per request and per device: never stored by a cache (no-store), never
 * sniffed into something a browser would run (nosniff), and only ever over
 * TLS (HSTS: a browser pointed at this host keeps to https). */
#define RESPONSE_HEADERS                                                   \
	"Server: beacond\r\n"                                              \
	"Strict-Transport-Security: max-age=31536000\r\n"                  \
	"X-Content-Type-Options: nosniff\r\n"                              \
	"Cache-Control: no-store\r\n"

/* A complete response with a short text body. `close` ends the connection
 * after it (any request whose body was not read must). */
static void respond(struct conn *c, int status, const char *extra, const char *body, bool close)
{
	char msg[1024];
	const char *reason = http_reason(status);
	int blen = snprintf(msg, sizeof msg, "%d %s%s%s\n", status, reason, body ? ": " : "",
			    body ? body : "");
	if (blen < 0 || (size_t)blen >= sizeof msg)
		blen = (int)sizeof msg - 1;
	char head[768];
	int hlen = snprintf(head, sizeof head,
			    "HTTP/1.1 %d %s\r\n" RESPONSE_HEADERS "Content-Type: text/plain\r\n"
			    "Content-Length: %d\r\n%s%s\r\n",
			    status, reason, blen, extra ? extra : "",
			    close ? "Connection: close\r\n" : "");
	count_status(c, status);
	/* A HEAD's answer has the length a GET's would have, and no body: the
	 * client would read those bytes as the start of the next response. */
	if (hlen < 0 || (size_t)hlen >= sizeof head || !conn_write(c, head, (size_t)hlen) ||
	    (!c->head_request && !conn_write(c, msg, (size_t)blen)))
		close = true;
	if (close || !c->keep_alive)
		conn_close(c); /* close_notify leaves in the same send */
	else
		conn_flush(c);
}

static void respond_error(struct conn *c, int status, const char *why)
{
	log_info("%s %s: %d %s", c->peer, c->tls ? tls_session_peer(c->tls)->device : "", status,
		 why);
	const char *extra = NULL;
	if (status == 503 || status == 507)
		extra = "Retry-After: 30\r\n";
	respond(c, status, extra, why, true);
}

/* A store failure: 507 when the disk is full (the client retries later),
 * 503 otherwise. */
static void respond_store_error(struct conn *c, int err)
{
	respond_error(c, err == STORE_ERR_NOSPACE ? 507 : 503, store_strerror(err));
}

/* ---- timers ---- */

static void request_timeout(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	conn_enter(c);
	counter_add(&c->w->counters.timeouts, 1);
	switch (c->state) {
	case ST_HANDSHAKE:
		log_info("%s: TLS handshake timed out", c->peer);
		conn_close(c);
		break;
	case ST_HEAD:
		if (c->head_started)
			respond_error(c, 408, "request head not received in time");
		else
			conn_close(c); /* idle keep-alive connection */
		break;
	case ST_BODY:
		respond_error(c, 408, "request body stalled");
		break;
	default:
		break;
	}
	conn_leave(c);
}

static void timer_for_state(struct conn *c)
{
	const struct config *cfg = c->w->cfg;
	unsigned ms;
	switch (c->state) {
	case ST_HANDSHAKE:
		ms = cfg->handshake_timeout_ms;
		break;
	case ST_HEAD:
		ms = c->head_started ? cfg->header_timeout_ms : cfg->idle_timeout_ms;
		break;
	case ST_BODY:
		ms = cfg->body_timeout_ms;
		break;
	default:
		timer_disarm(&c->timer);
		return;
	}
	timer_arm(&c->w->timers, &c->timer, now_ms(c) + ms, request_timeout);
}

/* ---- buffers ---- */

size_t conn_in_bytes(const struct config *cfg)
{
	size_t cap = cfg->max_header_bytes;
	return cap < SCRATCH_BYTES + 1024 ? SCRATCH_BYTES + 1024 : cap;
}

static bool buf_ensure(struct conn *c)
{
	if (c->buf)
		return true;
	c->buf = buf_pool_take(&c->w->in_bufs);
	if (!c->buf)
		return false;
	c->buf_cap = c->w->in_bufs.size;
	return true;
}

static void buf_compact(struct conn *c)
{
	if (c->buf_off == c->buf_len) {
		c->buf_off = c->buf_len = 0;
	} else if (c->buf_off) {
		memmove(c->buf, c->buf + c->buf_off, c->buf_len - c->buf_off);
		c->buf_len -= c->buf_off;
		c->buf_off = 0;
	}
}

static void out_release(struct conn *c)
{
	if (c->out && !c->out_len && !c->out_inflight) {
		buf_pool_give(&c->w->out_bufs, c->out);
		c->out = NULL;
	}
}

/* Idle between requests: give back the buffers. */
static void conn_idle_trim(struct conn *c)
{
	if (c->buf && c->buf_off == c->buf_len && !c->held_len) {
		buf_pool_give(&c->w->in_bufs, c->buf);
		c->buf = NULL;
		c->buf_cap = c->buf_off = c->buf_len = 0;
	}
	out_release(c);
}

/* Reads plaintext into buf. Returns bytes read, 0 when TLS needs more
 * ciphertext, or -1 when the connection is finished. */
static ssize_t read_plaintext(struct conn *c)
{
	buf_compact(c);
	ssize_t n;
	if (!c->buf) {
		/* Most reads of an idle connection find nothing: read into the
		 * worker's scratch and take a buffer only when bytes came. */
		n = tls_session_read(c->tls, c->w->scratch, SCRATCH_BYTES);
		if (n > 0) {
			if (!buf_ensure(c)) {
				conn_close(c);
				return -1;
			}
			memcpy(c->buf, c->w->scratch, (size_t)n);
			c->buf_len = (size_t)n;
			return n;
		}
	} else if (c->buf_len == c->buf_cap) {
		return 0;
	} else {
		n = tls_session_read(c->tls, c->buf + c->buf_len, c->buf_cap - c->buf_len);
		if (n > 0) {
			c->buf_len += (size_t)n;
			return n;
		}
	}
	if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
		return 0;
	if (n == TLS_FAILED)
		log_info("%s: TLS error: %s", c->peer, tls_session_error(c->tls));
	conn_close(c);
	return -1;
}

/* ---- handshake ---- */

static void count_handshake(struct conn *c, const struct tls_peer *p)
{
	struct worker_counters *k = &c->w->counters;
	counter_add(&k->handshakes[p->result], 1);
	if (p->result != AUTH_OK)
		return;
	counter_add(p->version == 0x0304 ? &k->handshakes_tls13 : &k->handshakes_tls12, 1);
	if (p->resumed)
		counter_add(&k->handshakes_resumed, 1);
}

static void handshake_over(struct conn *c)
{
	if (c->in_handshake) {
		c->in_handshake = false;
		c->w->handshakes_active--;
	}
}

/* A verdict on a certificate that our issuers signed goes to its device's
 * record (last result, last seen), so an operator sees why a blocked or
 * revoked agent stays out. Other refusals name no device we know: recording
 * them would let anyone grow the index with made-up names. From the
 * worker's own ring: no lock and no system call on the handshake path. */
static void record_device_seen(struct conn *c, const struct tls_peer *p, bool completed)
{
	bool verdict = completed ? p->result == AUTH_OK
				 : p->result == AUTH_REVOKED || p->result == AUTH_BLOCKED;
	if (!p->device[0] || !verdict)
		return;
	int rc = store_worker_device_seen(c->w->sw, p->device, p->cert_sha256, p->result);
	if (rc < 0)
		log_warn("%s: %s: device record not updated: %s", c->peer, p->device,
			 store_strerror(rc));
}

static bool step_handshake(struct conn *c)
{
	int rc = tls_session_handshake(c->tls);
	if (rc == TLS_WANT_READ || rc == TLS_WANT_WRITE) {
		conn_flush(c); /* the server's flight */
		return false;
	}
	/* A finished handshake's last bytes (TLS 1.3 tickets, TLS 1.2
	 * Finished) leave with conn_run's flush, after the request that may
	 * already be here: one send instead of two. */
	handshake_over(c);
	const struct tls_peer *p = tls_session_peer(c->tls);
	record_device_seen(c, p, rc == TLS_OK);
	if (rc != TLS_OK) {
		if (p->result == AUTH_OTHER && !p->device[0] && strncmp(p->reason, "handshake", 9) == 0)
			counter_add(&c->w->counters.handshake_failures, 1);
		else
			count_handshake(c, p);
		tls_session_report_refusal(c->tls, c->peer);
		conn_close(c);
		return false;
	}
	count_handshake(c, p);
	log_debug("%s: %s authenticated (%s%s)", c->peer, p->device,
		  p->version == 0x0304 ? "TLS 1.3" : "TLS 1.2", p->resumed ? ", resumed" : "");
	c->state = ST_HEAD;
	timer_for_state(c);
	return true;
}

/* ---- requests ---- */

static void request_done(struct conn *c)
{
	c->upload = NULL;
	c->head_started = c->buf_off < c->buf_len;
	if (!c->keep_alive) {
		conn_close(c);
		return;
	}
	c->state = ST_HEAD;
	conn_idle_trim(c);
	timer_for_state(c);
}

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

static void start_download(struct conn *c, const struct http_request *req,
			   const struct http_route *route)
{
	if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
		respond(c, 405, "Allow: GET, HEAD\r\n", "downloads take GET or HEAD", true);
		return;
	}
	if (c->w->download_dirfd < 0) {
		respond(c, 404, NULL, "no download directory configured", false);
		return;
	}
	struct stat st = {0};
	int fd = open_download(c, route->path, &st);
	if (fd < 0) {
		respond(c, 404, NULL, "no such file", false);
		return;
	}
	char head[512];
	int n = snprintf(head, sizeof head,
			 "HTTP/1.1 200 OK\r\n" RESPONSE_HEADERS
			 "Content-Type: application/octet-stream\r\n"
			 "Content-Length: %" PRIu64 "\r\n%s\r\n",
			 (uint64_t)st.st_size, c->keep_alive ? "" : "Connection: close\r\n");
	if (n < 0 || (size_t)n >= sizeof head || !conn_write(c, head, (size_t)n)) {
		close(fd);
		conn_close(c);
		return;
	}
	counter_add(&c->w->counters.downloads, 1);
	if (req->method == HTTP_HEAD || st.st_size == 0) {
		close(fd);
		conn_flush(c);
		request_done(c);
		return;
	}
	c->file_fd = fd;
	c->file_left = (uint64_t)st.st_size;
	c->state = ST_DOWNLOAD;
	timer_for_state(c);
}

/* Policy files are small and live in the page cache: a pread here costs
 * less than a round trip through the ring. */
static bool step_download(struct conn *c)
{
	while (c->file_left && out_room(c) >= DOWNLOAD_CHUNK + 256) {
		size_t want = c->file_left < DOWNLOAD_CHUNK ? (size_t)c->file_left : DOWNLOAD_CHUNK;
		ssize_t n = read(c->file_fd, c->w->scratch, want);
		if (n <= 0) {
			log_warn("%s: download read failed: %s", c->peer, n ? strerror(errno) : "EOF");
			conn_close(c);
			return false;
		}
		if (!conn_write(c, c->w->scratch, (size_t)n)) {
			conn_close(c);
			return false;
		}
		c->file_left -= (uint64_t)n;
		counter_add(&c->w->counters.download_bytes, (uint64_t)n);
	}
	conn_flush(c);
	if (c->file_left)
		return false; /* wait for the transport to drain */
	close(c->file_fd);
	c->file_fd = -1;
	request_done(c);
	return true;
}

static void upload_wake(void *arg)
{
	struct conn *c = arg;
	conn_enter(c);
	c->upload_blocked = false;
	conn_run(c);
	conn_leave(c);
}

static void upload_committed(void *arg, int status, uint64_t id)
{
	struct conn *c = arg;
	conn_enter(c);
	c->store_busy = false;
	worker_commit_latency(c->w, clock_us() - c->commit_started_us);
	if (c->transport_gone || c->state == ST_CLOSING) {
		conn_leave(c);
		return;
	}
	if (status == 0) {
		counter_add(&c->w->counters.uploads, 1);
		counter_add(&c->w->counters.upload_bytes, c->body_total);
		char extra[64], body[64];
		snprintf(extra, sizeof extra, "Location: /uploads/%" PRIu64 "\r\n", id);
		snprintf(body, sizeof body, "upload %" PRIu64 ", %" PRIu64 " bytes", id, c->body_total);
		respond(c, 201, extra, body, false);
		if (c->state != ST_CLOSING)
			request_done(c);
	} else {
		c->keep_alive = false;
		respond_store_error(c, status);
	}
	conn_run(c);
	conn_leave(c);
}

static void body_complete(struct conn *c)
{
	c->state = ST_COMMIT;
	c->store_busy = true;
	c->commit_started_us = clock_us();
	timer_disarm(&c->timer);
	struct store_upload *u = c->upload;
	c->upload = NULL;
	store_upload_finish(u, upload_committed, c);
}

/* approval = require: only devices an operator approved may upload. */
static bool device_approved(struct conn *c, const char *device)
{
	if (c->w->cfg->approval != APPROVAL_REQUIRE)
		return true;
	struct device_record rec;
	int rc = store_reader_device(c->w->devices, device, &rec);
	if (rc == 0 && rec.state == DEVICE_APPROVED)
		return true;
	if (rc != 0 && rc != STORE_ERR_NOTFOUND) {
		respond_error(c, 503, "device state unavailable");
		return false;
	}
	counter_add(&c->w->counters.handshakes[AUTH_UNAPPROVED], 1);
	respond_error(c, 403, "device awaiting approval by an operator (beaconctl devices approve)");
	return false;
}

static void start_upload(struct conn *c, const struct http_request *req,
			 const struct http_route *route)
{
	const struct config *cfg = c->w->cfg;
	if (req->method != HTTP_PUT && req->method != HTTP_POST) {
		respond(c, 405, "Allow: PUT, POST\r\n", "uploads take PUT or POST",
			req->content_length > 0 || req->chunked);
		return;
	}
	if (!req->chunked && req->content_length < 0) {
		respond_error(c, 411, "uploads need Content-Length or chunked encoding");
		return;
	}
	if (req->content_length > 0 && (uint64_t)req->content_length > cfg->max_body_bytes) {
		char why[96];
		snprintf(why, sizeof why, "body over %" PRIu64 " bytes", cfg->max_body_bytes);
		respond_error(c, 413, why);
		return;
	}
	const struct tls_peer *p = tls_session_peer(c->tls);
	if (!device_approved(c, p->device))
		return;
	struct upload_meta meta = {0};
	snprintf(meta.device, sizeof meta.device, "%s", p->device);
	snprintf(meta.category, sizeof meta.category, "%s", route->category);
	snprintf(meta.name, sizeof meta.name, "%s", route->name);
	memcpy(meta.cert_sha256, p->cert_sha256, sizeof meta.cert_sha256);
	int rc = store_upload_begin(c->w->sw, &meta, &c->upload);
	if (rc != 0) {
		c->upload = NULL;
		respond_store_error(c, rc);
		return;
	}
	if (req->expect_continue && !conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25)) {
		conn_close(c);
		return;
	}
	c->chunked = req->chunked;
	c->body_left = req->chunked ? 0 : (uint64_t)req->content_length;
	c->body_total = 0;
	c->held_len = 0;
	http_chunked_init(&c->chunk);
	c->state = ST_BODY;
	if (req->expect_continue)
		conn_flush(c); /* the client waits for it before it sends the body */
	if (!c->chunked && c->body_left == 0) {
		body_complete(c); /* an empty file is an upload too */
		return;
	}
	timer_for_state(c);
}

/* The connection's peer was admitted by the snapshot of its handshake.
 * When a newer one was published since its last check, it is checked
 * against that: a device revoked, blocked or left without a trusted issuer
 * stops here, at its next request, not when it chooses to disconnect. */
static bool peer_still_trusted(struct conn *c)
{
	uint64_t generation = trust_generation();
	if (generation == c->trust_generation)
		return true;
	struct tls_server *newest = trust_acquire();
	bool trusted = tls_session_recheck(c->tls, newest);
	tls_server_unref(newest);
	if (trusted) {
		c->trust_generation = generation;
		return true;
	}
	const struct tls_peer *p = tls_session_peer(c->tls);
	record_device_seen(c, p, false);
	char why[192];
	snprintf(why, sizeof why, "%s (trust changed while this connection was open)", p->reason);
	respond_error(c, 403, why);
	return false;
}

/* A GET or HEAD with a body: nothing here reads it, and left in the stream
 * it would be parsed as the next request (a PUT smuggled inside a GET).
 * Refused, and the connection closes with the body unread. */
static bool request_has_stray_body(const struct http_request *req)
{
	return (req->method == HTTP_GET || req->method == HTTP_HEAD) &&
	       (req->content_length > 0 || req->chunked);
}

static void handle_request(struct conn *c, const struct http_request *req)
{
	counter_add(&c->w->counters.requests, 1);
	c->keep_alive = req->keep_alive;
	c->head_request = req->method == HTTP_HEAD;
	if (!peer_still_trusted(c))
		return;
	if (request_has_stray_body(req)) {
		respond_error(c, 400, "GET and HEAD take no body (Content-Length or chunked)");
		return;
	}
	struct http_route route;
	int rc = http_route_parse(&req->target, &route);
	if (rc < 0) {
		respond(c, -rc, NULL, -rc == 404 ? "no such path" : "bad file name",
			req->content_length > 0 || req->chunked);
		return;
	}
	if (route.kind == ROUTE_UPLOAD)
		start_upload(c, req, &route);
	else
		start_download(c, req, &route);
}

static bool step_head(struct conn *c)
{
	const struct config *cfg = c->w->cfg;
	struct http_limits lim = {.max_target = cfg->max_target, .max_headers = cfg->max_headers};
	for (;;) {
		if (c->buf && c->buf_len > c->buf_off) {
			if (!c->head_started) {
				c->head_started = true;
				timer_for_state(c);
			}
			struct http_request req;
			c->head_request = false; /* until this head says HEAD */
			size_t avail = c->buf_len - c->buf_off;
			if (avail > cfg->max_header_bytes)
				avail = cfg->max_header_bytes;
			int rc = http_request_parse((const char *)c->buf + c->buf_off, avail, &lim, &req);
			if (rc < 0) {
				respond_error(c, -rc, "malformed request");
				return false;
			}
			if (rc > 0) {
				c->buf_off += (size_t)rc;
				handle_request(c, &req);
				return c->state != ST_CLOSING;
			}
			if (avail >= cfg->max_header_bytes) {
				respond_error(c, 431, "request head too large");
				return false;
			}
		}
		ssize_t n = read_plaintext(c);
		if (n <= 0)
			return false;
	}
}

/* Hands body bytes to the store; false when it is full or failed. */
static bool body_put(struct conn *c, const uint8_t *data, size_t len, size_t *taken)
{
	ssize_t n = store_upload_write(c->upload, data, len, upload_wake, c);
	if (n < 0) {
		respond_store_error(c, (int)n);
		return false;
	}
	*taken = (size_t)n;
	c->body_total += (uint64_t)n;
	if ((size_t)n < len)
		c->upload_blocked = true;
	return (size_t)n == len;
}

static bool body_feed_length(struct conn *c)
{
	size_t avail = c->buf_len - c->buf_off;
	size_t want = avail < c->body_left ? avail : (size_t)c->body_left;
	size_t taken = 0;
	bool all = body_put(c, c->buf + c->buf_off, want, &taken);
	c->buf_off += taken;
	c->body_left -= taken;
	if (c->state == ST_CLOSING)
		return false;
	if (c->body_left == 0) {
		body_complete(c);
		return false;
	}
	return all;
}

static bool body_feed_chunked(struct conn *c)
{
	const struct config *cfg = c->w->cfg;
	for (;;) {
		if (c->held_len) {
			size_t taken = 0;
			bool all = body_put(c, c->held, c->held_len, &taken);
			c->held += taken;
			c->held_len -= taken;
			if (!all)
				return false;
		}
		if (c->body_total > cfg->max_body_bytes) {
			respond_error(c, 413, "chunked body over the size limit");
			return false;
		}
		if (c->buf_off == c->buf_len)
			return true;
		const char *data = NULL;
		size_t dlen = 0;
		bool done = false;
		long used = http_chunked_decode(&c->chunk, (const char *)c->buf + c->buf_off,
						c->buf_len - c->buf_off, &data, &dlen, &done);
		if (used < 0) {
			respond_error(c, 400, "malformed chunked body");
			return false;
		}
		c->buf_off += (size_t)used;
		c->held = (const uint8_t *)data;
		c->held_len = data ? dlen : 0;
		if (done && !c->held_len) {
			body_complete(c);
			return false;
		}
	}
}

/* A Content-Length body with nothing buffered: TLS decrypts straight into
 * the store's buffer, one copy fewer than through conn's buffer. Never
 * reads past the body, so a pipelined request stays in TLS. Returns like
 * read_plaintext. */
static ssize_t body_read_direct(struct conn *c)
{
	uint8_t *at;
	ssize_t room = store_upload_window(c->upload, &at, upload_wake, c);
	if (room <= 0) {
		if (room < 0)
			respond_store_error(c, (int)room);
		else
			c->upload_blocked = true;
		return room < 0 ? -1 : 0;
	}
	size_t want = (uint64_t)room < c->body_left ? (size_t)room : (size_t)c->body_left;
	ssize_t n = tls_session_read(c->tls, at, want);
	if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
		return 0;
	if (n <= 0) {
		if (n == TLS_FAILED)
			log_info("%s: TLS error: %s", c->peer, tls_session_error(c->tls));
		conn_close(c);
		return -1;
	}
	int rc = store_upload_wrote(c->upload, (size_t)n);
	if (rc < 0) {
		respond_store_error(c, rc);
		return -1;
	}
	c->body_total += (uint64_t)n;
	c->body_left -= (uint64_t)n;
	if (c->body_left == 0) {
		body_complete(c);
		return -1; /* the body is done: step_body stops */
	}
	return n;
}

static bool step_body(struct conn *c)
{
	for (;;) {
		if (c->upload_blocked)
			return false;
		if (c->buf && (c->buf_off < c->buf_len || c->held_len)) {
			bool more = c->chunked ? body_feed_chunked(c) : body_feed_length(c);
			if (!more || c->state != ST_BODY)
				return false;
		}
		/* `held` points into buf: do not move buf while it is set. */
		if (c->held_len)
			return false;
		ssize_t n = c->chunked ? read_plaintext(c) : body_read_direct(c);
		if (n <= 0)
			return false;
		timer_for_state(c); /* body bytes arrived: the stall clock restarts */
	}
}

/* ---- the state machine ---- */

static void conn_advance(struct conn *c)
{
	if (c->advancing)
		return;
	c->advancing = true;
	bool progress = true;
	while (progress && !c->transport_gone) {
		switch (c->state) {
		case ST_HANDSHAKE:
			progress = step_handshake(c);
			break;
		case ST_HEAD:
			progress = step_head(c);
			break;
		case ST_BODY:
			progress = step_body(c);
			break;
		case ST_DOWNLOAD:
			progress = step_download(c);
			break;
		case ST_COMMIT:
		case ST_CLOSING:
			progress = false;
			break;
		}
	}
	/* While an upload commits the client only waits for its answer: what
	 * is queued now (a ticket) leaves with the response, in one send. */
	if (c->state != ST_COMMIT)
		conn_flush(c);
	c->advancing = false;
}

static void stash_clear(struct conn *c)
{
	free(c->stash);
	c->stash = NULL;
	c->stash_off = c->stash_len = c->stash_cap = 0;
}

/* Appends to the held-back ciphertext. A paused transport can hand over a
 * socket buffer's worth in 16 KiB pieces: the buffer doubles, and what TLS
 * already took is dropped from the front only when room is needed, so
 * neither appending nor consuming copies the whole stash each time. */
static bool stash_append(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->stash_len + len > c->stash_cap && c->stash_off) {
		memmove(c->stash, c->stash + c->stash_off, c->stash_len - c->stash_off);
		c->stash_len -= c->stash_off;
		c->stash_off = 0;
	}
	if (c->stash_len + len > c->stash_cap) {
		size_t cap = c->stash_cap ? c->stash_cap : 16384;
		while (cap < c->stash_len + len)
			cap *= 2;
		uint8_t *grown = realloc(c->stash, cap);
		if (!grown)
			return false;
		c->stash = grown;
		c->stash_cap = cap;
	}
	memcpy(c->stash + c->stash_len, data, len);
	c->stash_len += len;
	return true;
}

/*
 * Feeds ciphertext (the held-back stash first) to TLS and advances. What TLS
 * did not read (we stopped reading: the store is full or a commit is
 * pending) is kept, and the transport is paused so TCP pushes back.
 */
static void conn_feed(struct conn *c, const uint8_t *data, size_t len)
{
	if (c->stash_len && len && !stash_append(c, data, len)) {
		conn_close(c);
		return;
	}
	bool from_stash = c->stash_len > 0;
	const uint8_t *in = from_stash ? c->stash + c->stash_off : data;
	size_t in_len = from_stash ? c->stash_len - c->stash_off : len;
	tls_session_input(c->tls, in, in_len);
	conn_advance(c);
	size_t left = tls_session_input_left(c->tls);
	tls_session_input(c->tls, NULL, 0); /* lend nothing past this call */
	if (c->state == ST_CLOSING || c->transport_gone)
		left = 0;
	if (left == 0) {
		stash_clear(c);
		if (c->paused && !c->transport_gone) {
			c->paused = false;
			transport_resume(c->tc);
		}
		return;
	}
	if (from_stash) {
		c->stash_off = c->stash_len - left;
	} else if (!data || !stash_append(c, data + (len - left), left)) {
		conn_close(c);
		return;
	}
	if (!c->paused) {
		c->paused = true;
		transport_pause(c->tc);
	}
}

/* After a wake-up (store space, commit, output drained): continue with
 * what is held back, or just advance. */
static void conn_run(struct conn *c)
{
	if (c->transport_gone || c->state == ST_CLOSING)
		return;
	if (c->stash_len || c->paused)
		conn_feed(c, NULL, 0);
	else
		conn_advance(c);
}

/* ---- transport events ---- */

static void *conn_accepted(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
			   socklen_t peer_len)
{
	struct worker *w = ctx;
	(void)peer_len;
	if (atomic_load(&w->stopping) || transport_conn_count(w->transport) > w->cfg->max_connections) {
		counter_add(&w->counters.connections_refused, 1);
		return NULL;
	}
	if (w->handshakes_active >= w->cfg->max_handshakes_in_progress) {
		counter_add(&w->counters.refused_handshakes, 1);
		return NULL;
	}
	uint8_t key[16];
	source_key(peer, key);
	switch (source_admit(&w->sources, key, w->timers.now_ms)) {
	case SOURCE_OK:
		break;
	case SOURCE_TOO_FAST:
		counter_add(&w->counters.refused_rate, 1);
		return NULL;
	case SOURCE_TOO_MANY:
	case SOURCE_TABLE_FULL:
		counter_add(&w->counters.refused_per_source, 1);
		return NULL;
	}
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		source_release(&w->sources, key);
		return NULL;
	}
	memcpy(c->source, key, sizeof key);
	c->in_handshake = true;
	w->handshakes_active++;
	c->w = w;
	c->tc = tc;
	c->file_fd = -1;
	/* Noted before the snapshot is taken: a publish in between costs one
	 * extra check at the first request, never a missed one. */
	c->trust_generation = trust_generation();
	struct tls_server *snapshot = trust_acquire();
	c->tls = tls_session_new(snapshot, tls_out, c);
	tls_server_unref(snapshot); /* the session holds its own reference */
	if (!c->tls) {
		w->handshakes_active--;
		source_release(&w->sources, key);
		free(c);
		return NULL;
	}
	char host[48] = "?";
	uint16_t port = 0;
	if (peer->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)peer;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
		port = ntohs(a->sin_port);
	} else if (peer->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
		port = ntohs(a->sin6_port);
	}
	snprintf(c->peer, sizeof c->peer, "%s:%u", host, port);
	c->next = w->conn_head;
	if (c->next)
		c->next->pprev = &c->next;
	w->conn_head = c;
	c->pprev = &w->conn_head;
	counter_add(&w->counters.connections_accepted, 1);
	counter_add(&w->counters.connections_open, 1);
	c->state = ST_HANDSHAKE;
	timer_for_state(c);
	return c;
}

static void conn_received(void *upper, const uint8_t *data, size_t len)
{
	struct conn *c = upper;
	conn_enter(c);
	if (c->state != ST_CLOSING)
		conn_feed(c, data, len);
	conn_leave(c);
}

static void conn_sent(void *upper)
{
	struct conn *c = upper;
	conn_enter(c);
	size_t rest = c->out_len - c->out_inflight;
	memmove(c->out, c->out + c->out_inflight, rest);
	c->out_len = rest;
	c->out_inflight = 0;
	conn_flush(c);
	out_release(c);
	conn_close_when_flushed(c);
	if (c->state == ST_HEAD && !c->head_started && !c->out_len && !c->stash_len)
		conn_idle_trim(c);
	conn_run(c);
	conn_leave(c);
}

static void conn_closed(void *upper, int err)
{
	struct conn *c = upper;
	conn_enter(c);
	(void)err;
	c->transport_gone = true;
	c->out_inflight = 0;
	if (c->state != ST_COMMIT)
		upload_drop(c);
	timer_disarm(&c->timer);
	conn_leave(c);
}

static void conn_free(struct conn *c)
{
	handshake_over(c);
	source_release(&c->w->sources, c->source);
	upload_drop(c);
	timer_disarm(&c->timer);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	counter_add(&c->w->counters.connections_open, (uint64_t)-1);
	tls_session_free(c->tls);
	stash_clear(c);
	buf_pool_give(&c->w->in_bufs, c->buf);
	if (!c->out_inflight)
		buf_pool_give(&c->w->out_bufs, c->out);
	free(c);
}

void conn_shutdown_all(struct worker *w)
{
	struct conn *c = w->conn_head;
	while (c) {
		struct conn *next = c->next;
		conn_enter(c);
		c->keep_alive = false;
		/* Idle or still shaking hands: nothing is lost by closing now. */
		if (c->state == ST_HANDSHAKE || (c->state == ST_HEAD && !c->head_started))
			conn_close(c);
		conn_leave(c);
		c = next;
	}
}

const struct transport_events conn_events = {
	.accepted = conn_accepted,
	.received = conn_received,
	.sent = conn_sent,
	.closed = conn_closed,
};

void conn_abort_all(struct worker *w)
{
	struct conn *c = w->conn_head;
	while (c) {
		struct conn *next = c->next;
		conn_enter(c);
		if (!c->transport_gone)
			transport_abort(c->tc);
		conn_leave(c);
		c = next;
	}
}
