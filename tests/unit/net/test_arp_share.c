/*
 * ARP across queues (dataplane/net/stack/arp.c): with RSS an ARP reply
 * lands on whichever queue the NIC picks, and the worker that asked must
 * still learn it. Two workers' stacks on a real DPDK port with two queues
 * (net_null: nothing leaves the process), driven from this one thread: a
 * frame goes into one stack as dpdk_poll would hand it over, and the other
 * stack's poll learns what the first heard.
 *
 * Needs root (the EAL), like the DPDK transport itself: skipped otherwise.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <rte_arp.h>
#include <rte_mbuf.h>

#include "stack_fixture.h"

static struct stack *st[2];

static int setup(void **state)
{
	(void)state;
	return stack_fixture_open("test_arp_share", 2, st);
}

static int teardown(void **state)
{
	(void)state;
	stack_fixture_close(2, st);
	return 0;
}

/* An ARP frame from `sip` at MAC 02:00:00:00:00:<mac_last> to `tip`, as
 * it would arrive on stack s's queue. */
static void arp_in(struct stack *s, uint16_t op, const char *sip, uint8_t mac_last, const char *tip)
{
	eth_input(s, stack_fixture_arp(s, op, inet_addr(sip), mac_last, inet_addr(tip)));
	stack_tx_flush(s);
}

static void assert_knows(struct stack *s, const char *ip, uint8_t mac_last)
{
	struct rte_ether_addr mac;
	assert_true(arp_resolve(s, inet_addr(ip), &mac));
	assert_int_equal(mac.addr_bytes[0], 0x02);
	assert_int_equal(mac.addr_bytes[5], mac_last);
}

static void test_two_queues(void **state)
{
	(void)state;
	assert_int_equal(st[0]->nqueues, 2);
	assert_non_null(st[0]->arp_rings);
	assert_int_equal(st[1]->queue, 1);
}

/* Worker 0 asks; the reply lands on worker 1's queue; worker 0's next
 * poll knows the answer. */
static void test_reply_on_other_queue(void **state)
{
	(void)state;
	struct rte_ether_addr mac;
	uint32_t peer = inet_addr("198.18.0.9");
	uint64_t asked = st[0]->st.arp_requests_sent;
	assert_false(arp_resolve(st[0], peer, &mac));
	stack_tx_flush(st[0]);
	assert_int_equal(st[0]->st.arp_requests_sent, asked + 1);

	arp_in(st[1], RTE_ARP_OP_REPLY, "198.18.0.9", 0x09, "198.18.0.1");
	assert_knows(st[1], "198.18.0.9", 0x09);
	assert_null(arp_lookup(st[0], peer)); /* not before its poll */

	assert_true(transport_poll(&st[0]->base, st[0]->now_ms + 1) >= 0);
	assert_knows(st[0], "198.18.0.9", 0x09);
	assert_int_equal(st[0]->st.arp_from_peers, 1);
}

/* A known neighbour that moved (a standby took its address over) says
 * so with a gratuitous ARP, here on queue 0: worker 1 follows, and what
 * its connections send goes to the new MAC (tcp_output.c asks arp_lookup). */
static void test_moved_neighbour(void **state)
{
	(void)state;
	arp_in(st[1], RTE_ARP_OP_REPLY, "198.18.0.10", 0x0a, "198.18.0.1");
	arp_drain(st[0]);
	assert_knows(st[0], "198.18.0.10", 0x0a);
	arp_in(st[0], RTE_ARP_OP_REQUEST, "198.18.0.10", 0xbb, "198.18.0.10");
	assert_knows(st[0], "198.18.0.10", 0xbb);
	assert_knows(st[1], "198.18.0.10", 0x0a); /* not before its poll */
	arp_drain(st[1]);
	assert_knows(st[1], "198.18.0.10", 0xbb);
}

/* What is no news to anyone (not for us, from a stranger) stays put. */
static void test_not_shared(void **state)
{
	(void)state;
	uint64_t shared = st[1]->st.arp_shared;
	arp_in(st[1], RTE_ARP_OP_REQUEST, "198.18.0.20", 0x20, "198.18.0.30");
	assert_int_equal(st[1]->st.arp_shared, shared);
	arp_drain(st[0]);
	assert_null(arp_lookup(st[0], inet_addr("198.18.0.20")));
	/* Off-link senders teach nothing either. */
	arp_in(st[1], RTE_ARP_OP_REPLY, "10.1.2.3", 0x03, "198.18.0.1");
	assert_int_equal(st[1]->st.arp_shared, shared);
}

/* A worker that does not poll (busy, or an ARP flood) fills its ring:
 * the news is dropped and counted, nothing else happens. */
static void test_ring_full(void **state)
{
	(void)state;
	uint64_t dropped = st[1]->st.arp_share_dropped;
	char ip[32];
	for (unsigned i = 0; i < 400; i++) {
		snprintf(ip, sizeof ip, "198.19.%u.%u", i / 200 + 1, i % 200 + 1);
		arp_in(st[1], RTE_ARP_OP_REPLY, ip, 0x44, "198.18.0.1");
	}
	assert_true(st[1]->st.arp_share_dropped > dropped);
	uint64_t got = st[0]->st.arp_from_peers;
	for (int i = 0; i < 40; i++)
		arp_drain(st[0]);
	assert_true(st[0]->st.arp_from_peers - got >= 200);
	/* Learned, as far as the direct-mapped cache holds them. */
	unsigned known = 0;
	for (unsigned i = 0; i < 400; i++) {
		snprintf(ip, sizeof ip, "198.19.%u.%u", i / 200 + 1, i % 200 + 1);
		known += arp_lookup(st[0], inet_addr(ip)) != NULL;
	}
	assert_true(known >= 100);
}

int main(void)
{
	if (!stack_fixture_root("test_arp_share"))
		return 77;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_queues),	cmocka_unit_test(test_reply_on_other_queue),
		cmocka_unit_test(test_moved_neighbour), cmocka_unit_test(test_not_shared),
		cmocka_unit_test(test_ring_full),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
