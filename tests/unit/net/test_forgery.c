/*
 * What an off-path forger can do to the DPDK stack (dataplane/net/stack):
 *
 * - SYN cookies: a spoofed ACK opens a connection only if it guesses the
 *   cookie's MAC, which must be at least 24 bits wide. The test tries all
 *   2^24 cookies that keep a real cookie's top byte (time and options: a
 *   forger learns them from a SYN-ACK of its own) and differ in the low 24
 *   bits. When those bits are all MAC exactly one opens, the real one,
 *   whatever the key; the 19-bit cookie this replaced opened 32 (one per
 *   value of the 5 option bits among them), so 2^19 tries opened one.
 * - ARP: a TCP segment with a bad checksum teaches the ARP cache nothing
 *   (it used to, before the checksum was looked at): a corrupt or forged
 *   frame cannot point our replies to an address at another MAC.
 *
 * One stack on a net_null port (nothing leaves the process); frames go in
 * through eth_input, answers are read from its transmit burst. Needs root
 * (the EAL): skipped otherwise.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include <rte_mbuf.h>

#include "stack_fixture.h"

static struct stack *s;

/* A clock of our own, 100 ms into a cookie period (64 s). */
#define PERIOD_MS 65536ull
#define T0_MS (0x4000ull * PERIOD_MS + 100)

static int setup(void **state)
{
	(void)state;
	if (stack_fixture_open("test_forgery", 1, &s) != 0)
		return -1;
	s->now_ms = T0_MS;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	stack_fixture_close(1, &s);
	return 0;
}

static int flush(void **state)
{
	(void)state;
	stack_tx_flush(s);
	tcp_events(s);
	s->now_ms = T0_MS;
	return 0;
}

/* MSS 1460, SACK-permitted, window scale 7: what a Linux peer offers,
 * less the timestamp. */
static const uint8_t syn_opts[] = {2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7, 0, 0};

static const uint32_t PEER_ISN = 0x1234567;

/* The cookie of a SYN-ACK for a SYN from `ip`:`sport`. */
static uint32_t cookie_for(uint32_t ip, uint16_t sport)
{
	struct test_seg g = {.src_ip = ip,
			     .src_mac_last = 9,
			     .sport = sport,
			     .seq = PEER_ISN,
			     .flags = RTE_TCP_SYN_FLAG,
			     .opt = syn_opts,
			     .optlen = sizeof syn_opts};
	unsigned before = s->ntx;
	eth_input(s, stack_fixture_segment(s, &g));
	assert_int_equal(s->ntx, before + 1);
	struct rte_mbuf *sa = s->tx[s->ntx - 1];
	struct rte_tcp_hdr *th =
		rte_pktmbuf_mtod_offset(sa, struct rte_tcp_hdr *,
					sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr));
	assert_int_equal(th->tcp_flags, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
	assert_int_equal(rte_be_to_cpu_32(th->recv_ack), PEER_ISN + 1);
	uint32_t cookie = rte_be_to_cpu_32(th->sent_seq);
	stack_tx_flush(s);
	return cookie;
}

/* Sends the handshake's ACK carrying `cookie`; true when the stack took
 * it as its own (it opened a connection: the layer above, null_port's,
 * then refuses it), false when it refused the cookie. */
static bool ack_opens(uint32_t ip, uint16_t sport, uint32_t cookie)
{
	struct test_seg g = {.src_ip = ip,
			     .src_mac_last = 9,
			     .sport = sport,
			     .seq = PEER_ISN + 1,
			     .ack = cookie + 1,
			     .flags = RTE_TCP_ACK_FLAG};
	uint64_t bad = s->st.syn_cookies_bad;
	uint64_t opened = s->st.tcp_refused + s->st.tcp_accepted;
	eth_input(s, stack_fixture_segment(s, &g));
	tcp_events(s);
	bool took = s->st.tcp_refused + s->st.tcp_accepted == opened + 1;
	/* Each ACK is one or the other, never both or neither. */
	assert_true(took != (s->st.syn_cookies_bad == bad + 1));
	return took;
}

/* Every guess at the low 24 bits of a real cookie, its top byte kept:
 * exactly one opens (the real one) when those 24 bits are all MAC. */
static void test_forged_cookies_refused(void **state)
{
	(void)state;
	uint32_t ip = inet_addr("198.18.0.9");
	uint16_t sport = 40000;
	uint32_t cookie = cookie_for(ip, sport);
	unsigned opened = 0;
	for (uint32_t low = 0; low < (1u << 24); low++)
		opened += ack_opens(ip, sport, (cookie & 0xff000000u) | low);
	printf("cookies differing in the low 24 bits that opened: %u\n", opened);
	assert_int_equal(opened, 1);
}

/* Every single bit of the cookie is checked: flipping any one refuses it. */
static void test_every_cookie_bit_counts(void **state)
{
	(void)state;
	uint32_t ip = inet_addr("198.18.0.10");
	uint16_t sport = 40001;
	uint32_t cookie = cookie_for(ip, sport);
	for (int bit = 0; bit < 32; bit++)
		assert_false(ack_opens(ip, sport, cookie ^ (1u << bit)));
	assert_true(ack_opens(ip, sport, cookie));
}

/* A cookie is good in its own time period and the next, not after. */
static void test_cookie_lifetime(void **state)
{
	(void)state;
	uint32_t ip = inet_addr("198.18.0.11");
	uint16_t sport = 40002;
	uint32_t cookie = cookie_for(ip, sport);
	s->now_ms = T0_MS + PERIOD_MS;
	assert_true(ack_opens(ip, sport, cookie));
	s->now_ms = T0_MS + 2 * PERIOD_MS;
	assert_false(ack_opens(ip, sport, cookie));
	s->now_ms = T0_MS + 3 * PERIOD_MS;
	assert_false(ack_opens(ip, sport, cookie));
}

static const struct rte_ether_addr *mac_of(const char *ip)
{
	return arp_lookup(s, inet_addr(ip));
}

/* A SYN with a bad TCP checksum teaches no address, and moves no known one. */
static void test_bad_checksum_teaches_arp_nothing(void **state)
{
	(void)state;
	struct test_seg g = {.src_ip = inet_addr("198.18.0.55"),
			     .src_mac_last = 0x55,
			     .sport = 40003,
			     .seq = PEER_ISN,
			     .flags = RTE_TCP_SYN_FLAG,
			     .tcp_spoil = 0x0100};
	uint64_t bad = s->st.tcp_bad_csum;
	assert_null(mac_of("198.18.0.55"));
	eth_input(s, stack_fixture_segment(s, &g));
	assert_int_equal(s->st.tcp_bad_csum, bad + 1);
	assert_null(mac_of("198.18.0.55"));

	/* The same segment intact: learned. */
	g.tcp_spoil = 0;
	eth_input(s, stack_fixture_segment(s, &g));
	const struct rte_ether_addr *mac = mac_of("198.18.0.55");
	assert_non_null(mac);
	assert_int_equal(mac->addr_bytes[5], 0x55);

	/* A corrupt frame claiming that address from another MAC: ignored. */
	g.src_mac_last = 0x66;
	g.tcp_spoil = 0x0001;
	eth_input(s, stack_fixture_segment(s, &g));
	assert_int_equal(s->st.tcp_bad_csum, bad + 2);
	mac = mac_of("198.18.0.55");
	assert_non_null(mac);
	assert_int_equal(mac->addr_bytes[5], 0x55);
}

int main(void)
{
	if (!stack_fixture_root("test_forgery"))
		return 77;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_forged_cookies_refused, flush),
		cmocka_unit_test_teardown(test_every_cookie_bit_counts, flush),
		cmocka_unit_test_teardown(test_cookie_lifetime, flush),
		cmocka_unit_test_teardown(test_bad_checksum_teaches_arp_nothing, flush),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
