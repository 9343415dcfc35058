/*
 * control: the control plane's outside faces. A Unix socket (mode 0600, one
 * JSON object per line each way) that beaconctl talks to, and a loopback
 * HTTP listener with /metrics (Prometheus text format), /healthz and a
 * status page with the authentication-result chart.
 *
 * Model: control_start runs one control thread that owns both listeners and
 * never touches the data path. What it reports and what it changes go
 * through the handlers beacond gives it; they are called on the control
 * thread only, one at a time, so they need no locking among themselves.
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

#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/transport.h"

/* A point-in-time copy of everything the server counts. */
struct control_stats {
	uint64_t uptime_s;
	unsigned workers;
	uint64_t connections_open;
	uint64_t connections_accepted;
	uint64_t connections_refused; /* over max_connections */
	uint64_t refused_per_source;  /* over max_connections_per_source */
	uint64_t refused_rate;        /* over handshake_rate_per_source */
	uint64_t refused_handshakes;  /* over max_handshakes_in_progress */
	uint64_t handshakes[AUTH_RESULT_COUNT]; /* by auth_result */
	uint64_t handshakes_tls12;
	uint64_t handshakes_tls13;
	uint64_t handshakes_resumed;
	uint64_t handshake_failures; /* protocol errors, no certificate verdict */
	uint64_t requests;
	uint64_t uploads;
	uint64_t upload_bytes;
	uint64_t downloads;
	uint64_t download_bytes;
	uint64_t responses_4xx;
	uint64_t responses_5xx;
	uint64_t timeouts;
	/* trust snapshot */
	uint64_t snapshot_generation;
	uint64_t snapshot_loaded_unix_s;
	unsigned issuers;
	uint64_t revoked_serials;
	unsigned blocked_entries;
	/* store */
	uint64_t store_commits;
	uint64_t store_fdatasyncs;
	uint64_t store_uploads_committed;
	/* commit latency histogram: counts of commits whose wait (finish to
	 * durable) was <= control_commit_latency_le_us[i]: cumulative, as
	 * Prometheus wants, so the last bucket (+Inf) equals the count. */
	uint64_t commit_latency_bucket[12];
	uint64_t commit_latency_sum_us;
	uint64_t commit_latency_count;
	/* the DPDK transport's stack, summed over workers; net_stack false
	 * (kernel transport): none, and /metrics shows none */
	bool net_stack;
	struct transport_net_stats net;
};

/* Commit-latency bucket bounds in microseconds (the 12th is +Inf). The
 * workers count into buckets with these same bounds (worker.c), so the
 * list is written once, here. */
#define COMMIT_LATENCY_BOUNDS_US {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000}
extern const uint64_t control_commit_latency_le_us[11];

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
	int (*device_set_state)(void *arg, const char *device, enum device_state state,
				char *msg, size_t msglen);
	/* The latest refused handshakes, newest first, into out[0..max);
	 * returns how many. May be NULL (none shown). */
	size_t (*refusals)(void *arg, struct tls_refusal *out, size_t max);
};

struct control;

/* Listens on socket_path (created 0600, a stale socket file replaced) and,
 * when metrics_listen is not empty, on that loopback "ADDR:PORT" for HTTP.
 * The handlers must stay valid until control_stop. */
int control_start(const char *socket_path, const char *metrics_listen,
		  const struct control_handlers *h, struct control **out, char *err,
		  size_t errlen);
/* The metrics listener's port (the one the kernel chose for ":0"), or -1
 * when there is none. */
int control_metrics_port(const struct control *c);
void control_stop(struct control *c);

#endif
