/* Private to the worker part: shared by worker.c, the connection layer
 * (conn/), HTTP/1 framing (http/http1.c) and the handlers (handlers/). */
#ifndef BEACON_WORKER_INTERNAL_H
#define BEACON_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "beacon/ring.h"
#include "beacon/tls.h"
#include "beacon/transport.h"
#include "beacon/worker.h"
#include "limits.h"
#include "timer.h"

struct conn;
struct filecache;

/* Buffers of one size recycled within a worker: connections take them
 * while they have bytes to hold and give them back the moment they are
 * empty, so an idle connection holds none, and the heap does not fragment
 * under waves of handshakes. At most `max` are kept spare. */
struct buf_pool {
	void **spare;
	unsigned n, max;
	size_t size;
};

int buf_pool_init(struct buf_pool *p, size_t size, unsigned max);
void buf_pool_free(struct buf_pool *p);
void *buf_pool_take(struct buf_pool *p);
void buf_pool_give(struct buf_pool *p, void *buf);

struct worker {
	unsigned id;
	unsigned n_workers;
	const struct config *cfg;
	struct store *store;
	struct store_worker *sw;
	struct store_reader *devices; /* approval = require: device states */
	struct ring ring;
	bool ring_ready;
	struct transport *transport;
	struct timer_wheel timers;
	struct source_table sources;
	unsigned handshakes_active;
	/* Refusal lines a peer can cause with each connection (PROXY header
	 * refusals): at most TLS_REFUSAL_LOG_PER_S a second per worker, the
	 * rest counted on the next line; every one is in the counters. */
	struct tls_log_budget conn_log_budget;
	struct worker_counters counters;
	uint64_t net_published_ms; /* when counters.net was last copied */
	int download_dirfd;
	struct filecache *download_cache; /* NULL: off */
	uint8_t *scratch;		  /* one record's plaintext, shared by all connections */
	struct buf_pool out_bufs;	  /* ciphertext out, OUT_BYTES */
	struct buf_pool in_bufs;	  /* plaintext in, conn_in_bytes() */
	/* clock_ms() of the loop's latest turn: the heartbeat that /healthz
	 * reads (worker_idle_ms); one relaxed store per turn */
	_Atomic uint64_t last_turn_ms;
	_Atomic int stopping;
	unsigned grace_ms;
	pthread_t thread;
	char err[256];
	int start_rc;
	_Atomic int started;
	struct conn *conn_head;	 /* every open connection, for shutdown */
	struct conn *flush_head; /* connections with output queued this turn */
};

#define SCRATCH_BYTES (16 * 1024)
#define CONN_OUT_BYTES (48 * 1024)
#define BUF_POOL_SPARE 64

/* A connection's plaintext buffer: a whole request head, or at least one
 * TLS record's plaintext. */
size_t conn_in_bytes(const struct config *cfg);

/* The transport's callbacks, implemented by conn/connection.c. */
extern const struct transport_events conn_events;

/* Stops reading new requests on every connection (shutdown): idle ones
 * close now, busy ones after their current request. */
void conn_shutdown_all(struct worker *w);

/* Sends what this turn queued, one send per connection: called after
 * each source of events in a worker turn. */
void conn_flush_queued(struct worker *w);

/* Drops every connection now (after the grace period). */
void conn_abort_all(struct worker *w);

void worker_commit_latency(struct worker *w, uint64_t us);

static inline void counter_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

#endif
