/*
 * The TCP state machine of the DPDK stack (dataplane/net/stack/tcp_*.c),
 * walked segment by segment: passive close (CLOSE_WAIT, LAST_ACK), active
 * close (FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT and its end), simultaneous close
 * (CLOSING), and RST at and beside RCV.NXT. After every step the
 * connection's state is the one RFC 9293 names, and tcb_check's invariants
 * hold (its asserts, like the ones at each transition inside the stack, are
 * on in test and sanitizer builds).
 *
 * One stack on a net_null port (stack_fixture.c), with a layer above of
 * our own that accepts every connection; the peer is this test, writing
 * segments, reading the answers from the stack's transmit burst. Needs
 * root (the EAL): skipped otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <rte_mbuf.h>

#include "stack_fixture.h"

#include "../../../dataplane/net/stack/tcp-internal.h"

static struct stack *s;

static struct test_app app; /* the layer above: stack_fixture.h */

static int setup(void **state)
{
	(void)state;
	if (stack_fixture_open("test_tcp_states", 1, &s) != 0)
		return -1;
	s->base.ev = &test_app_events; /* accept, unlike null_port's */
	s->base.ctx = &app;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	stack_fixture_close(1, &s);
	return 0;
}

#define PEER_IP "198.18.0.20"
static const uint32_t ISN = 0x70000000u; /* the peer's */
static uint16_t next_sport = 41000;

/* The peer's side of one connection. */
struct peer {
	uint16_t sport;
	uint32_t cookie; /* our ISN */
};

/* What the stack sent last. */
struct answer {
	unsigned frames; /* how many it sent for the step */
	uint8_t flags;
	uint32_t seq, ack;
	uint32_t len; /* payload */
};

/* The frames the stack queued since `before`: counted, the last read,
 * then sent on (to nowhere) and the deferred callbacks delivered. */
static struct answer answered(unsigned before)
{
	struct answer a = {.frames = s->ntx - before};
	if (a.frames) {
		struct rte_mbuf *m = s->tx[s->ntx - 1];
		struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *,
								  sizeof(struct rte_ether_hdr));
		struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
		a.flags = th->tcp_flags;
		a.seq = rte_be_to_cpu_32(th->sent_seq);
		a.ack = rte_be_to_cpu_32(th->recv_ack);
		a.len = rte_be_to_cpu_16(ip->total_length) - sizeof *ip - (th->data_off >> 4) * 4u;
	}
	stack_tx_flush(s);
	tcp_events(s);
	return a;
}

/* A segment from the peer: seq and ack relative to the ISNs (1: the
 * first byte after the SYN). */
static struct answer from_peer(const struct peer *p, uint8_t flags, uint32_t rseq, uint32_t rack,
			       const char *data)
{
	struct test_seg g = {.src_ip = inet_addr(PEER_IP),
			     .src_mac_last = 0x20,
			     .sport = p->sport,
			     .seq = ISN + rseq,
			     .ack = p->cookie + rack,
			     .flags = flags,
			     .data = (const uint8_t *)data,
			     .datalen = data ? (uint16_t)strlen(data) : 0};
	unsigned before = s->ntx;
	eth_input(s, stack_fixture_segment(s, &g));
	return answered(before);
}

static struct tcb *conn_of(const struct peer *p)
{
	return tcb_lookup(s, inet_addr(PEER_IP), rte_cpu_to_be_16(p->sport),
			  rte_cpu_to_be_16(s->listen_port));
}

/* The connection's state, its invariants checked on the way. */
static enum tcp_state state_of(const struct peer *p)
{
	struct tcb *c = conn_of(p);
	assert_non_null(c);
	tcb_check(c);
	return c->state;
}

/* SYN, our SYN-ACK with its cookie, the ACK: ESTABLISHED, accepted. */
static struct peer handshake(void)
{
	struct peer p = {.sport = next_sport++};
	memset(&app, 0, sizeof app);
	struct test_seg syn = {.src_ip = inet_addr(PEER_IP),
			       .src_mac_last = 0x20,
			       .sport = p.sport,
			       .seq = ISN,
			       .flags = RTE_TCP_SYN_FLAG};
	unsigned before = s->ntx;
	eth_input(s, stack_fixture_segment(s, &syn));
	struct answer a = answered(before);
	assert_int_equal(a.frames, 1);
	assert_int_equal(a.flags, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
	assert_int_equal(a.ack, ISN + 1);
	p.cookie = a.seq;
	a = from_peer(&p, RTE_TCP_ACK_FLAG, 1, 1, NULL);
	assert_int_equal(a.frames, 0);
	assert_int_equal(app.accepted, 1);
	assert_non_null(app.tc);
	assert_int_equal(state_of(&p), TCP_ESTABLISHED);
	return p;
}

/* Runs the timers `ms` on. */
static void later(uint64_t ms)
{
	s->now_ms += ms;
	unsigned before = s->ntx;
	tcp_timers(s);
	(void)answered(before);
}

/* Data both ways, then the peer closes first: CLOSE_WAIT passes at once
 * (the layer above hears `closed` and our FIN follows: LAST_ACK); the
 * ACK of our FIN ends the connection and frees it. */
static void test_passive_close(void **state)
{
	(void)state;
	unsigned ntcb = s->ntcb;
	struct peer p = handshake();
	assert_int_equal(s->ntcb, ntcb + 1);
	from_peer(&p, RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, 1, 1, "hello");
	assert_int_equal(app.rxlen, 5);
	assert_memory_equal(app.rx, "hello", 5);
	assert_int_equal(state_of(&p), TCP_ESTABLISHED);

	unsigned before = s->ntx;
	assert_int_equal(tcp_send(app.tc, "world", 5), 0);
	struct answer a = answered(before);
	assert_int_equal(a.frames, 1);
	assert_int_equal(a.seq, p.cookie + 1);
	assert_int_equal(a.ack, ISN + 6);
	assert_int_equal(a.len, 5);
	assert_int_equal(app.sent, 1);

	a = from_peer(&p, RTE_TCP_ACK_FLAG | RTE_TCP_FIN_FLAG, 6, 6, NULL);
	assert_true(a.flags & RTE_TCP_FIN_FLAG); /* ours, after the ACK of theirs */
	assert_int_equal(a.seq, p.cookie + 6);
	assert_int_equal(a.ack, ISN + 7);
	assert_int_equal(app.closed, 1);
	assert_int_equal(app.err, 0);
	assert_int_equal(state_of(&p), TCP_LAST_ACK);

	from_peer(&p, RTE_TCP_ACK_FLAG, 7, 7, NULL);
	assert_null(conn_of(&p));
	assert_int_equal(s->ntcb, ntcb);
}

/* We close first: FIN_WAIT_1, its ACK FIN_WAIT_2, their FIN TIME_WAIT,
 * which ignores a RST (RFC 1337) and ends after TIME_WAIT_MS. */
static void test_active_close(void **state)
{
	(void)state;
	unsigned ntcb = s->ntcb, ntw = s->ntw;
	struct peer p = handshake();
	unsigned before = s->ntx;
	tcp_close(app.tc);
	struct answer a = answered(before);
	assert_int_equal(a.flags, RTE_TCP_ACK_FLAG | RTE_TCP_FIN_FLAG);
	assert_int_equal(a.seq, p.cookie + 1);
	assert_int_equal(state_of(&p), TCP_FIN_WAIT_1);

	from_peer(&p, RTE_TCP_ACK_FLAG, 1, 2, NULL);
	assert_int_equal(state_of(&p), TCP_FIN_WAIT_2);

	a = from_peer(&p, RTE_TCP_ACK_FLAG | RTE_TCP_FIN_FLAG, 1, 2, NULL);
	assert_int_equal(a.flags, RTE_TCP_ACK_FLAG);
	assert_int_equal(a.ack, ISN + 2);
	assert_int_equal(state_of(&p), TCP_TIME_WAIT);
	assert_int_equal(s->ntw, ntw + 1);
	assert_int_equal(app.closed, 1);

	a = from_peer(&p, RTE_TCP_RST_FLAG, 2, 0, NULL);
	assert_int_equal(a.frames, 0);
	assert_int_equal(state_of(&p), TCP_TIME_WAIT);

	later(TIME_WAIT_MS - 1000);
	assert_int_equal(state_of(&p), TCP_TIME_WAIT);
	later(1001);
	assert_null(conn_of(&p));
	assert_int_equal(s->ntw, ntw);
	assert_int_equal(s->ntcb, ntcb);
}

/* Both FINs cross: FIN_WAIT_1, their FIN before the ACK of ours CLOSING,
 * that ACK TIME_WAIT. */
static void test_simultaneous_close(void **state)
{
	(void)state;
	unsigned ntcb = s->ntcb;
	struct peer p = handshake();
	unsigned before = s->ntx;
	tcp_close(app.tc);
	(void)answered(before);
	assert_int_equal(state_of(&p), TCP_FIN_WAIT_1);

	struct answer a = from_peer(&p, RTE_TCP_ACK_FLAG | RTE_TCP_FIN_FLAG, 1, 1, NULL);
	assert_true(a.flags & RTE_TCP_ACK_FLAG);
	assert_int_equal(a.ack, ISN + 2);
	assert_int_equal(state_of(&p), TCP_CLOSING);
	assert_int_equal(app.closed, 1);

	from_peer(&p, RTE_TCP_ACK_FLAG, 2, 2, NULL);
	assert_int_equal(state_of(&p), TCP_TIME_WAIT);
	later(TIME_WAIT_MS + 1);
	assert_null(conn_of(&p));
	assert_int_equal(s->ntcb, ntcb);
}

/* RFC 5961 3.2: a RST beside RCV.NXT draws a challenge ACK and changes
 * nothing; at RCV.NXT it resets the connection (`closed`: -ECONNRESET). */
static void test_reset(void **state)
{
	(void)state;
	unsigned ntcb = s->ntcb;
	struct peer p = handshake();
	uint64_t challenges = s->st.tcp_challenge_acks;
	struct answer a = from_peer(&p, RTE_TCP_RST_FLAG, 2, 0, NULL);
	assert_int_equal(a.flags, RTE_TCP_ACK_FLAG);
	assert_int_equal(a.ack, ISN + 1);
	assert_int_equal(s->st.tcp_challenge_acks, challenges + 1);
	assert_int_equal(state_of(&p), TCP_ESTABLISHED);
	assert_int_equal(app.closed, 0);

	a = from_peer(&p, RTE_TCP_RST_FLAG, 1, 0, NULL);
	assert_int_equal(a.frames, 0);
	assert_null(conn_of(&p));
	assert_int_equal(app.closed, 1);
	assert_int_equal(app.err, -ECONNRESET);
	assert_int_equal(s->ntcb, ntcb);
}

int main(void)
{
	if (!stack_fixture_root("test_tcp_states"))
		return 77;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_passive_close),
		cmocka_unit_test(test_active_close),
		cmocka_unit_test(test_simultaneous_close),
		cmocka_unit_test(test_reset),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
