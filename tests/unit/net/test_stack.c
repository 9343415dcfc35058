/* Unit tests for the pure functions of the DPDK transport's stack
 * (dataplane/net/stack), no EAL: stack_cksum gives what DPDK's
 * rte_raw_cksum gives for every length and alignment of a frame,
 * stack_l4_cksum makes checksums that verify, and siphash24 matches the
 * SipHash-2-4 reference vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../../dataplane/net/stack/stack.h"

#define MAX_LEN 1600

static uint8_t buf[MAX_LEN + 16];

static void fill(uint32_t seed)
{
	for (size_t i = 0; i < sizeof buf; i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (uint8_t)(seed >> 16);
	}
}

static void same_as_dpdk_every_length_and_alignment(void **state)
{
	(void)state;
	fill(1);
	for (size_t off = 0; off < 8; off++)
		for (size_t len = 0; len <= MAX_LEN; len++)
			assert_int_equal(stack_cksum(buf + off, len),
					 rte_raw_cksum(buf + off, len));
}

/* All ones: the sum that carries furthest. */
static void same_as_dpdk_all_ones(void **state)
{
	(void)state;
	memset(buf, 0xff, sizeof buf);
	for (size_t len = 0; len <= MAX_LEN; len++)
		assert_int_equal(stack_cksum(buf, len), rte_raw_cksum(buf, len));
}

/* The sum over pseudo header and segment with DPDK's functions alone. */
static uint16_t dpdk_l4_sum(const struct rte_ipv4_hdr *ip, const void *l4, size_t len)
{
	uint32_t sum = rte_ipv4_phdr_cksum(ip, 0) + (uint32_t)rte_raw_cksum(l4, len);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)((sum & 0xffff) + (sum >> 16));
}

/* A TCP segment checksummed with stack_l4_cksum verifies with DPDK's
 * code, and the other way round, odd payload lengths included. */
static void l4_checksum_round_trip(void **state)
{
	(void)state;
	fill(7);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)buf;
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
	for (uint16_t paylen = 0; paylen <= 1460; paylen += 37) {
		uint16_t l4 = (uint16_t)(sizeof *th + paylen);
		memset(ip, 0, sizeof *ip);
		ip->version_ihl = RTE_IPV4_VHL_DEF;
		ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof *ip + l4));
		ip->next_proto_id = IPPROTO_TCP;
		ip->src_addr = rte_cpu_to_be_32(0x64400001u + paylen);
		ip->dst_addr = rte_cpu_to_be_32(0xc6120001u);
		th->cksum = 0;
		th->cksum = (uint16_t)~stack_l4_cksum(ip, th, l4);
		assert_int_equal(dpdk_l4_sum(ip, th, l4), 0xffff);
		th->cksum = 0;
		th->cksum = rte_ipv4_udptcp_cksum(ip, th);
		assert_int_equal(stack_l4_cksum(ip, th, l4), 0xffff);
		th->sent_seq ^= 1; /* one bit off: caught */
		assert_int_not_equal(stack_l4_cksum(ip, th, l4), 0xffff);
	}
}

/* From the SipHash paper (Aumasson, Bernstein 2012): key 00 01 .. 0f,
 * message 00 01 .. len-1. 15 bytes: one whole block and a tail of 7. */
static void siphash_reference_vectors(void **state)
{
	(void)state;
	uint8_t key[16], msg[15];
	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 15; i++)
		msg[i] = (uint8_t)i;
	assert_int_equal(siphash24(key, msg, 0), 0x726fdb47dd0e0e31ull);
	assert_int_equal(siphash24(key, msg, 15), 0xa129ca6149be45e5ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(same_as_dpdk_every_length_and_alignment),
		cmocka_unit_test(same_as_dpdk_all_ones),
		cmocka_unit_test(l4_checksum_round_trip),
		cmocka_unit_test(siphash_reference_vectors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
