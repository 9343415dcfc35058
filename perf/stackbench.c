/*
 * stackbench: the DPDK transport's TCP/IPv4 stack alone (no TLS, no HTTP,
 * no store) on a synthetic port, with the peer in the same thread (issue 5
 * item 6). Scenarios:
 *
 *   handshake   SYN -> SYN-ACK (cookie) -> ACK -> `accepted` -> the peer's
 *               RST: SYN-to-ESTABLISHED handshakes per second of CPU.
 *   data-1460   --conns established connections, in-order data segments
 *   data-64     of 1460 (a full MSS: the stack negotiates no timestamps) or
 *               64 bytes; `received` takes them, the stack ACKs as it does
 *               (every second segment, else after 40 ms).
 *
 * The port is a net_ring vdev, whose one ring is both its RX and its TX
 * queue. One thread alternates: the peer (this file) reads back what the
 * stack sent, answers it and queues new frames with rte_eth_tx_burst; then
 * transport_poll runs the stack as a worker does each loop turn (rx_burst,
 * eth_input, TCP, timers, deferred callbacks, tx_burst). So the ring holds
 * only the peer's frames when the stack polls, and only the stack's when
 * the peer reads (checked by source MAC). Nothing is intercepted: the
 * stack's own rte_eth_rx_burst and rte_eth_tx_burst run, on a ring instead
 * of a NIC's descriptors.
 *
 * Time: the thread is pinned to --cpu; CPU time is its
 * CLOCK_THREAD_CPUTIME_ID over the timed part, and the TSC read around
 * each transport_poll splits it between the stack and the peer (building
 * frames, checksums, parsing the replies). "per stack CPU s" divides by
 * CPU time x the stack's share of the TSC. The share counts only turns
 * (peer, then poll) shorter than TURN_CLEAN_US: a longer one had the
 * thread taken off its core, and the time away would go to whichever half
 * it interrupted (on a shared machine that moved the share by 15 points
 * between runs). The stack's own clock (the
 * now_ms of transport_poll) is that thread CPU time too (stack_clock_ms),
 * so a shared machine that takes the core away does not fire its timers.
 *
 * Needs root (the EAL), like the DPDK transport itself.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "beacon/config.h"
#include "beacon/transport.h"

#include "../dataplane/net/stack/stack.h"

#define LISTEN_PORT 8443
#define STACK_ADDR "198.18.0.1"
#define STACK_PREFIX 15
#define PEER_NET 0x64400000u /* 100.64.0.0: off-link, as internet agents are */
#define PEER_PORT_BASE 10000
#define PEER_PORTS 50000
#define PEER_WS 7
#define PEER_WIN 65535 /* << PEER_WS */
#define MBUFS 16383
#define BURST 32	  /* dpdk_poll's RX_BURST: one poll takes all we queue */
#define SYNS_PER_POLL 10  /* each answered a poll later by an ACK and a RST */
#define DELACK_WAIT_MS 60 /* past the stack's 40 ms delayed ACK */
#define DELACK_CONNS 512  /* delayed ACKs in one poll: fewer than the port's ring holds */
#define TURN_CLEAN_US 100 /* a turn takes about 10 us; longer, the thread was descheduled */

static const uint8_t syn_opts[12] = {2, 4, 1460 >> 8, 1460 & 0xff, 1, 3, 3, PEER_WS, 1, 1, 4, 2};

/* ---- the layer above: counts ---- */

static struct {
	uint64_t accepted, closed, bytes;
} upper;

static void *on_accepted(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
			 socklen_t len)
{
	(void)ctx;
	(void)tc;
	(void)peer;
	(void)len;
	upper.accepted++;
	return &upper;
}

static void on_received(void *u, const uint8_t *data, size_t len)
{
	(void)u;
	(void)data;
	upper.bytes += len;
}

static void on_sent(void *u)
{
	(void)u;
}

static void on_closed(void *u, int err)
{
	(void)u;
	(void)err;
	upper.closed++;
}

static const struct transport_events events = {
	.accepted = on_accepted,
	.received = on_received,
	.sent = on_sent,
	.closed = on_closed,
};

/* ---- the peer ---- */

/* One peer connection of the data scenarios (host order). */
struct peer {
	uint32_t snd_nxt, rcv_nxt;
	uint32_t acked, wnd_edge; /* what the stack ACKed, and its window's right edge */
	uint32_t data_start;	  /* snd_nxt once established: bytes sent = snd_nxt - this */
	uint8_t ws;		  /* the stack's window scale */
	bool up;
};

struct gen {
	struct stack *s;
	struct rte_ether_addr mac; /* the peer's */
	struct rte_mbuf *out[BURST];
	unsigned nout;
	uint8_t payload[RTE_ETHER_MTU];
	uint32_t paylen, paysum; /* paysum: raw checksum of payload[0..paylen) */
	struct peer *peers;
	unsigned npeers, next_peer;
	uint64_t clock_base_ms, skipped_ms; /* stack_clock_ms */
	uint64_t polls;
	uint64_t clean_max;			/* TURN_CLEAN_US in TSC cycles */
	uint64_t clean_stack, clean_all, dirty; /* cycles of clean turns; turns not clean */
	uint64_t sent, synacks, acks, topped_up;
	uint64_t errors; /* anything the stack should not have done, or we failed at */
	const char *first_error;
};

static void gen_error(struct gen *g, const char *what)
{
	if (!g->errors++)
		g->first_error = what;
}

static void peer_tuple(unsigned i, uint32_t *ip, uint16_t *port)
{
	*ip = htonl(PEER_NET + i / PEER_PORTS);
	*port = htons((uint16_t)(PEER_PORT_BASE + i % PEER_PORTS));
}

static bool peer_index(const struct gen *g, uint32_t ip, uint16_t port, unsigned *i)
{
	uint32_t hi = ntohl(ip) - PEER_NET;
	uint32_t lo = (uint32_t)ntohs(port) - PEER_PORT_BASE;
	*i = hi * PEER_PORTS + lo;
	return lo < PEER_PORTS && *i < g->npeers;
}

/* A segment from the peer (host order but for pip and pport). */
struct seg {
	uint32_t pip;
	uint16_t pport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	const uint8_t *opt;
	uint8_t optlen;
	uint32_t paylen; /* bytes of g->payload */
};

static uint16_t fold(uint32_t sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* The TCP checksum from the payload's sum computed once: the peer must
 * not spend a pass over every byte the stack then checks again. */
static void tcp_checksum(const struct gen *g, struct rte_ipv4_hdr *ip, struct rte_tcp_hdr *th,
			 uint16_t thlen, bool payload)
{
	uint32_t sum = rte_ipv4_phdr_cksum(ip, 0);
	sum += rte_raw_cksum(th, thlen);
	if (payload)
		sum += g->paysum;
	uint16_t ck = (uint16_t)~fold(sum);
	th->cksum = ck ? ck : 0xffff;
}

static void headers_fill(struct gen *g, struct rte_mbuf *m, const struct seg *sg, uint16_t thlen)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	eh->dst_addr = g->s->mac;
	eh->src_addr = g->mac;
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	memset(ip, 0, sizeof *ip);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof *ip + thlen + sg->paylen));
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_TCP;
	ip->src_addr = sg->pip;
	ip->dst_addr = g->s->ip;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
	th->src_port = sg->pport;
	th->dst_port = htons(LISTEN_PORT);
	th->sent_seq = rte_cpu_to_be_32(sg->seq);
	th->recv_ack = rte_cpu_to_be_32(sg->ack);
	th->data_off = (uint8_t)((thlen / 4) << 4);
	th->tcp_flags = sg->flags;
	th->rx_win = rte_cpu_to_be_16(sg->win);
	th->cksum = 0;
	th->tcp_urp = 0;
	if (sg->optlen)
		memcpy(th + 1, sg->opt, sg->optlen);
	if (sg->paylen)
		memcpy((uint8_t *)(th + 1) + sg->optlen, g->payload, sg->paylen);
	tcp_checksum(g, ip, th, thlen, sg->paylen != 0);
}

/* Queues one frame for the next poll; it comes from the stack's pool, as
 * a NIC's receive descriptors would. */
static void seg_queue(struct gen *g, const struct seg *sg)
{
	if (g->nout == BURST) {
		gen_error(g, "more than a burst queued for one poll");
		return;
	}
	struct rte_mbuf *m = rte_pktmbuf_alloc(g->s->pool);
	if (!m) {
		gen_error(g, "peer: no mbuf");
		return;
	}
	uint16_t thlen = (uint16_t)(sizeof(struct rte_tcp_hdr) + sg->optlen);
	uint16_t total = (uint16_t)(sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) +
				    thlen + sg->paylen);
	if (!rte_pktmbuf_append(m, total)) {
		rte_pktmbuf_free(m);
		gen_error(g, "peer: frame larger than an mbuf");
		return;
	}
	headers_fill(g, m, sg, thlen);
	g->out[g->nout++] = m;
}

/* A segment from the stack, parsed (host order but for pip and pport). */
struct rx_seg {
	uint32_t pip;
	uint16_t pport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	int ws; /* window scale option, -1 without */
	uint32_t paylen;
};

static void rx_ws(const struct rte_tcp_hdr *th, uint16_t thlen, struct rx_seg *rs)
{
	const uint8_t *p = (const uint8_t *)(th + 1), *end = (const uint8_t *)th + thlen;
	rs->ws = -1;
	while (p < end && *p != 0) {
		if (*p == 1) {
			p++;
			continue;
		}
		if (end - p < 2 || p[1] < 2 || p[1] > end - p)
			return;
		if (p[0] == 3 && p[1] == 3)
			rs->ws = p[2];
		p += p[1];
	}
}

static bool rx_parse(struct gen *g, struct rte_mbuf *m, struct rx_seg *rs)
{
	const size_t hdrs = sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) +
			    sizeof(struct rte_tcp_hdr);
	const struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	if (rte_pktmbuf_data_len(m) < sizeof *eh ||
	    !rte_is_same_ether_addr(&eh->src_addr, &g->s->mac)) {
		gen_error(g, "a frame of the peer's was not taken by the stack's poll");
		return false;
	}
	const struct rte_ipv4_hdr *ip = (const struct rte_ipv4_hdr *)(eh + 1);
	if (eh->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
	    rte_pktmbuf_data_len(m) < hdrs || ip->next_proto_id != IPPROTO_TCP) {
		gen_error(g, "the stack sent something other than TCP/IPv4");
		return false;
	}
	const struct rte_tcp_hdr *th = (const struct rte_tcp_hdr *)(ip + 1);
	uint16_t thlen = (uint16_t)((th->data_off >> 4) * 4);
	rs->pip = ip->dst_addr;
	rs->pport = th->dst_port;
	rs->seq = rte_be_to_cpu_32(th->sent_seq);
	rs->ack = rte_be_to_cpu_32(th->recv_ack);
	rs->flags = th->tcp_flags;
	rs->win = rte_be_to_cpu_16(th->rx_win);
	rs->paylen = (uint32_t)(rte_be_to_cpu_16(ip->total_length) - sizeof *ip - thlen);
	rx_ws(th, thlen, rs);
	return true;
}

typedef void on_seg_fn(struct gen *g, const struct rx_seg *rs);

/* Reads back what the stack sent since its last poll. */
static void gen_drain(struct gen *g, on_seg_fn *on_seg)
{
	struct rte_mbuf *in[BURST];
	uint16_t n;
	while ((n = rte_eth_rx_burst(g->s->port, g->s->queue, in, BURST)) > 0) {
		for (uint16_t i = 0; i < n; i++) {
			struct rx_seg rs;
			if (rx_parse(g, in[i], &rs))
				on_seg(g, &rs);
		}
		rte_pktmbuf_free_bulk(in, n);
	}
}

/* Drops what the stack sent without looking at it. */
static void port_flush(struct gen *g)
{
	struct rte_mbuf *in[BURST];
	uint16_t n;
	while ((n = rte_eth_rx_burst(g->s->port, g->s->queue, in, BURST)) > 0)
		rte_pktmbuf_free_bulk(in, n);
}

static uint64_t ms_of(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The stack's clock: this thread's CPU time (from the monotonic clock's
 * reading at start), plus what data_finish skips ahead. Time the thread
 * spends descheduled on a shared machine does not pass for the stack:
 * else after 40 ms off the CPU every delayed ACK due would go out in one
 * poll, more than the port's ring of 1,024 holds (a NIC's ring drains
 * while the stack runs; this one only when the peer reads it), and a
 * worker on a real port has its core to itself. */
static uint64_t stack_clock_ms(const struct gen *g)
{
	return g->clock_base_ms + ms_of(CLOCK_THREAD_CPUTIME_ID) + g->skipped_ms;
}

/* Hands the queued frames to the port, then runs the stack's loop turn;
 * only the turn counts as the stack's time. */
static uint64_t gen_poll(struct gen *g, struct transport *t)
{
	uint16_t done = rte_eth_tx_burst(g->s->port, g->s->queue, g->out, (uint16_t)g->nout);
	if (done < g->nout) {
		gen_error(g, "the port's ring was full");
		rte_pktmbuf_free_bulk(g->out + done, g->nout - done);
	}
	g->sent += done;
	g->nout = 0;
	uint64_t now = stack_clock_ms(g);
	uint64_t t0 = rte_rdtsc();
	int rc = transport_poll(t, now);
	uint64_t t1 = rte_rdtsc();
	g->polls++;
	if (rc < 0)
		gen_error(g, "transport_poll failed");
	return t1 - t0;
}

/* One turn: read the stack's frames (on_seg answers them), queue more
 * (fill), let the stack poll. */
static void gen_turn(struct gen *g, struct transport *t, on_seg_fn *on_seg,
		     void (*fill)(struct gen *g))
{
	uint64_t t0 = rte_rdtsc();
	gen_drain(g, on_seg);
	if (fill)
		fill(g);
	uint64_t stack = gen_poll(g, t);
	uint64_t all = rte_rdtsc() - t0;
	if (all < g->clean_max) {
		g->clean_stack += stack;
		g->clean_all += all;
	} else {
		g->dirty++;
	}
}

/* ---- handshakes ---- */

static void syn_queue(struct gen *g, unsigned i)
{
	struct seg sg = {.seq = i * 2654435761u, /* any ISN */
			 .flags = RTE_TCP_SYN_FLAG,
			 .win = PEER_WIN,
			 .opt = syn_opts,
			 .optlen = sizeof syn_opts};
	peer_tuple(i, &sg.pip, &sg.pport);
	seg_queue(g, &sg);
}

/* Handshake scenario: ACK the cookie, then reset at once (no state kept). */
static void synack_then_rst(struct gen *g, const struct rx_seg *rs)
{
	if (rs->flags != (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) {
		gen_error(g, "expected a SYN-ACK");
		return;
	}
	g->synacks++;
	struct seg sg = {.pip = rs->pip,
			 .pport = rs->pport,
			 .seq = rs->ack,
			 .ack = rs->seq + 1,
			 .flags = RTE_TCP_ACK_FLAG,
			 .win = PEER_WIN};
	seg_queue(g, &sg);
	sg.flags = RTE_TCP_RST_FLAG;
	sg.ack = 0;
	sg.win = 0;
	seg_queue(g, &sg);
}

static void fill_syns(struct gen *g)
{
	for (unsigned k = 0; k < SYNS_PER_POLL; k++)
		syn_queue(g, g->next_peer++ % (PEER_PORTS * 256u));
}

/* ---- established data ---- */

static void fill_connect(struct gen *g)
{
	for (unsigned k = 0; k < SYNS_PER_POLL && g->next_peer < g->npeers; k++)
		syn_queue(g, g->next_peer++);
}

static void window_update(struct peer *p, const struct rx_seg *rs)
{
	p->acked = rs->ack;
	p->wnd_edge = rs->ack + ((uint32_t)rs->win << (rs->flags & RTE_TCP_SYN_FLAG ? 0 : p->ws));
}

static void synack_then_ack(struct gen *g, const struct rx_seg *rs)
{
	unsigned i;
	if (rs->flags != (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG) ||
	    !peer_index(g, rs->pip, rs->pport, &i) || g->peers[i].up) {
		gen_error(g, "expected one SYN-ACK per connection");
		return;
	}
	struct peer *p = &g->peers[i];
	g->synacks++;
	p->up = true;
	p->snd_nxt = p->data_start = rs->ack;
	p->rcv_nxt = rs->seq + 1;
	p->ws = rs->ws >= 0 ? (uint8_t)rs->ws : 0;
	window_update(p, rs);
	struct seg sg = {.pip = rs->pip,
			 .pport = rs->pport,
			 .seq = p->snd_nxt,
			 .ack = p->rcv_nxt,
			 .flags = RTE_TCP_ACK_FLAG,
			 .win = PEER_WIN};
	seg_queue(g, &sg);
}

/* The stack's answer to data: a pure ACK of nothing more than was sent. */
static void data_ack(struct gen *g, const struct rx_seg *rs)
{
	unsigned i;
	if (rs->flags != RTE_TCP_ACK_FLAG || rs->paylen || !peer_index(g, rs->pip, rs->pport, &i)) {
		gen_error(g, "expected a pure ACK");
		return;
	}
	struct peer *p = &g->peers[i];
	if ((int32_t)(rs->ack - p->snd_nxt) > 0 || (int32_t)(rs->ack - p->acked) < 0) {
		gen_error(g, "an ACK out of range");
		return;
	}
	g->acks++;
	window_update(p, rs);
}

/* Peer i sends its next data segment of g->paylen bytes. */
static void peer_send_data(struct gen *g, unsigned i)
{
	struct peer *p = &g->peers[i];
	struct seg sg = {.seq = p->snd_nxt,
			 .ack = p->rcv_nxt,
			 .flags = RTE_TCP_ACK_FLAG,
			 .win = PEER_WIN,
			 .paylen = g->paylen};
	peer_tuple(i, &sg.pip, &sg.pport);
	seg_queue(g, &sg);
	p->snd_nxt += g->paylen;
}

/* Data segments for the next connections, round robin (several to one
 * connection when there are fewer than a burst), as far as their windows
 * allow. */
static void fill_data(struct gen *g)
{
	for (unsigned blocked = 0; g->nout < BURST && blocked < g->npeers;) {
		unsigned i = g->next_peer;
		struct peer *p = &g->peers[i];
		g->next_peer = (i + 1) % g->npeers;
		if ((int32_t)(p->wnd_edge - (p->snd_nxt + g->paylen)) < 0) {
			blocked++;
			continue;
		}
		blocked = 0;
		peer_send_data(g, i);
	}
}

static void fill_rsts(struct gen *g)
{
	while (g->next_peer < g->npeers && g->nout < BURST) {
		unsigned i = g->next_peer++;
		struct seg sg = {.seq = g->peers[i].snd_nxt, .flags = RTE_TCP_RST_FLAG};
		peer_tuple(i, &sg.pip, &sg.pport);
		seg_queue(g, &sg);
	}
}

static void unexpected(struct gen *g, const struct rx_seg *rs)
{
	(void)rs;
	gen_error(g, "the stack sent a frame nothing asked for");
}

/* ---- measuring ---- */

struct result {
	const char *name;
	uint32_t paylen;
	unsigned conns;
	double wall_s, cpu_s, stack_share;
	uint64_t turns, dirty_turns; /* dirty: not counted in stack_share */
	uint64_t count;		     /* handshakes, or data segments */
	uint64_t frames_in, frames_out;
	uint64_t bad; /* the stack's counters of things that must not happen here */
	const char *bad_name;
	uint64_t errors;
	const char *first_error;
};

static double thread_cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timed {
	double wall0, cpu0;
	uint64_t clean_stack0, clean_all0, polls0, dirty0, count0;
	struct transport_net_stats st0;
};

static void timed_start(struct timed *tm, const struct gen *g, uint64_t count)
{
	tm->st0 = g->s->st;
	tm->count0 = count;
	tm->clean_stack0 = g->clean_stack;
	tm->clean_all0 = g->clean_all;
	tm->polls0 = g->polls;
	tm->dirty0 = g->dirty;
	tm->wall0 = wall_s();
	tm->cpu0 = thread_cpu_s();
}

static void timed_stop(const struct timed *tm, const struct gen *g, uint64_t count,
		       struct result *r)
{
	r->cpu_s = thread_cpu_s() - tm->cpu0;
	r->wall_s = wall_s() - tm->wall0;
	uint64_t all = g->clean_all - tm->clean_all0;
	r->stack_share = all ? (double)(g->clean_stack - tm->clean_stack0) / (double)all : 0;
	r->turns = g->polls - tm->polls0;
	r->dirty_turns = g->dirty - tm->dirty0;
	r->count = count - tm->count0;
	r->frames_in = g->s->st.rx_frames - tm->st0.rx_frames;
	r->frames_out = g->s->st.tx_frames - tm->st0.tx_frames;
}

/* Counters that must stay still: the peer sends nothing bad, loses
 * nothing and never overruns a window. */
static void bad_counters(const struct transport_net_stats *a, const struct transport_net_stats *b,
			 struct result *r)
{
#define BAD(f)                                                                                     \
	do {                                                                                       \
		if (b->f != a->f && !r->bad++)                                                     \
			r->bad_name = #f;                                                          \
	} while (0)
	BAD(rx_bad_eth);
	BAD(rx_not_for_us);
	BAD(rx_other_proto);
	BAD(ip_bad);
	BAD(ip_bad_csum);
	BAD(ip_fragments);
	BAD(ip_not_ours);
	BAD(tcp_bad);
	BAD(tcp_bad_csum);
	BAD(tcp_no_listener);
	BAD(tcp_rst_sent);
	BAD(syn_cookies_bad);
	BAD(tcp_refused);
	BAD(tcp_unacceptable);
	BAD(tcp_challenge_acks);
	BAD(tcp_ooo_queued);
	BAD(tcp_ooo_dropped);
	BAD(tcp_dup_data);
	BAD(tcp_retransmits);
	BAD(tcp_rto_expiries);
	BAD(tcp_timeouts);
	BAD(tcp_table_full);
	BAD(tx_dropped);
	BAD(tx_nombuf);
#undef BAD
}

static void gen_reset(struct gen *g)
{
	g->next_peer = 0;
	g->sent = g->synacks = g->acks = g->topped_up = 0;
	g->errors = 0;
	g->first_error = NULL;
	memset(&upper, 0, sizeof upper);
}

static void run_handshakes(struct gen *g, struct transport *t, double seconds, struct result *r)
{
	struct transport_net_stats st0 = g->s->st;
	struct timed tm;
	gen_reset(g);
	timed_start(&tm, g, 0);
	do {
		for (int k = 0; k < 64; k++)
			gen_turn(g, t, synack_then_rst, fill_syns);
	} while (wall_s() - tm.wall0 < seconds);
	timed_stop(&tm, g, upper.accepted, r);
	for (int k = 0; k < 2; k++)
		gen_turn(g, t, synack_then_rst, NULL);
	uint64_t syns = g->next_peer;
	if (upper.accepted != syns || g->synacks != syns || upper.closed != syns)
		gen_error(g, "a handshake did not complete, or did not close");
	if (g->s->st.syn_cookies_sent - st0.syn_cookies_sent != syns ||
	    g->s->st.tcp_accepted - st0.tcp_accepted != syns)
		gen_error(g, "the stack's cookie and accept counters disagree with the peer");
	bad_counters(&st0, &g->s->st, r);
}

static void connect_all(struct gen *g, struct transport *t)
{
	while (g->next_peer < g->npeers)
		gen_turn(g, t, synack_then_ack, fill_connect);
	for (int k = 0; k < 2; k++)
		gen_turn(g, t, synack_then_ack, NULL);
	if (upper.accepted != g->npeers)
		gen_error(g, "not every connection was accepted");
}

/* One more segment to each connection from next_peer on that holds one
 * unacknowledged: the second makes the stack ACK at once. */
static void fill_topup(struct gen *g)
{
	while (g->next_peer < g->npeers && g->nout < BURST) {
		unsigned i = g->next_peer++;
		struct peer *p = &g->peers[i];
		if (p->acked == p->snd_nxt)
			continue;
		peer_send_data(g, i);
		g->topped_up++;
	}
}

/* After the timed part: every byte must be ACKed and delivered, then every
 * connection reset and closed. The first DELACK_CONNS connections get
 * their last ACK from the delayed-ACK timer: all fire in one poll, and
 * more than the port's ring holds would be dropped (a NIC's ring drains
 * while the stack runs; this one only when the peer reads it). The others
 * are topped up to an even count of segments. */
static void data_finish(struct gen *g, struct transport *t)
{
	for (int k = 0; k < 2; k++)
		gen_turn(g, t, data_ack, NULL);
	g->next_peer = DELACK_CONNS;
	while (g->next_peer < g->npeers)
		gen_turn(g, t, data_ack, fill_topup);
	gen_turn(g, t, data_ack, NULL);
	g->skipped_ms += DELACK_WAIT_MS;
	for (int k = 0; k < 2; k++)
		gen_turn(g, t, data_ack, NULL);
	uint64_t bytes_sent = 0;
	for (unsigned i = 0; i < g->npeers; i++) {
		const struct peer *p = &g->peers[i];
		bytes_sent += p->snd_nxt - p->data_start;
		if (p->acked != p->snd_nxt)
			gen_error(g, "data left unacknowledged");
	}
	if (upper.bytes != bytes_sent)
		gen_error(g, "bytes sent and bytes received differ");
	g->next_peer = 0;
	while (g->next_peer < g->npeers)
		gen_turn(g, t, unexpected, fill_rsts);
	gen_turn(g, t, unexpected, NULL);
	if (upper.closed != g->npeers || transport_conn_count(t) != 0)
		gen_error(g, "a connection did not close on the peer's RST");
}

static void run_data(struct gen *g, struct transport *t, double seconds, uint32_t paylen,
		     struct result *r)
{
	struct transport_net_stats st0 = g->s->st;
	gen_reset(g);
	memset(g->peers, 0, g->npeers * sizeof *g->peers);
	g->paylen = paylen;
	g->paysum = rte_raw_cksum(g->payload, paylen);
	connect_all(g, t);
	g->next_peer = 0;
	uint64_t sent0 = g->sent;
	struct timed tm;
	timed_start(&tm, g, 0);
	do {
		for (int k = 0; k < 64; k++)
			gen_turn(g, t, data_ack, fill_data);
	} while (wall_s() - tm.wall0 < seconds);
	/* The data segments are what the peer sent, less the handshakes'
	 * ACKs still queued when the timed part began (none: connect_all
	 * drained them). */
	timed_stop(&tm, g, g->sent - sent0, r);
	data_finish(g, t);
	bad_counters(&st0, &g->s->st, r);
}

/* ---- report ---- */

static double per_s(uint64_t n, double s)
{
	return s > 0 ? (double)n / s : 0;
}

static void result_json(const struct result *r)
{
	double stack_s = r->cpu_s * r->stack_share;
	printf("{\"scenario\":\"%s\",\"payload\":%" PRIu32 ",\"conns\":%u,\"wall_s\":%.3f,"
	       "\"cpu_s\":%.3f,\"stack_share\":%.3f,\"count\":%" PRIu64 ",\"per_cpu_s\":%.0f,"
	       "\"per_stack_cpu_s\":%.0f,\"gbit_per_stack_cpu_s\":%.3f,\"frames_in\":%" PRIu64
	       ",\"frames_out\":%" PRIu64 ",\"turns\":%" PRIu64 ",\"dirty_turns\":%" PRIu64
	       ",\"bad_counters\":%" PRIu64 ",\"bad_counter\":\"%s\","
	       "\"errors\":%" PRIu64 ",\"first_error\":\"%s\"}\n",
	       r->name, r->paylen, r->conns, r->wall_s, r->cpu_s, r->stack_share, r->count,
	       per_s(r->count, r->cpu_s), per_s(r->count, stack_s),
	       per_s(r->count * r->paylen * 8, stack_s) / 1e9, r->frames_in, r->frames_out,
	       r->turns, r->dirty_turns, r->bad, r->bad_name ? r->bad_name : "", r->errors,
	       r->first_error ? r->first_error : "");
}

static void results_table(const struct result *rs, unsigned n)
{
	printf("\n| scenario | conns | count | CPU s (wall s) | stack share | per CPU s (stack + "
	       "peer) "
	       "| per stack CPU s | Gbit/s per stack CPU s | frames in / out | errors |\n"
	       "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
	for (unsigned i = 0; i < n; i++) {
		const struct result *r = &rs[i];
		double stack_s = r->cpu_s * r->stack_share;
		printf("| %s | %u | %" PRIu64 " | %.2f (%.2f) | %.0f%% | %.0f | %.0f | ", r->name,
		       r->conns, r->count, r->cpu_s, r->wall_s, 100 * r->stack_share,
		       per_s(r->count, r->cpu_s), per_s(r->count, stack_s));
		if (r->paylen)
			printf("%.2f", per_s(r->count * r->paylen * 8, stack_s) / 1e9);
		else
			printf("-");
		printf(" | %" PRIu64 " / %" PRIu64 " | %" PRIu64 " |\n", r->frames_in,
		       r->frames_out, r->errors + r->bad);
	}
}

/* ---- set-up ---- */

struct opts {
	double seconds;
	unsigned cpu, conns;
	char scenarios[128];
};

static void usage(FILE *f)
{
	fprintf(f, "usage: stackbench [--seconds S] [--cpu N] [--conns N] [--scenarios LIST]\n"
		   "  --seconds S      each scenario's timed part (default 5)\n"
		   "  --cpu N          the core to pin to (default 0)\n"
		   "  --conns N        connections of the data scenarios (default 64)\n"
		   "  --scenarios L    comma-separated: handshake,data-1460,data-64 (default all)\n"
		   "Prints one JSON line per scenario, then a table; exits 1 on any error.\n");
}

static int opts_parse(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {{"seconds", required_argument, NULL, 's'},
						 {"cpu", required_argument, NULL, 'c'},
						 {"conns", required_argument, NULL, 'n'},
						 {"scenarios", required_argument, NULL, 'S'},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	*o = (struct opts){.seconds = 5, .cpu = 0, .conns = 64};
	snprintf(o->scenarios, sizeof o->scenarios, "handshake,data-1460,data-64");
	int ch;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			o->seconds = strtod(optarg, NULL);
			break;
		case 'c':
			o->cpu = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'n':
			o->conns = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'S':
			snprintf(o->scenarios, sizeof o->scenarios, "%s", optarg);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc || o->seconds <= 0 || o->conns == 0 || o->conns > PEER_PORTS * 256u ||
	    o->cpu >= CPU_SETSIZE) {
		usage(stderr);
		return -1;
	}
	return 0;
}

static int pin(unsigned cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0) {
		fprintf(stderr, "stackbench: pin to CPU %u: %s\n", cpu, strerror(errno));
		return -1;
	}
	return 0;
}

/* The EAL, a net_ring port and a stack on it, built as beacond builds its
 * one worker's (transport_dpdk_init, transport_dpdk_open). */
static int stack_start(const struct opts *o, struct config *cfg, struct transport **t)
{
	char err[512];
	config_defaults(cfg);
	cfg->backend = BACKEND_DPDK;
	cfg->listen_port = LISTEN_PORT;
	snprintf(cfg->dpdk_eal_args, sizeof cfg->dpdk_eal_args,
		 "--no-huge -m 256 --no-pci --no-shconf --no-telemetry --vdev=net_ring0 -l %u "
		 "--log-level=error",
		 o->cpu);
	cfg->dpdk_port = 0;
	cfg->dpdk_addr = inet_addr(STACK_ADDR);
	cfg->dpdk_prefix = STACK_PREFIX;
	cfg->dpdk_mbufs = MBUFS;
	if (cfg->max_connections < o->conns)
		cfg->max_connections = o->conns;
	if (transport_dpdk_init(cfg, 1, err, sizeof err) != 0) {
		fprintf(stderr, "stackbench: %s\n", err);
		return -1;
	}
	/* transport_dpdk_init gives the thread its old affinity back. */
	if (pin(o->cpu) < 0)
		return -1;
	int rc = transport_dpdk_open(NULL, 0, cfg, &events, NULL, t);
	if (rc < 0) {
		fprintf(stderr, "stackbench: transport_dpdk_open: %s\n", strerror(-rc));
		return -1;
	}
	return 0;
}

static bool listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; (p = strstr(p, name)); p += n)
		if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
			return true;
	return false;
}

static void result_finish(struct result *r, const struct gen *g)
{
	r->errors = g->errors;
	r->first_error = g->first_error;
	result_json(r);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct opts o;
	struct config cfg;
	struct transport *t = NULL;
	if (opts_parse(argc, argv, &o) < 0)
		return 2;
	if (stack_start(&o, &cfg, &t) < 0)
		return 1;
	static struct gen g;
	g.s = (struct stack *)t;
	g.clean_max = rte_get_tsc_hz() / 1000000 * TURN_CLEAN_US;
	g.clock_base_ms = ms_of(CLOCK_MONOTONIC) - ms_of(CLOCK_THREAD_CPUTIME_ID);
	g.mac = (struct rte_ether_addr){{0x02, 0, 0, 0, 0, 0x02}};
	for (size_t i = 0; i < sizeof g.payload; i++)
		g.payload[i] = (uint8_t)('a' + i % 26);
	g.npeers = o.conns;
	g.peers = calloc(o.conns, sizeof *g.peers);
	if (!g.peers) {
		fprintf(stderr, "stackbench: out of memory\n");
		return 1;
	}
	port_flush(&g); /* the gratuitous ARP the stack sent when it started */
	struct result rs[3];
	unsigned n = 0;
	if (listed(o.scenarios, "handshake")) {
		rs[n] = (struct result){.name = "handshake"};
		run_handshakes(&g, t, o.seconds, &rs[n]);
		result_finish(&rs[n++], &g);
	}
	static const uint32_t sizes[2] = {1460, 64};
	static const char *const names[2] = {"data-1460", "data-64"};
	for (int k = 0; k < 2; k++) {
		if (!listed(o.scenarios, names[k]))
			continue;
		rs[n] = (struct result){.name = names[k], .paylen = sizes[k], .conns = o.conns};
		run_data(&g, t, o.seconds, sizes[k], &rs[n]);
		result_finish(&rs[n++], &g);
	}
	results_table(rs, n);
	bool ok = n > 0;
	for (unsigned i = 0; i < n; i++)
		ok = ok && rs[i].errors == 0 && rs[i].bad == 0 && rs[i].count > 0;
	transport_free(t);
	transport_dpdk_shutdown();
	free(g.peers);
	return ok ? 0 : 1;
}
