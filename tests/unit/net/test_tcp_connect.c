/*
 * The active open of the DPDK stack (dataplane/net/stack/tcp_connect.c):
 * the SYN and its options, SYN_SENT's answers (the SYN-ACK, a forged
 * SYN-ACK, a blind RST, a refusal), the SYN's retransmissions and the
 * timeout, ephemeral ports, ARP before the SYN; then a client stack and a
 * server stack joined frame to frame in memory: handshake (SYN cookies on
 * the server), data both ways, a close from each side.
 *
 * Two stacks on a net_null port with two queues (stack_fixture.c), made
 * into two hosts: the second gets an address and MAC of its own, and both
 * are told they are alone on their port (one queue: what transport_connect
 * needs). The client (st[0]) stops accepting, as a client-only transport
 * does. In the tests with one stack the peer is this test, writing
 * segments and reading the answers from the stack's transmit burst. Needs
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

#include <rte_arp.h>
#include <rte_mbuf.h>

#include "stack_fixture.h"

#include "../../../dataplane/net/stack/tcp-internal.h"

static struct stack *st[2];
#define CLIENT (st[0])
#define SERVER (st[1])
#define SERVER_IP "198.18.0.2"
#define PEER_IP "198.18.0.20" /* the test itself, as a server */
#define PEER_PORT 443
#define PEER_MAC_LAST 0x20
static const uint32_t PEER_ISN = 0x30000000u;

static struct test_app client, server; /* the layers above: stack_fixture.h */

/* Two hosts on one wire: the server gets 198.18.0.2 and a MAC of its own;
 * each is the only queue of its port; the client accepts nothing. */
static int setup(void **state)
{
	(void)state;
	if (stack_fixture_open("test_tcp_connect", 2, st) != 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		st[i]->base.ev = &test_app_events;
		st[i]->base.ctx = i ? &server : &client;
	}
	SERVER->ip = inet_addr(SERVER_IP);
	SERVER->mac.addr_bytes[5] ^= 0x55;
	transport_stop_accepting(&CLIENT->base);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	stack_fixture_close(2, st);
	return 0;
}

/* The next test starts from a stack with one queue, an empty ARP cache
 * and the whole ephemeral range. */
static int one_queue(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++) {
		st[i]->nqueues = 1;
		st[i]->arp_rings = NULL;
		memset(st[i]->arp, 0, sizeof st[i]->arp);
		st[i]->eph_first = 49152;
		st[i]->eph_count = 16384;
	}
	memset(&client, 0, sizeof client);
	memset(&server, 0, sizeof server);
	return 0;
}

/* ---- reading what the stack sent ---- */

struct frame {
	uint16_t ether_type;
	struct rte_ether_addr dst_mac;
	uint32_t dst_ip, arp_tip;
	uint16_t sport, dport; /* host order */
	uint8_t flags;
	uint32_t seq, ack;
	uint16_t win;
	uint32_t len; /* payload */
	struct tcp_opts o;
	uint8_t opt[40];
	uint8_t optlen;
};

static struct frame frame_read(struct rte_mbuf *m)
{
	struct frame f = {0};
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	f.ether_type = rte_be_to_cpu_16(eh->ether_type);
	f.dst_mac = eh->dst_addr;
	if (f.ether_type == RTE_ETHER_TYPE_ARP) {
		struct rte_arp_hdr *a = (struct rte_arp_hdr *)(eh + 1);
		f.arp_tip = a->arp_data.arp_tip;
		return f;
	}
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
	f.dst_ip = ip->dst_addr;
	f.sport = rte_be_to_cpu_16(th->src_port);
	f.dport = rte_be_to_cpu_16(th->dst_port);
	f.flags = th->tcp_flags;
	f.seq = rte_be_to_cpu_32(th->sent_seq);
	f.ack = rte_be_to_cpu_32(th->recv_ack);
	f.win = rte_be_to_cpu_16(th->rx_win);
	f.optlen = (uint8_t)((th->data_off >> 4) * 4 - sizeof *th);
	memcpy(f.opt, th + 1, f.optlen);
	f.len = rte_be_to_cpu_16(ip->total_length) - sizeof *ip - (th->data_off >> 4) * 4u;
	syn_options(th, &f.o);
	return f;
}

/* What s sent since the last call: n frames, read into f[0..n) (at most
 * max), sent on (to nowhere); then the deferred callbacks. */
static unsigned sent_by(struct stack *s, struct frame *f, unsigned max)
{
	unsigned n = s->ntx;
	for (unsigned i = 0; i < n && i < max; i++)
		f[i] = frame_read(s->tx[i]);
	stack_tx_flush(s);
	tcp_events(s);
	return n;
}

/* A segment from the test's peer to the client's port `dport`. */
static void from_peer(uint16_t dport, uint8_t flags, uint32_t seq, uint32_t ack, const uint8_t *opt,
		      uint8_t optlen, const char *data)
{
	struct test_seg g = {.src_ip = inet_addr(PEER_IP),
			     .src_mac_last = PEER_MAC_LAST,
			     .sport = PEER_PORT,
			     .dport = dport,
			     .seq = seq,
			     .ack = ack,
			     .flags = flags,
			     .opt = opt,
			     .optlen = optlen,
			     .data = (const uint8_t *)data,
			     .datalen = data ? (uint16_t)strlen(data) : 0};
	eth_input(CLIENT, stack_fixture_segment(CLIENT, &g));
}

static void peer_known(void)
{
	struct rte_ether_addr mac = {{0x02, 0, 0, 0, 0, PEER_MAC_LAST}};
	assert_true(arp_learn(CLIENT, inet_addr(PEER_IP), &mac));
}

static struct sockaddr_in addr_of(const char *ip, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = inet_addr(ip);
	return a;
}

/* transport_connect to the test's peer (its MAC known): the SYN. */
static struct frame connect_peer(struct transport_conn **tc)
{
	peer_known();
	struct sockaddr_in dst = addr_of(PEER_IP, PEER_PORT);
	assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, tc), 0);
	struct frame f[4];
	assert_int_equal(sent_by(CLIENT, f, 4), 1);
	assert_int_equal(f[0].flags, RTE_TCP_SYN_FLAG);
	return f[0];
}

static struct tcb *client_tcb(uint16_t lport)
{
	return tcb_lookup(CLIENT, inet_addr(PEER_IP), htons(PEER_PORT), htons(lport));
}

static enum tcp_state state_of(uint16_t lport)
{
	struct tcb *c = client_tcb(lport);
	assert_non_null(c);
	tcb_check(c);
	return c->state;
}

/* The peer's SYN-ACK options: MSS 1400, SACK-permitted, timestamp (TSval
 * 5000 echoing `ecr`), window scale 7. */
static uint8_t syn_ack_opts(uint8_t *opt, uint32_t ecr)
{
	const uint8_t head[4] = {2, 4, 1400 >> 8, 1400 & 0xff};
	memcpy(opt, head, 4);
	ts_option(opt + 4, 5000, ecr);
	opt[4] = 4; /* SACK-permitted in the timestamp's NOPs */
	opt[5] = 2;
	const uint8_t ws[4] = {1, 3, 3, 7};
	memcpy(opt + 16, ws, 4);
	return 20;
}

/* ---- the tests ---- */

/* The seam without an active open (the kernel transport, an idle DPDK
 * worker), and a port with several queues. */
static void test_not_supported(void **state)
{
	(void)state;
	const struct transport_ops none = {0};
	struct transport t = {.ops = &none};
	struct sockaddr_in dst = addr_of(PEER_IP, PEER_PORT);
	struct transport_conn *tc = NULL;
	assert_int_equal(transport_connect(&t, &dst, &client, &tc), -EOPNOTSUPP);
	CLIENT->nqueues = 2;
	assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, &tc), -EOPNOTSUPP);
	CLIENT->nqueues = 1;
	struct sockaddr_in off_link = addr_of("192.0.2.1", PEER_PORT);
	assert_int_equal(transport_connect(&CLIENT->base, &off_link, &client, &tc), -ENETUNREACH);
	assert_null(tc);
	assert_int_equal(CLIENT->ntx, 0);
}

/* The SYN: to the peer's MAC, address and port, from an ephemeral port,
 * window unscaled, MSS, SACK-permitted, timestamp (echoing nothing) and
 * window scale RCV_WS; SYN_SENT, one connection open, no callback yet. */
static void test_syn(void **state)
{
	(void)state;
	unsigned conns = transport_conn_count(&CLIENT->base);
	struct transport_conn *tc;
	struct frame f = connect_peer(&tc);
	struct rte_ether_addr peer_mac = {{0x02, 0, 0, 0, 0, PEER_MAC_LAST}};
	assert_true(rte_is_same_ether_addr(&f.dst_mac, &peer_mac));
	assert_int_equal(f.dst_ip, inet_addr(PEER_IP));
	assert_int_equal(f.dport, PEER_PORT);
	assert_true(f.sport >= 49152);
	assert_int_equal(f.ack, 0);
	assert_int_equal(f.win, 65535);
	assert_int_equal(f.len, 0);
	assert_int_equal(f.o.mss, CLIENT->mtu - 40);
	assert_int_equal(f.o.ws, RCV_WS);
	assert_true(f.o.sack);
	assert_true(f.o.ts);
	assert_int_equal(f.o.tsecr, 0);
	assert_int_equal(f.optlen, 20);
	assert_int_equal(state_of(f.sport), TCP_SYN_SENT);
	assert_int_equal(transport_conn_count(&CLIENT->base), conns + 1);
	assert_int_equal(client.connected + client.closed, 0);
	transport_close(tc); /* RFC 9293 3.10.4: dropped, `closed` follows */
	struct frame none[1];
	assert_int_equal(sent_by(CLIENT, none, 1), 0); /* nothing to reset */
	assert_int_equal(client.err, 0);
	assert_int_equal(client.closed, 1);
	assert_null(client_tcb(f.sport));
	assert_int_equal(transport_conn_count(&CLIENT->base), conns);
}

/* The SYN-ACK on a stack that stopped accepting: ESTABLISHED with the
 * peer's options, our ACK of its SYN, `connected` once (before the first
 * `received`); a send queued in SYN_SENT leaves now. */
static void test_syn_ack(void **state)
{
	(void)state;
	struct transport_conn *tc;
	struct frame syn = connect_peer(&tc);
	assert_int_equal(transport_send(tc, "early", 5), 0);
	struct frame f[4];
	assert_int_equal(sent_by(CLIENT, f, 4), 0); /* it waits for the handshake */
	assert_int_equal(client.sent, 0);

	uint8_t opt[20];
	uint8_t optlen = syn_ack_opts(opt, syn.o.tsval);
	from_peer(syn.sport, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, PEER_ISN, syn.seq + 1, opt,
		  optlen, NULL);
	assert_int_equal(client.connected, 0);			 /* deferred to tcp_events, but */
	assert_int_equal(client_tcb(syn.sport)->snd_wnd, 65535); /* a SYN's: never scaled */
	from_peer(syn.sport, RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, PEER_ISN + 1, syn.seq + 1, opt,
		  optlen, "hi");
	assert_int_equal(client.rxlen, 2); /* data in the same burst comes after it */
	assert_true(client.connected_before_rx);
	unsigned n = sent_by(CLIENT, f, 4);
	assert_true(n >= 2);
	assert_int_equal(f[0].flags, RTE_TCP_ACK_FLAG);
	assert_int_equal(f[0].seq, syn.seq + 1);
	assert_int_equal(f[0].ack, PEER_ISN + 1);
	assert_int_equal(f[1].seq, syn.seq + 1); /* the early send */
	assert_int_equal(f[1].len, 5);
	assert_int_equal(client.connected, 1);
	assert_int_equal(client.sent, 1);

	struct tcb *c = client_tcb(syn.sport);
	assert_int_equal(state_of(syn.sport), TCP_ESTABLISHED);
	assert_int_equal(c->mss, 1400 - TS_OPT_LEN);
	assert_int_equal(c->snd_ws, 7);
	assert_int_equal(c->rcv_ws, RCV_WS);
	assert_true(c->sack_ok && c->ts_ok);
	assert_int_equal(c->ts_recent, 5000);
	assert_int_equal(c->snd_wnd, 65535u << 7); /* after the SYN: scaled */
	assert_int_equal(c->rcv_nxt, PEER_ISN + 3);
	assert_true(c->srtt_q > 0); /* the handshake's RTT sample */

	/* Our SYN again (a duplicate SYN-ACK): no second `connected`. */
	from_peer(syn.sport, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, PEER_ISN, syn.seq + 1, opt,
		  optlen, NULL);
	(void)sent_by(CLIENT, f, 4);
	assert_int_equal(client.connected, 1);
	transport_abort(tc);
	(void)sent_by(CLIENT, f, 4);
	assert_int_equal(client.closed, 1);
}

/* A SYN-ACK that acknowledges anything but our SYN (forged, or from an
 * old incarnation) gets <SEQ=SEG.ACK><RST> and the connection stays in
 * SYN_SENT; the real one then completes it. */
static void test_forged_syn_ack(void **state)
{
	(void)state;
	struct transport_conn *tc;
	struct frame syn = connect_peer(&tc);
	const uint32_t wrong[] = {syn.seq, syn.seq + 2, syn.seq + 0x10000};
	for (unsigned i = 0; i < 3; i++) {
		from_peer(syn.sport, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, PEER_ISN, wrong[i], NULL,
			  0, NULL);
		struct frame f[2];
		assert_int_equal(sent_by(CLIENT, f, 2), 1);
		assert_int_equal(f[0].flags, RTE_TCP_RST_FLAG);
		assert_int_equal(f[0].seq, wrong[i]);
		assert_int_equal(state_of(syn.sport), TCP_SYN_SENT);
	}
	assert_int_equal(client.connected + client.closed, 0);
	from_peer(syn.sport, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, PEER_ISN, syn.seq + 1, NULL, 0,
		  NULL);
	struct frame f[2];
	assert_int_equal(sent_by(CLIENT, f, 2), 1);
	assert_int_equal(f[0].ack, PEER_ISN + 1);
	assert_int_equal(state_of(syn.sport), TCP_ESTABLISHED);
	assert_int_equal(client.connected, 1);
	struct tcb *c = client_tcb(syn.sport);
	assert_false(c->ts_ok || c->sack_ok); /* the peer offered neither */
	assert_int_equal(c->snd_ws, 0);
	assert_int_equal(c->rcv_ws, 0);
	assert_int_equal(c->mss, 536);
	transport_abort(tc);
	(void)sent_by(CLIENT, f, 2);
}

/* RFC 9293 3.10.7.3 with RFC 5961: a RST counts in SYN_SENT only with
 * the ACK of our SYN (closed: -ECONNREFUSED); a blind one (a wrong ACK,
 * or none) is ignored. */
static void test_refused(void **state)
{
	(void)state;
	struct transport_conn *tc;
	struct frame syn = connect_peer(&tc);
	struct frame f[2];
	from_peer(syn.sport, RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG, 0, syn.seq + 2, NULL, 0, NULL);
	from_peer(syn.sport, RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG, 0, syn.seq, NULL, 0, NULL);
	from_peer(syn.sport, RTE_TCP_RST_FLAG, 0, 0, NULL, 0, NULL);
	assert_int_equal(sent_by(CLIENT, f, 2), 0);
	assert_int_equal(state_of(syn.sport), TCP_SYN_SENT);
	assert_int_equal(client.closed, 0);

	from_peer(syn.sport, RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG, 0, syn.seq + 1, NULL, 0, NULL);
	assert_int_equal(sent_by(CLIENT, f, 2), 0);
	assert_int_equal(client.closed, 1);
	assert_int_equal(client.err, -ECONNREFUSED);
	assert_int_equal(client.connected, 0);
	assert_null(client_tcb(syn.sport));
}

/* Runs the client's timers to `at` (ms since `t0`); the frames sent. */
static unsigned client_at(uint64_t t0, uint64_t at, struct frame *f, unsigned max)
{
	CLIENT->now_ms = t0 + at;
	tcp_timers(CLIENT);
	return sent_by(CLIENT, f, max);
}

/* No answer: the same SYN again after 1, 2, 4 ... 32 s (RTO_INIT_MS
 * backed off), SYN_RETRIES times, then closed(-ETIMEDOUT) at 123 s. */
static void test_timeout(void **state)
{
	(void)state;
	struct transport_conn *tc;
	uint64_t t0 = CLIENT->now_ms;
	struct frame syn = connect_peer(&tc);
	uint64_t at = 0;
	struct frame f[2];
	for (unsigned i = 0; i < SYN_RETRIES; i++) {
		uint64_t next = at + ((uint64_t)RTO_INIT_MS << i);
		assert_int_equal(client_at(t0, next - 1, f, 2), 0);
		assert_int_equal(client_at(t0, next, f, 2), 1);
		assert_int_equal(f[0].flags, RTE_TCP_SYN_FLAG);
		assert_int_equal(f[0].seq, syn.seq);
		assert_int_equal(f[0].sport, syn.sport);
		at = next;
	}
	uint64_t end = at + RTO_MAX_MS; /* not 64 s: the RTO's cap */
	assert_int_equal(end, 123000);
	assert_int_equal(client_at(t0, end - 1, f, 2), 0);
	assert_int_equal(client.closed, 0);
	assert_int_equal(client_at(t0, end, f, 2), 0); /* no RST: nothing to reset */
	assert_int_equal(client.closed, 1);
	assert_int_equal(client.err, -ETIMEDOUT);
	assert_null(client_tcb(syn.sport));
}

/* Ports: every connection to one peer gets its own, all in the range;
 * when the range is spent -EADDRNOTAVAIL, while another peer port still
 * finds them all free. */
static void test_ephemeral_ports(void **state)
{
	(void)state;
	enum { N = 64 };
	CLIENT->eph_first = 50000;
	CLIENT->eph_count = N;
	peer_known();
	struct sockaddr_in dst = addr_of(PEER_IP, PEER_PORT);
	struct transport_conn *tc[N + 1];
	bool used[N] = {false};
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, &tc[i]), 0);
		struct tcb *c = (struct tcb *)tc[i];
		unsigned port = ntohs(c->lport);
		assert_true(port >= 50000 && port < 50000 + N);
		assert_false(used[port - 50000]);
		used[port - 50000] = true;
		stack_tx_flush(CLIENT);
	}
	struct transport_conn *extra;
	assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, &extra), -EADDRNOTAVAIL);
	struct sockaddr_in other = addr_of(PEER_IP, PEER_PORT + 1);
	assert_int_equal(transport_connect(&CLIENT->base, &other, &client, &tc[N]), 0);
	for (unsigned i = 0; i <= N; i++)
		transport_abort(tc[i]);
	struct frame f[1];
	(void)sent_by(CLIENT, f, 1);
	assert_int_equal(client.closed, N + 1);
}

/* The peer's MAC unknown: an ARP request first (one for two
 * connections), no SYN; the reply sends both SYNs at once. A connection
 * aborted while it waits leaves nothing waiting. */
static void test_arp_first(void **state)
{
	(void)state;
	struct sockaddr_in dst = addr_of(PEER_IP, PEER_PORT);
	struct sockaddr_in elsewhere = addr_of("198.18.0.21", PEER_PORT);
	struct transport_conn *tc[3];
	struct frame f[4];
	assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, &tc[0]), 0);
	assert_int_equal(transport_connect(&CLIENT->base, &elsewhere, &client, &tc[2]), 0);
	assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, &tc[1]), 0);
	assert_int_equal(sent_by(CLIENT, f, 4), 2);
	assert_int_equal(f[0].ether_type, RTE_ETHER_TYPE_ARP);
	assert_int_equal(f[0].arp_tip, inet_addr(PEER_IP));
	assert_true(rte_is_broadcast_ether_addr(&f[0].dst_mac));
	assert_int_equal(f[1].arp_tip, elsewhere.sin_addr.s_addr);
	transport_abort(tc[2]);

	uint64_t t0 = CLIENT->now_ms;
	assert_int_equal(client_at(t0, 900, f, 4), 0);
	eth_input(CLIENT, stack_fixture_arp(CLIENT, RTE_ARP_OP_REPLY, inet_addr(PEER_IP),
					    PEER_MAC_LAST, CLIENT->ip));
	struct rte_ether_addr peer_mac = {{0x02, 0, 0, 0, 0, PEER_MAC_LAST}};
	assert_int_equal(sent_by(CLIENT, f, 4), 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(f[i].ether_type, RTE_ETHER_TYPE_IPV4);
		assert_int_equal(f[i].flags, RTE_TCP_SYN_FLAG);
		assert_true(rte_is_same_ether_addr(&f[i].dst_mac, &peer_mac));
	}
	assert_int_not_equal(f[0].sport, f[1].sport);
	assert_null(CLIENT->arp_waiters);
	/* Their retransmission counts from the SYN, not from the request. */
	assert_int_equal(client_at(t0, 900 + RTO_INIT_MS - 1, f, 4), 0);
	assert_int_equal(client_at(t0, 900 + RTO_INIT_MS, f, 4), 2);
	assert_int_equal(f[0].flags, RTE_TCP_SYN_FLAG);
	transport_abort(tc[0]);
	transport_abort(tc[1]);
	(void)sent_by(CLIENT, f, 4);
}

/* ---- two stacks, one wire ---- */

/* Moves every frame each stack sent to the other, runs both stacks'
 * timers a millisecond on and delivers their callbacks, until a round
 * moves nothing twice in a row (a delayed ACK takes its DELACK_MS). */
static void wire(void)
{
	unsigned quiet = 0;
	for (unsigned round = 0; round < 1000 && quiet < 2 * DELACK_MS; round++) {
		unsigned moved = 0;
		for (int i = 0; i < 2; i++) {
			struct stack *from = st[i], *to = st[!i];
			struct rte_mbuf *m[STACK_TX_BURST];
			unsigned n = from->ntx;
			memcpy(m, from->tx, n * sizeof *m);
			from->ntx = 0;
			for (unsigned k = 0; k < n; k++)
				eth_input(to, m[k]);
			moved += n;
		}
		for (int i = 0; i < 2; i++) {
			st[i]->now_ms++;
			tcp_timers(st[i]);
			tcp_events(st[i]);
		}
		quiet = moved ? 0 : quiet + 1;
	}
	assert_int_equal(CLIENT->ntx + SERVER->ntx, 0);
}

/* Client connects (ARP, SYN, the server's cookie, ACK), data both ways. */
static void join(struct transport_conn **ctc)
{
	SERVER->now_ms = CLIENT->now_ms;
	struct sockaddr_in dst = addr_of(SERVER_IP, SERVER->listen_port);
	assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, ctc), 0);
	wire();
	assert_int_equal(client.connected, 1);
	assert_int_equal(server.accepted, 1);
	assert_int_equal(transport_send(*ctc, "ping", 4), 0);
	wire();
	assert_int_equal(client.sent, 1);
	assert_int_equal(server.rxlen, 4);
	assert_memory_equal(server.rx, "ping", 4);
	assert_int_equal(transport_send(server.tc, "pong!", 5), 0);
	wire();
	assert_int_equal(server.sent, 1);
	assert_int_equal(client.rxlen, 5);
	assert_memory_equal(client.rx, "pong!", 5);
}

/* Each side heard `closed` once, without an error. */
static void both_closed(void)
{
	assert_int_equal(client.closed, 1);
	assert_int_equal(client.err, 0);
	assert_int_equal(server.closed, 1);
	assert_int_equal(server.err, 0);
}

/* The client closes first: it goes through FIN_WAIT to TIME_WAIT, which
 * holds its port for that peer (-EADDRNOTAVAIL with a range of one);
 * both sides hear closed(0); the server's connection is gone. */
static void test_join_client_closes(void **state)
{
	(void)state;
	unsigned server_tcb = SERVER->ntcb, tw = CLIENT->ntw;
	struct transport_conn *ctc;
	join(&ctc);
	uint16_t lport = ((struct tcb *)ctc)->lport;
	transport_close(ctc);
	wire();
	both_closed();
	assert_int_equal(SERVER->ntcb, server_tcb);
	assert_int_equal(CLIENT->ntw, tw + 1);
	struct tcb *c = tcb_lookup(CLIENT, inet_addr(SERVER_IP), htons(SERVER->listen_port), lport);
	assert_non_null(c);
	assert_int_equal(c->state, TCP_TIME_WAIT);

	CLIENT->eph_first = ntohs(lport);
	CLIENT->eph_count = 1;
	struct sockaddr_in dst = addr_of(SERVER_IP, SERVER->listen_port);
	struct transport_conn *again;
	assert_int_equal(transport_connect(&CLIENT->base, &dst, &client, &again), -EADDRNOTAVAIL);
}

/* The server closes first: the client hears closed(0) at the server's
 * FIN and answers with its own (LAST_ACK); the server ends in TIME_WAIT
 * and the client's connection is gone. */
static void test_join_server_closes(void **state)
{
	(void)state;
	unsigned client_tcb = CLIENT->ntcb, tw = SERVER->ntw;
	struct transport_conn *ctc;
	join(&ctc);
	transport_close(server.tc);
	wire();
	both_closed();
	assert_int_equal(CLIENT->ntcb, client_tcb);
	assert_int_equal(SERVER->ntw, tw + 1);
}

int main(void)
{
	if (!stack_fixture_root("test_tcp_connect"))
		return 77;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_not_supported, one_queue),
		cmocka_unit_test_setup(test_syn, one_queue),
		cmocka_unit_test_setup(test_syn_ack, one_queue),
		cmocka_unit_test_setup(test_forged_syn_ack, one_queue),
		cmocka_unit_test_setup(test_refused, one_queue),
		cmocka_unit_test_setup(test_timeout, one_queue),
		cmocka_unit_test_setup(test_ephemeral_ports, one_queue),
		cmocka_unit_test_setup(test_arp_first, one_queue),
		cmocka_unit_test_setup(test_join_client_closes, one_queue),
		cmocka_unit_test_setup(test_join_server_closes, one_queue),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
