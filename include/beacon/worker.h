/*
 * worker: one thread per core, pinned, share-nothing. A worker owns its
 * io_uring ring, its transport (its listener and connections), its timer
 * wheel, its attachment to the store and its counters. Everything a
 * connection does (TLS, HTTP, spool writes, store completions) advances
 * from the worker's one poll loop; nothing in it blocks.
 *
 * The main thread starts and stops workers and reads their counters; the
 * counters are written only by their worker and read with relaxed atomics.
 * Which counters there are is one table, beacon/counters.h.
 */
#ifndef BEACON_WORKER_H
#define BEACON_WORKER_H

#include <stdatomic.h>
#include <stdint.h>

#include "beacon/auth-t.h"
#include "beacon/counters.h"
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

/* What a worker counts: the members of every COUNTERS_WORKER row of
 * beacon/counters.h, summed over workers for stats and metrics. */
struct worker_counters {
#define WORKER_COUNTER_MEMBERS(field, type, metric, labels, help)                                  \
	COUNTERS_WORKER_MEMBERS(_Atomic uint64_t, field, type)
	COUNTERS_WORKER(WORKER_COUNTER_MEMBERS)
#undef WORKER_COUNTER_MEMBERS
	struct worker_net_counters net;
	/* Nanoseconds its loop spent working rather than waiting for the
	 * kernel: one worker's own figure, never summed (/metrics
	 * beacond_worker_busy_seconds_total{worker="N"}). A polling transport
	 * (DPDK) never waits, so its workers count busy all the time. */
	_Atomic uint64_t busy_ns;
	/* Nanoseconds of the loop turns that did work (a completion, a frame,
	 * a packet out): what the work took, for a polling worker too, whose
	 * busy_ns is its whole core (/metrics
	 * beacond_worker_work_seconds_total{worker="N"}). */
	_Atomic uint64_t work_ns;
};

/* Upper bounds of the commit-latency buckets, microseconds:
 * COMMIT_LATENCY_BOUNDS_US (beacon/counters.h). */
extern const uint64_t worker_commit_latency_le_us[COMMIT_LATENCY_BOUNDS];

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

/* Milliseconds since the worker's loop last turned (its heartbeat). An
 * idle loop turns at least every timer tick, so more than a few ticks
 * means the thread is stuck (or stopped: its loop ended on a ring error).
 * Safe from any thread while the worker exists. */
uint64_t worker_idle_ms(const struct worker *w);

#endif
