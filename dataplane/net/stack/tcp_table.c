/*
 * TCP: the connection table (tcp-internal.h has the whole picture). A
 * hash on the 4-tuple under a random key, bounded in size; TIME_WAIT
 * connections on a list, oldest first, bounded too (past the bound the
 * oldest is reused); the deferred callbacks; a connection's end and its
 * free.
 */
#include <errno.h>
#include <stdlib.h>

#include "tcp-internal.h"

/* ---- the connection table ---- */

static uint32_t tuple_hash(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport)
{
	struct tuple_key k = {pip, pport, lport};
	return (uint32_t)siphash24(s->cookie_key, &k, sizeof k) & (s->nbuckets - 1);
}

uint32_t tuple_secret(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport,
		      uint32_t tag)
{
	struct {
		struct tuple_key k;
		uint32_t tag; /* not the connection table's hash of the same tuple */
	} in = {{pip, pport, lport}, tag};
	return (uint32_t)siphash24(s->cookie_key, &in, sizeof in);
}

struct tcb *tcb_lookup(struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport)
{
	for (struct tcb *c = s->buckets[tuple_hash(s, pip, pport, lport)]; c; c = c->hnext)
		if (c->pip == pip && c->pport == pport && c->lport == lport)
			return c;
	return NULL;
}

struct tcb *tcb_new(struct stack *s)
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
	return c;
}

void tcb_hash(struct tcb *c)
{
	struct stack *s = c->s;
	uint32_t b = tuple_hash(s, c->pip, c->pport, c->lport);
	c->hnext = s->buckets[b];
	s->buckets[b] = c;
	c->in_table = true;
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
	assert(s->ntw > 0);
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

void events_queue(struct tcb *c)
{
	if (c->on_events)
		return;
	c->on_events = true;
	c->ev_next = c->s->events;
	c->s->events = c;
}

/* The layer above hears `closed` once, from tcp_events, and nothing after:
 * from here on the connection runs (if at all) without it. */
void notify_closed(struct tcb *c, int err)
{
	if (!c->attached)
		return;
	c->attached = false;
	c->ev_closed = true;
	c->close_err = err;
	c->up_busy = false; /* the caller's buffer is theirs again */
	events_queue(c);
}

void notify_connected(struct tcb *c)
{
	if (!c->ev_connected)
		return;
	c->ev_connected = false;
	if (c->s->base.ev->connected)
		c->s->base.ev->connected(c->base.upper);
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
	assert(c->dead && !c->in_table && c->state == TCP_CLOSED && c->s->ntcb > 0);
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
		notify_connected(c); /* before anything else of this connection */
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

/* ---- ending ---- */

void tcb_kill(struct tcb *c, int err, bool rst)
{
	if (c->dead)
		return;
	/* SYN_SENT has nothing of the peer's to reset (no RCV.NXT). */
	if (rst && c->state != TCP_TIME_WAIT && c->state != TCP_SYN_SENT) {
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
	arp_unwait(c);
	tw_unlink(c);
	tcb_unhash(c);
	c->state = TCP_CLOSED;
	c->dead = true;
	c->rexmt_at = c->delack_at = c->linger_at = c->keep_at = 0;
	events_queue(c); /* freed there, after any callback */
}

void time_wait_enter(struct tcb *c)
{
	/* From FIN_WAIT_2 (their FIN) or CLOSING (our FIN's ACK) only. */
	assert(c->state == TCP_FIN_WAIT_2 || c->state == TCP_CLOSING);
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

/* ---- the table itself ---- */

int tcp_init(struct stack *s, unsigned max_conns)
{
	s->max_tw = MAX_TIME_WAIT;
	s->max_tcb = max_conns + s->max_tw + 1024;
	s->eph_first = 49152; /* IANA's dynamic ports (RFC 6335) */
	s->eph_count = 16384;
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
