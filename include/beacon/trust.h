/*
 * trust: hands the current trust snapshot (a tls_server: certificate, key,
 * issuers, revocation index, block list) to the workers, and replaces it
 * while they run, without a lock on the data path.
 *
 * Model: quiescent-state-based reclamation. A worker calls trust_quiescent
 * once per loop turn, where it holds no bare snapshot pointer; between two
 * such calls it may trust_acquire (a counted reference, kept by the
 * connection for its whole life). trust_publish swaps the pointer, waits
 * until every online worker has passed a quiescent point, then drops the
 * publication's reference on the old snapshot, which is freed when its last
 * connection ends. Handshakes in flight finish on the snapshot they began
 * with; new connections get the new one. An open connection keeps its own
 * snapshot, but before each request it is checked against the newest one
 * (trust_generation, tls_session_recheck) and closed if that one refuses it.
 *
 * Threads: trust_publish and trust_current_info from one control thread at
 * a time (callers serialise); trust_acquire / trust_quiescent /
 * trust_offline from worker `id`'s own thread only; trust_generation from
 * any thread.
 */
#ifndef BEACON_TRUST_H
#define BEACON_TRUST_H

#include <stdint.h>

#include "beacon/tls.h"

/* Sets up `nworkers` worker slots and publishes `first` (takes its
 * reference). 0 or -1. */
int trust_init(unsigned nworkers, struct tls_server *first);

/* Drops the current snapshot; after every worker has stopped. */
void trust_shutdown(void);

/* The current snapshot, with a reference the caller must unref. */
struct tls_server *trust_acquire(void);

void trust_quiescent(unsigned worker);
/* A stopping worker: never waited for again. */
void trust_offline(unsigned worker);

/* A number that changes whenever a snapshot is published. A connection
 * notes it when it starts and compares it before each request: a plain
 * atomic load, so the request path learns of a newer snapshot without
 * taking a reference. Seen before the trust_acquire that follows it, it
 * never hides a newer snapshot (at worst one check too many). */
uint64_t trust_generation(void);

/* Makes `next` current (takes its reference); returns once no worker can
 * still pick up the old one. */
void trust_publish(struct tls_server *next);

/* Facts about the current snapshot, for status and metrics. */
void trust_current_info(struct tls_server_info *out);

#endif
