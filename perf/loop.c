/* One simulator thread: a single-threaded event loop, each connection a
 * small state machine (connect, TLS handshake, send a PUT, read the
 * answer). One loop keeps thousands of agents in flight on one core, so the
 * load generator does not need as many cores as the server it measures.
 * The bytes travel through an I/O (io.h): kernel sockets, or beacond's own
 * TCP stack over DPDK; everything here is the same for both. */
#include "io.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define RECORD 16384	     /* bytes per wolfSSL_write: one TLS record */
#define IDLE_PENDING 64	     /* idle mode: handshakes in flight at once */
#define RETRY_NS 10000000ULL /* after an error, wait 10 ms before the next */
#define SCAN_NS 20000000ULL  /* how often deadlines are checked */
#define QUEUE_CAP (1u << 20) /* open loop: arrivals waiting for a slot */

enum conn_state { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_SEND, ST_RECV, ST_IDLE };

/* Response framing once the head is parsed. */
enum body_framing { BODY_HEAD, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

struct conn {
	enum conn_state state;
	struct io_conn *ic; /* NULL: no connection */
	WOLFSSL *ssl;
	unsigned agent;	      /* index into the thread's agents */
	uint64_t start_ns;    /* latency clock: arrival or start of work */
	uint64_t deadline_ns; /* 0: none */
	uint64_t retry_ns;    /* ST_FREE after an error: restart then */
	/* --stages: when connect() was called, the TCP handshake completed
	 * and the TLS handshake completed (0 until then), and the time spent
	 * inside wolfSSL_connect: the client's own share of the handshake */
	uint64_t connect_ns, established_ns, handshake_ns, hs_work_ns;
	bool open_counted;
	unsigned uploads_done; /* on this connection: for error reports */
	/* request: the record being written must be retried unchanged */
	unsigned char *stage; /* head + first body bytes, one record */
	const unsigned char *wptr;
	size_t wlen;
	const unsigned char *body;
	size_t body_len, body_off;
	/* response */
	char resp[2048];
	size_t resp_len;
	int status;
	enum body_framing framing;
	long long body_left;
	bool close_after;
	/* GET mode: what this request must get, and what it got */
	int want_status;
	long long content_length; /* -1: none in the head */
	long long body_rx;
};

struct worker {
	struct sim_thread *t;
	const struct sim_options *o;
	WOLFSSL_CTX *ctx;
	const struct io_ops *io_ops;
	struct io *io;
	struct conn *conns;
	unsigned nconns;
	unsigned *free_slots, nfree; /* open loop: slots with no connection */
	unsigned *idle_slots, nidle; /* open loop: keep-alive conns waiting */
	unsigned nagents, next_agent;
	WOLFSSL_SESSION **sessions; /* resume mode, per agent */
	uint64_t seq;		    /* uploads named by this thread */
	unsigned next_path;	    /* GET keep-alive: device of the next path */
	uint64_t name_base;	    /* unique per run: names never repeat */
	uint64_t rng;
	bool open_loop;
	uint64_t *queue; /* open loop: arrival times */
	unsigned qhead, qlen;
	uint64_t next_arrival;
	double mean_gap_ns;
	unsigned idle_started, idle_pending;
};

static _Atomic unsigned err_reports;

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t rand64(struct worker *w)
{
	/* xorshift64*: cheap, and each thread has its own state */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 2685821657736338717ULL;
}

static double rand_unit(struct worker *w)
{
	return (double)(rand64(w) >> 11) / 9007199254740992.0;
}

static void count(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* The first few failures are printed with their reason: a count alone does
 * not say why a server refuses. */
static void report_error(enum err_kind kind, const char *what)
{
	if (atomic_fetch_add(&err_reports, 1) < 5)
		fprintf(stderr, "agentsim: %s error: %s\n", err_kind_names[kind], what);
}

static bool claim_upload(struct worker *w)
{
	if (atomic_load_explicit(&sim_stop, memory_order_relaxed))
		return false;
	if (w->o->requests == 0)
		return true;
	return atomic_fetch_add(&sim_started, 1) < w->o->warmup + w->o->requests;
}

/* Agent indices of thread t are t, t + T, t + 2T, ...: no two threads share
 * an agent, so per-agent sessions need no lock. */
static unsigned global_agent(const struct worker *w, unsigned local)
{
	return w->t->index + local * w->o->threads;
}

static size_t pick_body_len(struct worker *w)
{
	const struct sim_options *o = w->o;
	if (o->body_min >= o->body_max)
		return o->body_max;
	/* log-uniform: inventories are mostly small, a few are large */
	double lo = log((double)(o->body_min ? o->body_min : 1));
	double hi = log((double)o->body_max);
	return (size_t)exp(lo + (hi - lo) * rand_unit(w));
}

static void conn_close(struct worker *w, struct conn *c, bool keep_session)
{
	if (c->ssl) {
		if (keep_session && w->sessions) {
			WOLFSSL_SESSION *s = wolfSSL_get1_session(c->ssl);
			if (s) {
				if (w->sessions[c->agent])
					wolfSSL_SESSION_free(w->sessions[c->agent]);
				w->sessions[c->agent] = s;
			}
		}
		if (wolfSSL_is_init_finished(c->ssl))
			wolfSSL_shutdown(c->ssl); /* close_notify, no wait */
		wolfSSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->ic)
		w->io_ops->release(c->ic);
	c->ic = NULL;
	if (c->open_counted)
		count(&w->t->stats.open_conns, (uint64_t)-1);
	c->open_counted = false;
	c->state = ST_FREE;
	c->deadline_ns = 0;
}

static void slot_released(struct worker *w, struct conn *c);

/* Open loop: a waiting keep-alive connection that fails leaves the stack. */
static void idle_slot_remove(struct worker *w, const struct conn *c)
{
	unsigned slot = (unsigned)(c - w->conns);
	for (unsigned i = 0; i < w->nidle; i++)
		if (w->idle_slots[i] == slot) {
			w->idle_slots[i] = w->idle_slots[--w->nidle];
			return;
		}
}

/* One request finished, answered or failed: whether it is counted, by its
 * place in the order of all finishes, so that --requests R after --warmup
 * N counts exactly R. The one that ends the warm-up opens the window. */
static bool finished_in_window(const struct sim_options *o)
{
	if (!o->warmup)
		return true;
	uint64_t i = atomic_fetch_add(&sim_finished, 1);
	if (i + 1 == o->warmup) {
		atomic_store(&sim_window_ns, now_ns());
		atomic_store(&sim_measuring, true);
	}
	return i >= o->warmup;
}

static void conn_fail_as(struct worker *w, struct conn *c, enum err_kind kind, const char *why,
			 bool counted)
{
	/* a wrong status comes over a sound TLS session: keep it to resume */
	bool keep = kind == ERR_STATUS && w->o->mode == MODE_RESUME;
	bool was_idle = c->state == ST_IDLE;
	if (counted)
		count(&w->t->stats.errors[kind], 1);
	report_error(kind, why);
	if (was_idle && w->open_loop)
		idle_slot_remove(w, c);
	if (w->o->mode == MODE_IDLE && !was_idle)
		w->idle_pending--;
	conn_close(w, c, keep);
	c->retry_ns = now_ns() + RETRY_NS;
	slot_released(w, c);
}

static void conn_fail(struct worker *w, struct conn *c, enum err_kind kind, const char *why)
{
	conn_fail_as(w, c, kind, why, finished_in_window(w->o));
}

static void conn_fail_ssl(struct worker *w, struct conn *c, enum err_kind kind, int err)
{
	char buf[WOLFSSL_MAX_ERROR_SZ];
	wolfSSL_ERR_error_string_n((unsigned long)err, buf, sizeof buf);
	conn_fail(w, c, kind, buf);
}

/* A wolfSSL object for one connection, holding the agent's own certificate
 * and key and, in resume mode, the agent's last session. */
static WOLFSSL *new_ssl(struct worker *w, struct conn *c)
{
	const struct agent_cred *cred = &w->t->agents->creds[global_agent(w, c->agent)];
	WOLFSSL *ssl = wolfSSL_new(w->ctx);
	if (!ssl)
		return NULL;
	if (wolfSSL_use_certificate_buffer(ssl, cred->cert, cred->cert_len,
					   WOLFSSL_FILETYPE_ASN1) != WOLFSSL_SUCCESS ||
	    wolfSSL_use_PrivateKey_buffer(ssl, cred->key, cred->key_len, WOLFSSL_FILETYPE_ASN1) !=
		    WOLFSSL_SUCCESS ||
	    w->io_ops->attach(c->ic, ssl) < 0) {
		wolfSSL_free(ssl);
		return NULL;
	}
	if (w->o->sni)
		wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, w->o->sni,
			       (unsigned short)strlen(w->o->sni));
	if (w->sessions && w->sessions[c->agent])
		wolfSSL_set_session(ssl, w->sessions[c->agent]);
	return ssl;
}

static void conn_drive(struct worker *w, struct conn *c);

/* Start a new connection in slot c; its latency clock starts at start_ns
 * (the arrival time in open loop). */
static void conn_start(struct worker *w, struct conn *c, uint64_t start_ns)
{
	c->agent = w->next_agent++ % w->nagents;
	c->start_ns = start_ns;
	c->connect_ns = now_ns();
	c->deadline_ns = c->connect_ns + (uint64_t)(w->o->timeout_s * 1e9);
	c->retry_ns = 0;
	c->established_ns = c->handshake_ns = c->hs_work_ns = 0;
	c->ic = w->io_ops->connect(w->io, c);
	if (!c->ic) {
		conn_fail(w, c, ERR_CONNECT, strerror(errno));
		return;
	}
	c->ssl = new_ssl(w, c);
	if (!c->ssl) {
		conn_fail(w, c, ERR_HANDSHAKE, "cannot set up the agent's TLS object");
		return;
	}
	c->open_counted = true;
	count(&w->t->stats.open_conns, 1);
	c->uploads_done = 0;
	c->state = ST_CONNECTING;
}

/* --path with each {device} replaced by the device's name. */
static int expand_path(const char *tmpl, const char *device, char *out, size_t len)
{
	static const char mark[] = "{device}";
	size_t n = 0;
	for (const char *p = tmpl; *p;) {
		const char *piece = p;
		size_t plen = 1;
		if (strncmp(p, mark, sizeof mark - 1) == 0) {
			piece = device;
			plen = strlen(device);
			p += sizeof mark - 1;
		} else {
			p++;
		}
		if (n + plen >= len)
			return -1;
		memcpy(out + n, piece, plen);
		n += plen;
	}
	out[n] = '\0';
	return (int)n;
}

/* A poll from an agent whose copy is out of date carries the validators of
 * an older version: the answer must be the whole file. */
#define STALE_DATE "Sat, 01 Jan 2000 00:00:00 GMT"
#define STALE_TAG "\"0-0-0\""

/* GET mode: the request head alone (no body); whether the agent is up to
 * date is drawn per request, and decides the status it must get. */
static int get_head(struct worker *w, struct conn *c, char *out, size_t len)
{
	const struct sim_options *o = w->o;
	char device[32], path[1024], cond[512];
	/* keep-alive: one connection carries many agents' polls (a proxy's),
	 * so every device's file is asked for, not only the connection's */
	unsigned agent = o->mode == MODE_KEEPALIVE ? w->next_path++ % w->nagents : c->agent;
	agent_name(global_agent(w, agent), device, sizeof device);
	if (expand_path(o->path, device, path, sizeof path) < 0)
		return -1;
	bool conditional = o->if_modified_since || o->if_none_match;
	bool stale = conditional && rand_unit(w) < o->stale;
	c->want_status = conditional && !stale ? 304 : 200;
	int n = 0;
	cond[0] = '\0';
	if (o->if_none_match)
		n = snprintf(cond, sizeof cond, "If-None-Match: %s\r\n",
			     stale ? STALE_TAG : o->if_none_match);
	if (o->if_modified_since && n >= 0 && (size_t)n < sizeof cond)
		snprintf(cond + n, sizeof cond - (size_t)n, "If-Modified-Since: %s\r\n",
			 stale ? STALE_DATE : o->if_modified_since);
	return snprintf(out, len,
			"GET %s HTTP/1.1\r\n"
			"Host: %s\r\n"
			"User-Agent: agentsim\r\n"
			"%s%s\r\n",
			path, o->host, cond,
			o->mode == MODE_KEEPALIVE ? "" : "Connection: close\r\n");
}

static void reset_response(struct worker *w, struct conn *c, uint64_t start_ns)
{
	c->wptr = c->stage;
	c->start_ns = start_ns;
	c->deadline_ns = now_ns() + (uint64_t)(w->o->timeout_s * 1e9);
	c->resp_len = 0;
	c->framing = BODY_HEAD;
	c->close_after = false;
	c->content_length = -1;
	c->body_rx = 0;
	c->state = ST_SEND;
}

/* Lay out the request head and the first body bytes as one record. */
static void begin_request(struct worker *w, struct conn *c, uint64_t start_ns)
{
	const struct sim_options *o = w->o;
	const struct body_pool *pool = w->t->bodies;
	char name[32];

	if (!c->stage)
		c->stage = malloc(RECORD);
	if (o->get) {
		int head = get_head(w, c, (char *)c->stage, RECORD);
		c->body_len = c->body_off = 0;
		c->wlen = head > 0 && head < RECORD ? (size_t)head : 0;
		reset_response(w, c, start_ns);
		if (!c->wlen)
			conn_fail(w, c, ERR_PROTOCOL, "request head too long for --path");
		return;
	}
	agent_name(global_agent(w, c->agent), name, sizeof name);
	c->body_len = pick_body_len(w);
	c->body = pool->bytes + rand64(w) % (pool->len - c->body_len + 1);
	c->body_off = 0;
	uint64_t n = w->name_base + w->seq++ * o->threads + w->t->index;
	int head = snprintf((char *)c->stage, RECORD,
			    "PUT /ManageSoftRL/Inventories/%s-%llu.ndi HTTP/1.1\r\n"
			    "Host: %s\r\n"
			    "User-Agent: agentsim\r\n"
			    "Content-Type: application/octet-stream\r\n"
			    "Content-Length: %zu\r\n"
			    "%s\r\n",
			    name, (unsigned long long)n, o->host, c->body_len,
			    o->mode == MODE_KEEPALIVE ? "" : "Connection: close\r\n");
	size_t first = RECORD - (size_t)head;
	if (first > c->body_len)
		first = c->body_len;
	memcpy(c->stage + head, c->body, first);
	c->body_off = first;
	c->wlen = (size_t)head + first;
	reset_response(w, c, start_ns);
}

/* Start another upload in slot c if the run wants more: closed loop only. */
static void closed_loop_next(struct worker *w, struct conn *c)
{
	if (w->open_loop || w->o->mode == MODE_IDLE)
		return;
	if (c->state == ST_FREE) {
		if (claim_upload(w))
			conn_start(w, c, now_ns());
	} else if (claim_upload(w)) {
		begin_request(w, c, now_ns());
	} else {
		conn_close(w, c, false);
	}
}

static void slot_released(struct worker *w, struct conn *c)
{
	if (w->open_loop)
		w->free_slots[w->nfree++] = (unsigned)(c - w->conns);
	/* closed loop: a failed slot restarts from the deadline scan after
	 * RETRY_NS, so a refusing server does not make us spin */
}

static bool status_expected(const struct sim_options *o, int status)
{
	for (int i = 0; i < o->n_expect; i++)
		if (o->expect[i] == status)
			return true;
	return false;
}

/* GET mode: the status the poll had to get, and a body of the length the
 * head announced (and --expect-length asked for); a 304 has none. Returns
 * why not, or NULL. */
static const char *get_answer_wrong(const struct worker *w, const struct conn *c, char *why,
				    size_t len)
{
	long long want_len = c->status == 304 ? 0 : w->o->expect_length;
	if (c->status != c->want_status)
		snprintf(why, len, "HTTP status %d, not %d", c->status, c->want_status);
	else if (c->status == 200 && c->content_length < 0)
		snprintf(why, len, "a 200 without Content-Length");
	else if (c->content_length >= 0 && c->body_rx != c->content_length)
		snprintf(why, len, "%lld body bytes, Content-Length %lld", c->body_rx,
			 c->content_length);
	else if (want_len >= 0 && c->body_rx != want_len)
		snprintf(why, len, "HTTP %d with %lld body bytes, not %lld", c->status, c->body_rx,
			 want_len);
	else
		return NULL;
	return why;
}

/* --stages: an upload that came with its connection, cut at its instants;
 * later uploads on a kept-alive connection have no handshake to cut at.
 * The handshake's wall time less the client's work inside wolfSSL_connect
 * is the wait for the server's first flight. */
static void stages_record(struct worker *w, struct conn *c)
{
	uint64_t done = now_ns(), hs = c->handshake_ns;
	c->handshake_ns = 0;
	if (!hs || !c->established_ns || c->connect_ns < c->start_ns ||
	    hs - c->established_ns < c->hs_work_ns)
		return;
	struct stage_record r = {.total_us = (uint32_t)((done - c->start_ns) / 1000)};
	r.us[STAGE_CLIENT_WAIT] = (uint32_t)((c->connect_ns - c->start_ns) / 1000);
	r.us[STAGE_TCP] = (uint32_t)((c->established_ns - c->connect_ns) / 1000);
	r.us[STAGE_SERVER_FIRST] = (uint32_t)((hs - c->established_ns - c->hs_work_ns) / 1000);
	r.us[STAGE_CLIENT_HS] = (uint32_t)(c->hs_work_ns / 1000);
	r.us[STAGE_RESPONSE] = (uint32_t)((done - hs) / 1000);
	stage_log_add(&w->t->stages, &r);
}

static void upload_done(struct worker *w, struct conn *c)
{
	uint64_t us = (now_ns() - c->start_ns) / 1000;
	char why[96];
	bool counted = finished_in_window(w->o);
	if (c->status == 503 && counted)
		count(&w->t->stats.http_503, 1);
	if (w->o->get ? get_answer_wrong(w, c, why, sizeof why) != NULL
		      : !status_expected(w->o, c->status)) {
		if (!w->o->get)
			snprintf(why, sizeof why, "HTTP status %d", c->status);
		bool status_wrong = !w->o->get || c->status != c->want_status;
		conn_fail_as(w, c, status_wrong ? ERR_STATUS : ERR_PROTOCOL, why, counted);
		return;
	}
	c->uploads_done++;
	if (counted && w->o->stages)
		stages_record(w, c);
	if (counted) {
		hist_add(&w->t->latency, us);
		count(&w->t->stats.uploads, 1);
		count(&w->t->stats.body_bytes, w->o->get ? (uint64_t)c->body_rx : c->body_len);
		if (c->status == 200 || c->status == 304)
			count(c->status == 200 ? &w->t->stats.http_200 : &w->t->stats.http_304, 1);
	}
	if (w->o->mode != MODE_KEEPALIVE || c->close_after) {
		conn_close(w, c, w->o->mode == MODE_RESUME);
		if (w->open_loop)
			w->free_slots[w->nfree++] = (unsigned)(c - w->conns);
		else
			closed_loop_next(w, c);
		return;
	}
	c->state = ST_IDLE;
	c->deadline_ns = 0;
	if (w->open_loop)
		w->idle_slots[w->nidle++] = (unsigned)(c - w->conns);
	else
		closed_loop_next(w, c);
}

static const char *find_header(const char *head, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
		if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':')
			return p + 3 + n;
	return NULL;
}

/* Parse the response head once it is complete; keep what follows it. */
static int parse_head(struct conn *c)
{
	c->resp[c->resp_len] = '\0';
	char *end = strstr(c->resp, "\r\n\r\n");
	if (!end)
		return c->resp_len + 1 >= sizeof c->resp ? -1 : 0;
	end[2] = '\0';
	/* "HTTP/1.x NNN": any minor version, then the status in decimal. */
	if (strncmp(c->resp, "HTTP/1.", 7) != 0 || c->resp[7] == '\0')
		return -1;
	const char *digits = c->resp + 8;
	char *num_end;
	errno = 0;
	long status = strtol(digits, &num_end, 10);
	if (num_end == digits || errno || status < INT_MIN || status > INT_MAX)
		return -1;
	c->status = (int)status;
	const char *v = find_header(c->resp, "Connection");
	c->close_after = v && strncasecmp(v + strspn(v, " "), "close", 5) == 0;
	const char *te = find_header(c->resp, "Transfer-Encoding");
	const char *cl = find_header(c->resp, "Content-Length");
	size_t rest = c->resp_len - (size_t)(end + 4 - c->resp);
	if (c->status == 204 || c->status == 304) {
		/* never a body, whatever the head says: a 304 may carry the
		 * Content-Length of the whole file (RFC 9110 8.6) */
		c->framing = BODY_LENGTH;
		c->body_left = 0;
		c->body_rx = (long long)rest;
	} else if (te && strncasecmp(te + strspn(te, " "), "chunked", 7) == 0) {
		c->framing = BODY_CHUNKED;
	} else if (cl) {
		c->framing = BODY_LENGTH;
		c->content_length = strtoll(cl, NULL, 10);
		c->body_left = c->content_length - (long long)rest;
		c->body_rx = (long long)rest;
	} else {
		c->framing = BODY_UNTIL_CLOSE;
		c->body_left = 0;
	}
	memmove(c->resp, end + 4, rest);
	c->resp_len = rest;
	return 1;
}

/* Is the response complete? Bodies are small (status pages): chunked is
 * done at its last-chunk marker. */
static bool response_complete(struct conn *c)
{
	switch (c->framing) {
	case BODY_LENGTH:
		return c->body_left <= 0;
	case BODY_CHUNKED:
		c->resp[c->resp_len] = '\0';
		if (strstr(c->resp, "0\r\n\r\n"))
			return true;
		if (c->resp_len > 16) { /* keep a tail to match across reads */
			memmove(c->resp, c->resp + c->resp_len - 16, 16);
			c->resp_len = 16;
		}
		return false;
	default:
		c->resp_len = 0;
		return false;
	}
}

/* Returns false when the connection is finished with (closed or waiting). */
static bool step_recv(struct worker *w, struct conn *c)
{
	/* a body of known length is only counted: read it a record at a time */
	static _Thread_local char sink[RECORD];
	bool to_sink = c->framing == BODY_LENGTH;
	size_t room = to_sink ? sizeof sink : sizeof c->resp - 1 - c->resp_len;
	int n = wolfSSL_read(c->ssl, to_sink ? sink : c->resp + c->resp_len, (int)room);
	if (n <= 0) {
		int err = wolfSSL_get_error(c->ssl, n);
		if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
			return false;
		if (c->framing == BODY_UNTIL_CLOSE) {
			c->close_after = true;
			upload_done(w, c);
			return c->state == ST_SEND;
		}
		char why[96];
		snprintf(why, sizeof why,
			 "server closed before the response to "
			 "upload %u on the connection ended",
			 c->uploads_done + 1);
		conn_fail(w, c, ERR_CLOSED, why);
		return false;
	}
	if (!to_sink)
		c->resp_len += (size_t)n;
	if (c->framing == BODY_HEAD) {
		int r = parse_head(c);
		if (r < 0) {
			conn_fail(w, c, ERR_PROTOCOL, "unparsable response head");
			return false;
		}
		if (r == 0)
			return true;
	} else if (c->framing == BODY_LENGTH) {
		c->body_left -= n;
		c->body_rx += n;
		c->resp_len = 0;
	}
	if (!response_complete(c))
		return true;
	upload_done(w, c);
	/* keep going on this connection: the I/O reports changes only (an
	 * edge), so no news would come for bytes that are already readable */
	return c->state == ST_SEND || c->state == ST_IDLE;
}

/* Say where in the stream the server went away: which upload on the
 * connection, how far into its body. */
static void send_failed(struct worker *w, struct conn *c, int err)
{
	char why[WOLFSSL_MAX_ERROR_SZ + 128], ssl_err[WOLFSSL_MAX_ERROR_SZ];
	wolfSSL_ERR_error_string_n((unsigned long)err, ssl_err, sizeof ssl_err);
	snprintf(why, sizeof why,
		 "%s while sending upload %u on the connection "
		 "(%zu of %zu body bytes handed to TLS)",
		 ssl_err, c->uploads_done + 1, c->body_off - c->wlen, c->body_len);
	conn_fail(w, c, ERR_CLOSED, why);
}

/* Write the pending record, then the next body slice. */
static bool step_send(struct worker *w, struct conn *c)
{
	int n = wolfSSL_write(c->ssl, c->wptr, (int)c->wlen);
	if (n <= 0) {
		int err = wolfSSL_get_error(c->ssl, n);
		if (err != WOLFSSL_ERROR_WANT_WRITE && err != WOLFSSL_ERROR_WANT_READ)
			send_failed(w, c, err);
		return false;
	}
	if (c->body_off < c->body_len) {
		size_t left = c->body_len - c->body_off;
		c->wptr = c->body + c->body_off;
		c->wlen = left < RECORD ? left : RECORD;
		c->body_off += c->wlen;
		return true;
	}
	c->state = ST_RECV;
	return true;
}

static bool step_handshake(struct worker *w, struct conn *c)
{
	uint64_t t0 = w->o->stages ? now_ns() : 0;
	int r = wolfSSL_connect(c->ssl);
	if (w->o->stages)
		c->hs_work_ns += now_ns() - t0;
	if (r != WOLFSSL_SUCCESS) {
		int err = wolfSSL_get_error(c->ssl, r);
		if (err != WOLFSSL_ERROR_WANT_READ && err != WOLFSSL_ERROR_WANT_WRITE)
			conn_fail_ssl(w, c, ERR_HANDSHAKE, err);
		return false;
	}
	c->handshake_ns = now_ns();
	/* in the window by when it happened: a handshake has no answer yet */
	if (atomic_load_explicit(&sim_measuring, memory_order_relaxed)) {
		count(&w->t->stats.handshakes, 1);
		if (wolfSSL_session_reused(c->ssl))
			count(&w->t->stats.resumed, 1);
	}
	if (w->o->mode != MODE_IDLE) {
		begin_request(w, c, c->start_ns);
		return true;
	}
	hist_add(&w->t->latency, (now_ns() - c->start_ns) / 1000);
	c->state = ST_IDLE;
	c->deadline_ns = 0;
	w->idle_pending--;
	atomic_fetch_add(&sim_idle_ready, 1);
	return true;
}

/* An idle connection must stay quiet; reading also takes in the TLS 1.3
 * session tickets the server sends after the handshake. */
static bool step_idle(struct worker *w, struct conn *c)
{
	char buf[512];
	int n = wolfSSL_read(c->ssl, buf, sizeof buf);
	if (n > 0)
		return true;
	int err = wolfSSL_get_error(c->ssl, n);
	if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
		return false;
	conn_fail(w, c, ERR_CLOSED, "server closed an idle connection");
	return false;
}

static void conn_drive(struct worker *w, struct conn *c)
{
	bool more = true;
	while (more) {
		switch (c->state) {
		case ST_HANDSHAKE:
			more = step_handshake(w, c);
			break;
		case ST_SEND:
			more = step_send(w, c);
			break;
		case ST_RECV:
			more = step_recv(w, c);
			break;
		case ST_IDLE:
			more = step_idle(w, c);
			break;
		default:
			more = false;
			break;
		}
	}
}

/* The I/O's news of a connection (io_notify_fn). */
static void conn_event(void *loop, void *upper, enum io_event ev, int err)
{
	struct worker *w = loop;
	struct conn *c = upper;
	if (ev == IO_FAILED) {
		conn_fail(w, c, ERR_CONNECT, strerror(err));
		return;
	}
	if (c->state == ST_CONNECTING) {
		if (ev != IO_CONNECTED)
			return;
		c->established_ns = now_ns();
		c->state = ST_HANDSHAKE;
	}
	conn_drive(w, c);
}

static void scan_deadlines(struct worker *w, uint64_t now)
{
	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		if (c->state == ST_FREE && c->retry_ns && now >= c->retry_ns) {
			c->retry_ns = 0;
			if (!w->open_loop && w->o->mode != MODE_IDLE)
				closed_loop_next(w, c);
		} else if (c->deadline_ns && now > c->deadline_ns) {
			conn_fail(w, c, ERR_TIMEOUT, "deadline passed");
		}
	}
}

/* Idle mode: open connections a few at a time, so a listen backlog of a few
 * hundred does not drop SYNs and turn the set-up into retransmit waits. */
static void idle_fill(struct worker *w)
{
	while (w->idle_started < w->nconns && w->idle_pending < IDLE_PENDING &&
	       !atomic_load(&sim_stop)) {
		struct conn *c = &w->conns[w->idle_started++];
		w->idle_pending++;
		conn_start(w, c, now_ns());
	}
}

static double exp_gap(struct worker *w)
{
	return -log(1.0 - rand_unit(w)) * w->mean_gap_ns;
}

/* Open loop: Poisson arrivals queue up; each takes a waiting keep-alive
 * connection or a free slot. Latency counts from arrival, so a slow server
 * shows as queueing delay rather than as a lower offered rate. */
static void open_loop_tick(struct worker *w, uint64_t now)
{
	while (w->next_arrival <= now && !atomic_load(&sim_stop)) {
		if (w->qlen < QUEUE_CAP)
			w->queue[(w->qhead + w->qlen++) % QUEUE_CAP] = w->next_arrival;
		else
			count(&w->t->stats.errors[ERR_OVERLOAD], 1);
		w->next_arrival += (uint64_t)exp_gap(w);
	}
	while (w->qlen > 0 && (w->nidle > 0 || w->nfree > 0)) {
		uint64_t arrival = w->queue[w->qhead];
		if (!claim_upload(w)) {
			w->qlen = 0;
			return;
		}
		w->qhead = (w->qhead + 1) % QUEUE_CAP;
		w->qlen--;
		if (w->nidle > 0) {
			struct conn *c = &w->conns[w->idle_slots[--w->nidle]];
			begin_request(w, c, arrival);
			conn_drive(w, c);
		} else {
			conn_start(w, &w->conns[w->free_slots[--w->nfree]], arrival);
		}
	}
}

/* --burst: this thread's share of --requests all arrive now, and no more
 * come (latency of each counts from this one instant). */
static void burst_arrivals(struct worker *w, unsigned index)
{
	const struct sim_options *o = w->o;
	uint64_t share = o->requests / o->threads + (index < o->requests % o->threads ? 1 : 0);
	uint64_t t0 = now_ns();
	if (share > QUEUE_CAP)
		share = QUEUE_CAP;
	for (uint64_t i = 0; i < share; i++)
		w->queue[w->qlen++] = t0;
	w->next_arrival = UINT64_MAX;
}

static int worker_init(struct worker *w, struct sim_thread *t)
{
	const struct sim_options *o = t->opt;
	unsigned share =
		o->concurrency / o->threads + (t->index < o->concurrency % o->threads ? 1 : 0);

	w->t = t;
	w->o = o;
	w->ctx = t->wolf_ctx;
	w->nconns = share;
	w->nagents = (t->agents->count - t->index + o->threads - 1) / o->threads;
	w->rng = 0x9e3779b97f4a7c15ULL * (t->index + 1) ^ now_ns();
	/* a new name per upload across runs too: a server that stores by name
	 * (nginx) answers 204, not 201, when a name comes again */
	w->name_base = (uint64_t)time(NULL) * 1000000ULL;
	w->io_ops = t->io;
	w->conns = calloc(share ? share : 1, sizeof *w->conns);
	if (!w->conns || w->io_ops->open(o, conn_event, w, &w->io) < 0)
		return -1;
	if (o->mode == MODE_RESUME)
		/* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sizeof one pointer */
		w->sessions = calloc(w->nagents, sizeof *w->sessions);
	w->open_loop = (o->rate > 0 || o->burst) && o->mode != MODE_IDLE;
	if (w->open_loop) {
		/* At least one element: a thread with no share still runs. */
		w->free_slots = malloc((share ? share : 1) * sizeof *w->free_slots);
		w->idle_slots = malloc((share ? share : 1) * sizeof *w->idle_slots);
		w->queue = malloc(QUEUE_CAP * sizeof *w->queue);
		if (!w->free_slots || !w->idle_slots || !w->queue)
			return -1;
		for (unsigned i = 0; i < share; i++)
			w->free_slots[w->nfree++] = share - 1 - i;
		if (o->burst)
			burst_arrivals(w, t->index);
		else {
			w->mean_gap_ns = 1e9 * o->threads / o->rate;
			w->next_arrival = now_ns() + (uint64_t)exp_gap(w);
		}
	}
	return 0;
}

/* Also after a failed worker_init: each part is released if it was made. */
static void worker_finish(struct worker *w)
{
	for (unsigned i = 0; w->conns && i < w->nconns; i++) {
		conn_close(w, &w->conns[i], false);
		free(w->conns[i].stage);
	}
	for (unsigned i = 0; w->sessions && i < w->nagents; i++)
		if (w->sessions[i])
			wolfSSL_SESSION_free(w->sessions[i]);
	free(w->sessions);
	free(w->conns);
	free(w->free_slots);
	free(w->idle_slots);
	free(w->queue);
	if (w->io)
		w->io_ops->close(w->io);
}

static int poll_timeout_ms(const struct worker *w, uint64_t now)
{
	if (!w->open_loop || w->next_arrival <= now)
		return w->open_loop ? 0 : 10;
	uint64_t ms = (w->next_arrival - now + 999999) / 1000000;
	return ms > 10 ? 10 : (int)ms;
}

void *sim_thread_run(void *arg)
{
	struct sim_thread *t = arg;
	struct worker w = {0};
	uint64_t next_scan = now_ns() + SCAN_NS;

	if (worker_init(&w, t) < 0) {
		worker_finish(&w);
		t->failed = 1;
		/* the run cannot be what was asked: end it, do not wait on it */
		atomic_store(&sim_stop, true);
		return NULL;
	}
	if (t->opt->mode != MODE_IDLE && !w.open_loop)
		for (unsigned i = 0; i < w.nconns; i++)
			closed_loop_next(&w, &w.conns[i]);
	while (!atomic_load_explicit(&sim_stop, memory_order_relaxed)) {
		uint64_t now = now_ns();
		if (t->opt->mode == MODE_IDLE)
			idle_fill(&w);
		if (w.open_loop)
			open_loop_tick(&w, now);
		w.io_ops->wait(w.io, poll_timeout_ms(&w, now));
		now = now_ns();
		if (now >= next_scan) {
			scan_deadlines(&w, now);
			next_scan = now + SCAN_NS;
		}
	}
	worker_finish(&w);
	return NULL;
}
