/*
 * Admission control of one worker: whether a new connection is taken at
 * all (admit_connection), and the per-source limits it applies.
 *
 * Per-source limits of one worker: open connections and new-connection
 * rate (a token bucket) for each source address. Private to the worker
 * part; one table per worker, no locks. With SO_REUSEPORT the kernel spreads
 * one source's connections over the workers, so each worker enforces its
 * share (the configured figure divided by the worker count, at least 1).
 *
 * Memory: a fixed table of SOURCE_SLOTS entries (32 bytes each, 1 MiB).
 * When it fills, sources with no open connection are forgotten (their
 * buckets were full or close to it); if every slot holds a source with open
 * connections, new sources are refused: the table never grows.
 */
#ifndef BEACON_LIMITS_H
#define BEACON_LIMITS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define SOURCE_SLOTS 32768

struct source {
	uint8_t addr[16]; /* IPv6, or IPv4-mapped */
	uint32_t conns;
	uint32_t refill_ms; /* low 32 bits of the clock at the last refill */
	float tokens;
	uint32_t used; /* 0: empty slot */
};

struct source_table {
	struct source *slots;
	unsigned used;
	unsigned max_conns; /* per source; 0: no limit */
	float rate_per_ms;  /* new connections per ms; 0: no limit */
	float burst;
};

int source_table_init(struct source_table *t, unsigned max_conns, unsigned rate_per_s);
void source_table_free(struct source_table *t);

enum source_verdict { SOURCE_OK, SOURCE_TOO_MANY, SOURCE_TOO_FAST, SOURCE_TABLE_FULL };

/* The table's key for a peer address. */
void source_key(const struct sockaddr *peer, uint8_t key[16]);

/* A new connection from `key`: counted when allowed. */
enum source_verdict source_admit(struct source_table *t, const uint8_t key[16], uint64_t now_ms);
/* A connection admitted from `key` closed. (Keys, not pointers: a sweep
 * moves entries.) */
void source_release(struct source_table *t, const uint8_t key[16]);

struct worker;

/* A new connection from `peer`: false when it is refused (worker stopping,
 * over max_connections, over max_handshakes_in_progress, or over its
 * source's limits), each refusal counted in the worker's counters. When
 * true, the source has counted it: source_release(key) when it closes. */
bool admit_connection(struct worker *w, const struct sockaddr *peer, uint8_t key[16]);
/* admit_connection in its two halves, for a connection whose source is
 * known only later (a PROXY header names it): the worker's limits at
 * accept, the source's once the header named it. */
bool admit_worker(struct worker *w);
bool admit_source(struct worker *w, const uint8_t key[16]);

/* The transport's accept_room (ctx: the worker): free handshake slots.
 * Past max_handshakes_in_progress new connections wait in the listen
 * queue instead of being accepted and closed. */
unsigned admit_room(void *worker);
/* A handshake starts / ends; the end lets a waiting connection in. */
void handshake_slot_take(struct worker *w);
void handshake_slot_give(struct worker *w);

struct config_prefix;
/* True when `peer` (IPv4 or IPv6) lies in one of the `n` prefixes. */
bool source_in_prefixes(const struct sockaddr *peer, const struct config_prefix *list, unsigned n);

#endif
