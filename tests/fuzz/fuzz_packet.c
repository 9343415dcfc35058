/*
 * libFuzzer target for the DPDK transport's packet input path: each input is
 * one Ethernet frame handed to the stack of a real DPDK port (net_null, so
 * nothing leaves the process), as dpdk_poll hands it a received frame. The
 * destination MAC is set to the port's own so frames get past the first
 * filter; everything else (ARP, IPv4, ICMP, TCP with its state across
 * inputs: the stack keeps its connections between frames) is the fuzzer's.
 * Every 64 inputs the stack also opens a connection to an on-link peer
 * (active open, as agentsim's DPDK mode does), so frames also meet
 * connections waiting for ARP and in SYN_SENT: forged SYN-ACKs and resets.
 * Checks: no crash, no leak, no read outside the frame, and the stack's
 * accounting holds (mbufs held out of order never exceed its bound).
 *
 * Needs root (the EAL), like the DPDK transport itself.
 */
#include "fuzz_common.h"

#include <arpa/inet.h>
#include <string.h>

#include <rte_mbuf.h>

#include "beacon/config.h"
#include "beacon/ring.h"
#include "beacon/transport.h"

#include "../common/null_port.h"

#include "../../dataplane/net/stack/stack.h"

static struct stack *stack;
static struct ring ring;
static struct config cfg;
static int upper_token;

static void *on_accepted(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
			 socklen_t len)
{
	(void)ctx;
	(void)tc;
	(void)peer;
	(void)len;
	return &upper_token;
}

static uint8_t received_sum;

static void on_received(void *upper, const uint8_t *data, size_t len)
{
	(void)upper;
	/* Touch every byte: a bad length shows up under ASan here. */
	for (size_t i = 0; i < len; i++)
		received_sum ^= data[i];
}

static void on_sent(void *upper)
{
	(void)upper;
}

static void on_closed(void *upper, int err)
{
	(void)upper;
	(void)err;
}

static void on_connected(void *upper)
{
	(void)upper;
}

static const struct transport_events events = {
	.accepted = on_accepted,
	.received = on_received,
	.sent = on_sent,
	.closed = on_closed,
	.connected = on_connected,
};

/* An active open now and then; refusals (no free port, a full table) are
 * part of what is tried. */
static void maybe_connect(void)
{
	static unsigned inputs;
	if (inputs++ % 64 != 0)
		return;
	struct sockaddr_in peer = {.sin_family = AF_INET,
				   .sin_port = htons(443),
				   .sin_addr.s_addr = inet_addr("198.18.0.2")};
	struct transport_conn *tc;
	(void)transport_connect(&stack->base, &peer, &upper_token, &tc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char err[512];
	int rc = null_port_start(&cfg, 1, err, sizeof err); /* listens on 8443 */
	if (rc != 0) {
		fprintf(stderr, "fuzz_packet: %s\n", err);
		abort();
	}
	CHECK(ring_init(&ring, 64) == 0);
	struct transport *t = NULL;
	CHECK(transport_dpdk_open(&ring, 0, &cfg, &events, NULL, &t) == 0);
	stack = (struct stack *)t;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 14 || size > 1514)
		return 0;
	struct rte_mbuf *m = rte_pktmbuf_alloc(stack->pool);
	if (!m)
		return 0;
	char *p = rte_pktmbuf_append(m, (uint16_t)size);
	CHECK(p != NULL);
	memcpy(p, data, size);
	memcpy(p, &stack->mac, sizeof stack->mac);
	stack->now_ms += 7; /* time moves: timers fire across inputs */
	maybe_connect();
	eth_input(stack, m);
	tcp_timers(stack);
	tcp_events(stack);
	stack_tx_flush(stack);
	CHECK(stack->ooo_mbufs <= stack->max_ooo_mbufs);
	return 0;
}
