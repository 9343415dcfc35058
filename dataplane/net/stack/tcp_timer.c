/*
 * TCP: timers (tcp-internal.h has the whole picture). One timer per
 * connection in the stack's 1 ms wheel, set to the earliest of its
 * deadlines: retransmission (RFC 6298, with the RTT estimate it needs) or
 * the persist probe, delayed ACK, keepalive, and the end of a closing
 * state or of TIME_WAIT.
 */
#include <errno.h>
#include <stddef.h>

#include "tcp-internal.h"

/* ---- the connection's timer, the RTO estimate ---- */

void timer_update(struct tcb *c)
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

void rexmt_arm(struct tcb *c)
{
	uint32_t rto = c->rto << (c->backoff < MAX_BACKOFF ? c->backoff : MAX_BACKOFF);
	c->rexmt_at = c->s->now_ms + (rto < RTO_MAX_MS ? rto : RTO_MAX_MS);
}

/* RFC 6298, with RFC 7323 appendix G when timestamps give a sample per
 * ACK: `samples` is how many arrive per round trip, and each weighs that
 * much less (alpha = 1/8, beta = 1/4 divided by it). Fixed point with
 * RTT_SHIFT fraction bits, so that gains as small as 1/(8 * samples) still
 * move SRTT by a fraction of a millisecond. */
void rtt_sample(struct tcb *c, uint32_t r, uint32_t samples)
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
		c->rttvar_q =
			(uint32_t)(c->rttvar_q + (abs_err - c->rttvar_q) / (4 * (int64_t)samples));
		c->srtt_q = (uint32_t)(c->srtt_q + err / (8 * (int64_t)samples));
	}
	uint64_t var4 = (uint64_t)c->rttvar_q * 4;
	uint64_t rto =
		(c->srtt_q + (var4 > (1u << RTT_SHIFT) ? var4 : (1u << RTT_SHIFT))) >> RTT_SHIFT;
	c->rto = rto < RTO_MIN_MS ? RTO_MIN_MS : rto > RTO_MAX_MS ? RTO_MAX_MS : (uint32_t)rto;
}

/* ---- retransmission and persist ---- */

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
	if (c->state == TCP_SYN_SENT) {
		syn_expired(c);
		return;
	}
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
	if (!c->dead)
		tcb_check(c);
	timer_update(c);
}

void tcp_timers(struct stack *s)
{
	stimer_advance(&s->timers, s->now_ms, tcb_timer_fire);
}
