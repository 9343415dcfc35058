/*
 * control: the control plane's outside faces. A Unix socket (mode 0600, one
 * JSON object per line each way) that beaconctl talks to, and a loopback
 * HTTP listener with /metrics (Prometheus text format), /healthz, /readyz
 * and a status page with the authentication-result chart.
 *
 * Model: control_start runs one control thread that owns both listeners and
 * never touches the data path. What it reports and what it changes go
 * through the handlers beacond gives it; they are called on the control
 * thread only, one at a time, so they need no locking among themselves.
 *
 * What both faces report is struct control_stats, whose members and their
 * names in the JSON and in /metrics come from one table, beacon/counters.h.
 *
 * Failure: a bad request line gets {"ok":false,"error":"..."}; nothing a
 * client sends can stop the thread. control_stop closes both listeners and
 * joins the thread.
 */
#ifndef BEACON_CONTROL_H
#define BEACON_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "beacon/auth-t.h"
#include "beacon/counters.h"
#include "beacon/drain.h"
#include "beacon/mirror.h"
#include "beacon/tls.h"
#include "beacon/transport.h"

/* A point-in-time copy of everything the server counts: a member for
 * every row of beacon/counters.h (the process's values, then the workers'
 * summed), so what is reported cannot drift from what is counted. */
#define CONTROL_DATES_MAX 64
enum control_date_kind { CONTROL_DATE_SERVER_CERT, CONTROL_DATE_ISSUER_CERT, CONTROL_DATE_CRL };
#define CONTROL_WORKERS_MAX 256

struct control_stats {
#define CONTROL_STATS_MEMBERS(field, type, metric, labels, help)                                   \
	COUNTERS_TOTAL_MEMBERS(uint64_t, field, type)
	COUNTERS_PROCESS(CONTROL_STATS_MEMBERS)
	COUNTERS_WORKER(CONTROL_STATS_MEMBERS)
#undef CONTROL_STATS_MEMBERS
	/* the DPDK transport's stack, summed over workers; net_stack false
	 * (kernel transport): none, and /metrics and stats show none */
	bool net_stack;
	struct transport_net_stats net;
	/* Labelled series of variable count (not rows of the table): the
	 * trust snapshot's dates (beacon/snapshot.h trust_current_dates), the
	 * soonest CONTROL_DATES_MAX when there are more, and each worker's
	 * busy and work time. */
	struct control_date {
		enum control_date_kind kind;
		char name[128];
		int64_t unix_s;
	} dates[CONTROL_DATES_MAX];
	unsigned n_dates;
	uint64_t worker_busy_ns[CONTROL_WORKERS_MAX];
	uint64_t worker_work_ns[CONTROL_WORKERS_MAX]; /* indexed as worker_busy_ns */
	unsigned n_worker_busy;
};

/* Commit-latency bucket bounds in microseconds, COMMIT_LATENCY_BOUNDS_US
 * (beacon/counters.h); the last bucket, one more, is +Inf. */
extern const uint64_t control_commit_latency_le_us[COMMIT_LATENCY_BOUNDS];

struct control_handlers {
	void *arg;
	/* Fills *out. */
	void (*stats)(void *arg, struct control_stats *out);
	/* what: "all", "issuers", "crl", "tickets" or "blocklist". Returns 0
	 * with a summary in msg, or -1 with the reason in msg (the old trust
	 * stays in force). */
	int (*reload)(void *arg, const char *what, char *msg, size_t msglen);
	/* A new ticket key; the old one is still accepted. 0 or -1 + msg. */
	int (*tickets_rotate)(void *arg, char *msg, size_t msglen);
	/* approve / block / unblock a device (state DEVICE_APPROVED,
	 * DEVICE_BLOCKED; unblock = DEVICE_APPROVED). 0 or -1 + msg. */
	int (*device_set_state)(void *arg, const char *device, enum device_state state, char *msg,
				size_t msglen);
	/* The latest refused handshakes, newest first, into out[0..max);
	 * returns how many. May be NULL (none shown). */
	size_t (*refusals)(void *arg, struct tls_refusal *out, size_t max);
	/* What the store holds: uploads in the index and their body bytes.
	 * 0, or -1 when it cannot tell. May be NULL (status shows none). */
	int (*store_totals)(void *arg, uint64_t *uploads, uint64_t *bytes);
	/* A device's record, read before an operator changes its state: 1
	 * with *state and *seen (it has ever connected), 0 when the store has
	 * no record, -1 when it cannot tell. May be NULL: changes then go
	 * ahead unchecked (no "already blocked", no unknown-device warning). */
	int (*device_lookup)(void *arg, const char *device, enum device_state *state, bool *seen);
	/* /healthz (live: the workers' loops turn and the store commits) and
	 * /readyz (ready: also serving, and room on the disk): 0, or -1 with
	 * the reasons in msg, one a line. May be NULL: always 200. */
	int (*live)(void *arg, char *msg, size_t msglen);
	/* The drain's state, counters and lag (beacon/drain.h). May be NULL:
	 * status says the drain is off. */
	void (*drain_status)(void *arg, struct drain_status *out);
	/* action "pause", "resume" or "replay" (every upload from from_id on
	 * again). 0 or -1, with what happened or why not in msg. May be NULL. */
	int (*drain_control)(void *arg, const char *action, uint64_t from_id, char *msg,
			     size_t msglen);
	/* The parent beacon sink ([upstream]), as drain_status; NULL: none. */
	void (*upstream_status)(void *arg, struct drain_status *out);
	/* The mirror ([upstream] sync, beacon/mirror.h), and a sync round now
	 * (0 or -1, with what happened in msg). NULL: sync is off. */
	void (*mirror_status)(void *arg, struct mirror_status *out);
	int (*upstream_sync)(void *arg, char *msg, size_t msglen);
	int (*ready)(void *arg, char *msg, size_t msglen);
	/* Not a handler: the file the status page's history is kept in across
	 * restarts (rewritten every sample). NULL or "": memory only. */
	const char *history_path;
};

struct control;

/* Listens on socket_path (created 0600, a stale socket file replaced) and,
 * when metrics_listen is not empty, on that loopback "ADDR:PORT" for HTTP.
 * The handlers must stay valid until control_stop. */
int control_start(const char *socket_path, const char *metrics_listen,
		  const struct control_handlers *h, struct control **out, char *err, size_t errlen);
/* The metrics listener's port (the one the kernel chose for ":0"), or -1
 * when there is none. */
int control_metrics_port(const struct control *c);
void control_stop(struct control *c);

#endif
