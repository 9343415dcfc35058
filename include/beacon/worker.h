/*
 * worker: one thread per core, pinned, share-nothing. A worker owns its
 * io_uring ring, its transport (its listener and connections), its timer
 * wheel, its attachment to the store and its counters. Everything a
 * connection does (TLS, HTTP, spool writes, store completions) advances
 * from the worker's one poll loop; nothing in it blocks.
 *
 * The main thread starts and stops workers and reads their counters; the
 * counters are written only by their worker and read with relaxed atomics.
 */
#ifndef BEACON_WORKER_H
#define BEACON_WORKER_H

#include <stdatomic.h>
#include <stdint.h>

#include "beacon/store.h"
#include "beacon/transport.h"

struct config;
struct tls_server;
struct store;
struct worker;

/* The transport's stack counters (beacon/transport.h), as its worker last
 * published them: a copy at most WORKER_NET_PUBLISH_MS old, so that the
 * stack itself counts with plain increments on the data path. */
#define WORKER_NET_PUBLISH_MS 100
struct worker_net_counters {
#define WORKER_NET_FIELD(name, help) _Atomic uint64_t name;
	TRANSPORT_NET_COUNTERS(WORKER_NET_FIELD)
#undef WORKER_NET_FIELD
};

/* What a worker counts; summed over workers for stats and metrics. */
struct worker_counters {
	_Atomic uint64_t connections_accepted;
	_Atomic uint64_t connections_refused; /* over max_connections */
	_Atomic uint64_t refused_per_source;  /* over max_connections_per_source */
	_Atomic uint64_t refused_rate;        /* over handshake_rate_per_source */
	_Atomic uint64_t refused_handshakes;  /* over max_handshakes_in_progress */
	_Atomic uint64_t handshakes[AUTH_RESULT_COUNT];
	_Atomic uint64_t handshakes_tls12;
	_Atomic uint64_t handshakes_tls13;
	_Atomic uint64_t handshakes_resumed;
	_Atomic uint64_t handshake_failures; /* protocol failures, no certificate verdict */
	_Atomic uint64_t requests;
	_Atomic uint64_t uploads;
	_Atomic uint64_t upload_bytes;
	_Atomic uint64_t downloads;
	_Atomic uint64_t download_bytes;
	_Atomic uint64_t responses_4xx;
	_Atomic uint64_t responses_5xx;
	_Atomic uint64_t timeouts;
	_Atomic uint64_t connections_open;
	/* finish-to-durable wait of each upload, one count per bucket (not
	 * cumulative) by the bounds in worker_commit_latency_le_us; the last
	 * bucket is +Inf */
	_Atomic uint64_t commit_latency_bucket[12];
	_Atomic uint64_t commit_latency_sum_us;
	struct worker_net_counters net;
};

/* Upper bounds of the commit-latency buckets, microseconds: the metrics'
 * COMMIT_LATENCY_BOUNDS_US (beacon/control.h). */
extern const uint64_t worker_commit_latency_le_us[11];

/* Starts worker `id` on its own thread (pinned to CPU id modulo the online
 * count). The config and store must outlive the worker; TLS sessions take
 * the current trust snapshot (beacon/trust.h). Returns
 * 0 or -errno with a reason in err. */
int worker_start(unsigned id, unsigned n_workers, const struct config *cfg, struct store *store,
		 struct worker **out, char *err, size_t errlen);

/* Stops accepting, lets requests in flight finish (up to grace_ms), closes
 * the rest, and joins the thread. */
void worker_stop(struct worker *w, unsigned grace_ms);
/* Releases a stopped worker (its counters stay readable until then). */
void worker_free(struct worker *w);

const struct worker_counters *worker_counters(const struct worker *w);

#endif
