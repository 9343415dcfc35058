/*
 * TCP: the passive open (tcp-internal.h has the whole picture). A segment
 * for no connection: a SYN is answered with a SYN cookie and costs no
 * memory, the ACK that returns a good cookie opens a connection, the rest
 * gets a reset. What a handshake settles (tcb_establish: options, windows,
 * the first RTT) is the same for the active open (tcp_connect.c) and
 * lives here beside the SYN options both sides write.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "tcp-internal.h"

/* ---- passive open: SYN cookies ---- */

/* Our timestamp clock: milliseconds, offset per connection by a keyed
 * hash of the 4-tuple (RFC 7323 7.1: the peer learns nothing of our uptime
 * or of other connections), so a SYN-ACK sent without state and the
 * connection its cookie opens later read the same clock. */
uint32_t ts_offset(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport)
{
	return tuple_secret(s, pip, pport, lport, 0x54537631);
}

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

/* Our SYN-ACK's options, each only when the SYN offered it (our SYN's:
 * all): MSS, then SACK-permitted and the timestamp (SACK-permitted taking
 * the place of the timestamp's NOPs, as Linux lays them out), then window
 * scale. */
uint8_t syn_options_write(const struct stack *s, const struct tcp_opts *so, uint32_t tsval,
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
	struct cookie_in in = {ip->src_addr,
			       th->src_port,
			       th->dst_port,
			       rte_be_to_cpu_32(th->sent_seq),
			       (uint32_t)(s->now_ms >> 16),
			       cookie_meta(&so)};
	uint32_t isn = cookie_make(s, &in);
	uint32_t tsval =
		(uint32_t)s->now_ms + ts_offset(s, ip->src_addr, th->src_port, th->dst_port);
	struct seg_out o = {.pip = ip->src_addr,
			    .pport = th->src_port,
			    .lport = th->dst_port,
			    .mac = mac,
			    .seq = isn,
			    .ack = in.peer_isn + 1,
			    .flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG,
			    .win = RCVBUF > 65535 ? 65535 : RCVBUF};
	o.optlen = syn_options_write(s, &so, tsval, o.opt);
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
	struct cookie_in in = {ip->src_addr,
			       th->src_port,
			       th->dst_port,
			       rte_be_to_cpu_32(th->sent_seq) - 1,
			       t,
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
 * timestamp (or the SYN-ACK our SYN's): the first RTO then follows the
 * path, not RTO_INIT_MS. */
static void ts_start(struct tcb *c, const struct tcp_opts *o)
{
	c->ts_ok = true;
	c->ts_off = ts_offset(c->s, c->pip, c->pport, c->lport);
	c->ts_recent = o->tsval;
	c->ts_recent_ms = c->s->now_ms;
	uint32_t r = (uint32_t)c->s->now_ms + c->ts_off - o->tsecr;
	/* A cookie lives at most 128 s, a SYN_SENT 123 s: an older echo is
	 * not ours. */
	if (r <= 128000)
		rtt_sample(c, r, 1);
}

void tcb_establish(struct tcb *c, const struct rte_tcp_hdr *th, const struct tcp_opts *o, bool syn)
{
	struct stack *s = c->s;
	uint32_t ack = rte_be_to_cpu_32(th->recv_ack);
	uint16_t our_mss = (uint16_t)(s->mtu - 40);
	c->state = TCP_ESTABLISHED;
	c->mss = o->mss < our_mss ? o->mss : our_mss;
	if (o->ts)
		c->mss -= TS_OPT_LEN; /* RFC 6691: the MSS counts options too */
	c->snd_ws = o->ws >= 0 ? (uint8_t)o->ws : 0;
	c->rcv_ws = o->ws >= 0 ? RCV_WS : 0;
	c->sack_ok = o->sack;
	c->snd_una = c->snd_nxt = c->snd_max = ack;
	/* RFC 7323 2.2: a SYN's window is never scaled. */
	c->snd_wnd = c->max_snd_wnd = (uint32_t)rte_be_to_cpu_16(th->rx_win)
				      << (syn ? 0 : c->snd_ws);
	c->snd_wl1 = rte_be_to_cpu_32(th->sent_seq);
	c->snd_wl2 = ack;
	c->cwnd = INIT_CWND_SEGS * (uint32_t)c->mss;
	c->ssthresh = UINT32_MAX;
	c->rto = RTO_INIT_MS;
	c->rcv_nxt = rte_be_to_cpu_32(th->sent_seq) + syn;
	/* As our SYN or SYN-ACK said (unscaled: RFC 7323 2.2). */
	c->rcv_adv = c->rcv_nxt + (RCVBUF > 65535 ? 65535 : RCVBUF);
	c->last_ack_sent = c->rcv_nxt;
	c->last_rx_ms = s->now_ms;
	if (s->keep_idle_ms)
		c->keep_at = s->now_ms + s->keep_idle_ms;
	if (o->ts)
		ts_start(c, o);
}

static struct tcb *tcb_create(struct stack *s, const struct rte_ipv4_hdr *ip,
			      const struct rte_tcp_hdr *th, const struct rte_ether_addr *mac,
			      const struct tcp_opts *o)
{
	struct tcb *c = tcb_new(s);
	if (!c)
		return NULL;
	c->base.t = &s->base;
	c->s = s;
	c->pip = ip->src_addr;
	c->pport = th->src_port;
	c->lport = th->dst_port;
	rte_ether_addr_copy(mac, &c->pmac);
	tcb_establish(c, th, o, false);
	tcb_hash(c);
	return c;
}

/* Hands a new connection to the layer above; false when it refused. */
static bool tcb_accept(struct stack *s, struct tcb *c)
{
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = c->pport};
	peer.sin_addr.s_addr = c->pip;
	s->base.conns++;
	c->base.upper =
		s->base.ev->accepted(s->base.ctx, &c->base, (struct sockaddr *)&peer, sizeof peer);
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

/* Whether the layer above takes a new connection now. When it does not,
 * the cookie's ACK is dropped unanswered, as Linux drops it when its accept
 * queue is full: the peer, ESTABLISHED on its side, resends its first data
 * (or the ACK) on its retransmission timer, and that segment carries the
 * same cookie, good for 65 to 131 s. So a burst waits at the peers instead
 * of being accepted and closed, and holds no memory here. */
static bool accept_room_left(const struct stack *s)
{
	const struct transport *t = &s->base;
	return !t->ev->accept_room || t->ev->accept_room(t->ctx) > 0;
}

/* A segment for no connection: a SYN gets a cookie, a cookie's ACK opens a
 * connection, the rest gets a reset. True when the mbuf was kept. */
bool listen_input(struct stack *s, struct rte_mbuf *m, const struct rte_ipv4_hdr *ip,
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
		s->st.syn_received++;
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
	if (!accept_room_left(s)) {
		s->st.tcp_accept_held++;
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
