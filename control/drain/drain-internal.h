/*
 * drain-internal: the seam between the generic drain (drain.c) and a sink
 * (nats.c; a parent beacon over HTTPS plugs in the same way).
 *
 * The drain's thread calls connect, publish and flush; the sink reports each
 * message's outcome with drain_message_done from whatever thread its
 * acknowledgements arrive on.
 */
#ifndef BEACON_DRAIN_INTERNAL_H
#define BEACON_DRAIN_INTERNAL_H

#include "beacon/drain.h"
#include "beacon/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct drain_sink_ops {
	const char *name; /* the store's pending set: store_options.drain_sinks */
	/* Makes the sink ready to publish: connects if it is not, checks (or
	 * creates) the destination. Cheap when all is well; it doubles as the
	 * health probe after a failure. 0, or -1 with the reason in err. */
	int (*connect)(void *sink, char *err, size_t errlen);
	/* Publishes the upload whose CRC-verified body fd reads at
	 * rec->offset. *queued gets how many messages went out (each one
	 * later reported to drain_message_done), also on failure. 0, or -1
	 * with the reason in err. */
	int (*publish)(void *sink, const struct upload_record *rec, int fd, unsigned *queued,
		       char *err, size_t errlen);
	/* Waits up to timeout_ms for every message in flight to be reported. */
	void (*flush)(void *sink, unsigned timeout_ms);
	/* true, with the reason in err, when the link is gone for good: what
	 * is in flight will never be reported and only connect brings it
	 * back (cnats closes a connection after the same login refusal twice,
	 * e.g. an expired JWT, and drops the acks it waited for). Asked every
	 * round, idle or not. NULL: the link never dies that way. */
	bool (*lost)(void *sink, char *err, size_t errlen);
	void (*destroy)(void *sink);
};

/* During publish (the drain's thread): rec's body as the drain read it for
 * its CRC check, the very bytes it checked, when it fits the check's buffer
 * (at most STORE_VERIFY_BUF_BYTES); NULL otherwise, and the sink reads the
 * fd. It saves a second read and copy of every small body. */
const uint8_t *drain_verified_body(const struct drain *d, const struct upload_record *rec);

/* One message of upload `id` was acknowledged (ok) or not (why). */
void drain_message_done(struct drain *d, uint64_t id, bool ok, const char *why);

/* Upload `id` was refused for good (the sink will never take it, e.g. a
 * parent's 4xx): logged, counted failed, and marked drained so that it
 * does not hold up the uploads after it. */
void drain_message_refused(struct drain *d, uint64_t id, const char *why);

/* The NATS JetStream sink (nats.c). NULL with err set when the options
 * cannot work (out of memory, a bad URL list). */
void *nats_sink_create(const struct config *cfg, struct drain *d, char *err, size_t errlen);
extern const struct drain_sink_ops nats_sink_ops;

/* The parent beacon over HTTPS (upstream.c). */
void *upstream_sink_create(const struct config *cfg, struct drain *d, char *err, size_t errlen);
extern const struct drain_sink_ops upstream_sink_ops;

#endif
