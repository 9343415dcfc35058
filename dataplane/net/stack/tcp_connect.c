/*
 * TCP: the active open (tcp-internal.h has the whole picture), for the
 * seam's transport_connect: perf/agentsim's DPDK mode runs this stack as
 * a client. An ephemeral port, an ISN, our SYN (after ARP when the peer's
 * MAC is unknown) and its retransmission, and SYN_SENT's answer to what
 * comes back (RFC 9293 3.10.7.3); from ESTABLISHED on the connection is
 * like any other.
 */
#include <errno.h>
#include <netinet/in.h>

#include <rte_random.h>

#include "tcp-internal.h"

#define ISN_TAG 0x49534e31 /* tuple_secret's tag: not the timestamp offset's */

/* RFC 6528: ISN = M + F(4-tuple, secret), M a clock of 4 us ticks (ours
 * counts milliseconds: 250 ticks each), F a keyed hash: an off-path
 * attacker cannot guess it, and a new incarnation of a 4-tuple starts
 * above the old one's sequence numbers. */
static uint32_t isn_for(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport)
{
	return (uint32_t)(s->now_ms * 250) + tuple_secret(s, pip, pport, lport, ISN_TAG);
}

/* A local port (network order) that none of our connections holds with
 * this peer, TIME_WAIT included (an old duplicate could land in the new
 * connection); 0 when there is none. A random start (RFC 6056 3.3.1), then
 * upwards: O(1) while few ports are taken. */
static uint16_t ephemeral_port(struct stack *s, uint32_t pip, uint16_t pport)
{
	uint32_t start = (uint32_t)(rte_rand() % s->eph_count);
	for (uint32_t i = 0; i < s->eph_count; i++) {
		uint16_t port = (uint16_t)(s->eph_first + (start + i) % s->eph_count);
		if (port == s->listen_port)
			continue; /* a peer's SYN there is for the service */
		if (!tcb_lookup(s, pip, pport, rte_cpu_to_be_16(port)))
			return rte_cpu_to_be_16(port);
	}
	return 0;
}

/* ---- waiting for ARP ---- */

/* Whether a connection that waits longer than c waits for the same
 * address: that one asks (one request per address, not per connection). */
static bool older_waiter(const struct tcb *c)
{
	for (const struct tcb *w = c->arp_next; w; w = w->arp_next)
		if (w->pip == c->pip)
			return true;
	return false;
}

static void arp_wait(struct tcb *c)
{
	struct stack *s = c->s;
	if (!c->arp_waiting) {
		c->arp_next = s->arp_waiters;
		s->arp_waiters = c;
		c->arp_waiting = true;
	}
	struct rte_ether_addr mac;
	if (!older_waiter(c))
		(void)arp_resolve(s, c->pip, &mac);
}

void arp_unwait(struct tcb *c)
{
	if (!c->arp_waiting)
		return;
	struct tcb **pp = &c->s->arp_waiters;
	while (*pp != c)
		pp = &(*pp)->arp_next;
	*pp = c->arp_next;
	c->arp_next = NULL;
	c->arp_waiting = false;
}

/* ---- the SYN ---- */

/* Our SYN: every option we know (syn_options_write), the window unscaled
 * (RFC 7323 2.2). With the peer's MAC unknown an ARP request goes instead
 * and the SYN follows its answer (tcp_arp_learned), or the next try:
 * false. */
static bool syn_send(struct tcb *c)
{
	struct stack *s = c->s;
	const struct rte_ether_addr *mac = arp_lookup(s, c->pip);
	if (!mac) {
		arp_wait(c);
		return false;
	}
	const struct tcp_opts all = {.ws = RCV_WS, .sack = true, .ts = true, .tsval = 0};
	struct seg_out o = {.pip = c->pip,
			    .pport = c->pport,
			    .lport = c->lport,
			    .mac = mac,
			    .seq = c->snd_una,
			    .flags = RTE_TCP_SYN_FLAG,
			    .win = RCVBUF > 65535 ? 65535 : RCVBUF};
	o.optlen = syn_options_write(s, &all, (uint32_t)s->now_ms + c->ts_off, o.opt);
	uint8_t *p;
	struct rte_mbuf *m = seg_build(s, &o, 0, &p);
	if (m)
		seg_send(s, m);
	return true; /* an mbuf short: the next try covers it, as for data */
}

void tcp_arp_learned(struct stack *s, uint32_t ip)
{
	struct tcb **pp = &s->arp_waiters;
	while (*pp) {
		struct tcb *c = *pp;
		if (c->pip != ip) {
			pp = &c->arp_next;
			continue;
		}
		*pp = c->arp_next;
		c->arp_next = NULL;
		c->arp_waiting = false;
		(void)syn_send(c);
		/* The SYN's round trip and its timeout start now, not
		 * when ARP was asked. */
		c->rtt_start_ms = s->now_ms;
		rexmt_arm(c);
		timer_update(c);
	}
}

void syn_expired(struct tcb *c)
{
	struct stack *s = c->s;
	if (c->backoff >= SYN_RETRIES) {
		s->st.tcp_timeouts++;
		tcb_kill(c, -ETIMEDOUT, false);
		return;
	}
	c->backoff++;
	c->rtt_timing = false; /* Karn: a SYN-ACK could answer either SYN */
	if (syn_send(c))
		s->st.tcp_retransmits++;
	rexmt_arm(c);
}

/* ---- SYN_SENT (RFC 9293 3.10.7.3) ---- */

/* The SYN-ACK: the peer's options as the passive open takes them, an RTT
 * sample (its timestamp's echo, else the SYN's round trip when it was
 * sent once), ESTABLISHED, our ACK, and `connected` (deferred, as every
 * callback). What waited to be sent goes out. */
static void syn_ack_input(struct tcb *c, const struct rte_tcp_hdr *th,
			  const struct rte_ether_addr *mac)
{
	struct stack *s = c->s;
	struct tcp_opts o;
	syn_options(th, &o);
	rte_ether_addr_copy(mac, &c->pmac);
	bool timed = c->rtt_timing;
	c->rtt_timing = false;
	c->backoff = 0;
	c->rexmt_at = 0;
	tcb_establish(c, th, &o, true);
	if (!o.ts && timed)
		rtt_sample(c, (uint32_t)(s->now_ms - c->rtt_start_ms), 1);
	c->ev_connected = true;
	events_queue(c);
	send_ack(c);
	tcp_output(c);
}

void syn_sent_input(struct tcb *c, const struct rte_ipv4_hdr *ip, const struct rte_tcp_hdr *th,
		    uint32_t len, const struct rte_ether_addr *mac)
{
	uint8_t fl = th->tcp_flags;
	uint32_t ack = rte_be_to_cpu_32(th->recv_ack);
	/* Only the ACK of our SYN: ISS < SEG.ACK <= SND.NXT = ISS + 1. */
	bool ack_ok = (fl & RTE_TCP_ACK_FLAG) && ack == c->snd_max;
	if ((fl & RTE_TCP_ACK_FLAG) && !ack_ok) {
		/* Not for this incarnation (or forged): <SEQ=SEG.ACK><RST>,
		 * and we go on waiting. Never a RST for a RST. */
		if (!(fl & RTE_TCP_RST_FLAG)) {
			uint32_t seglen =
				len + !!(fl & RTE_TCP_SYN_FLAG) + !!(fl & RTE_TCP_FIN_FLAG);
			send_rst_for(c->s, ip, th, seglen, mac);
		}
		return;
	}
	if (fl & RTE_TCP_RST_FLAG) {
		/* RFC 5961 3.2: acceptable only with the ACK of our SYN; a
		 * blind RST without it is ignored. */
		if (ack_ok) {
			c->s->st.tcp_rst_in++;
			tcb_kill(c, -ECONNREFUSED, false);
		}
		return;
	}
	/* A SYN without ACK (simultaneous open) is ignored: our SYN's
	 * retransmission draws the SYN-ACK that the peer owes it. */
	if ((fl & RTE_TCP_SYN_FLAG) && ack_ok)
		syn_ack_input(c, th, mac);
}

/* ---- the seam's transport_connect ---- */

/* Whether dst is a peer we can reach: the port's own subnet (no route to
 * anything else), neither us nor its broadcast address. */
static int dst_check(const struct stack *s, const struct sockaddr_in *dst)
{
	uint32_t ip = dst->sin_addr.s_addr;
	if (dst->sin_family != AF_INET || dst->sin_port == 0 || ip == s->ip ||
	    (ip | s->netmask) == 0xffffffffu)
		return -EINVAL;
	return stack_on_link(s, ip) ? 0 : -ENETUNREACH;
}

/* A connection in SYN_SENT to dst from lport, attached to `upper`. */
static void syn_sent_init(struct tcb *c, struct stack *s, const struct sockaddr_in *dst,
			  uint16_t lport, void *upper)
{
	c->base.t = &s->base;
	c->base.upper = upper;
	c->s = s;
	c->pip = dst->sin_addr.s_addr;
	c->pport = dst->sin_port;
	c->lport = lport;
	c->state = TCP_SYN_SENT;
	c->attached = true;
	c->snd_una = isn_for(s, c->pip, c->pport, c->lport);
	c->snd_nxt = c->snd_max = c->snd_una + 1;
	c->mss = 536; /* RFC 9293 3.7.1, until the SYN-ACK says */
	c->rto = RTO_INIT_MS;
	c->ts_off = ts_offset(s, c->pip, c->pport, c->lport);
	c->rtt_timing = true;
	c->rtt_start_ms = s->now_ms;
	c->last_rx_ms = s->now_ms;
}

/* One queue only: with several, RSS (or a tap's flow hash) picks the
 * SYN-ACK's queue by its 4-tuple, not by who sent the SYN, and the worker
 * it reaches has no TCB for it (a RST). Choosing the port so that the
 * hash lands on our own queue needs the port's RSS key and table; nothing
 * needs several client queues yet (agentsim runs one worker). */
int tcp_connect(struct transport *t, const struct sockaddr_in *dst, void *upper,
		struct transport_conn **out)
{
	struct stack *s = (struct stack *)t;
	if (s->nqueues > 1)
		return -EOPNOTSUPP;
	int rc = dst_check(s, dst);
	if (rc < 0)
		return rc;
	uint16_t lport = ephemeral_port(s, dst->sin_addr.s_addr, dst->sin_port);
	if (!lport)
		return -EADDRNOTAVAIL;
	struct tcb *c = tcb_new(s);
	if (!c)
		return -ENOMEM;
	syn_sent_init(c, s, dst, lport, upper);
	tcb_hash(c);
	s->base.conns++;
	(void)syn_send(c);
	rexmt_arm(c);
	timer_update(c);
	tcb_check(c);
	*out = &c->base;
	return 0;
}
