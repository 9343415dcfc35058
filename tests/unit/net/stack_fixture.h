/*
 * stack_fixture: the DPDK stack (dataplane/net/stack) in this process, for
 * the unit tests that drive it frame by frame. The EAL on a net_null port
 * (nothing leaves the process; tests/common/null_port.c), one stack per
 * queue as a worker would open it, with null_port's callbacks (every
 * connection refused). Frames go in through eth_input and the answers are
 * read from the stack's transmit burst (s->tx) before stack_tx_flush.
 *
 * The EAL needs root: a test's main() returns 77 (skipped) when
 * stack_fixture_root() says no. One fixture per process (the EAL starts
 * once); the calls are the cmocka group's setup and teardown.
 */
#ifndef BEACON_TEST_STACK_FIXTURE_H
#define BEACON_TEST_STACK_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rte_mbuf.h>

#include "../../../dataplane/net/stack/stack.h"

/* True when running as root; else says on stderr that `test` is skipped. */
bool stack_fixture_root(const char *test);

/* Starts the EAL on a net_null port with n queues (198.18.0.1/15, listening
 * on the default port) and opens a stack on each into st[0..n): 0, or -1
 * with the reason on stderr after `test`. */
int stack_fixture_open(const char *test, unsigned n, struct stack **st);

/* Frees the stacks stack_fixture_open opened (NULL entries skipped) and
 * stops the EAL. */
void stack_fixture_close(unsigned n, struct stack **st);

/* A TCP segment from a peer to the stack (its listening port unless
 * said), as the port
 * hands it over: checksums in software (spoiled where asked), no offload
 * flags, window 65535. */
struct test_seg {
	uint32_t src_ip;      /* network order */
	uint8_t src_mac_last; /* from 02:00:00:00:00:<src_mac_last> */
	uint16_t sport;	      /* host order */
	uint16_t dport;	      /* host order; 0: the stack's listening port */
	uint32_t seq, ack;
	uint8_t flags;
	const uint8_t *opt;
	uint8_t optlen;	     /* a multiple of 4 */
	const uint8_t *data; /* payload */
	uint16_t datalen;
	uint16_t ip_spoil, tcp_spoil; /* XORed into the IPv4 and TCP checksums */
};

/* The frame of g for stack s (fails the running test when no mbuf is left). */
struct rte_mbuf *stack_fixture_segment(struct stack *s, const struct test_seg *g);

/* An ARP frame (op: RTE_ARP_OP_*) from sip at 02:00:00:00:00:<mac_last>
 * to tip (addresses in network order), as stack s's queue would get it. */
struct rte_mbuf *stack_fixture_arp(struct stack *s, uint16_t op, uint32_t sip, uint8_t mac_last,
				   uint32_t tip);

/* A layer above for the tests that open connections, one at a time: it
 * accepts every connection (ctx: its struct test_app; an active open
 * passes it as `upper`), keeps what it receives and counts the callbacks. */
struct test_app {
	struct transport_conn *tc; /* NULL once `closed` came */
	char rx[64];
	size_t rxlen;
	unsigned accepted, connected, sent, closed;
	int err;
	bool connected_before_rx; /* `connected` came before the first `received` */
};
extern const struct transport_events test_app_events;

#endif
