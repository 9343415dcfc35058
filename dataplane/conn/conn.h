/*
 * conn: one agent connection, the bottom of three layers (as h2o splits
 * lib/common/socket.c, lib/http1.c and lib/handler/):
 *
 *   conn/connection.c   transport events, the TLS handshake, feeding TLS
 *                       with back-pressure (stash, pause), output and its
 *                       one send a turn (flush), closing, timers, buffers;
 *   http/http1.c        HTTP/1.1 framing over the connection's plaintext:
 *                       request heads, bodies (Content-Length or chunked),
 *                       the one response-head writer, routing to a handler;
 *   handlers/           what a request does (upload, download), behind
 *                       struct handler (handlers/handler.h); a handler
 *                       never sees the transport or TLS.
 *
 * Private to the worker part. Everything here runs on the connection's
 * worker thread and advances from callbacks: bytes in, bytes sent, store
 * space, store commit, timer. Nothing blocks.
 *
 * Lifetime: every entry point brackets its work with conn_enter/conn_leave;
 * the struct is freed by the conn_leave that finds nothing of it on the
 * stack, the transport gone and no store callback owed.
 *
 * Memory per connection: the struct and wolfSSL's session (a few KiB) while
 * idle; while a request is active also `buf` (max_header_bytes, at least
 * 16 KiB + one TLS record) and `out` (CONN_OUT_BYTES). Both go back to the
 * worker's pools when the connection goes idle again.
 */
#ifndef BEACON_CONN_H
#define BEACON_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "handlers/handler.h"
#include "http/http1.h"
#include "timer.h"

struct worker;
struct transport_conn;
struct tls_session;
struct tls_peer;

/*
 * Where a connection is. The legal moves, asserted by conn_set_state:
 *
 *   HANDSHAKE -> IDLE | CLOSING
 *   IDLE      -> HEAD | CLOSING
 *   HEAD      -> IDLE | HEAD | BODY | RESPONSE | CLOSING
 *   BODY      -> BODY_WAIT | COMMIT | CLOSING
 *   BODY_WAIT -> BODY | CLOSING
 *   COMMIT    -> IDLE | HEAD | CLOSING
 *   RESPONSE  -> IDLE | HEAD | CLOSING
 *   CLOSING   (final)
 *
 * IDLE and HEAD differ only in their timer: an idle keep-alive connection
 * waits idle_timeout, a started head header_timeout. A request ends in HEAD
 * rather than IDLE when bytes of the next one are already buffered. An
 * answer sent straight from the head (an error, a 404) leaves the state as
 * it was: the next head is parsed from HEAD.
 */
enum conn_state {
	CONN_HANDSHAKE,
	CONN_IDLE,	/* between requests: no byte of the next head yet */
	CONN_HEAD,	/* bytes of a request head have arrived */
	CONN_BODY,	/* streaming a request body to its handler */
	CONN_BODY_WAIT, /* the handler is full: it wakes us (http1_body_wake) */
	CONN_COMMIT,	/* body complete; the handler waits for the store */
	CONN_RESPONSE,	/* the handler sends its response as output drains */
	CONN_CLOSING,	/* last bytes out, then close */
};

struct conn {
	struct worker *w;
	struct transport_conn *tc;
	struct tls_session *tls;
	struct conn *next, **pprev;
	struct conn *flush_next; /* the worker's list of connections to send */
	struct timer timer;
	enum conn_state state;
	unsigned depth; /* entry points on the stack: free only at 0 */

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

	/* The request in progress: its framing, and its handler's state. */
	struct http1 h1;
	const struct handler *handler; /* NULL between requests */
	union {
		struct upload_state upload;
		struct download_state download;
		struct manifest_state manifest;
	} req;

	/* Flags independent of the state. */
	bool in_handshake;	   /* holds one of the worker's handshake slots */
	bool flush_queued;	   /* on the worker's flush list, holding a depth */
	bool paused;		   /* the transport is paused: TLS holds back */
	bool advancing;		   /* conn_advance is on the stack */
	bool transport_gone;	   /* the transport closed: nothing more to send */
	bool callback_owed;	   /* the store owes us a callback: outlive the transport */
	bool proxy_pending;	   /* in HANDSHAKE, the PROXY header not yet read */
	bool source_held;	   /* counted by the per-source limits: release at free */
	uint64_t trust_generation; /* of the newest snapshot this peer was checked against */
	uint8_t source[16];	   /* the per-source limits' key */
	char peer[64];		   /* the agent's address (from a PROXY header, if any) */
};

void conn_enter(struct conn *c);
void conn_leave(struct conn *c);

/* Moves to `st` (a legal move, asserted) and arms that state's timer. */
void conn_set_state(struct conn *c, enum conn_state st);

/* Restarts the current state's timer (body bytes arrived). */
void conn_rearm_timer(struct conn *c);

/* The peer's identity and verdict from the handshake. */
const struct tls_peer *conn_tls_peer(const struct conn *c);

/* Reads plaintext into buf. Returns bytes read, 0 when TLS needs more
 * ciphertext (or buf is full), or -1 when the connection is finished. */
ssize_t conn_read(struct conn *c);
/* Reads plaintext into `at` (a handler's window), at most `len` bytes;
 * returns like conn_read. */
ssize_t conn_read_into(struct conn *c, uint8_t *at, size_t len);

/* Queues plaintext for the peer; false when it does not fit (logged). */
bool conn_write(struct conn *c, const void *data, size_t len);
/* Room left in the output buffer. */
size_t conn_out_room(const struct conn *c);
/* Sends what is queued at the end of this worker turn. */
void conn_flush(struct conn *c);
/* Sends what is queued, then closes gracefully (bounded by a linger). */
void conn_close(struct conn *c);
/* Gives the buffers back while nothing is held in them. */
void conn_idle_trim(struct conn *c);

/* After a wake-up (store space, commit, output drained): continue with
 * what is held back, or just advance. */
void conn_run(struct conn *c);

/* Checks the peer against the newest trust snapshot if one was published
 * since its last check; false when it is no longer trusted (the reason is
 * in its tls_peer; the refusal is the caller's to answer). */
bool conn_peer_still_trusted(struct conn *c);

#endif
