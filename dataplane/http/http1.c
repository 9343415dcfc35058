/*
 * HTTP/1.1 framing over a connection's plaintext (http/http1.h): request
 * heads, routing to a handler, body framing, and the one response-head
 * writer. Built with the worker part (dataplane/meson.build): unlike the
 * pure parsers beside it, it works on a struct conn.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/tls.h"
#include "conn/conn.h"
#include "http/http1.h"
#include "timer.h"
#include "worker-internal.h"

/* ---- responses ---- */

/* The status's own counter (beacon/counters.h lists the codes beacond
 * answers with; any other counts as "other"). */
static _Atomic uint64_t *status_counter(struct worker_counters *k, int status)
{
	switch (status) {
	case 200:
		return &k->responses_200;
	case 201:
		return &k->responses_201;
	case 206:
		return &k->responses_206;
	case 304:
		return &k->responses_304;
	case 400:
		return &k->responses_400;
	case 403:
		return &k->responses_403;
	case 404:
		return &k->responses_404;
	case 405:
		return &k->responses_405;
	case 408:
		return &k->responses_408;
	case 411:
		return &k->responses_411;
	case 413:
		return &k->responses_413;
	case 414:
		return &k->responses_414;
	case 416:
		return &k->responses_416;
	case 417:
		return &k->responses_417;
	case 429:
		return &k->responses_429;
	case 431:
		return &k->responses_431;
	case 500:
		return &k->responses_500;
	case 501:
		return &k->responses_501;
	case 503:
		return &k->responses_503;
	case 505:
		return &k->responses_505;
	case 507:
		return &k->responses_507;
	default:
		return &k->responses_other;
	}
}

static void count_status(struct conn *c, int status)
{
	if (status < 200)
		return;
	counter_add(status_counter(&c->w->counters, status), 1);
	if (status >= 500)
		counter_add(&c->w->counters.responses_5xx, 1);
	else if (status >= 400)
		counter_add(&c->w->counters.responses_4xx, 1);
}

/* Headers of every final response head, one list. An upload API's answers
 * are per request and per device: by default never stored by a cache
 * (no-store; a download says otherwise, [download] cache_control), never
 * sniffed into something a browser would run (nosniff), and only ever over
 * TLS (HSTS: a browser pointed at this host keeps to https). */
#define RESPONSE_HEADERS                                                                           \
	"Server: beacond\r\n"                                                                      \
	"Strict-Transport-Security: max-age=31536000\r\n"                                          \
	"X-Content-Type-Options: nosniff\r\n"

/* The Date every final answer carries (RFC 9110 6.6.1), formatted once a
 * second per worker thread. */
static const char *date_now(void)
{
	static _Thread_local int64_t formatted_s = -1;
	static _Thread_local char text[HTTP_DATE_LEN + 1];
	int64_t now = (int64_t)time(NULL);
	if (now != formatted_s) {
		http_date_format(now, text);
		formatted_s = now;
	}
	return text;
}

/* Content-Type and Content-Length, except on a 304: it describes the
 * client's copy, and a length there would be that copy's, not a body's
 * (RFC 9110 8.6, 15.4.5). */
static int body_fields(char *out, size_t cap, const struct http1_response *r)
{
	if (r->status == 304)
		return snprintf(out, cap, "%s", "");
	return snprintf(out, cap, "Content-Type: %s\r\nContent-Length: %" PRIu64 "\r\n",
			r->content_type, r->content_length);
}

bool http1_write_head(struct conn *c, const struct http1_response *r)
{
	char head[1280], body[160];
	const char *reason = http_reason(r->status);
	int n;
	count_status(c, r->status);
	if (r->status >= 200) {
		c->h1.access.status = r->status;
		c->h1.access.out_bytes =
			c->h1.head_only || r->status == 304 ? 0 : r->content_length;
	}
	if (r->status < 200)
		n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n\r\n", r->status, reason);
	else if (body_fields(body, sizeof body, r) < 0)
		n = -1;
	else
		n = snprintf(head, sizeof head,
			     "HTTP/1.1 %d %s\r\n" RESPONSE_HEADERS
			     "Date: %s\r\nCache-Control: %s\r\n"
			     "%s%s%s\r\n",
			     r->status, reason, date_now(),
			     r->cache_control ? r->cache_control : "no-store", body,
			     r->extra ? r->extra : "", r->close ? "Connection: close\r\n" : "");
	return n >= 0 && (size_t)n < sizeof head && conn_write(c, head, (size_t)n);
}

void http1_respond(struct conn *c, int status, const char *extra, const char *body, bool close)
{
	char msg[1024];
	int blen = snprintf(msg, sizeof msg, "%d %s%s%s\n", status, http_reason(status),
			    body ? ": " : "", body ? body : "");
	if (blen < 0 || (size_t)blen >= sizeof msg)
		blen = (int)sizeof msg - 1;
	struct http1_response r = {.status = status,
				   .content_type = "text/plain",
				   .content_length = (uint64_t)blen,
				   .extra = extra,
				   .close = close};
	/* A HEAD's answer has the length a GET's would have, and no body: the
	 * client would read those bytes as the start of the next response. */
	if (!http1_write_head(c, &r) || (!c->h1.head_only && !conn_write(c, msg, (size_t)blen)))
		close = true;
	if (close || !c->h1.keep_alive)
		conn_close(c); /* close_notify leaves in the same send */
	else
		conn_flush(c);
}

void http1_respond_error(struct conn *c, int status, const char *why)
{
	log_info("%s %s: %d %s", c->peer, c->tls ? conn_tls_peer(c)->device : "", status, why);
	const char *extra = NULL;
	if (status == 503 || status == 507)
		extra = "Retry-After: 30\r\n";
	http1_respond(c, status, extra, why, true);
}

void http1_timed_out(struct conn *c)
{
	if (c->state == CONN_HEAD)
		http1_respond_error(c, 408, "request head not received in time");
	else
		http1_respond_error(c, 408, "request body stalled");
}

static const char *method_text(enum http_method m)
{
	static const char *const names[] = {"GET", "HEAD", "PUT", "POST", "OTHER"};
	return m <= HTTP_OTHER ? names[m] : "OTHER";
}

void http1_access_log(struct conn *c)
{
	struct http1_access *a = &c->h1.access;
	if (!a->open)
		return;
	a->open = false;
	if (!c->w->cfg->access_log)
		return;
	char status[8] = "-";
	if (a->status)
		snprintf(status, sizeof status, "%d", a->status);
	const char *device = c->tls ? conn_tls_peer(c)->device : "";
	log_info("access: %s %s %s %s %s in=%" PRIu64 " out=%" PRIu64 " upload=%" PRIu64 " %" PRIu64
		 "ms",
		 c->peer, device[0] ? device : "-", method_text(a->method), a->path, status,
		 c->h1.body_total, a->out_bytes, a->upload_id, (clock_us() - a->started_us) / 1000);
}

/* The access record of a request just read: printable bytes of its
 * target only, so a line cannot be split or forged by the client. */
static void access_begin(struct conn *c, const struct http_request *req)
{
	struct http1_access *a = &c->h1.access;
	size_t n = req->target.n < sizeof a->path - 1 ? req->target.n : sizeof a->path - 1;
	for (size_t i = 0; i < n; i++) {
		char ch = req->target.p[i];
		if (ch <= 0x20 || ch >= 0x7f)
			ch = '?';
		a->path[i] = ch;
	}
	a->path[n] = '\0';
	a->open = true;
	a->method = req->method;
	a->status = 0;
	a->out_bytes = 0;
	a->upload_id = 0;
	a->started_us = clock_us();
	c->h1.body_total = 0;
}

void http1_request_done(struct conn *c)
{
	http1_access_log(c);
	c->handler = NULL;
	bool next_started = c->buf_off < c->buf_len;
	if (!c->h1.keep_alive) {
		conn_close(c);
		return;
	}
	conn_set_state(c, next_started ? CONN_HEAD : CONN_IDLE);
	conn_idle_trim(c);
}

/* ---- request heads ---- */

/* A GET or HEAD with a body: nothing here reads it, and left in the stream
 * it would be parsed as the next request (a PUT smuggled inside a GET).
 * Refused, and the connection closes with the body unread. */
static bool request_has_stray_body(const struct http_request *req)
{
	return (req->method == HTTP_GET || req->method == HTTP_HEAD) &&
	       (req->content_length > 0 || req->chunked);
}

/* A peer whose trust changed since its last request is refused before
 * anything of the request is acted on. */
static bool refuse_untrusted_peer(struct conn *c)
{
	if (conn_peer_still_trusted(c))
		return false;
	char why[192];
	snprintf(why, sizeof why, "%s (trust changed while this connection was open)",
		 conn_tls_peer(c)->reason);
	http1_respond_error(c, 403, why);
	return true;
}

static void route_request(struct conn *c, const struct http_request *req)
{
	c->h1.keep_alive = req->keep_alive;
	c->h1.head_only = req->method == HTTP_HEAD;
	if (refuse_untrusted_peer(c))
		return;
	if (request_has_stray_body(req)) {
		http1_respond_error(c, 400,
				    "GET and HEAD take no body (Content-Length or chunked)");
		return;
	}
	struct http_route route;
	int rc = http_route_parse(&req->target, &route);
	if (rc < 0) {
		http1_respond(c, -rc, NULL, -rc == 404 ? "no such path" : "bad file name",
			      req->content_length > 0 || req->chunked);
		return;
	}
	c->handler = route.kind == ROUTE_UPLOAD	    ? &upload_handler
		     : route.kind == ROUTE_MANIFEST ? &manifest_handler
						    : &download_handler;
	c->handler->head(c, req, &route);
}

static void dispatch(struct conn *c, const struct http_request *req)
{
	counter_add(&c->w->counters.requests, 1);
	access_begin(c, req);
	route_request(c, req);
	/* Answered from the head and kept alive (a 404, a 403): the request is
	 * done, so the connection waits for the next one under idle_timeout,
	 * or under a fresh header_timeout when it has already begun. Left in
	 * HEAD, the old head's clock ran on and a quiet keep-alive connection
	 * got a 408 header_timeout after the answer. */
	if (c->state == CONN_HEAD)
		http1_request_done(c);
	else if (c->state == CONN_IDLE)
		c->handler = NULL;
}

bool http1_step_head(struct conn *c)
{
	const struct config *cfg = c->w->cfg;
	struct http_limits lim = {.max_target = cfg->max_target, .max_headers = cfg->max_headers};
	for (;;) {
		if (c->buf && c->buf_len > c->buf_off) {
			if (c->state == CONN_IDLE)
				conn_set_state(c, CONN_HEAD); /* the header timeout runs */
			struct http_request req;
			c->h1.head_only = false; /* until this head says HEAD */
			size_t avail = c->buf_len - c->buf_off;
			if (avail > cfg->max_header_bytes)
				avail = cfg->max_header_bytes;
			int rc = http_request_parse((const char *)c->buf + c->buf_off, avail, &lim,
						    &req);
			if (rc < 0) {
				http1_respond_error(c, -rc, "malformed request");
				return false;
			}
			if (rc > 0) {
				c->buf_off += (size_t)rc;
				dispatch(c, &req);
				return c->state != CONN_CLOSING;
			}
			if (avail >= cfg->max_header_bytes) {
				http1_respond_error(c, 431, "request head too large");
				return false;
			}
		}
		ssize_t n = conn_read(c);
		if (n <= 0)
			return false;
	}
}

/* ---- request bodies ---- */

void http1_read_body(struct conn *c, const struct http_request *req)
{
	if (req->expect_continue) {
		struct http1_response cont = {.status = 100};
		if (!http1_write_head(c, &cont)) {
			conn_close(c);
			return;
		}
	}
	struct http1 *h = &c->h1;
	h->framing = req->chunked ? HTTP1_CHUNKED : HTTP1_LENGTH;
	h->body_left = req->chunked ? 0 : (uint64_t)req->content_length;
	h->body_total = 0;
	h->held = NULL;
	h->held_len = 0;
	http_chunked_init(&h->chunk);
	conn_set_state(c, CONN_BODY);
	if (req->expect_continue)
		conn_flush(c); /* the client waits for it before it sends the body */
	if (h->framing == HTTP1_LENGTH && h->body_left == 0)
		c->handler->body_done(c); /* an empty file is an upload too */
}

void http1_body_wake(struct conn *c)
{
	conn_enter(c);
	if (c->state == CONN_BODY_WAIT)
		conn_set_state(c, CONN_BODY);
	conn_run(c);
	conn_leave(c);
}

/* Hands body bytes to the handler; false when it is full or failed. */
static bool body_give(struct conn *c, const uint8_t *data, size_t len, size_t *taken)
{
	ssize_t n = c->handler->body(c, data, len);
	if (n < 0)
		return false; /* answered */
	*taken = (size_t)n;
	c->h1.body_total += (uint64_t)n;
	if ((size_t)n < len)
		conn_set_state(c, CONN_BODY_WAIT);
	return (size_t)n == len;
}

static bool body_feed_length(struct conn *c)
{
	struct http1 *h = &c->h1;
	size_t avail = c->buf_len - c->buf_off;
	size_t want = avail < h->body_left ? avail : (size_t)h->body_left;
	size_t taken = 0;
	bool all = body_give(c, c->buf + c->buf_off, want, &taken);
	c->buf_off += taken;
	h->body_left -= taken;
	if (c->state == CONN_CLOSING)
		return false;
	if (h->body_left == 0) {
		c->handler->body_done(c);
		return false;
	}
	return all;
}

static bool body_feed_chunked(struct conn *c)
{
	struct http1 *h = &c->h1;
	const struct config *cfg = c->w->cfg;
	for (;;) {
		if (h->held_len) {
			size_t taken = 0;
			bool all = body_give(c, h->held, h->held_len, &taken);
			h->held += taken;
			h->held_len -= taken;
			if (!all)
				return false;
		}
		if (h->body_total > cfg->max_body_bytes) {
			http1_respond_error(c, 413, "chunked body over the size limit");
			return false;
		}
		if (c->buf_off == c->buf_len)
			return true;
		const char *data = NULL;
		size_t dlen = 0;
		bool done = false;
		long used = http_chunked_decode(&h->chunk, (const char *)c->buf + c->buf_off,
						c->buf_len - c->buf_off, &data, &dlen, &done);
		if (used < 0) {
			http1_respond_error(c, 400, "malformed chunked body");
			return false;
		}
		c->buf_off += (size_t)used;
		h->held = (const uint8_t *)data;
		h->held_len = data ? dlen : 0;
		if (done && !h->held_len) {
			c->handler->body_done(c);
			return false;
		}
	}
}

/* A Content-Length body with nothing buffered: TLS decrypts straight into
 * the handler's window, one copy fewer than through the connection's
 * buffer. Never reads past the body, so a pipelined request stays in TLS.
 * Returns like conn_read. */
static ssize_t body_read_direct(struct conn *c)
{
	struct http1 *h = &c->h1;
	uint8_t *at;
	ssize_t room = c->handler->body_window(c, &at);
	if (room <= 0) {
		if (room == 0)
			conn_set_state(c, CONN_BODY_WAIT);
		return room < 0 ? -1 : 0;
	}
	size_t want = (uint64_t)room < h->body_left ? (size_t)room : (size_t)h->body_left;
	ssize_t n = conn_read_into(c, at, want);
	if (n <= 0)
		return n;
	if (c->handler->body_wrote(c, (size_t)n) < 0)
		return -1;
	h->body_total += (uint64_t)n;
	h->body_left -= (uint64_t)n;
	if (h->body_left == 0) {
		c->handler->body_done(c);
		return -1; /* the body is done: http1_step_body stops */
	}
	return n;
}

static ssize_t body_read(struct conn *c)
{
	if (c->h1.framing == HTTP1_CHUNKED || !c->handler->body_window)
		return conn_read(c);
	return body_read_direct(c);
}

bool http1_step_body(struct conn *c)
{
	struct http1 *h = &c->h1;
	for (;;) {
		if (c->state != CONN_BODY)
			return false; /* the handler is full, or the body ended */
		if (c->buf && (c->buf_off < c->buf_len || h->held_len)) {
			bool more = h->framing == HTTP1_CHUNKED ? body_feed_chunked(c)
								: body_feed_length(c);
			if (!more || c->state != CONN_BODY)
				return false;
		}
		/* `held` points into buf: do not move buf while it is set. */
		if (h->held_len)
			return false;
		ssize_t n = body_read(c);
		if (n <= 0)
			return false;
		conn_rearm_timer(c); /* body bytes arrived: the stall clock restarts */
	}
}
