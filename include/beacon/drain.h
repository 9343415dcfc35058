/*
 * drain: hands every committed upload on to a sink, today NATS JetStream
 * ([drain] in beacond.conf). One thread per sink reads the uploads its
 * sink has not acknowledged from the store (store_drain_next, in upload-id
 * order), verifies each body's CRC32 from the spool, publishes it with a
 * bounded window of messages in flight, and marks it drained in LMDB
 * (store_drain_done) only once the sink acknowledged every message of it.
 * A failure (the sink down, unreachable, slow past its ack timeout) marks
 * the drain disconnected with the reason; after a backoff (0.5 s doubling
 * to 30 s) it publishes again what was not acknowledged, and the sink's
 * de-duplication (JetStream's Nats-Msg-Id window) drops what it already
 * holds. Ingest never waits on it: the store commits and answers 201
 * whatever the drain does, and the lag grows.
 *
 * Threads: drain_start/drain_stop on the main thread, after store_open and
 * before store_close; drain_status, drain_pause and drain_replay from any
 * thread (the control thread).
 */
#ifndef BEACON_DRAIN_H
#define BEACON_DRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct store;
struct drain;

enum drain_state {
	DRAIN_OFF,	    /* [drain] nats is empty */
	DRAIN_CONNECTING,   /* started, no answer from the sink yet */
	DRAIN_CONNECTED,    /* publishing (or idle with nothing to send) */
	DRAIN_DISCONNECTED, /* the sink failed: last_error says how; retrying */
	DRAIN_PAUSED,	    /* beaconctl drain pause */
};

/* "off", "connecting", "connected", "disconnected", "paused". Inline: the
 * control plane names states without linking the drain. */
static inline const char *drain_state_name(enum drain_state st)
{
	static const char *const names[] = {"off", "connecting", "connected", "disconnected",
					    "paused"};
	return (unsigned)st < sizeof names / sizeof *names ? names[st] : "unknown";
}

struct drain_status {
	enum drain_state state;
	char sink[16];
	char last_error[256]; /* the latest failure, "" when none */
	uint64_t uploads_published, bytes_published;
	uint64_t uploads_acked, bytes_acked;
	/* publishes that failed, and uploads that failed their CRC */
	uint64_t uploads_failed, bytes_failed;
	uint64_t lag_uploads, lag_bytes;
	uint64_t lag_oldest_s;	 /* age of the lowest undrained upload */
	uint64_t drained_before; /* every upload below this id is drained */
};

/* Starts the drain when cfg->drain_nats names a server; *out NULL when the
 * drain is off. A sink that cannot be reached is not an error here: the
 * drain retries. -1 with a reason in err for what no retry can mend. */
int drain_start(const struct config *cfg, struct store *s, struct drain **out, char *err,
		size_t errlen);
/* The same for the parent beacon sink ([upstream] url; sink "upstream"):
 * each upload is PUT to the parent over mutual TLS. Both drains may run. */
int drain_start_upstream(const struct config *cfg, struct store *s, struct drain **out, char *err,
			 size_t errlen);
/* Stops the thread (waiting up to a few seconds for acks in flight) and
 * frees the drain. NULL is fine. */
void drain_stop(struct drain *d);
/* NULL: state DRAIN_OFF and zeros. */
void drain_status(struct drain *d, struct drain_status *out);
/* Stops or restarts publishing; what is in flight still completes. 0, or
 * -1 with a reason in msg (the drain is off). */
int drain_pause(struct drain *d, bool pause, char *msg, size_t msglen);
/* Publishes again every upload from from_id on (the sink drops what it
 * holds within its duplicate window). 0 with a summary in msg, or -1. */
int drain_replay(struct drain *d, uint64_t from_id, char *msg, size_t msglen);

#endif
