/*
 * TCP (RFC 9293), one instance per worker: what the files
 * tcp_*.c share, private to dataplane/net/stack. stack.h declares what the
 * layers around TCP call (tcp_input, tcp_timers, tcp_events, the seam's
 * connection operations).
 *
 * The files, by what they do:
 * - tcp_input.c: a segment's arrival: checksum, options, the established
 *   and closing states (RFC 9293 3.10.7.4's checks, PAWS, ACK processing
 *   with NewReno's reaction to it, data in order and out of order, FIN),
 *   pause and resume of the receive side.
 * - tcp_listen.c: a segment for no connection: SYN cookies, the passive
 *   open that turns a cookie's ACK into a connection; the handshake's
 *   outcome (options, windows, RTT) for either side.
 * - tcp_connect.c: the active open (the seam's transport_connect, for
 *   perf/agentsim's DPDK mode): ephemeral port, ISN, SYN (after ARP),
 *   its retransmission, SYN_SENT's answer to the SYN-ACK or a RST.
 * - tcp_output.c: segments out: headers, options (timestamps, SACK
 *   blocks), the receive window we advertise, the send ring, sending and
 *   retransmission, resets; the seam's send, close and abort.
 * - tcp_timer.c: one timer per connection in the stack's wheel: RTO and
 *   RTT estimation, persist (zero-window probes), delayed ACK, keepalive,
 *   the end of closing states and TIME_WAIT.
 * - tcp_table.c: the connection table (hash on the 4-tuple), the bounded
 *   TIME_WAIT list, the deferred callbacks, a connection's end and free.
 *
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
 * - Active open (client side): an ephemeral port from a random start (RFC
 *   6056) that no connection of ours holds with that peer, TIME_WAIT
 *   included; the ISN after RFC 6528 (a 4 us clock plus a keyed hash of
 *   the 4-tuple); a SYN offering MSS, window scale, SACK-permitted and
 *   timestamps. The peer's MAC unknown: ARP asks first and the SYN leaves
 *   as the answer is learned. SYN_SENT after RFC 9293 3.10.7.3: an ACK of
 *   anything but our SYN gets a RST and changes nothing (a forged
 *   SYN-ACK), a RST counts only with the ACK of our SYN (a blind RST does
 *   not), then ESTABLISHED as the passive open. The SYN is resent from
 *   RTO_INIT_MS with backoff, SYN_RETRIES times. One queue only: with RSS
 *   the SYN-ACK may reach another worker (tcp_connect.c).
 * Not implemented: SACK as a sender (we send little: responses), urgent
 * data (ignored), ECN, TSO (we send little), path MTU discovery (we send
 * DF with the peer's MSS), simultaneous open (a SYN without ACK in
 * SYN_SENT is ignored; our SYN's retransmission or the peer's resolves
 * it), data or FIN on a SYN-ACK (not taken: the ACK of the SYN alone
 * makes the peer resend them), a route: active open reaches on-link
 * peers only.
 */
#ifndef BEACON_TCP_INTERNAL_H
#define BEACON_TCP_INTERNAL_H

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>

#include "stack.h"

#define RCVBUF (256u * 1024)
#define RCV_WS 3	     /* RCVBUF >> RCV_WS fits the 16-bit window */
#define SNDBUF (256u * 1024) /* power of two: a ring */
#define OOO_MAX 256	     /* segments held out of order per connection */
#define INIT_CWND_SEGS 10
#define RTO_INIT_MS 1000
#define RTO_MIN_MS 200
#define RTO_MAX_MS 60000
#define DELACK_MS 40
#define CLOSING_MAX_MS 60000 /* FIN_WAIT_1/2, CLOSING, LAST_ACK */
#define TIME_WAIT_MS 60000
#define MAX_TIME_WAIT 4096
#define DEAD_PEER_MS 120000 /* retransmitting this long without a word: give up */
#define MAX_BACKOFF 10
/* As Linux's tcp_syn_retries: the last try 63 s in, given up at 123 s (our
 * RTO_MAX_MS caps the last wait; Linux's 120 s cap gives 127 s). */
#define SYN_RETRIES 6
#define RTT_SHIFT 10  /* fraction bits of srtt_q and rttvar_q */
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
	TCP_SYN_SENT, /* active open: our SYN out (or waiting for ARP) */
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
	struct tcb *hnext;	       /* hash chain */
	struct tcb *tw_prev, *tw_next; /* TIME_WAIT list */
	struct tcb *ev_next;	       /* stack->events */
	struct stimer timer;
	uint32_t pip;	       /* peer address, network order */
	uint16_t pport, lport; /* network order */
	struct rte_ether_addr pmac;
	enum tcp_state state;
	bool in_table, attached, paused, closing, dead, on_events, ev_sent, ev_closed;
	bool ev_connected, arp_waiting;
	struct tcb *arp_next; /* stack->arp_waiters */
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
	uint32_t ts_off;	/* our clock's offset on this connection */
	uint32_t ts_recent;	/* TS.Recent: the TSval we echo */
	uint64_t ts_recent_ms;	/* when it was last updated (its 24-day validity) */
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

/* What a segment's options say; mss, ws and sack only from a SYN. */
struct tcp_opts {
	uint16_t mss;
	int ws; /* -1: not offered */
	bool sack;
	bool ts;
	uint32_t tsval, tsecr;
};

struct tuple_key {
	uint32_t pip;
	uint16_t pport, lport;
};

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

/* The invariants of a live connection's sequence space and buffers, true
 * between any two events (asserted in test and sanitizer builds; NDEBUG
 * in a release build leaves nothing). What we sent and what the peer
 * acknowledged never cross: SND.UNA <= SND.NXT <= SND.MAX, and nothing is
 * in flight beyond the send ring and our FIN; what we received never
 * passes the right edge we advertised. */
static inline void tcb_check(const struct tcb *c)
{
	assert(!c->dead && c->state != TCP_CLOSED);
	assert(SEQ_LEQ(c->snd_una, c->snd_nxt) && SEQ_LEQ(c->snd_nxt, c->snd_max));
	assert(c->snd_max - c->snd_una <=
	       c->sb_len + (c->fin_queued ? 1u : 0u) + (c->state == TCP_SYN_SENT ? 1u : 0u));
	assert(c->sb_len <= SNDBUF && c->stash_len <= RCVBUF && c->nooo <= OOO_MAX);
	assert(SEQ_LEQ(c->rcv_nxt, c->rcv_adv));
	assert(c->fin_queued || (c->state != TCP_FIN_WAIT_1 && c->state != TCP_FIN_WAIT_2 &&
				 c->state != TCP_CLOSING && c->state != TCP_LAST_ACK));
	(void)c; /* unused under NDEBUG */
}

/* ---- tcp_input.c ---- */
/* All the options a SYN may carry (mss, ws, sack, ts). */
void syn_options(const struct rte_tcp_hdr *th, struct tcp_opts *o);
/* The timestamp of a segment after the handshake. */
void seg_options(const struct rte_tcp_hdr *th, struct tcp_opts *o);
/* A segment for an existing connection; true when the mbuf was kept. */
bool tcb_input(struct tcb *c, struct rte_mbuf *m, const struct rte_tcp_hdr *th, uint8_t *data,
	       uint32_t len);

/* ---- tcp_listen.c ---- */
bool listen_input(struct stack *s, struct rte_mbuf *m, const struct rte_ipv4_hdr *ip,
		  const struct rte_tcp_hdr *th, uint8_t *data, uint32_t len,
		  const struct rte_ether_addr *mac);
/* Our timestamp clock's offset on a 4-tuple's connection. */
uint32_t ts_offset(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport);
/* The options of our SYN or SYN-ACK, each only where `so` offers it (a
 * SYN offers all, echoing nothing); their length. */
uint8_t syn_options_write(const struct stack *s, const struct tcp_opts *so, uint32_t tsval,
			  uint8_t *opt);
/* The handshake's outcome, either side: ESTABLISHED, with the peer's
 * options o and the window, sequence numbers and timestamp of th (the
 * passive open's ACK, or the active open's SYN-ACK when `syn`). */
void tcb_establish(struct tcb *c, const struct rte_tcp_hdr *th, const struct tcp_opts *o, bool syn);

/* ---- tcp_connect.c ---- */
/* A segment for a connection in SYN_SENT. */
void syn_sent_input(struct tcb *c, const struct rte_ipv4_hdr *ip, const struct rte_tcp_hdr *th,
		    uint32_t len, const struct rte_ether_addr *mac);
/* SYN_SENT's retransmission timer: the SYN again, or give up. */
void syn_expired(struct tcb *c);
/* Takes c off the list of connections waiting for ARP. */
void arp_unwait(struct tcb *c);

/* ---- tcp_output.c ---- */
struct rte_mbuf *seg_build(struct stack *s, const struct seg_out *o, uint32_t paylen,
			   uint8_t **payload);
/* Sums (or has the port sum) the segment and queues it. */
void seg_send(struct stack *s, struct rte_mbuf *m);
uint16_t rcv_window(struct tcb *c);
/* Writes the timestamp option (NOP, NOP, TS) at opt; its length. */
uint8_t ts_option(uint8_t *opt, uint32_t val, uint32_t ecr);
void conn_seg(struct tcb *c, struct seg_out *o, uint32_t seq, uint8_t flags);
void emit(struct tcb *c, uint32_t off, uint32_t len, bool fin);
void send_ack(struct tcb *c);
/* An ACK in answer to a segment RFC 5961 finds suspect (counted). */
void challenge_ack(struct tcb *c);
void send_rst_for(struct stack *s, const struct rte_ipv4_hdr *ip, const struct rte_tcp_hdr *th,
		  uint32_t seglen, const struct rte_ether_addr *mac);
/* Sends what the window and the congestion window allow. */
void tcp_output(struct tcb *c);
void retransmit_first(struct tcb *c);

/* ---- tcp_timer.c ---- */
/* Arms the connection's timer for the earliest of its deadlines. */
void timer_update(struct tcb *c);
/* Sets the retransmission deadline: RTO, backed off. */
void rexmt_arm(struct tcb *c);
void rtt_sample(struct tcb *c, uint32_t r, uint32_t samples);

/* ---- tcp_table.c ---- */
struct tcb *tcb_lookup(struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport);
/* A keyed hash of the 4-tuple under the stack's secret, one per `tag`. */
uint32_t tuple_secret(const struct stack *s, uint32_t pip, uint16_t pport, uint16_t lport,
		      uint32_t tag);
/* A zeroed connection, counted in the table's bound (the oldest TIME_WAIT
 * makes room when it is full); NULL when there is none (a full table is
 * counted). */
struct tcb *tcb_new(struct stack *s);
/* Enters c, its 4-tuple filled in, in the table. */
void tcb_hash(struct tcb *c);
/* Queues c for tcp_events (its callbacks, its free). */
void events_queue(struct tcb *c);
void notify_closed(struct tcb *c, int err);
/* `connected`, if due: from tcp_events, or before the first `received`
 * when data follows the SYN-ACK in the same burst. */
void notify_connected(struct tcb *c);
/* Ends c: the layer above hears `closed` with err, a RST goes out when
 * `rst` (never from TIME_WAIT), and tcp_events frees it. */
void tcb_kill(struct tcb *c, int err, bool rst);
void time_wait_enter(struct tcb *c);

#endif
