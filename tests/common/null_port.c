#include "null_port.h"

#include <arpa/inet.h>
#include <stdio.h>

static void *no_accept(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
		       socklen_t len)
{
	(void)ctx;
	(void)tc;
	(void)peer;
	(void)len;
	return NULL;
}

static void ignore_received(void *upper, const uint8_t *data, size_t len)
{
	(void)upper;
	(void)data;
	(void)len;
}

static void ignore_sent(void *upper)
{
	(void)upper;
}

static void ignore_closed(void *upper, int err)
{
	(void)upper;
	(void)err;
}

const struct transport_events null_port_events = {
	.accepted = no_accept,
	.received = ignore_received,
	.sent = ignore_sent,
	.closed = ignore_closed,
};

int null_port_start(struct config *cfg, unsigned queues, char *err, size_t errlen)
{
	config_defaults(cfg);
	cfg->backend = BACKEND_DPDK;
	snprintf(cfg->dpdk_eal_args, sizeof cfg->dpdk_eal_args,
		 "--no-huge -m 128 --no-pci --no-shconf --vdev=net_null0 -l 0 --log-level=error");
	cfg->dpdk_port = 0;
	cfg->dpdk_addr = inet_addr("198.18.0.1");
	cfg->dpdk_prefix = 15;
	cfg->dpdk_mbufs = 4095;
	return transport_dpdk_init(cfg, queues, err, errlen);
}
