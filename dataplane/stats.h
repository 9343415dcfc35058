/*
 * stats: what beacond reports through the control plane (struct
 * control_stats), gathered from its sources: the workers' counters summed,
 * the trust snapshot in force, the store and the clock. Which values there
 * are is one table, beacon/counters.h; this file walks it.
 *
 * Called on the control thread (and by main at shutdown); it reads the
 * workers' counters with relaxed atomic loads, so a sum may be a moment old
 * but no value is torn.
 */
#ifndef BEACON_DATAPLANE_STATS_H
#define BEACON_DATAPLANE_STATS_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "beacon/control.h"

struct store;
struct worker;

struct stats_sources {
	struct worker *const *workers;
	unsigned n_workers;
	time_t started;
	bool net_stack; /* the DPDK transport: its stack's counters too */
	struct store *store;
	struct drain *drain;	/* NULL: the drain is off */
	struct drain *upstream; /* NULL: [upstream] url is empty */
	struct mirror *mirror;	/* NULL: [upstream] sync is off */
	/* held while the trust snapshot's facts are read (trust_current_info
	 * wants one caller at a time) */
	pthread_mutex_t *trust_lock;
};

/* Fills *out, every member. */
void stats_collect(const struct stats_sources *src, struct control_stats *out);

#endif
