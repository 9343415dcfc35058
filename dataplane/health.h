/*
 * health: what /healthz and /readyz answer, judged from the workers'
 * heartbeats and the store's commits. Called on the control thread while
 * the workers and the store exist; it reads atomics and statvfs, never
 * waits on the data path.
 *
 * Live: every worker's loop turned within the stall bound, and the store
 * commits (no commit under way for longer than the bound, the latest
 * commit of uploads did not fail). Ready: live, serving (listeners up, not
 * stopping), and the data directory has room for an upload.
 */
#ifndef BEACON_DATAPLANE_HEALTH_H
#define BEACON_DATAPLANE_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct worker;

struct health_sources {
	struct worker *const *workers;
	unsigned n_workers;
	struct store *store;
	uint64_t stall_ms; /* [server] health_stall */
	bool serving;	   /* every listener up and not stopping */
};

/* 0, or -1 with one line per reason in msg ("worker 1: loop stalled for
 * 7 s"). */
int health_live(const struct health_sources *src, char *msg, size_t msglen);
int health_ready(const struct health_sources *src, char *msg, size_t msglen);

#endif
