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
#include <string.h>

#include <cmocka.h>

#include <rte_ethdev.h>
#include <rte_icmp.h>
#include <rte_mbuf.h>

#include "stack_fixture.h"

#define RX_CSUM (RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM)
#define TX_CSUM (RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM)

static struct stack *s;
static uint16_t next_sport = 40000;

static int setup(void **state)
{
	(void)state;
	return stack_fixture_open("test_csum_offload", 1, &s);
}

static int teardown(void **state)
{
	(void)state;
	stack_fixture_close(1, &s);
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
	struct test_seg g = {.src_ip = inet_addr("198.18.0.9"),
			     .src_mac_last = 0x09,
			     .sport = next_sport++,
			     .seq = 1000,
			     .flags = RTE_TCP_SYN_FLAG,
			     .ip_spoil = ip_spoil,
			     .tcp_spoil = tcp_spoil};
	struct frame f;
	f.m = stack_fixture_segment(s, &g);
	f.ip = rte_pktmbuf_mtod_offset(f.m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	f.th = (struct rte_tcp_hdr *)(f.ip + 1);
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
	assert_null(answer_to(
		syn_frame(0, 0, RTE_MBUF_F_RX_IP_CKSUM_GOOD | RTE_MBUF_F_RX_L4_CKSUM_BAD)));
	assert_int_equal(s->st.tcp_bad_csum, bad_tcp + 1);
	assert_null(answer_to(
		syn_frame(0, 0, RTE_MBUF_F_RX_IP_CKSUM_BAD | RTE_MBUF_F_RX_L4_CKSUM_GOOD)));
	assert_int_equal(s->st.ip_bad_csum, bad_ip + 1);
	/* NONE: integrity verified, the field left unfilled. */
	assert_non_null(answer_to(syn_frame(
		0x0101, 0x1234, RTE_MBUF_F_RX_IP_CKSUM_NONE | RTE_MBUF_F_RX_L4_CKSUM_NONE)));
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
	if (!stack_fixture_root("test_csum_offload"))
		return 77;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_software, flush),
		cmocka_unit_test_teardown(test_rx_offload, flush),
		cmocka_unit_test_teardown(test_tx_offload, flush),
		cmocka_unit_test_teardown(test_echo_reply, flush),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
