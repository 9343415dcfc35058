/*
 * Checksum offloads in the DPDK stack (dpdk.c, stack/ipv4.c, stack/tcp_*.c):
 * where the port checks IPv4 and TCP checksums on receive, its verdict in
 * the mbuf's ol_flags counts (good, bad; unknown: ours); where it fills
 * them in on send, the frame leaves with the offload flags, the lengths
 * and the pseudo-header sum in the TCP field; elsewhere, software both
 * ways. One stack on a net_null port (nothing leaves the process); its
 * offloads are set by hand, as dpdk.c would from what a port offers, and
 * what it answers is read from its transmit burst before the flush.
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
#include <unistd.h>

#include <cmocka.h>

#include <rte_ethdev.h>
#include <rte_icmp.h>
#include <rte_mbuf.h>

#include "beacon/config.h"
#include "beacon/ring.h"
#include "beacon/transport.h"

#include "../../common/null_port.h"

#include "../../../dataplane/net/stack/stack.h"

#define RX_CSUM (RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM)
#define TX_CSUM (RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM)

static struct config cfg;
static struct ring ring;
static struct stack *s;
static uint16_t next_sport = 40000;

static int setup(void **state)
{
	(void)state;
	char err[512];
	if (null_port_start(&cfg, 1, err, sizeof err) != 0) {
		fprintf(stderr, "test_csum_offload: %s\n", err);
		return -1;
	}
	if (ring_init(&ring, 64) != 0)
		return -1;
	struct transport *t = NULL;
	if (transport_dpdk_open(&ring, 0, &cfg, &null_port_events, NULL, &t) != 0)
		return -1;
	s = (struct stack *)t;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (s)
		transport_free(&s->base);
	transport_dpdk_shutdown();
	ring_exit(&ring);
	return 0;
}

/* Queued frames go out (to nowhere) between cases. */
static int flush(void **state)
{
	(void)state;
	stack_tx_flush(s);
	s->rx_offloads = s->tx_offloads = 0;
	return 0;
}

static bool ip_sum_ok(const struct rte_ipv4_hdr *ip)
{
	return rte_raw_cksum(ip, rte_ipv4_hdr_len(ip)) == 0xffff;
}

static bool tcp_sum_ok(const struct rte_ipv4_hdr *ip, const struct rte_tcp_hdr *th)
{
	size_t l4 = rte_be_to_cpu_16(ip->total_length) - rte_ipv4_hdr_len(ip);
	uint32_t sum = rte_ipv4_phdr_cksum(ip, 0) + rte_raw_cksum(th, l4);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/* A frame from 198.18.0.9 as the port hands it over: intact checksums,
 * then `spoil` XORed into the IP or TCP one, ol_flags as the port says. */
struct frame {
	struct rte_mbuf *m;
	struct rte_ipv4_hdr *ip;
	struct rte_tcp_hdr *th;
};

static struct frame syn_frame(uint16_t ip_spoil, uint16_t tcp_spoil, uint64_t ol_flags)
{
	struct frame f;
	f.m = rte_pktmbuf_alloc(s->pool);
	assert_non_null(f.m);
	size_t len = sizeof(struct rte_ether_hdr) + sizeof *f.ip + sizeof *f.th;
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)rte_pktmbuf_append(f.m, (uint16_t)len);
	assert_non_null(eh);
	memset(eh, 0, len);
	eh->dst_addr = s->mac;
	struct rte_ether_addr from = {{0x02, 0, 0, 0, 0, 0x09}};
	eh->src_addr = from;
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	f.ip = (struct rte_ipv4_hdr *)(eh + 1);
	f.ip->version_ihl = RTE_IPV4_VHL_DEF;
	f.ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof *f.ip + sizeof *f.th));
	f.ip->time_to_live = 64;
	f.ip->next_proto_id = IPPROTO_TCP;
	f.ip->src_addr = inet_addr("198.18.0.9");
	f.ip->dst_addr = s->ip;
	f.ip->hdr_checksum = rte_ipv4_cksum(f.ip) ^ ip_spoil;
	f.th = (struct rte_tcp_hdr *)(f.ip + 1);
	f.th->src_port = rte_cpu_to_be_16(next_sport++);
	f.th->dst_port = rte_cpu_to_be_16(s->listen_port);
	f.th->sent_seq = rte_cpu_to_be_32(1000);
	f.th->data_off = (uint8_t)((sizeof *f.th / 4) << 4);
	f.th->tcp_flags = RTE_TCP_SYN_FLAG;
	f.th->rx_win = rte_cpu_to_be_16(65535);
	f.th->cksum = rte_ipv4_udptcp_cksum(f.ip, f.th) ^ tcp_spoil;
	f.m->ol_flags = ol_flags;
	return f;
}

/* Feeds the frame in; the SYN-ACK it drew, or NULL. */
static struct rte_mbuf *answer_to(struct frame f)
{
	unsigned before = s->ntx;
	eth_input(s, f.m);
	return s->ntx > before ? s->tx[s->ntx - 1] : NULL;
}

static struct rte_tcp_hdr *tcp_of(struct rte_mbuf *m, struct rte_ipv4_hdr **ip)
{
	*ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	return (struct rte_tcp_hdr *)(*ip + 1);
}

static const uint64_t GOOD = RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_GOOD;

/* No offloads: our own sums both ways, whatever the mbuf claims. */
static void test_software(void **state)
{
	(void)state;
	uint64_t bad_tcp = s->st.tcp_bad_csum, bad_ip = s->st.ip_bad_csum;
	assert_null(answer_to(syn_frame(0, 0x1234, GOOD)));
	assert_int_equal(s->st.tcp_bad_csum, bad_tcp + 1);
	assert_null(answer_to(syn_frame(0x0101, 0, GOOD)));
	assert_int_equal(s->st.ip_bad_csum, bad_ip + 1);

	struct rte_mbuf *m = answer_to(syn_frame(0, 0, 0));
	assert_non_null(m);
	struct rte_ipv4_hdr *ip;
	struct rte_tcp_hdr *th = tcp_of(m, &ip);
	assert_int_equal(th->tcp_flags, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
	assert_true(ip_sum_ok(ip));
	assert_true(tcp_sum_ok(ip, th));
	assert_int_equal(m->ol_flags & RTE_MBUF_F_TX_OFFLOAD_MASK, 0);
}

/* The port checks: its verdict counts, not the bytes; where it did not
 * look (UNKNOWN) we check. */
static void test_rx_offload(void **state)
{
	(void)state;
	s->rx_offloads = RX_CSUM;
	uint64_t bad_tcp = s->st.tcp_bad_csum, bad_ip = s->st.ip_bad_csum;
	/* The port said good: a spoiled field is not ours to judge again. */
	assert_non_null(answer_to(syn_frame(0x0101, 0x1234, GOOD)));
	/* The port said bad: dropped and counted, intact bytes or not. */
	assert_null(answer_to(syn_frame(0, 0, RTE_MBUF_F_RX_IP_CKSUM_GOOD |
						   RTE_MBUF_F_RX_L4_CKSUM_BAD)));
	assert_int_equal(s->st.tcp_bad_csum, bad_tcp + 1);
	assert_null(answer_to(syn_frame(0, 0, RTE_MBUF_F_RX_IP_CKSUM_BAD |
						   RTE_MBUF_F_RX_L4_CKSUM_GOOD)));
	assert_int_equal(s->st.ip_bad_csum, bad_ip + 1);
	/* NONE: integrity verified, the field left unfilled. */
	assert_non_null(answer_to(syn_frame(0x0101, 0x1234, RTE_MBUF_F_RX_IP_CKSUM_NONE |
								 RTE_MBUF_F_RX_L4_CKSUM_NONE)));
	/* UNKNOWN: ours. */
	assert_null(answer_to(syn_frame(0, 0x1234, 0)));
	assert_int_equal(s->st.tcp_bad_csum, bad_tcp + 2);
	assert_null(answer_to(syn_frame(0x0101, 0, 0)));
	assert_int_equal(s->st.ip_bad_csum, bad_ip + 2);
	assert_non_null(answer_to(syn_frame(0, 0, 0)));
}

/* The port fills in: the SYN-ACK carries the flags, the header lengths,
 * a zero IP checksum and the pseudo-header's sum, which the port
 * completes into the right one. */
static void test_tx_offload(void **state)
{
	(void)state;
	s->tx_offloads = TX_CSUM;
	struct rte_mbuf *m = answer_to(syn_frame(0, 0, 0));
	assert_non_null(m);
	struct rte_ipv4_hdr *ip;
	struct rte_tcp_hdr *th = tcp_of(m, &ip);
	uint64_t want = RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_TCP_CKSUM;
	assert_int_equal(m->ol_flags & RTE_MBUF_F_TX_OFFLOAD_MASK, want);
	assert_int_equal(m->l2_len, sizeof(struct rte_ether_hdr));
	assert_int_equal(m->l3_len, sizeof *ip);
	assert_int_equal(m->l4_len, (th->data_off >> 4) * 4);
	assert_true(m->l4_len > sizeof *th); /* the SYN-ACK's options */
	assert_int_equal(ip->hdr_checksum, 0);
	assert_int_equal(th->cksum, rte_ipv4_phdr_cksum(ip, m->ol_flags));
	/* What the port does: */
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	th->cksum = 0;
	th->cksum = rte_ipv4_udptcp_cksum(ip, th);
	assert_true(ip_sum_ok(ip) && tcp_sum_ok(ip, th));

	/* One of the two: the other in software. */
	s->tx_offloads = RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
	m = answer_to(syn_frame(0, 0, 0));
	assert_non_null(m);
	th = tcp_of(m, &ip);
	assert_int_equal(m->ol_flags & RTE_MBUF_F_TX_OFFLOAD_MASK,
			 RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_TCP_CKSUM);
	assert_true(ip_sum_ok(ip));
	s->tx_offloads = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
	m = answer_to(syn_frame(0, 0, 0));
	assert_non_null(m);
	th = tcp_of(m, &ip);
	assert_int_equal(m->ol_flags & RTE_MBUF_F_TX_OFFLOAD_MASK,
			 RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM);
	assert_true(tcp_sum_ok(ip, th));
}

/* An echo reply reuses the request's mbuf: it leaves with TX flags of its
 * own (the IP checksum to the port), never the request's RX flags' say. */
static void test_echo_reply(void **state)
{
	(void)state;
	s->rx_offloads = RX_CSUM;
	s->tx_offloads = TX_CSUM;
	struct frame f = syn_frame(0, 0, GOOD);
	/* Turn it into an echo request of 8 bytes. */
	f.ip->next_proto_id = IPPROTO_ICMP;
	struct rte_icmp_hdr *ic = (struct rte_icmp_hdr *)f.th;
	memset(ic, 0, sizeof *f.th);
	ic->icmp_type = RTE_IP_ICMP_ECHO_REQUEST;
	ic->icmp_ident = rte_cpu_to_be_16(7);
	f.ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof *f.ip + sizeof *ic));
	rte_pktmbuf_trim(f.m, (uint16_t)(sizeof *f.th - sizeof *ic));
	f.ip->hdr_checksum = 0;
	f.ip->hdr_checksum = rte_ipv4_cksum(f.ip);
	ic->icmp_cksum = (uint16_t)~rte_raw_cksum(ic, sizeof *ic);
	uint64_t replies = s->st.icmp_echo_replies;
	struct rte_mbuf *m = answer_to(f);
	assert_non_null(m);
	assert_int_equal(s->st.icmp_echo_replies, replies + 1);
	struct rte_ipv4_hdr *ip;
	(void)tcp_of(m, &ip);
	assert_int_equal(m->ol_flags & RTE_MBUF_F_TX_OFFLOAD_MASK,
			 RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM);
	assert_int_equal(m->l3_len, sizeof *ip);
	assert_int_equal(ip->hdr_checksum, 0);
	ic = (struct rte_icmp_hdr *)(ip + 1);
	assert_int_equal(ic->icmp_type, RTE_IP_ICMP_ECHO_REPLY);
	assert_int_equal(rte_raw_cksum(ic, sizeof *ic), 0xffff);
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_csum_offload: needs root (the DPDK EAL): skipped\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_software, flush),
		cmocka_unit_test_teardown(test_rx_offload, flush),
		cmocka_unit_test_teardown(test_tx_offload, flush),
		cmocka_unit_test_teardown(test_echo_reply, flush),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
