/*
 * null_port: a DPDK net_null port in this process for the tests and the fuzz
 * target that drive the stack directly (nothing leaves the process; needs
 * root for the EAL).
 */
#ifndef BEACON_TEST_NULL_PORT_H
#define BEACON_TEST_NULL_PORT_H

#include <stddef.h>

#include "beacon/config.h"
#include "beacon/transport.h"

/* Callbacks that take no connection and ignore everything. */
extern const struct transport_events null_port_events;

/* Fills *cfg for a net_null port at 198.18.0.1/15 with `queues` queues
 * and starts the EAL: transport_dpdk_init's result, err filled on failure. */
int null_port_start(struct config *cfg, unsigned queues, char *err, size_t errlen);

#endif
