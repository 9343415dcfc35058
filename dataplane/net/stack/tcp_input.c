/*
 * TCP: a segment's arrival (tcp-internal.h has the whole picture).
 * tcp_input checks the segment and finds its connection, or hands it to
 * tcp_listen.c; tcb_input runs RFC 9293 3.10.7.4's checks in order:
 * timestamps and PAWS, sequence acceptability, RST and SYN (RFC 5961),
 * the ACK (RTT, the send ring, NewReno), then data and FIN, in order or
 * held out of order. Also the receive side of the seam: pause and resume.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_ethdev.h>

#include "tcp-internal.h"

/* ---- options in ---- */

static void ts_read(const uint8_t *opt, struct tcp_opts *o)
{
	uint32_t v[2];
	memcpy(v, opt + 2, sizeof v);
	o->ts = true;
	o->tsval = rte_be_to_cpu_32(v[0]);
	o->tsecr = rte_be_to_cpu_32(v[1]);
}

void syn_options(const struct rte_tcp_hdr *th, struct tcp_opts *o)
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

/* The timestamp of a segment after the handshake. A peer that sends one
 * almost always lays it out as we do (NOP, NOP, TS: RFC 7323 appendix A):
 * that is read in place; anything else takes the full walk. */
void seg_options(const struct rte_tcp_hdr *th, struct tcp_opts *o)
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

/* ---- receiving ---- */

/* In-order bytes at rcv_nxt: to the layer above, to the stash while it is
 * paused, or nowhere once it closed (draining). */
static void deliver(struct tcb *c, const uint8_t *data, uint32_t len)
{
	c->rcv_nxt += len; /* first: a reply sent from the callback ACKs them */
	if (!len || !c->attached || c->closing)
		return;
	notify_connected(c); /* data in the SYN-ACK's burst: `connected` first */
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
	/* data_input takes data and FIN in these states only; the callbacks
	 * since can have queued our FIN (FIN_WAIT_1), nothing else. */
	assert(c->state == TCP_ESTABLISHED || c->state == TCP_FIN_WAIT_1 ||
	       c->state == TCP_FIN_WAIT_2);
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

static bool ooo_insert(struct tcb *c, struct rte_mbuf *m, uint8_t *data, uint32_t seq, uint32_t len,
		       bool fin)
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
	assert(SEQ_GT(ack, c->snd_una) && SEQ_LEQ(ack, c->snd_max)); /* ack_input's check */
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
	assert(c->fin_queued); /* nothing else of ours is past the ring */
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
static bool data_input(struct tcb *c, struct rte_mbuf *m, uint8_t *data, uint32_t seq, uint32_t len,
		       bool fin, bool push)
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
bool tcb_input(struct tcb *c, struct rte_mbuf *m, const struct rte_tcp_hdr *th, uint8_t *data,
	       uint32_t len)
{
	assert(!c->dead && c->in_table); /* the dead leave the table at once */
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
	bool kept = false;
	if (!c)
		kept = listen_input(s, m, ip, th, data, len, &mac);
	else if (c->state == TCP_SYN_SENT)
		syn_sent_input(c, ip, th, len, &mac);
	else
		kept = tcb_input(c, m, th, data, len);
	if (!kept)
		rte_pktmbuf_free(m);
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
	if (c->dead || c->state == TCP_TIME_WAIT || c->state == TCP_SYN_SENT)
		return;
	/* Tell the peer the window opened, if it was (nearly) shut. */
	uint32_t room = RCVBUF - c->stash_len;
	if (old_room < c->mss || room - old_room >= RCVBUF / 2)
		send_ack(c);
}
