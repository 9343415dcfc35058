/* Private to dataplane/net: how a transport implementation plugs in. */
#ifndef BEACON_TRANSPORT_INTERNAL_H
#define BEACON_TRANSPORT_INTERNAL_H

#include "beacon/transport.h"

struct transport_ops {
	int (*send)(struct transport_conn *tc, const void *buf, size_t len);
	void (*pause)(struct transport_conn *tc);
	void (*resume)(struct transport_conn *tc);
	void (*close)(struct transport_conn *tc);
	void (*abort)(struct transport_conn *tc);
	int (*poll)(struct transport *t, uint64_t now_ms); /* NULL: nothing to poll */
	void (*stop_accepting)(struct transport *t);
	void (*accept_ready)(struct transport *t); /* NULL: nothing to resume */
	/* NULL: no active open here (transport_connect: -EOPNOTSUPP) */
	int (*connect)(struct transport *t, const struct sockaddr_in *dst, void *upper,
		       struct transport_conn **out);
	/* NULL: nothing counted (zeros) */
	void (*net_stats)(const struct transport *t, struct transport_net_stats *out);
	void (*free)(struct transport *t);
};

/* Every implementation's transport and connection start with these. */
struct transport {
	const struct transport_ops *ops;
	const struct transport_events *ev;
	void *ctx;
	unsigned conns;
};

struct transport_conn {
	struct transport *t;
	void *upper;
};

#endif
