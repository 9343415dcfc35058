/*
 * TCP: segments out (tcp-internal.h has the whole picture). Headers and
 * options (timestamps, SACK blocks), the window we advertise, the send
 * ring and tcp_output, which sends what the peer's window and the
 * congestion window allow; ACKs and resets; the seam's send, close and
 * abort.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <rte_ethdev.h>

#include "tcp-internal.h"

/* ---- segments out ---- */

/* Builds headers for `paylen` bytes of payload; returns the mbuf and where
 * the payload goes, or NULL (counted) when no mbuf is left. */
struct rte_mbuf *seg_build(struct stack *s, const struct seg_out *o, uint32_t paylen,
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

void seg_send(struct stack *s, struct rte_mbuf *m)
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
uint16_t rcv_window(struct tcb *c)
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
uint8_t ts_option(uint8_t *opt, uint32_t val, uint32_t ecr)
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
void conn_seg(struct tcb *c, struct seg_out *o, uint32_t seq, uint8_t flags)
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
void emit(struct tcb *c, uint32_t off, uint32_t len, bool fin)
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

void send_ack(struct tcb *c)
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

void challenge_ack(struct tcb *c)
{
	c->s->st.tcp_challenge_acks++;
	send_ack(c);
}

/* A reset for a segment that has no connection (RFC 9293 3.10.7.1). */
void send_rst_for(struct stack *s, const struct rte_ipv4_hdr *ip, const struct rte_tcp_hdr *th,
		  uint32_t seglen, const struct rte_ether_addr *mac)
{
	struct seg_out o = {
		.pip = ip->src_addr, .pport = th->src_port, .lport = th->dst_port, .mac = mac};
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
		/* Only these two states have no FIN of ours queued yet. */
		assert(c->state == TCP_ESTABLISHED || c->state == TCP_CLOSE_WAIT);
		c->fin_queued = true;
		if (c->state == TCP_ESTABLISHED)
			c->state = TCP_FIN_WAIT_1;
		else if (c->state == TCP_CLOSE_WAIT)
			c->state = TCP_LAST_ACK;
		c->linger_at = c->s->now_ms + CLOSING_MAX_MS;
	}
}

/* In SYN_SENT a send waits in the caller's buffer (RFC 9293 3.10.2:
 * queued until ESTABLISHED), which the SYN-ACK's tcp_output takes. */
static bool can_send(const struct tcb *c)
{
	return !c->dead && c->state != TCP_TIME_WAIT && c->state != TCP_CLOSED &&
	       c->state != TCP_SYN_SENT;
}

void tcp_output(struct tcb *c)
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
	tcb_check(c);
}

/* Resends the first unacknowledged segment (fast retransmit, NewReno). */
void retransmit_first(struct tcb *c)
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

void tcp_close(struct transport_conn *tc)
{
	struct tcb *c = (struct tcb *)tc;
	if (!c->attached || c->closing)
		return;
	c->ev_connected = false; /* the layer above is done with it */
	if (c->state == TCP_SYN_SENT) {
		/* RFC 9293 3.10.4: nothing to say goodbye to; a send
		 * queued since is dropped with the connection. */
		tcb_kill(c, 0, false);
		return;
	}
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
	c->ev_connected = false; /* the layer above is done with it */
	if (c->attached)
		tcb_kill(c, 0, true);
}
