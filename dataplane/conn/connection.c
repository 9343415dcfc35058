/*
 * The connection layer (conn/conn.h): transport events in, ciphertext fed
 * to TLS with back-pressure, the handshake, output sent once per worker
 * turn, closing, timers and buffers. HTTP is http/http1.c's.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/proxy.h"
#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/snapshot.h"
#include "conn/conn.h"
#include "worker-internal.h"

#define LINGER_MS 2000

static void conn_free(struct conn *c);

/* ---- invariants ----
 *
 * Checked with assert: on in every build the tests run (meson's default
 * b_ndebug=if-release keeps NDEBUG undefined for the project's default
 * debugoptimized build, and for the sanitizer build); only a release
 * build drops them. */

#define BIT(s) (1u << (s))
static const unsigned conn_moves[] = {
	[CONN_HANDSHAKE] = BIT(CONN_IDLE) | BIT(CONN_CLOSING),
	[CONN_IDLE] = BIT(CONN_HEAD) | BIT(CONN_CLOSING),
	[CONN_HEAD] = BIT(CONN_IDLE) | BIT(CONN_HEAD) | BIT(CONN_BODY) | BIT(CONN_RESPONSE) |
		      BIT(CONN_CLOSING),
	[CONN_BODY] = BIT(CONN_BODY_WAIT) | BIT(CONN_COMMIT) | BIT(CONN_CLOSING),
	[CONN_BODY_WAIT] = BIT(CONN_BODY) | BIT(CONN_CLOSING),
	[CONN_COMMIT] = BIT(CONN_IDLE) | BIT(CONN_HEAD) | BIT(CONN_CLOSING),
	[CONN_RESPONSE] = BIT(CONN_IDLE) | BIT(CONN_HEAD) | BIT(CONN_CLOSING),
	[CONN_CLOSING] = 0,
};

/* What holds between entry points, whatever the state. */
static void conn_check(const struct conn *c)
{
	assert(c->buf_off <= c->buf_len && c->buf_len <= c->buf_cap);
	assert(c->buf || c->buf_len == 0);
	assert(c->out_inflight <= c->out_len && c->out_len <= CONN_OUT_BYTES);
	assert(c->out || c->out_len == 0);
	assert(c->stash_off <= c->stash_len && c->stash_len <= c->stash_cap);
	/* held chunk data points into buf, which must not move under it */
	assert(!c->h1.held_len || (c->buf && c->h1.held >= c->buf &&
				   c->h1.held + c->h1.held_len <= c->buf + c->buf_len));
	assert(!c->in_handshake || c->state == CONN_HANDSHAKE || c->state == CONN_CLOSING);
	assert(!c->callback_owed || c->state == CONN_COMMIT || c->state == CONN_CLOSING);
	/* a handler holds the request from its body or response to its end */
	assert(c->state == CONN_CLOSING ||
	       !c->handler == (c->state == CONN_HANDSHAKE || c->state == CONN_IDLE ||
			       c->state == CONN_HEAD));
	/* paused only while TLS holds back stashed ciphertext */
	assert(!c->paused || c->transport_gone || c->stash_len > c->stash_off);
}

/* ---- lifetime ---- */

/* Every entry point (transport, store and timer callbacks) brackets its
 * work with these, so a connection is freed only once nothing of it is on
 * the stack. */
void conn_enter(struct conn *c)
{
	c->depth++;
}

void conn_leave(struct conn *c)
{
	assert(c->depth > 0);
	conn_check(c);
	if (--c->depth == 0 && c->transport_gone && !c->callback_owed)
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
void conn_flush(struct conn *c)
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

size_t conn_out_room(const struct conn *c)
{
	return CONN_OUT_BYTES - c->out_len;
}

bool conn_write(struct conn *c, const void *data, size_t len)
{
	assert(c->state != CONN_HANDSHAKE);
	const uint8_t *p = data;
	while (len) {
		ssize_t n = tls_session_write(c->tls, p, len);
		if (n <= 0) {
			log_warn("%s: cannot queue %zu response bytes (%s)", c->peer, len,
				 n == TLS_WANT_WRITE ? "send buffer full"
						     : tls_session_error(c->tls));
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* ---- timers ---- */

static void request_timeout(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	conn_enter(c);
	counter_add(&c->w->counters.timeouts, 1);
	switch (c->state) {
	case CONN_HANDSHAKE:
		log_info("%s: %s timed out", c->peer,
			 c->proxy_pending ? "PROXY header" : "TLS handshake");
		conn_close(c);
		break;
	case CONN_IDLE:
		conn_close(c); /* idle keep-alive connection */
		break;
	case CONN_HEAD:
	case CONN_BODY:
	case CONN_BODY_WAIT:
		http1_timed_out(c);
		break;
	default:
		break;
	}
	conn_leave(c);
}

/* Arms the timer of the state: each waiting state has its own bound. */
static void timer_for_state(struct conn *c)
{
	const struct config *cfg = c->w->cfg;
	unsigned ms;
	switch (c->state) {
	case CONN_HANDSHAKE:
		ms = cfg->handshake_timeout_ms;
		break;
	case CONN_IDLE:
		ms = cfg->idle_timeout_ms;
		break;
	case CONN_HEAD:
		ms = cfg->header_timeout_ms;
		break;
	case CONN_BODY:
		ms = cfg->body_timeout_ms;
		break;
	default:
		timer_disarm(&c->timer);
		return;
	}
	timer_arm(&c->w->timers, &c->timer, now_ms(c) + ms, request_timeout);
}

void conn_set_state(struct conn *c, enum conn_state st)
{
	assert(conn_moves[c->state] & BIT(st));
	/* A body waiting for its handler keeps the stall clock it had: the
	 * wait is part of the body's time. */
	bool waiting = st == CONN_BODY_WAIT || (c->state == CONN_BODY_WAIT && st == CONN_BODY);
	c->state = st;
	if (!waiting)
		timer_for_state(c);
}

void conn_rearm_timer(struct conn *c)
{
	timer_for_state(c);
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

static void handler_drop(struct conn *c)
{
	if (c->handler)
		c->handler->drop(c);
}

/* The transport closes once every queued byte went out. */
static void conn_close_when_flushed(struct conn *c)
{
	if (c->state == CONN_CLOSING && !c->out_len && !c->transport_gone)
		transport_close(c->tc);
}

void conn_close(struct conn *c)
{
	if (c->state == CONN_CLOSING)
		return;
	bool handshake_done = c->state != CONN_HANDSHAKE;
	http1_access_log(c);
	handler_drop(c);
	conn_set_state(c, CONN_CLOSING);
	timer_arm(&c->w->timers, &c->timer, now_ms(c) + LINGER_MS, linger_expired);
	if (handshake_done && !c->transport_gone)
		tls_session_shutdown(c->tls); /* close_notify: the peer sees a clean end */
	conn_flush(c);
	conn_close_when_flushed(c);
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
	assert(!c->h1.held_len); /* held points into buf */
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

void conn_idle_trim(struct conn *c)
{
	if (c->buf && c->buf_off == c->buf_len && !c->h1.held_len) {
		buf_pool_give(&c->w->in_bufs, c->buf);
		c->buf = NULL;
		c->buf_cap = c->buf_off = c->buf_len = 0;
	}
	out_release(c);
}

/* What TLS read returned, when it was no bytes: 0 to wait for more
 * ciphertext, -1 once the connection is closing. */
static ssize_t read_ended(struct conn *c, ssize_t n)
{
	if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
		return 0;
	if (n == TLS_FAILED)
		log_info("%s: TLS error: %s", c->peer, tls_session_error(c->tls));
	conn_close(c);
	return -1;
}

ssize_t conn_read(struct conn *c)
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
	return read_ended(c, n);
}

ssize_t conn_read_into(struct conn *c, uint8_t *at, size_t len)
{
	ssize_t n = tls_session_read(c->tls, at, len);
	return n > 0 ? n : read_ended(c, n);
}

/* ---- handshake and trust ---- */

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
		handshake_slot_give(c->w);
	}
}

/* A verdict on a certificate that our issuers signed goes to its device's
 * record (last result, last seen), so an operator sees why a blocked,
 * revoked, wrong-usage, expired or not-yet-valid agent stays out: each is
 * judged on a certificate whose signature verified (verify.c names the
 * device of a dated one only then). Other refusals name no device we know:
 * recording them would let anyone grow the index with made-up names. From
 * the worker's own ring: no lock and no system call on the handshake path. */
static void record_device_seen(struct conn *c, const struct tls_peer *p, bool completed)
{
	bool verdict = completed ? p->result == AUTH_OK
				 : p->result == AUTH_REVOKED || p->result == AUTH_BLOCKED ||
					   p->result == AUTH_WRONG_USAGE ||
					   p->result == AUTH_EXPIRED ||
					   p->result == AUTH_NOT_YET_VALID;
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
	 * Finished) leave with conn_advance's flush, after the request that
	 * may already be here: one send instead of two. */
	handshake_over(c);
	const struct tls_peer *p = tls_session_peer(c->tls);
	record_device_seen(c, p, rc == TLS_OK);
	if (rc != TLS_OK) {
		if (p->result == AUTH_OTHER && !p->device[0] &&
		    strncmp(p->reason, "handshake", 9) == 0)
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
	conn_set_state(c, CONN_IDLE);
	return true;
}

const struct tls_peer *conn_tls_peer(const struct conn *c)
{
	return tls_session_peer(c->tls);
}

/* The connection's peer was admitted by the snapshot of its handshake.
 * When a newer one was published since its last check, it is checked
 * against that: a device revoked, blocked or left without a trusted issuer
 * stops here, at its next request, not when it chooses to disconnect. */
bool conn_peer_still_trusted(struct conn *c)
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
	record_device_seen(c, tls_session_peer(c->tls), false);
	return false;
}

/* ---- the state machine ---- */

static bool step_response(struct conn *c)
{
	return c->handler->writable(c);
}

static void conn_advance(struct conn *c)
{
	if (c->advancing)
		return;
	c->advancing = true;
	bool progress = true;
	while (progress && !c->transport_gone) {
		switch (c->state) {
		case CONN_HANDSHAKE:
			progress = step_handshake(c);
			break;
		case CONN_IDLE:
		case CONN_HEAD:
			progress = http1_step_head(c);
			break;
		case CONN_BODY:
			progress = http1_step_body(c);
			break;
		case CONN_RESPONSE:
			progress = step_response(c);
			break;
		case CONN_BODY_WAIT:
		case CONN_COMMIT:
		case CONN_CLOSING:
			progress = false;
			break;
		}
	}
	/* While an upload commits the client only waits for its answer: what
	 * is queued now (a ticket) leaves with the response, in one send. */
	if (c->state != CONN_COMMIT)
		conn_flush(c);
	c->advancing = false;
}

/* ---- feeding TLS, with back-pressure ---- */

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
	if (c->state == CONN_CLOSING || c->transport_gone)
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

void conn_run(struct conn *c)
{
	if (c->transport_gone || c->state == CONN_CLOSING || c->proxy_pending)
		return;
	if (c->stash_len || c->paused)
		conn_feed(c, NULL, 0);
	else
		conn_advance(c);
}

/* ---- transport events ---- */

static void peer_name(const struct sockaddr *peer, char *out, size_t outlen)
{
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
	snprintf(out, outlen, "%s:%u", host, port);
}

/* A refusal line a peer causes by connecting, within the worker's budget:
 * a flood of bad connections cannot flood the log (the counters have them
 * all). Writes the line (with the count left out before it) or nothing. */
static void log_conn_refusal(struct worker *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void log_conn_refusal(struct worker *w, const char *fmt, ...)
{
	uint64_t left_out = 0;
	if (!tls_log_budget_take(&w->conn_log_budget, TLS_REFUSAL_LOG_PER_S, (uint64_t)time(NULL),
				 &left_out))
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (left_out)
		log_info("%s [%llu such lines left out before this one]", line,
			 (unsigned long long)left_out);
	else
		log_info("%s", line);
}

/* With proxy_protocol on only the balancers in proxy_from may connect: any
 * other peer could otherwise claim any address, and the per-source limits
 * and logs would believe it. */
static bool proxy_peer_allowed(struct worker *w, const struct sockaddr *peer)
{
	const struct config *cfg = w->cfg;
	if (source_in_prefixes(peer, cfg->proxy_from, cfg->proxy_from_count))
		return true;
	char name[64];
	peer_name(peer, name, sizeof name);
	counter_add(&w->counters.proxy_refused, 1);
	log_conn_refusal(w, "%s: refused: not in [server] proxy_from, may not send a PROXY header",
			 name);
	return false;
}

static void *conn_accepted(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
			   socklen_t peer_len)
{
	struct worker *w = ctx;
	(void)peer_len;
	uint8_t key[16];
	/* Behind a balancer the source is known only from the header: its
	 * limits wait for it (proxy_apply). */
	bool proxied = w->cfg->proxy_protocol != 0;
	if (proxied) {
		if (!proxy_peer_allowed(w, peer) || !admit_worker(w))
			return NULL;
		source_key(peer, key);
	} else if (!admit_connection(w, peer, key)) {
		return NULL;
	}
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		if (!proxied)
			source_release(&w->sources, key);
		return NULL;
	}
	memcpy(c->source, key, sizeof key);
	c->source_held = !proxied;
	c->proxy_pending = proxied;
	c->in_handshake = true;
	handshake_slot_take(w);
	c->w = w;
	c->tc = tc;
	/* Noted before the snapshot is taken: a publish in between costs one
	 * extra check at the first request, never a missed one. */
	c->trust_generation = trust_generation();
	struct tls_server *snapshot = trust_acquire();
	c->tls = tls_session_new(snapshot, tls_out, c);
	tls_server_unref(snapshot); /* the session holds its own reference */
	if (!c->tls) {
		handshake_slot_give(w);
		if (!proxied)
			source_release(&w->sources, key);
		free(c);
		return NULL;
	}
	peer_name(peer, c->peer, sizeof c->peer);
	c->next = w->conn_head;
	if (c->next)
		c->next->pprev = &c->next;
	w->conn_head = c;
	c->pprev = &w->conn_head;
	counter_add(&w->counters.connections_accepted, 1);
	counter_add(&w->counters.connections_open, 1);
	c->state = CONN_HANDSHAKE;
	timer_for_state(c);
	return c;
}

/* ---- the PROXY header ---- */

/* The header named the agent: it becomes the connection's peer, and its
 * per-source limits apply now. False when they refuse it (counted). */
static bool proxy_apply(struct conn *c, const struct proxy_header *h)
{
	char balancer[sizeof c->peer];
	memcpy(balancer, c->peer, sizeof balancer);
	if (!h->local) {
		peer_name((const struct sockaddr *)&h->source, c->peer, sizeof c->peer);
		source_key((const struct sockaddr *)&h->source, c->source);
	}
	if (!admit_source(c->w, c->source)) {
		log_conn_refusal(c->w, "%s: refused by the per-source limits (PROXY v%u from %s)",
				 c->peer, h->version, balancer);
		return false;
	}
	c->source_held = true;
	log_debug("%s: PROXY v%u header from %s%s", c->peer, h->version, balancer,
		  h->local ? " (LOCAL: the balancer's own)" : "");
	return true;
}

/* The first bytes of a proxied connection: the header, then TLS. Bytes
 * are gathered in the stash until the header is whole (it is bounded:
 * PROXY_HEADER_MAX); no byte reaches TLS before it is. */
static void proxy_received(struct conn *c, const uint8_t *data, size_t len)
{
	const uint8_t *in = data;
	size_t in_len = len;
	if (c->stash_len) {
		if (!stash_append(c, data, len)) {
			conn_close(c);
			return;
		}
		in = c->stash + c->stash_off;
		in_len = c->stash_len - c->stash_off;
	}
	struct proxy_header h;
	switch (proxy_parse(in, in_len, c->w->cfg->proxy_protocol, &h)) {
	case PROXY_INCOMPLETE:
		if (!c->stash_len && !stash_append(c, data, len))
			conn_close(c);
		return;
	case PROXY_MALFORMED:
		counter_add(&c->w->counters.proxy_refused, 1);
		log_conn_refusal(c->w, "%s: refused: bad PROXY header: %s", c->peer, h.reason);
		conn_close(c);
		return;
	case PROXY_DONE:
		break;
	}
	c->proxy_pending = false;
	if (!proxy_apply(c, &h)) {
		conn_close(c);
		return;
	}
	if (c->stash_len) {
		c->stash_off += h.len;
		conn_feed(c, NULL, 0);
	} else if (len > h.len) {
		conn_feed(c, data + h.len, len - h.len);
	}
}

static void conn_received(void *upper, const uint8_t *data, size_t len)
{
	struct conn *c = upper;
	conn_enter(c);
	if (c->state != CONN_CLOSING && c->proxy_pending)
		proxy_received(c, data, len);
	else if (c->state != CONN_CLOSING)
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
	if (c->state == CONN_IDLE && !c->out_len && !c->stash_len)
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
	if (c->state != CONN_COMMIT)
		handler_drop(c);
	timer_disarm(&c->timer);
	conn_leave(c);
}

static void conn_free(struct conn *c)
{
	assert(c->depth == 0 && c->transport_gone && !c->callback_owed && !c->flush_queued);
	handshake_over(c);
	if (c->source_held)
		source_release(&c->w->sources, c->source);
	handler_drop(c);
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
		c->h1.keep_alive = false;
		/* Idle or still shaking hands: nothing is lost by closing now. */
		if (c->state == CONN_HANDSHAKE || c->state == CONN_IDLE)
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
	.accept_room = admit_room,
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
