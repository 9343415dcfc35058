/*
 * TCP, server side (RFC 9293), one instance per worker.
 *
 * Implemented:
 * - Passive open with SYN cookies, always: a SYN costs no memory, so a SYN
 *   flood cannot fill anything. The cookie (the ISN of our SYN-ACK) carries
 *   the parity of a 64 s time counter (1 bit), the peer's SACK-permitted
 *   (1 bit), window scale and MSS (3 bits each, from tables), and a 24-bit
 *   MAC: SipHash over the 4-tuple, the peer's ISN, the whole counter and
 *   those options under a per-worker random key. A spoofed ACK thus opens
 *   a connection once in 2^24 tries (it was 2^19). The price, rather than
 *   Linux's trick of moving options into the timestamp (which would leave
 *   peers without timestamps, most Windows agents, at the weaker MAC): the
 *   peer's window scale is rounded down to one of 0, 2, 5, 6, 7, 8 or 9
 *   (we may under-use its receive window, never overrun it). A cookie is
 *   good for 64 to 128 s. Timestamps need no bit of it: the ACK that
 *   returns the cookie carries one exactly when both sides offered it.
 * - MSS and window scale options (we scale by RCV_WS when the peer offers);
 *   SACK-permitted, and as a receiver SACK blocks (RFC 2018) in our ACKs for
 *   what the out-of-order queue holds (without them a Linux peer recovers
 *   from a few losses only through backed-off timeouts).
 * - In-order delivery; out-of-order segments held (bounded per connection
 *   and per worker) and delivered when the hole fills; duplicates trimmed.
 * - A receive window that follows the application: while it is paused,
 *   arriving bytes go to a stash bounded by RCVBUF and the window shrinks
 *   by as much (the right edge never moves left); resume hands the stash
 *   over and sends a window update. Receiver-side silly-window avoidance.
 * - Send: the caller's buffer is copied into a send ring bounded by SNDBUF;
 *   `sent` follows once the whole buffer is in the ring.
 * - Timestamps (RFC 7323) when the peer offers them: on every segment, a
 *   per-connection clock offset from a keyed hash of the 4-tuple (so the
 *   stateless SYN-ACK and the connection agree), TS.Recent after 4.3, PAWS
 *   (5.3; a segment without one is dropped, a RST needs none), and an RTT
 *   sample from every ACK of new data, the handshake's included.
 * - RTO after RFC 6298 (SRTT/RTTVAR; without timestamps Karn's rule: one
 *   timed segment, never a retransmitted one; with them every ACK, weighed
 *   after RFC 7323 appendix G; exponential backoff; min 200 ms as Linux),
 *   go-back-N after a timeout; slow start and congestion avoidance; fast
 *   retransmit on 3 duplicate ACKs and NewReno recovery (RFC 6582: partial
 *   ACKs retransmit the next hole).
 * - Delayed ACK (every second segment, or 40 ms), immediate ACK for
 *   out-of-order data, FIN and window updates.
 * - Zero-window probes (persist timer with backoff).
 * - FIN and RST in every state; RFC 5961: RST only at exactly RCV.NXT,
 *   challenge ACK for an in-window RST and for any SYN on a connection,
 *   ACKs of data never sent or too old dropped; TIME_WAIT ignores RST
 *   (RFC 1337).
 * - TIME_WAIT (60 s) capped in number: past the cap the oldest is reused.
 *   Every closing state is bounded in time (60 s), so a vanished peer never
 *   pins a connection.
 * - A connection table hashed on the 4-tuple (SipHash, random key) and one
 *   timer per connection in the stack's 1 ms wheel: O(1) per operation.
 * - Keepalive: an established connection silent for [dpdk] keepalive_idle
 *   with nothing in flight is probed every keepalive_interval; after
 *   keepalive_probes unanswered probes it is reset and `closed` reports
 *   -ETIMEDOUT (a peer that vanished never pins a connection).
 * - Checksums: the port's where it offers them (dpdk.c), ours otherwise.
 * Not implemented: SACK as a sender (we send little: responses), urgent
 * data (ignored), ECN, TSO (we send little), path MTU discovery (we send
 * DF with the peer's MSS), active open.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <rte_ethdev.h>

#include "stack.h"

#define RCVBUF (256u * 1024)
#define RCV_WS 3 /* RCVBUF >> RCV_WS fits the 16-bit window */
#define SNDBUF (256u * 1024) /* power of two: a ring */
#define OOO_MAX 256          /* segments held out of order per connection */
#define INIT_CWND_SEGS 10
#define RTO_INIT_MS 1000
#define RTO_MIN_MS 200
#define RTO_MAX_MS 60000
#define DELACK_MS 40
#define CLOSING_MAX_MS 60000  /* FIN_WAIT_1/2, CLOSING, LAST_ACK */
#define TIME_WAIT_MS 60000
#define MAX_TIME_WAIT 4096
#define DEAD_PEER_MS 120000   /* retransmitting this long without a word: give up */
#define MAX_BACKOFF 10
#define RTT_SHIFT 10 /* fraction bits of srtt_q and rttvar_q */
#define TS_OPT_LEN 12 /* NOP, NOP, kind 8, length 10, TSval, TSecr */
/* RFC 7323 5.5: a TS.Recent this old may have wrapped: it no longer
 * rejects anything (the clock ticks once a millisecond). */
#define PAWS_IDLE_MS (24ull * 24 * 3600 * 1000)

_Static_assert((RCVBUF >> RCV_WS) <= 65535, "window field");
_Static_assert((SNDBUF & (SNDBUF - 1)) == 0, "send ring size");

#define SEQ_LT(a, b) ((int32_t)((a) - (b)) < 0)
#define SEQ_LEQ(a, b) ((int32_t)((a) - (b)) <= 0)
#define SEQ_GT(a, b) ((int32_t)((a) - (b)) > 0)
#define SEQ_GEQ(a, b) ((int32_t)((a) - (b)) >= 0)

enum tcp_state {
	TCP_ESTABLISHED,
	TCP_CLOSE_WAIT, /* transient: we queue our FIN at once (LAST_ACK) */
	TCP_FIN_WAIT_1,
	TCP_FIN_WAIT_2,
	TCP_CLOSING,
	TCP_LAST_ACK,
	TCP_TIME_WAIT,
	TCP_CLOSED,
};

struct ooo_seg {
	struct rte_mbuf *m;
	uint8_t *data;
	uint32_t seq, len;
	bool fin;
};

struct tcb {
	struct transport_conn base;
	struct stack *s;
	struct tcb *hnext;            /* hash chain */
	struct tcb *tw_prev, *tw_next; /* TIME_WAIT list */
	struct tcb *ev_next;           /* stack->events */
	struct stimer timer;
	uint32_t pip;          /* peer address, network order */
	uint16_t pport, lport; /* network order */
	struct rte_ether_addr pmac;
	enum tcp_state state;
	bool in_table, attached, paused, closing, dead, on_events, ev_sent, ev_closed;
	bool fin_queued, fin_acked, in_recovery, rtt_timing, sack_ok, ts_ok;
	int close_err;

	/* send side */
	uint32_t snd_una, snd_nxt, snd_max, snd_wnd, max_snd_wnd, snd_wl1, snd_wl2;
	uint8_t snd_ws, rcv_ws;
	uint16_t mss;
	uint32_t cwnd, ssthresh, recover;
	unsigned dupacks, backoff;
	uint8_t *sb; /* SNDBUF ring: bytes [snd_una, snd_una + sb_len) */
	uint32_t sb_head, sb_len;
	const uint8_t *up_buf; /* the caller's buffer, lent until `sent` */
	size_t up_len, up_off;
	bool up_busy;
	uint32_t rtt_seq;
	uint64_t rtt_start_ms;
	uint32_t srtt_q, rttvar_q, rto; /* srtt, rttvar: ms << RTT_SHIFT; rto: ms */

	/* timestamps (RFC 7323), when ts_ok */
	uint32_t ts_off;        /* our clock's offset on this connection */
	uint32_t ts_recent;     /* TS.Recent: the TSval we echo */
	uint64_t ts_recent_ms;  /* when it was last updated (its 24-day validity) */
	uint32_t last_ack_sent; /* Last.ACK.sent: the ACK field we last sent */

	/* receive side */
	uint32_t rcv_nxt, rcv_adv; /* rcv_adv: right edge we advertised */
	unsigned ack_pending;
	uint8_t *stash; /* bytes that arrived while paused */
	uint32_t stash_len;
	struct ooo_seg *ooo;
	unsigned nooo;
	uint32_t last_ooo_seq; /* the newest out-of-order segment: SACK's first block */

	uint64_t rexmt_at, delack_at, linger_at, keep_at, last_rx_ms;
	unsigned keep_sent; /* keepalive probes unanswered */
};

static void tcp_output(struct tcb *c);
static void tcb_kill(struct tcb *c, int err, bool rst);

/* ---- options in ---- */

/* What a segment's options say; mss, ws and sack only from a SYN. */
struct tcp_opts {
	uint16_t mss;
	int ws; /* -1: not offered */
	bool sack;
	bool ts;
	uint32_t tsval, tsecr;
};

static void ts_read(const uint8_t *opt, struct tcp_opts *o)
{
	uint32_t v[2];
	memcpy(v, opt + 2, sizeof v);
	o->ts = true;
	o->tsval = rte_be_to_cpu_32(v[0]);
	o->tsecr = rte_be_to_cpu_32(v[1]);
}

static void syn_options(const struct rte_tcp_hdr *th, struct tcp_opts *o);

/* The timestamp of a segment after the handshake. A peer that sends one
 * almost always lays it out as we do (NOP, NOP, TS: RFC 7323 appendix A):
 * that is read in place; anything else takes the full walk. */
static void seg_options(const struct rte_tcp_hdr *th, struct tcp_opts *o)
{
	const uint8_t *p = (const uint8_t *)(th + 1);
	size_t optlen = (size_t)(th->data_off >> 4) * 4 - sizeof *th;
	o->ts = false;
	if (optlen == 0)
		return;
	if (optlen >= TS_OPT_LEN && p[0] == 1 && p[1] == 1 && p[2] == 8 && p[3] == 10) {
		ts_read(p + 2, o);
		return;
	}
	syn_options(th, o);
}

/* ---- the connection table ---- */

struct tuple_key {
	uint32_t pip;
	uint16_t pport, lport;
};

static uint32_t tuple_hash(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport)
{
	struct tuple_key k = {pip, pport, lport};
	return (uint32_t)siphash24(s->cookie_key, &k, sizeof k) & (s->nbuckets - 1);
}

static struct tcb *tcb_lookup(struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport)
{
	for (struct tcb *c = s->buckets[tuple_hash(s, pip, pport, lport)]; c; c = c->hnext)
		if (c->pip == pip && c->pport == pport && c->lport == lport)
			return c;
	return NULL;
}

static void tcb_unhash(struct tcb *c)
{
	if (!c->in_table)
		return;
	struct tcb **pp = &c->s->buckets[tuple_hash(c->s, c->pip, c->pport, c->lport)];
	while (*pp != c)
		pp = &(*pp)->hnext;
	*pp = c->hnext;
	c->in_table = false;
}

static void tw_unlink(struct tcb *c)
{
	struct stack *s = c->s;
	if (c->state != TCP_TIME_WAIT)
		return;
	if (c->tw_prev)
		c->tw_prev->tw_next = c->tw_next;
	else
		s->tw_head = c->tw_next;
	if (c->tw_next)
		c->tw_next->tw_prev = c->tw_prev;
	else
		s->tw_tail = c->tw_prev;
	c->tw_prev = c->tw_next = NULL;
	s->ntw--;
}

/* ---- deferred callbacks ---- */

static void events_queue(struct tcb *c)
{
	if (c->on_events)
		return;
	c->on_events = true;
	c->ev_next = c->s->events;
	c->s->events = c;
}

/* The layer above hears `closed` once, from tcp_events, and nothing after:
 * from here on the connection runs (if at all) without it. */
static void notify_closed(struct tcb *c, int err)
{
	if (!c->attached)
		return;
	c->attached = false;
	c->ev_closed = true;
	c->close_err = err;
	c->up_busy = false; /* the caller's buffer is theirs again */
	events_queue(c);
}

static void ooo_clear(struct tcb *c)
{
	for (unsigned i = 0; i < c->nooo; i++)
		rte_pktmbuf_free(c->ooo[i].m);
	c->s->ooo_mbufs -= c->nooo;
	c->nooo = 0;
	free(c->ooo);
	c->ooo = NULL;
}

static void tcb_release_buffers(struct tcb *c)
{
	ooo_clear(c);
	free(c->sb);
	c->sb = NULL;
	c->sb_len = 0;
	free(c->stash);
	c->stash = NULL;
	c->stash_len = 0;
}

static void tcb_free(struct tcb *c)
{
	stimer_disarm(&c->timer);
	tcb_release_buffers(c);
	c->s->ntcb--;
	free(c);
}

void tcp_events(struct stack *s)
{
	struct tcb *c;
	while ((c = s->events)) {
		s->events = c->ev_next;
		c->on_events = false;
		if (c->ev_sent) {
			c->ev_sent = false;
			if (c->attached && !c->closing)
				s->base.ev->sent(c->base.upper);
		}
		if (c->ev_closed) {
			c->ev_closed = false;
			s->base.conns--;
			s->base.ev->closed(c->base.upper, c->close_err);
		}
		if (c->dead && !c->on_events)
			tcb_free(c);
	}
}

/* ---- timers ---- */

static void timer_update(struct tcb *c)
{
	uint64_t next = 0;
	const uint64_t at[4] = {c->rexmt_at, c->delack_at, c->linger_at, c->keep_at};
	for (int i = 0; i < 4; i++)
		if (at[i] && (!next || at[i] < next))
			next = at[i];
	if (!next || c->dead)
		stimer_disarm(&c->timer);
	else if (!c->timer.pprev || c->timer.deadline_ms != next)
		stimer_arm(&c->s->timers, &c->timer, next);
}

static void rexmt_arm(struct tcb *c)
{
	uint32_t rto = c->rto << (c->backoff < MAX_BACKOFF ? c->backoff : MAX_BACKOFF);
	c->rexmt_at = c->s->now_ms + (rto < RTO_MAX_MS ? rto : RTO_MAX_MS);
}

/* RFC 6298, with RFC 7323 appendix G when timestamps give a sample per
 * ACK: `samples` is how many arrive per round trip, and each weighs that
 * much less (alpha = 1/8, beta = 1/4 divided by it). Fixed point with
 * RTT_SHIFT fraction bits, so that gains as small as 1/(8 * samples) still
 * move SRTT by a fraction of a millisecond. */
static void rtt_sample(struct tcb *c, uint32_t r, uint32_t samples)
{
	if (r == 0)
		r = 1;
	if (r > RTO_MAX_MS)
		r = RTO_MAX_MS;
	int64_t rq = (int64_t)r << RTT_SHIFT;
	if (!c->srtt_q) {
		c->srtt_q = (uint32_t)rq;
		c->rttvar_q = (uint32_t)(rq / 2);
	} else {
		int64_t err = rq - c->srtt_q;
		int64_t abs_err = err < 0 ? -err : err;
		c->rttvar_q = (uint32_t)(c->rttvar_q + (abs_err - c->rttvar_q) / (4 * (int64_t)samples));
		c->srtt_q = (uint32_t)(c->srtt_q + err / (8 * (int64_t)samples));
	}
	uint64_t var4 = (uint64_t)c->rttvar_q * 4;
	uint64_t rto = (c->srtt_q + (var4 > (1u << RTT_SHIFT) ? var4 : (1u << RTT_SHIFT))) >> RTT_SHIFT;
	c->rto = rto < RTO_MIN_MS ? RTO_MIN_MS : rto > RTO_MAX_MS ? RTO_MAX_MS : (uint32_t)rto;
}

/* ---- segments out ---- */

struct seg_out {
	uint32_t pip;
	uint16_t pport, lport;
	const struct rte_ether_addr *mac;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	uint8_t optlen; /* a multiple of 4 */
	uint8_t opt[40];
};

/* Builds headers for `paylen` bytes of payload; returns the mbuf and where
 * the payload goes, or NULL (counted) when no mbuf is left. */
static struct rte_mbuf *seg_build(struct stack *s, const struct seg_out *o, uint32_t paylen,
				  uint8_t **payload)
{
	struct rte_mbuf *m = stack_alloc(s);
	if (!m)
		return NULL;
	uint16_t thlen = (uint16_t)(sizeof(struct rte_tcp_hdr) + o->optlen);
	uint16_t total = (uint16_t)(sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) +
				    thlen + paylen);
	if (!rte_pktmbuf_append(m, total)) {
		rte_pktmbuf_free(m);
		s->st.tx_nombuf++;
		return NULL;
	}
	eth_header(s, m, o->mac, RTE_ETHER_TYPE_IPV4);
	struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	ipv4_header(s, m, ip, o->pip, IPPROTO_TCP, (uint16_t)(thlen + paylen));
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
	th->src_port = o->lport;
	th->dst_port = o->pport;
	th->sent_seq = rte_cpu_to_be_32(o->seq);
	th->recv_ack = rte_cpu_to_be_32(o->ack);
	th->data_off = (uint8_t)((thlen / 4) << 4);
	th->tcp_flags = o->flags;
	th->rx_win = rte_cpu_to_be_16(o->win);
	th->cksum = 0;
	th->tcp_urp = 0;
	if (o->optlen)
		memcpy(th + 1, o->opt, o->optlen);
	*payload = (uint8_t *)(th + 1) + o->optlen;
	return m;
}

static void seg_send(struct stack *s, struct rte_mbuf *m)
{
	struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, sizeof(struct rte_ether_hdr));
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
	if (s->tx_offloads & RTE_ETH_TX_OFFLOAD_TCP_CKSUM) {
		/* The port sums the segment; it wants the pseudo-header's sum
		 * in the field (ipv4_header set l2_len and l3_len). */
		m->l4_len = (uint64_t)(th->data_off >> 4) * 4;
		m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_TCP_CKSUM;
		th->cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
	} else {
		size_t l4 = rte_be_to_cpu_16(ip->total_length) - sizeof *ip;
		uint16_t ck = (uint16_t)~stack_l4_cksum(ip, th, l4);
		th->cksum = ck ? ck : 0xffff; /* as rte_ipv4_udptcp_cksum: both mean zero */
	}
	stack_tx(s, m);
}

/* The window we advertise: free stash room, never moving the right edge
 * left, and nothing smaller than an MSS once it has closed (SWS). */
static uint16_t rcv_window(struct tcb *c)
{
	uint32_t room = RCVBUF - c->stash_len;
	if (room < c->mss && room < RCVBUF / 2)
		room = 0;
	uint32_t max = (uint32_t)65535 << c->rcv_ws;
	if (room > max)
		room = max;
	uint32_t edge = c->rcv_nxt + room;
	if (SEQ_LT(edge, c->rcv_adv))
		edge = c->rcv_adv;
	c->rcv_adv = edge;
	uint32_t win = (edge - c->rcv_nxt) >> c->rcv_ws;
	return (uint16_t)(win > 65535 ? 65535 : win);
}

/* Our timestamp clock: milliseconds, offset per connection by a keyed
 * hash of the 4-tuple (RFC 7323 7.1: the peer learns nothing of our uptime
 * or of other connections), so a SYN-ACK sent without state and the
 * connection its cookie opens later read the same clock. */
static uint32_t ts_offset(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport)
{
	struct {
		struct tuple_key k;
		uint32_t tag; /* not a connection-table hash of the same tuple */
	} in = {{pip, pport, lport}, 0x54537631};
	return (uint32_t)siphash24(s->cookie_key, &in, sizeof in);
}

static uint8_t ts_option(uint8_t *opt, uint32_t val, uint32_t ecr)
{
	val = rte_cpu_to_be_32(val);
	ecr = rte_cpu_to_be_32(ecr);
	opt[0] = 1;
	opt[1] = 1;
	opt[2] = 8;
	opt[3] = 10;
	memcpy(opt + 4, &val, 4);
	memcpy(opt + 8, &ecr, 4);
	return TS_OPT_LEN;
}

/* Where the peer is now: an on-link peer's MAC as ARP last heard it (on
 * any queue: a neighbour that moved or failed over announces itself), else
 * the one its handshake came from (a router's, for a peer off-link). */
static const struct rte_ether_addr *peer_mac(const struct tcb *c)
{
	const struct rte_ether_addr *mac = arp_lookup(c->s, c->pip);
	return mac ? mac : &c->pmac;
}

/* A segment of the connection: our ACK, our window, and our timestamp
 * when negotiated (RFC 7323 3.2: on every segment, RST included). */
static void conn_seg(struct tcb *c, struct seg_out *o, uint32_t seq, uint8_t flags)
{
	*o = (struct seg_out){.pip = c->pip,
			      .pport = c->pport,
			      .lport = c->lport,
			      .mac = peer_mac(c),
			      .seq = seq,
			      .ack = c->rcv_nxt,
			      .flags = flags,
			      .win = rcv_window(c)};
	c->last_ack_sent = c->rcv_nxt;
	if (c->ts_ok)
		o->optlen = ts_option(o->opt, (uint32_t)c->s->now_ms + c->ts_off, c->ts_recent);
}

/* Copies `len` bytes at offset `off` of the send ring. */
static void sb_copy_out(const struct tcb *c, uint32_t off, uint8_t *dst, uint32_t len)
{
	uint32_t pos = (c->sb_head + off) & (SNDBUF - 1);
	uint32_t first = SNDBUF - pos < len ? SNDBUF - pos : len;
	memcpy(dst, c->sb + pos, first);
	memcpy(dst + first, c->sb, len - first);
}

/* One segment: `len` bytes from ring offset `off` (sequence snd_una+off),
 * with FIN when `fin`. Any segment carries our ACK. */
static void emit(struct tcb *c, uint32_t off, uint32_t len, bool fin)
{
	struct seg_out o;
	uint8_t flags = RTE_TCP_ACK_FLAG | (fin ? RTE_TCP_FIN_FLAG : 0) |
			(len && off + len == c->sb_len ? RTE_TCP_PSH_FLAG : 0);
	conn_seg(c, &o, c->snd_una + off, flags);
	uint8_t *p;
	struct rte_mbuf *m = seg_build(c->s, &o, len, &p);
	if (!m)
		return; /* the retransmission timer covers it */
	if (len)
		sb_copy_out(c, off, p, len);
	seg_send(c->s, m);
	c->ack_pending = 0;
	c->delack_at = 0;
}

/* RFC 2018 blocks for what the out-of-order queue holds: the block with
 * the newest segment first, then the others from the left, as many as fit
 * in the `room` bytes left (4 alone, 3 beside a timestamp). */
static uint8_t sack_options(const struct tcb *c, uint8_t *opt, unsigned room)
{
	unsigned max_blocks = (room - 4) / 8;
	uint32_t left[OOO_MAX], right[OOO_MAX];
	unsigned n = 0, first = 0;
	for (unsigned i = 0; i < c->nooo; i++) {
		uint32_t l = c->ooo[i].seq, r = l + c->ooo[i].len;
		if (n && SEQ_LEQ(l, right[n - 1])) {
			if (SEQ_GT(r, right[n - 1]))
				right[n - 1] = r;
		} else {
			left[n] = l;
			right[n++] = r;
		}
		if (c->ooo[i].seq == c->last_ooo_seq)
			first = n - 1;
	}
	unsigned k = 0;
	opt[k++] = 1;
	opt[k++] = 1;
	opt[k++] = 5;
	opt[k++] = 2;
	for (unsigned b = 0, used = 0; b <= n && used < max_blocks; b++) {
		unsigned i = b == 0 ? first : b - 1;
		if (b > 0 && i == first)
			continue;
		if (i >= n)
			break;
		uint32_t l = rte_cpu_to_be_32(left[i]), r = rte_cpu_to_be_32(right[i]);
		memcpy(opt + k, &l, 4);
		memcpy(opt + k + 4, &r, 4);
		k += 8;
		opt[3] += 8;
		used++;
	}
	return (uint8_t)k;
}

static void send_ack(struct tcb *c)
{
	struct seg_out o;
	uint8_t *p;
	conn_seg(c, &o, c->snd_nxt, RTE_TCP_ACK_FLAG);
	if (c->sack_ok && c->nooo)
		o.optlen += sack_options(c, o.opt + o.optlen, sizeof o.opt - o.optlen);
	struct rte_mbuf *m = seg_build(c->s, &o, 0, &p);
	if (m)
		seg_send(c->s, m);
	c->ack_pending = 0;
	c->delack_at = 0;
	timer_update(c);
}

static void challenge_ack(struct tcb *c)
{
	c->s->st.tcp_challenge_acks++;
	send_ack(c);
}

/* A reset for a segment that has no connection (RFC 9293 3.10.7.1). */
static void send_rst_for(struct stack *s, const struct rte_ipv4_hdr *ip,
			 const struct rte_tcp_hdr *th, uint32_t seglen, const struct rte_ether_addr *mac)
{
	struct seg_out o = {.pip = ip->src_addr,
			    .pport = th->src_port,
			    .lport = th->dst_port,
			    .mac = mac};
	if (th->tcp_flags & RTE_TCP_ACK_FLAG) {
		o.seq = rte_be_to_cpu_32(th->recv_ack);
		o.flags = RTE_TCP_RST_FLAG;
	} else {
		o.ack = rte_be_to_cpu_32(th->sent_seq) + seglen;
		o.flags = RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG;
	}
	uint8_t *p;
	struct rte_mbuf *m = seg_build(s, &o, 0, &p);
	if (m) {
		seg_send(s, m);
		s->st.tcp_rst_sent++;
	}
}

/* ---- sending ---- */

/* Moves the caller's bytes into the send ring; once all are in, `sent` is
 * due (deferred to tcp_events), and a close waiting for them queues FIN. */
static void sb_fill(struct tcb *c)
{
	if (c->up_busy) {
		if (!c->sb) {
			c->sb = malloc(SNDBUF);
			if (!c->sb) {
				tcb_kill(c, -ENOMEM, true);
				return;
			}
			c->sb_head = 0;
		}
		size_t want = c->up_len - c->up_off;
		uint32_t room = SNDBUF - c->sb_len;
		uint32_t n = want < room ? (uint32_t)want : room;
		uint32_t pos = (c->sb_head + c->sb_len) & (SNDBUF - 1);
		uint32_t first = SNDBUF - pos < n ? SNDBUF - pos : n;
		memcpy(c->sb + pos, c->up_buf + c->up_off, first);
		memcpy(c->sb, c->up_buf + c->up_off + first, n - first);
		c->sb_len += n;
		c->up_off += n;
		if (c->up_off == c->up_len) {
			c->up_busy = false;
			c->ev_sent = true;
			events_queue(c);
		}
	}
	if (c->closing && !c->up_busy && !c->fin_queued) {
		c->fin_queued = true;
		if (c->state == TCP_ESTABLISHED)
			c->state = TCP_FIN_WAIT_1;
		else if (c->state == TCP_CLOSE_WAIT)
			c->state = TCP_LAST_ACK;
		c->linger_at = c->s->now_ms + CLOSING_MAX_MS;
	}
}

static bool can_send(const struct tcb *c)
{
	return !c->dead && c->state != TCP_TIME_WAIT && c->state != TCP_CLOSED;
}

static void tcp_output(struct tcb *c)
{
	if (!can_send(c))
		return;
	sb_fill(c);
	if (c->dead)
		return;
	for (;;) {
		uint32_t off = c->snd_nxt - c->snd_una;
		if (off > c->sb_len || c->fin_acked)
			break; /* our FIN is out already */
		uint32_t unsent = c->sb_len - off;
		uint32_t wnd = c->snd_wnd < c->cwnd ? c->snd_wnd : c->cwnd;
		uint32_t room = wnd > off ? wnd - off : 0;
		uint32_t n = unsent < c->mss ? unsent : c->mss;
		if (n > room)
			n = room;
		bool fin = c->fin_queued && n == unsent;
		if (n == 0 && !fin)
			break;
		/* Sender SWS avoidance: a runt only when nothing is in flight. */
		if (n < unsent && n < c->mss && off > 0)
			break;
		bool resend = SEQ_LT(c->snd_nxt, c->snd_max);
		if (resend) {
			c->s->st.tcp_retransmits++;
			c->rtt_timing = false; /* Karn */
		} else if (!c->rtt_timing && n) {
			c->rtt_timing = true;
			c->rtt_seq = c->snd_nxt;
			c->rtt_start_ms = c->s->now_ms;
		}
		emit(c, off, n, fin);
		c->snd_nxt += n + fin;
		if (SEQ_GT(c->snd_nxt, c->snd_max))
			c->snd_max = c->snd_nxt;
		if (!c->rexmt_at)
			rexmt_arm(c);
		if (fin)
			break;
	}
	/* Bytes waiting on a zero window: the persist timer probes it. */
	if (!c->rexmt_at && c->sb_len > c->snd_nxt - c->snd_una)
		rexmt_arm(c);
	timer_update(c);
}

/* Resends the first unacknowledged segment (fast retransmit, NewReno). */
static void retransmit_first(struct tcb *c)
{
	uint32_t n = c->sb_len < c->mss ? c->sb_len : c->mss;
	bool fin = c->fin_queued && n == c->sb_len && SEQ_GT(c->snd_max, c->snd_una + n);
	if (!n && !fin)
		return;
	emit(c, 0, n, fin);
	c->s->st.tcp_retransmits++;
	c->rtt_timing = false;
	rexmt_arm(c);
}

/* ---- timers ---- */

static void persist_probe(struct tcb *c)
{
	/* One byte past the closed window: its ACK tells us when it opens. */
	c->s->st.tcp_window_probes++;
	emit(c, 0, 1, false);
	c->snd_nxt = c->snd_una + 1;
	if (SEQ_LT(c->snd_max, c->snd_nxt))
		c->snd_max = c->snd_nxt;
	c->backoff++;
	rexmt_arm(c);
}

static void rexmt_expired(struct tcb *c)
{
	struct stack *s = c->s;
	c->rexmt_at = 0;
	bool outstanding = c->snd_max != c->snd_una;
	if (!outstanding && c->sb_len == 0)
		return;
	if (s->now_ms - c->last_rx_ms > DEAD_PEER_MS && c->backoff >= MAX_BACKOFF / 2) {
		s->st.tcp_timeouts++;
		tcb_kill(c, -ETIMEDOUT, true);
		return;
	}
	if (c->snd_wnd == 0 && c->sb_len > 0) {
		persist_probe(c); /* also after a probe went unanswered */
		return;
	}
	s->st.tcp_rto_expiries++;
	uint32_t flight = c->snd_max - c->snd_una;
	c->ssthresh = flight / 2 > 2u * c->mss ? flight / 2 : 2u * c->mss;
	c->cwnd = c->mss;
	c->in_recovery = false;
	c->dupacks = 0;
	c->recover = c->snd_max;
	c->snd_nxt = c->snd_una; /* go back N */
	c->rtt_timing = false;
	c->backoff++;
	tcp_output(c);
	if (!c->rexmt_at)
		rexmt_arm(c);
}

/* ---- keepalive (RFC 9293 3.8.4) ---- */

/* The timer is lazy: arriving segments only note the time (last_rx_ms),
 * and the timer, when it fires, works out whether the silence is real.
 * Only an established connection with nothing in flight is probed: with
 * data in flight the retransmission timer already notices a dead peer. */
static void keepalive_expired(struct tcb *c)
{
	struct stack *s = c->s;
	uint64_t now = s->now_ms;
	c->keep_at = 0;
	if (c->state != TCP_ESTABLISHED || !s->keep_idle_ms)
		return;
	bool heard = now - c->last_rx_ms < s->keep_idle_ms;
	if (heard || c->snd_max != c->snd_una || c->sb_len) {
		/* The silence starts again from the last word (or now). */
		c->keep_sent = 0;
		c->keep_at = (heard ? c->last_rx_ms : now) + s->keep_idle_ms;
		return;
	}
	if (c->keep_sent >= s->keep_probes) {
		s->st.tcp_keepalive_drops++;
		tcb_kill(c, -ETIMEDOUT, true);
		return;
	}
	/* SND.UNA - 1, no data: outside the peer's window, so it answers
	 * with an ACK, which is all we want to hear. */
	struct seg_out o;
	uint8_t *p;
	conn_seg(c, &o, c->snd_una - 1, RTE_TCP_ACK_FLAG);
	struct rte_mbuf *m = seg_build(s, &o, 0, &p);
	if (m)
		seg_send(s, m);
	s->st.tcp_keepalive_probes++;
	c->keep_sent++;
	c->keep_at = now + s->keep_intvl_ms;
}

static void tcb_timer_fire(struct stimer *t)
{
	/* Not DPDK's container_of: it goes through an integer, which hides
	 * the pointer's provenance from the optimiser. */
	struct tcb *c = (struct tcb *)((char *)t - offsetof(struct tcb, timer));
	uint64_t now = c->s->now_ms;
	if (c->dead)
		return;
	if (c->linger_at && c->linger_at <= now) {
		c->linger_at = 0;
		/* TIME_WAIT ends quietly; other closing states waited too long. */
		tcb_kill(c, -ETIMEDOUT, c->state != TCP_TIME_WAIT);
		return;
	}
	if (c->delack_at && c->delack_at <= now)
		send_ack(c);
	if (c->rexmt_at && c->rexmt_at <= now)
		rexmt_expired(c);
	if (!c->dead && c->keep_at && c->keep_at <= now)
		keepalive_expired(c);
	timer_update(c);
}

void tcp_timers(struct stack *s)
{
	stimer_advance(&s->timers, s->now_ms, tcb_timer_fire);
}

/* ---- ending ---- */

static void tcb_kill(struct tcb *c, int err, bool rst)
{
	if (c->dead)
		return;
	if (rst && c->state != TCP_TIME_WAIT) {
		struct seg_out o;
		uint8_t *p;
		conn_seg(c, &o, c->snd_max, RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG);
		struct rte_mbuf *m = seg_build(c->s, &o, 0, &p);
		if (m) {
			seg_send(c->s, m);
			c->s->st.tcp_rst_sent++;
		}
	}
	notify_closed(c, err);
	tw_unlink(c);
	tcb_unhash(c);
	c->state = TCP_CLOSED;
	c->dead = true;
	c->rexmt_at = c->delack_at = c->linger_at = c->keep_at = 0;
	events_queue(c); /* freed there, after any callback */
}

static void time_wait_enter(struct tcb *c)
{
	struct stack *s = c->s;
	notify_closed(c, 0);
	tcb_release_buffers(c);
	c->state = TCP_TIME_WAIT;
	c->rexmt_at = c->delack_at = c->keep_at = 0;
	c->linger_at = s->now_ms + TIME_WAIT_MS;
	c->tw_prev = s->tw_tail;
	c->tw_next = NULL;
	if (s->tw_tail)
		s->tw_tail->tw_next = c;
	else
		s->tw_head = c;
	s->tw_tail = c;
	if (++s->ntw > s->max_tw) {
		s->st.tcp_time_wait_reused++;
		tcb_kill(s->tw_head, 0, false);
	}
	timer_update(c);
}

/* ---- receiving ---- */

/* In-order bytes at rcv_nxt: to the layer above, to the stash while it is
 * paused, or nowhere once it closed (draining). */
static void deliver(struct tcb *c, const uint8_t *data, uint32_t len)
{
	c->rcv_nxt += len; /* first: a reply sent from the callback ACKs them */
	if (!len || !c->attached || c->closing)
		return;
	if (c->paused) {
		if (!c->stash && !(c->stash = malloc(RCVBUF))) {
			tcb_kill(c, -ENOMEM, true);
			return;
		}
		/* The window never offered more than the stash holds; if
		 * it did, losing bytes silently would be worse than this. */
		if (len > RCVBUF - c->stash_len) {
			tcb_kill(c, -ENOBUFS, true);
			return;
		}
		memcpy(c->stash + c->stash_len, data, len);
		c->stash_len += len;
		return;
	}
	c->s->base.ev->received(c->base.upper, data, len);
}

static void fin_received(struct tcb *c)
{
	c->rcv_nxt++;
	send_ack(c);
	switch (c->state) {
	case TCP_ESTABLISHED:
		/* The layer above reads the peer's FIN as the end (as the
		 * kernel transport does); what we queued still goes out. */
		c->state = TCP_CLOSE_WAIT;
		notify_closed(c, 0);
		c->closing = true;
		tcp_output(c);
		break;
	case TCP_FIN_WAIT_1:
		c->state = TCP_CLOSING;
		notify_closed(c, 0);
		break;
	case TCP_FIN_WAIT_2:
		time_wait_enter(c);
		break;
	default:
		break;
	}
}

static bool ooo_insert(struct tcb *c, struct rte_mbuf *m, uint8_t *data, uint32_t seq,
		       uint32_t len, bool fin)
{
	struct stack *s = c->s;
	if (c->nooo == OOO_MAX || s->ooo_mbufs >= s->max_ooo_mbufs) {
		s->st.tcp_ooo_dropped++;
		return false;
	}
	/* calloc: slots past nooo are never read, but zeroed they are
	 * visibly never garbage. */
	if (!c->ooo && !(c->ooo = calloc(OOO_MAX, sizeof *c->ooo))) {
		s->st.tcp_ooo_dropped++;
		return false;
	}
	unsigned i = 0;
	while (i < c->nooo && SEQ_LT(c->ooo[i].seq, seq))
		i++;
	if (i < c->nooo && c->ooo[i].seq == seq && c->ooo[i].len >= len) {
		s->st.tcp_dup_data++;
		return false;
	}
	memmove(&c->ooo[i + 1], &c->ooo[i], (c->nooo - i) * sizeof *c->ooo);
	c->ooo[i] = (struct ooo_seg){.m = m, .data = data, .seq = seq, .len = len, .fin = fin};
	c->nooo++;
	c->last_ooo_seq = seq;
	s->ooo_mbufs++;
	s->st.tcp_ooo_queued++;
	return true;
}

/* Delivers what the queue holds from rcv_nxt on; true when a FIN came in
 * order with it. */
static bool ooo_drain(struct tcb *c)
{
	bool fin = false;
	while (c->nooo && SEQ_LEQ(c->ooo[0].seq, c->rcv_nxt) && !c->dead && !fin) {
		struct ooo_seg e = c->ooo[0];
		c->nooo--;
		c->s->ooo_mbufs--;
		memmove(&c->ooo[0], &c->ooo[1], c->nooo * sizeof *c->ooo);
		uint32_t end = e.seq + e.len;
		if (SEQ_GT(end, c->rcv_nxt)) {
			uint32_t skip = c->rcv_nxt - e.seq;
			deliver(c, e.data + skip, e.len - skip);
		}
		fin = e.fin && end == c->rcv_nxt;
		rte_pktmbuf_free(e.m);
	}
	return fin;
}

/* One RTT sample from an ACK of new data: its echoed timestamp when
 * negotiated (RFC 7323 4.2: every such ACK, retransmissions included, and
 * weighed by the samples a round trip brings), else the one timed segment
 * (Karn's rule). */
static void ack_rtt(struct tcb *c, uint32_t ack, const struct tcp_opts *o)
{
	uint64_t now = c->s->now_ms;
	if (o->ts) {
		uint32_t r = (uint32_t)now + c->ts_off - o->tsecr;
		uint32_t flight = c->snd_max - c->snd_una;
		uint32_t per_rtt = (flight + 2u * c->mss - 1) / (2u * c->mss);
		/* An echo from the future, or from before RTO_MAX_MS, is not
		 * one of ours (or a peer's bug): no sample. */
		if (r <= RTO_MAX_MS)
			rtt_sample(c, r, per_rtt ? per_rtt : 1);
		c->rtt_timing = false;
	} else if (c->rtt_timing && SEQ_GT(ack, c->rtt_seq)) {
		c->rtt_timing = false;
		rtt_sample(c, (uint32_t)(now - c->rtt_start_ms), 1);
	}
}

/* ACK processing (RFC 9293 3.10.7.4, fifth check). False: drop the rest. */
static void ack_new(struct tcb *c, uint32_t ack, const struct tcp_opts *o)
{
	uint32_t acked = ack - c->snd_una;
	ack_rtt(c, ack, o);
	c->backoff = 0;
	uint32_t data = acked < c->sb_len ? acked : c->sb_len;
	c->sb_head = (c->sb_head + data) & (SNDBUF - 1);
	c->sb_len -= data;
	if (acked > data && c->fin_queued)
		c->fin_acked = true;
	c->snd_una = ack;
	if (SEQ_LT(c->snd_nxt, ack))
		c->snd_nxt = ack;
	if (c->in_recovery) {
		if (SEQ_GEQ(ack, c->recover)) {
			uint32_t flight = c->snd_max - c->snd_una;
			c->cwnd = c->ssthresh < flight + c->mss ? c->ssthresh : flight + c->mss;
			c->in_recovery = false;
		} else {
			/* Partial ACK: the next hole is lost too. */
			retransmit_first(c);
			c->cwnd = (c->cwnd > acked ? c->cwnd - acked : 0) + c->mss;
		}
	} else if (c->cwnd < c->ssthresh) {
		c->cwnd += acked < c->mss ? acked : c->mss;
	} else {
		uint32_t inc = (uint32_t)c->mss * c->mss / c->cwnd;
		c->cwnd += inc ? inc : 1;
	}
	c->dupacks = 0;
	if (c->snd_una == c->snd_max)
		c->rexmt_at = 0;
	else
		rexmt_arm(c);
	if (!c->sb_len && !c->up_busy && c->sb) {
		free(c->sb); /* idle connections hold no send memory */
		c->sb = NULL;
	}
}

static void ack_dup(struct tcb *c)
{
	if (++c->dupacks == 3 && !c->in_recovery) {
		uint32_t flight = c->snd_max - c->snd_una;
		c->s->st.tcp_fast_retransmits++;
		c->ssthresh = flight / 2 > 2u * c->mss ? flight / 2 : 2u * c->mss;
		c->recover = c->snd_max;
		c->in_recovery = true;
		retransmit_first(c);
		c->cwnd = c->ssthresh + 3u * c->mss;
	} else if (c->dupacks > 3 && c->in_recovery) {
		c->cwnd += c->mss; /* each one is a segment that left the network */
	}
}

static void fin_acked_transition(struct tcb *c)
{
	switch (c->state) {
	case TCP_FIN_WAIT_1:
		c->state = TCP_FIN_WAIT_2;
		c->linger_at = c->s->now_ms + CLOSING_MAX_MS;
		break;
	case TCP_CLOSING:
		time_wait_enter(c);
		break;
	case TCP_LAST_ACK:
		tcb_kill(c, 0, false);
		break;
	default:
		break;
	}
}

static bool ack_input(struct tcb *c, const struct rte_tcp_hdr *th, const struct tcp_opts *o,
		      uint32_t seq, uint32_t len)
{
	uint32_t ack = rte_be_to_cpu_32(th->recv_ack);
	uint32_t wnd = (uint32_t)rte_be_to_cpu_16(th->rx_win) << c->snd_ws;
	if (SEQ_GT(ack, c->snd_max) || SEQ_LT(ack, c->snd_una - c->max_snd_wnd)) {
		send_ack(c); /* RFC 5961 5.2: not an ACK of anything we sent */
		return false;
	}
	if (SEQ_GT(ack, c->snd_una))
		ack_new(c, ack, o);
	else if (ack == c->snd_una && !len && !(th->tcp_flags & RTE_TCP_FIN_FLAG) &&
		 wnd == c->snd_wnd && wnd && c->snd_max != c->snd_una)
		ack_dup(c);
	if (SEQ_LT(c->snd_wl1, seq) || (c->snd_wl1 == seq && SEQ_LEQ(c->snd_wl2, ack))) {
		c->snd_wnd = wnd;
		c->snd_wl1 = seq;
		c->snd_wl2 = ack;
		if (wnd > c->max_snd_wnd)
			c->max_snd_wnd = wnd;
	}
	if (c->fin_acked)
		fin_acked_transition(c);
	return !c->dead;
}

/* RFC 9293 3.10.7.4, first check: does any of it fall in our window? */
static bool acceptable(struct tcb *c, uint32_t seq, uint32_t seglen)
{
	uint32_t wnd = c->rcv_adv - c->rcv_nxt;
	if (seglen == 0)
		return wnd == 0 ? seq == c->rcv_nxt
				: SEQ_GEQ(seq, c->rcv_nxt) && SEQ_LT(seq, c->rcv_nxt + wnd);
	if (wnd == 0)
		return seq == c->rcv_nxt; /* its ACK counts; its data does not fit */
	uint32_t last = seq + seglen - 1;
	return (SEQ_GEQ(seq, c->rcv_nxt) && SEQ_LT(seq, c->rcv_nxt + wnd)) ||
	       (SEQ_GEQ(last, c->rcv_nxt) && SEQ_LT(last, c->rcv_nxt + wnd));
}

/* Every second segment is ACKed at once, the others after DELACK_MS, but a
 * segment with PSH (the sender has nothing more queued, typically the end
 * of a request) is ACKed by the next timer pass: a sender running Nagle
 * would otherwise hold its next small write for our 40 ms. If the
 * application answers first, the answer carries the ACK. */
static void ack_policy(struct tcb *c, bool now, bool push)
{
	if (now || ++c->ack_pending >= 2) {
		send_ack(c);
	} else if (push) {
		if (!c->delack_at || c->delack_at > c->s->now_ms) {
			c->delack_at = c->s->now_ms;
			timer_update(c);
		}
	} else if (!c->delack_at) {
		c->delack_at = c->s->now_ms + DELACK_MS;
		timer_update(c);
	}
}

/* Data and FIN (sixth to eighth checks). True when the mbuf was kept. */
static bool data_input(struct tcb *c, struct rte_mbuf *m, uint8_t *data, uint32_t seq,
		       uint32_t len, bool fin, bool push)
{
	if (c->state != TCP_ESTABLISHED && c->state != TCP_FIN_WAIT_1 &&
	    c->state != TCP_FIN_WAIT_2) {
		if (fin || len)
			send_ack(c); /* their FIN again: our ACK was lost */
		return false;
	}
	bool had_data = len || fin;
	if (SEQ_LT(seq, c->rcv_nxt)) {
		uint32_t skip = c->rcv_nxt - seq;
		if (skip >= len) {
			/* All old, but a FIN just at rcv_nxt is new. */
			fin = fin && seq + len == c->rcv_nxt;
			skip = len;
		}
		data += skip;
		len -= skip;
		seq = c->rcv_nxt;
	}
	if (SEQ_GT(seq + len, c->rcv_adv)) {
		len = SEQ_GT(c->rcv_adv, seq) ? c->rcv_adv - seq : 0;
		fin = false;
	}
	if (fin && !SEQ_LT(seq + len, c->rcv_adv))
		fin = false; /* the FIN's sequence number is past the window */
	if (!len && !fin) {
		if (had_data) {
			c->s->st.tcp_dup_data++;
			send_ack(c);
		}
		return false;
	}
	if (seq != c->rcv_nxt) {
		bool kept = ooo_insert(c, m, data, seq, len, fin);
		send_ack(c); /* a duplicate ACK: the sender's fast retransmit */
		return kept;
	}
	bool filled = c->nooo > 0;
	deliver(c, data, len);
	if (c->dead)
		return false;
	if (!fin)
		fin = ooo_drain(c);
	if (c->dead)
		return false;
	if (fin)
		fin_received(c);
	else
		ack_policy(c, filled || c->nooo > 0, push);
	return false;
}

static bool time_wait_input(struct tcb *c, const struct rte_tcp_hdr *th)
{
	uint8_t fl = th->tcp_flags;
	if (fl & RTE_TCP_RST_FLAG)
		return false; /* RFC 1337 */
	if (fl & RTE_TCP_FIN_FLAG) {
		send_ack(c); /* our last ACK was lost: say it again */
		c->linger_at = c->s->now_ms + TIME_WAIT_MS;
		timer_update(c);
	}
	return false;
}

/* With timestamps negotiated, a segment (not a RST: RFC 7323 5.2) must
 * carry one (3.2: one without is dropped), and one older than TS.Recent is
 * an old duplicate from a wrapped sequence space (5.3, PAWS): it gets an
 * ACK and is dropped. */
static bool ts_admit(struct tcb *c, const struct rte_tcp_hdr *th, struct tcp_opts *o)
{
	seg_options(th, o);
	if (!o->ts) {
		c->s->st.tcp_ts_missing++;
		return false;
	}
	if (SEQ_LT(o->tsval, c->ts_recent) && c->s->now_ms - c->ts_recent_ms < PAWS_IDLE_MS) {
		c->s->st.tcp_paws_rejected++;
		if (c->state != TCP_TIME_WAIT)
			send_ack(c);
		return false;
	}
	return true;
}

/* A segment for an existing connection; true when the mbuf was kept. */
static bool tcb_input(struct tcb *c, struct rte_mbuf *m, const struct rte_tcp_hdr *th,
		      uint8_t *data, uint32_t len)
{
	struct stack *s = c->s;
	uint8_t fl = th->tcp_flags;
	uint32_t seq = rte_be_to_cpu_32(th->sent_seq);
	bool fin = fl & RTE_TCP_FIN_FLAG;
	struct tcp_opts o = {.ts = false};
	if (c->ts_ok && !(fl & RTE_TCP_RST_FLAG) && !ts_admit(c, th, &o))
		return false;
	c->last_rx_ms = s->now_ms;
	c->keep_sent = 0;
	if (c->state == TCP_TIME_WAIT)
		return time_wait_input(c, th);
	/* Room made since our last segment counts now, not only once an ACK
	 * has announced it (else a window probe would meet a stale zero). */
	(void)rcv_window(c);
	if (!acceptable(c, seq, len + fin + !!(fl & RTE_TCP_SYN_FLAG))) {
		s->st.tcp_unacceptable++;
		if (!(fl & RTE_TCP_RST_FLAG))
			send_ack(c);
		return false;
	}
	/* RFC 7323 4.3: echo the timestamp of the segment that our last ACK
	 * asked for (the oldest unacknowledged one: delayed ACKs and holes
	 * then count in the sender's RTT, as they should). */
	if (o.ts && SEQ_LEQ(seq, c->last_ack_sent)) {
		c->ts_recent = o.tsval;
		c->ts_recent_ms = s->now_ms;
	}
	if (fl & RTE_TCP_RST_FLAG) {
		s->st.tcp_rst_in++;
		if (seq == c->rcv_nxt)
			tcb_kill(c, -ECONNRESET, false);
		else
			challenge_ack(c); /* RFC 5961 3.2 */
		return false;
	}
	if (fl & RTE_TCP_SYN_FLAG) {
		challenge_ack(c); /* RFC 5961 4.2 */
		return false;
	}
	if (!(fl & RTE_TCP_ACK_FLAG) || !ack_input(c, th, &o, seq, len))
		return false;
	if (c->rcv_adv == c->rcv_nxt && (len || fin)) {
		/* Zero window: the ACK counted, the data does not fit. Answer
		 * (a window probe waits for exactly this). */
		send_ack(c);
		len = 0;
		fin = false;
	}
	bool kept = data_input(c, m, data, seq, len, fin, fl & RTE_TCP_PSH_FLAG);
	tcp_output(c);
	return kept;
}

/* ---- passive open: SYN cookies ---- */

/* What a cookie can say of the peer's MSS and window scale: the largest
 * entry not above what the SYN offered (window scale -1: not offered). */
static const uint16_t cookie_mss[8] = {536, 1200, 1360, 1400, 1440, 1452, 1460, 8960};
static const int cookie_ws[8] = {-1, 0, 2, 5, 6, 7, 8, 9};

#define COOKIE_MAC_BITS 24
#define COOKIE_MAC_MASK ((1u << COOKIE_MAC_BITS) - 1)
#define COOKIE_META_MASK 0x7fu /* SACK << 6 | window scale index << 3 | MSS index */

struct cookie_in {
	uint32_t pip;
	uint16_t pport, lport;
	uint32_t peer_isn;
	uint32_t t; /* the whole counter: the cookie carries its parity only */
	uint32_t meta;
};

/* Bit 31: the counter's parity, enough to tell this period from the one
 * before; bits 24-30: meta; bits 0-23: the MAC over all of `in`. */
static uint32_t cookie_make(struct stack *s, const struct cookie_in *in)
{
	uint32_t mac = (uint32_t)siphash24(s->cookie_key, in, sizeof *in) & COOKIE_MAC_MASK;
	return (in->t & 1) << 31 | in->meta << COOKIE_MAC_BITS | mac;
}

static uint32_t cookie_meta(const struct tcp_opts *so)
{
	unsigned mi = 0, wi = 0;
	while (mi < 7 && cookie_mss[mi + 1] <= so->mss)
		mi++;
	while (wi < 7 && cookie_ws[wi + 1] <= so->ws)
		wi++;
	return (so->sack ? 1u << 6 : 0) | wi << 3 | mi;
}

static void syn_options(const struct rte_tcp_hdr *th, struct tcp_opts *o)
{
	const uint8_t *p = (const uint8_t *)(th + 1);
	const uint8_t *end = (const uint8_t *)th + ((th->data_off >> 4) * 4);
	o->mss = 536;
	o->ws = -1;
	o->sack = false;
	o->ts = false;
	while (p < end) {
		if (*p == 0)
			break;
		if (*p == 1) {
			p++;
			continue;
		}
		if (end - p < 2 || p[1] < 2 || p[1] > end - p)
			break; /* malformed: keep what we have */
		if (p[0] == 2 && p[1] == 4)
			o->mss = (uint16_t)(p[2] << 8 | p[3]);
		else if (p[0] == 3 && p[1] == 3)
			o->ws = p[2] > 14 ? 14 : p[2];
		else if (p[0] == 4 && p[1] == 2)
			o->sack = true;
		else if (p[0] == 8 && p[1] == 10)
			ts_read(p, o);
		p += p[1];
	}
}

/* Our SYN-ACK's options, each only when the SYN offered it: MSS, then
 * SACK-permitted and the timestamp (SACK-permitted taking the place of the
 * timestamp's NOPs, as Linux lays them out), then window scale. */
static uint8_t syn_ack_options(const struct stack *s, const struct tcp_opts *so, uint32_t tsval,
			       uint8_t *opt)
{
	uint16_t our_mss = (uint16_t)(s->mtu - 40);
	uint8_t k = 0;
	opt[k++] = 2;
	opt[k++] = 4;
	opt[k++] = (uint8_t)(our_mss >> 8);
	opt[k++] = (uint8_t)our_mss;
	if (so->ts) {
		uint8_t *ts = opt + k;
		k += ts_option(ts, tsval, so->tsval);
		if (so->sack) {
			ts[0] = 4;
			ts[1] = 2;
		}
	} else if (so->sack) {
		const uint8_t sack[4] = {1, 1, 4, 2};
		memcpy(opt + k, sack, sizeof sack);
		k += sizeof sack;
	}
	if (so->ws >= 0) {
		const uint8_t ws[4] = {1, 3, 3, RCV_WS};
		memcpy(opt + k, ws, sizeof ws);
		k += sizeof ws;
	}
	return k;
}

static void syn_ack_send(struct stack *s, const struct rte_ipv4_hdr *ip,
			 const struct rte_tcp_hdr *th, const struct rte_ether_addr *mac)
{
	struct tcp_opts so;
	syn_options(th, &so);
	struct cookie_in in = {ip->src_addr, th->src_port, th->dst_port,
			       rte_be_to_cpu_32(th->sent_seq), (uint32_t)(s->now_ms >> 16),
			       cookie_meta(&so)};
	uint32_t isn = cookie_make(s, &in);
	uint32_t tsval = (uint32_t)s->now_ms + ts_offset(s, ip->src_addr, th->src_port, th->dst_port);
	struct seg_out o = {.pip = ip->src_addr,
			    .pport = th->src_port,
			    .lport = th->dst_port,
			    .mac = mac,
			    .seq = isn,
			    .ack = in.peer_isn + 1,
			    .flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG,
			    .win = RCVBUF > 65535 ? 65535 : RCVBUF};
	o.optlen = syn_ack_options(s, &so, tsval, o.opt);
	uint8_t *p;
	struct rte_mbuf *m = seg_build(s, &o, 0, &p);
	if (m) {
		seg_send(s, m);
		s->st.syn_cookies_sent++;
	}
}

/* The ACK that completes a handshake: its ack - 1 must be a cookie we made
 * in this time counter period or the one before (the parity bit says
 * which; an older cookie is checked against the wrong period and fails as
 * a forgery does). One MAC comparison per ACK: the time bit gives a forger
 * no second try. Fills in the options the cookie carries; the timestamp is
 * the ACK's own: we sent one in the SYN-ACK only if the SYN had one, and
 * the peer sends one from then on only if both had (RFC 7323 3.2), so an
 * ACK that carries one says both sides agreed. */
static bool cookie_check(struct stack *s, const struct rte_ipv4_hdr *ip,
			 const struct rte_tcp_hdr *th, struct tcp_opts *o)
{
	uint32_t cookie = rte_be_to_cpu_32(th->recv_ack) - 1;
	uint32_t now_t = (uint32_t)(s->now_ms >> 16);
	uint32_t t = (cookie >> 31) == (now_t & 1) ? now_t : now_t - 1;
	struct cookie_in in = {ip->src_addr, th->src_port, th->dst_port,
			       rte_be_to_cpu_32(th->sent_seq) - 1, t,
			       (cookie >> COOKIE_MAC_BITS) & COOKIE_META_MASK};
	if (cookie_make(s, &in) != cookie)
		return false;
	seg_options(th, o);
	o->mss = cookie_mss[in.meta & 7];
	o->ws = cookie_ws[(in.meta >> 3) & 7];
	o->sack = in.meta >> 6;
	return true;
}

/* The handshake's own round trip, when the ACK echoes the SYN-ACK's
 * timestamp: the first RTO then follows the path, not RTO_INIT_MS. */
static void ts_start(struct tcb *c, const struct tcp_opts *o)
{
	c->ts_ok = true;
	c->ts_off = ts_offset(c->s, c->pip, c->pport, c->lport);
	c->ts_recent = o->tsval;
	c->ts_recent_ms = c->s->now_ms;
	uint32_t r = (uint32_t)c->s->now_ms + c->ts_off - o->tsecr;
	/* A cookie lives at most 128 s: an older echo is not ours. */
	if (r <= 128000)
		rtt_sample(c, r, 1);
}

static struct tcb *tcb_create(struct stack *s, const struct rte_ipv4_hdr *ip,
			      const struct rte_tcp_hdr *th, const struct rte_ether_addr *mac,
			      const struct tcp_opts *o)
{
	if (s->ntcb >= s->max_tcb && s->tw_head) {
		s->st.tcp_time_wait_reused++;
		tcb_kill(s->tw_head, 0, false);
	}
	if (s->ntcb >= s->max_tcb) {
		s->st.tcp_table_full++;
		return NULL;
	}
	struct tcb *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	s->ntcb++;
	uint32_t ack = rte_be_to_cpu_32(th->recv_ack);
	uint16_t our_mss = (uint16_t)(s->mtu - 40);
	c->base.t = &s->base;
	c->s = s;
	c->pip = ip->src_addr;
	c->pport = th->src_port;
	c->lport = th->dst_port;
	rte_ether_addr_copy(mac, &c->pmac);
	c->state = TCP_ESTABLISHED;
	c->mss = o->mss < our_mss ? o->mss : our_mss;
	if (o->ts)
		c->mss -= TS_OPT_LEN; /* RFC 6691: the MSS counts options too */
	c->snd_ws = o->ws >= 0 ? (uint8_t)o->ws : 0;
	c->rcv_ws = o->ws >= 0 ? RCV_WS : 0;
	c->sack_ok = o->sack;
	c->snd_una = c->snd_nxt = c->snd_max = ack;
	c->snd_wnd = c->max_snd_wnd = (uint32_t)rte_be_to_cpu_16(th->rx_win) << c->snd_ws;
	c->snd_wl1 = rte_be_to_cpu_32(th->sent_seq);
	c->snd_wl2 = ack;
	c->cwnd = INIT_CWND_SEGS * (uint32_t)c->mss;
	c->ssthresh = UINT32_MAX;
	c->rto = RTO_INIT_MS;
	c->rcv_nxt = rte_be_to_cpu_32(th->sent_seq);
	c->rcv_adv = c->rcv_nxt + (RCVBUF > 65535 ? 65535 : RCVBUF); /* as our SYN-ACK said */
	c->last_ack_sent = c->rcv_nxt;
	c->last_rx_ms = s->now_ms;
	if (s->keep_idle_ms)
		c->keep_at = s->now_ms + s->keep_idle_ms;
	if (o->ts)
		ts_start(c, o);
	uint32_t b = tuple_hash(s, c->pip, c->pport, c->lport);
	c->hnext = s->buckets[b];
	s->buckets[b] = c;
	c->in_table = true;
	return c;
}

/* Hands a new connection to the layer above; false when it refused. */
static bool tcb_accept(struct stack *s, struct tcb *c)
{
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = c->pport};
	peer.sin_addr.s_addr = c->pip;
	s->base.conns++;
	c->base.upper = s->base.ev->accepted(s->base.ctx, &c->base, (struct sockaddr *)&peer,
					     sizeof peer);
	if (!c->base.upper) {
		s->base.conns--;
		s->st.tcp_refused++;
		tcb_kill(c, 0, true);
		return false;
	}
	c->attached = true;
	s->st.tcp_accepted++;
	return true;
}

/* A segment for no connection: a SYN gets a cookie, a cookie's ACK opens a
 * connection, the rest gets a reset. True when the mbuf was kept. */
static bool listen_input(struct stack *s, struct rte_mbuf *m, const struct rte_ipv4_hdr *ip,
			 const struct rte_tcp_hdr *th, uint8_t *data, uint32_t len,
			 const struct rte_ether_addr *mac)
{
	uint8_t fl = th->tcp_flags;
	uint32_t seglen = len + !!(fl & RTE_TCP_SYN_FLAG) + !!(fl & RTE_TCP_FIN_FLAG);
	if (fl & RTE_TCP_RST_FLAG)
		return false;
	bool ours = s->accepting && rte_be_to_cpu_16(th->dst_port) == s->listen_port;
	if (!ours) {
		s->st.tcp_no_listener++;
		send_rst_for(s, ip, th, seglen, mac);
		return false;
	}
	if ((fl & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) == RTE_TCP_SYN_FLAG) {
		syn_ack_send(s, ip, th, mac);
		return false;
	}
	struct tcp_opts o;
	if ((fl & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) != RTE_TCP_ACK_FLAG ||
	    !cookie_check(s, ip, th, &o)) {
		s->st.syn_cookies_bad++;
		send_rst_for(s, ip, th, seglen, mac);
		return false;
	}
	struct tcb *c = tcb_create(s, ip, th, mac, &o);
	if (!c) {
		send_rst_for(s, ip, th, seglen, mac);
		return false;
	}
	if (!tcb_accept(s, c))
		return false;
	return tcb_input(c, m, th, data, len);
}

/* The port's verdict where it checks TCP checksums and looked at this
 * segment (NONE: the data's integrity verified, the field not filled in).
 * Else ours: the one's complement sum over the pseudo header and the
 * segment, checksum field included, is all ones when the segment is
 * intact. */
static bool checksum_ok(const struct stack *s, const struct rte_mbuf *m,
			const struct rte_ipv4_hdr *ip, const struct rte_tcp_hdr *th, size_t l4)
{
	if (s->rx_offloads & RTE_ETH_RX_OFFLOAD_TCP_CKSUM) {
		switch (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) {
		case RTE_MBUF_F_RX_L4_CKSUM_GOOD:
		case RTE_MBUF_F_RX_L4_CKSUM_NONE:
			return true;
		case RTE_MBUF_F_RX_L4_CKSUM_BAD:
			return false;
		default: /* UNKNOWN: not looked at */
			break;
		}
	}
	return stack_l4_cksum(ip, th, l4) == 0xffff;
}

void tcp_input(struct stack *s, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
	       const struct rte_ether_addr *src_mac)
{
	size_t ihl = rte_ipv4_hdr_len(ip);
	size_t l4 = rte_be_to_cpu_16(ip->total_length) - ihl;
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)((uint8_t *)ip + ihl);
	struct rte_ether_addr mac = *src_mac;
	s->st.tcp_in++;
	size_t thlen = l4 >= sizeof *th ? (size_t)(th->data_off >> 4) * 4 : 0;
	if (thlen < sizeof *th || thlen > l4 || th->src_port == 0 || th->dst_port == 0) {
		s->st.tcp_bad++;
		rte_pktmbuf_free(m);
		return;
	}
	if (!checksum_ok(s, m, ip, th, l4)) {
		s->st.tcp_bad_csum++;
		rte_pktmbuf_free(m);
		return;
	}
	/* Only now: a corrupt frame (or a forger's, unchecked) must not
	 * point our replies to that address at another MAC. */
	(void)arp_learn(s, ip->src_addr, &mac);
	uint8_t *data = (uint8_t *)th + thlen;
	uint32_t len = (uint32_t)(l4 - thlen);
	struct tcb *c = tcb_lookup(s, ip->src_addr, th->src_port, th->dst_port);
	if (c && c->state == TCP_TIME_WAIT && (th->tcp_flags & RTE_TCP_SYN_FLAG) &&
	    !(th->tcp_flags & RTE_TCP_ACK_FLAG)) {
		/* A new incarnation: our cookies need no old state. */
		tcb_kill(c, 0, false);
		c = NULL;
	}
	bool kept = c ? tcb_input(c, m, th, data, len)
		      : listen_input(s, m, ip, th, data, len, &mac);
	if (!kept)
		rte_pktmbuf_free(m);
}

/* ---- the seam's connection operations ---- */

int tcp_send(struct transport_conn *tc, const void *buf, size_t len)
{
	struct tcb *c = (struct tcb *)tc;
	if (!c->attached || c->closing)
		return -EPIPE;
	if (c->up_busy)
		return -EBUSY;
	c->up_buf = buf;
	c->up_len = len;
	c->up_off = 0;
	c->up_busy = true;
	tcp_output(c);
	return 0;
}

void tcp_pause(struct transport_conn *tc)
{
	struct tcb *c = (struct tcb *)tc;
	if (c->attached)
		c->paused = true;
}

void tcp_resume(struct transport_conn *tc)
{
	struct tcb *c = (struct tcb *)tc;
	if (!c->paused || !c->attached)
		return;
	c->paused = false;
	uint32_t old_room = c->rcv_adv - c->rcv_nxt;
	/* The layer above may pause again inside the callback; it has taken
	 * the whole buffer anyway (the seam's contract). */
	while (c->stash_len && !c->paused && c->attached && !c->closing) {
		uint8_t *data = c->stash;
		uint32_t len = c->stash_len;
		c->stash = NULL;
		c->stash_len = 0;
		c->s->base.ev->received(c->base.upper, data, len);
		free(data);
	}
	if (c->dead || c->state == TCP_TIME_WAIT)
		return;
	/* Tell the peer the window opened, if it was (nearly) shut. */
	uint32_t room = RCVBUF - c->stash_len;
	if (old_room < c->mss || room - old_room >= RCVBUF / 2)
		send_ack(c);
}

void tcp_close(struct transport_conn *tc)
{
	struct tcb *c = (struct tcb *)tc;
	if (!c->attached || c->closing)
		return;
	c->closing = true;
	c->paused = false;
	free(c->stash);
	c->stash = NULL;
	c->stash_len = 0;
	tcp_output(c);
}

void tcp_abort(struct transport_conn *tc)
{
	struct tcb *c = (struct tcb *)tc;
	if (c->attached)
		tcb_kill(c, 0, true);
}

/* ---- the table ---- */

int tcp_init(struct stack *s, unsigned max_conns)
{
	s->max_tw = MAX_TIME_WAIT;
	s->max_tcb = max_conns + s->max_tw + 1024;
	s->nbuckets = 1024;
	while (s->nbuckets < s->max_tcb && s->nbuckets < (1u << 22))
		s->nbuckets <<= 1;
	/* An array of chain heads (pointers): sizeof *s->buckets is right. */
	s->buckets = calloc(s->nbuckets, sizeof *s->buckets); // NOLINT(bugprone-sizeof-expression)
	return s->buckets ? 0 : -ENOMEM;
}

void tcp_free_all(struct stack *s)
{
	for (uint32_t b = 0; s->buckets && b < s->nbuckets; b++) {
		while (s->buckets[b]) {
			struct tcb *c = s->buckets[b];
			tcb_kill(c, 0, c->state != TCP_TIME_WAIT);
		}
	}
	tcp_events(s);
	free(s->buckets);
	s->buckets = NULL;
}
