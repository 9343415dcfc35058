/*
 * The user-space TCP/IPv4 stack of the DPDK transport: one instance per
 * worker, share-nothing. Private to dataplane/net.
 *
 * A stack owns one RX/TX queue pair of a DPDK port. dpdk.c receives bursts
 * and hands each frame to eth_input(); the layers below answer by queueing
 * frames with stack_tx(), which dpdk.c flushes at the end of each poll.
 * Every frame handed to a layer is consumed by it (freed or sent on).
 *
 * One file per layer (eth.c, arp.c, ipv4.c, icmp.c; stack.c for frames
 * out, timers and checksums); TCP in six files by what it does (input,
 * passive open, active open, output, timers, connection table), which share
 * tcp-internal.h. This header is what the layers call of one another.
 */
#ifndef BEACON_STACK_H
#define BEACON_STACK_H

#include <stdbool.h>
#include <stdint.h>

#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>

#include "../transport-internal.h"

#define STACK_TX_BURST 64
#define ARP_CACHE_SIZE 256 /* power of two */
#define ARP_ENTRY_TTL_MS (20 * 60 * 1000)

/* Per-stack wheel of 1 ms slots for the connections' timers. */
#define STIMER_SLOTS 1024 /* power of two */

struct stimer {
	uint64_t deadline_ms;
	struct stimer *next, **pprev; /* pprev NULL when not armed */
};

struct stimer_wheel {
	uint64_t now_ms; /* the last millisecond processed */
	struct stimer *slot[STIMER_SLOTS];
};

struct arp_entry {
	uint32_t ip; /* network order; 0: empty */
	struct rte_ether_addr mac;
	uint64_t seen_ms;
};

struct tcb;

struct stack {
	struct transport base; /* the seam: the layer above sees this */
	struct rte_mempool *pool;
	uint16_t port, queue;
	struct rte_ether_addr mac;
	uint32_t ip;	  /* network order */
	uint32_t netmask; /* network order */
	uint16_t mtu;
	/* Checksums the port checks on receive (RTE_ETH_RX_OFFLOAD_IPV4_CKSUM,
	 * _TCP_CKSUM: the mbuf's ol_flags then say good, bad or unknown) and
	 * fills in on send (RTE_ETH_TX_OFFLOAD_*); software for the rest. */
	uint64_t rx_offloads, tx_offloads;
	uint16_t listen_port; /* host order */
	bool accepting;
	uint64_t now_ms;
	uint16_t ip_id;

	struct arp_entry arp[ARP_CACHE_SIZE];
	/* Every queue's ring of ARP news, indexed by queue (arp.c says why);
	 * NULL with a single queue. */
	struct rte_ring *const *arp_rings;
	unsigned nqueues;

	/* TCP: connection table (hash on the 4-tuple), timers, TIME_WAIT. */
	struct tcb **buckets;
	uint32_t nbuckets; /* power of two */
	uint32_t hash_seed;
	unsigned ntcb, max_tcb;
	struct tcb *tw_head, *tw_tail; /* TIME_WAIT, oldest first */
	unsigned ntw, max_tw;
	unsigned ooo_mbufs, max_ooo_mbufs;    /* held out of order, whole stack */
	uint32_t keep_idle_ms, keep_intvl_ms; /* keepalive; idle 0: off */
	unsigned keep_probes;
	struct tcb *events;	       /* connections with a callback to deliver */
	struct tcb *arp_waiters;       /* active opens waiting for the peer's MAC */
	uint16_t eph_first, eph_count; /* ephemeral ports: [first, first + count) */
	struct stimer_wheel timers;
	uint8_t cookie_key[16];

	struct rte_mbuf *tx[STACK_TX_BURST];
	unsigned ntx;
	struct transport_net_stats st; /* the list: beacon/transport.h */
};

/* ---- stack.c: frames out, timers ---- */
void stack_tx(struct stack *s, struct rte_mbuf *m);
void stack_tx_flush(struct stack *s);
struct rte_mbuf *stack_alloc(struct stack *s);
bool stack_on_link(const struct stack *s, uint32_t ip);

void stimer_wheel_init(struct stimer_wheel *w, uint64_t now_ms);
void stimer_arm(struct stimer_wheel *w, struct stimer *t, uint64_t deadline_ms);
void stimer_disarm(struct stimer *t);
/* Calls fire(t) for every timer due at or before now_ms. */
void stimer_advance(struct stimer_wheel *w, uint64_t now_ms, void (*fire)(struct stimer *t));

/* The one's complement sum (RFC 1071) of buf[0..len), folded to 16 bits,
 * not inverted: what rte_raw_cksum returns, several times faster. */
uint16_t stack_cksum(const void *buf, size_t len);
/* The same over the IPv4 pseudo header of `ip` and len bytes of TCP (or
 * UDP) at l4: 0xffff when an arriving segment is intact; the inverse, when
 * l4's checksum field is 0, is the one to send. */
uint16_t stack_l4_cksum(const struct rte_ipv4_hdr *ip, const void *l4, size_t len);

/* SipHash-2-4 with a 128-bit key: SYN cookies and the connection hash. */
uint64_t siphash24(const uint8_t key[16], const void *data, size_t len);

/* ---- eth.c ---- */
void eth_input(struct stack *s, struct rte_mbuf *m);
/* Prepends nothing: fills the Ethernet header at the start of m. */
void eth_header(struct stack *s, struct rte_mbuf *m, const struct rte_ether_addr *dst,
		uint16_t ether_type);

/* ---- arp.c ---- */
void arp_input(struct stack *s, struct rte_mbuf *m);
/* Learns ip -> mac from a frame that came from that address (on-link
 * only); false when it is no neighbour's. */
bool arp_learn(struct stack *s, uint32_t ip, const struct rte_ether_addr *mac);
/* Cached MAC of an on-link address; false when unknown (a request goes out). */
bool arp_resolve(struct stack *s, uint32_t ip, struct rte_ether_addr *mac);
/* The cached MAC of an address, or NULL; asks nobody. */
const struct rte_ether_addr *arp_lookup(const struct stack *s, uint32_t ip);
void arp_gratuitous(struct stack *s);
/* Learns what the other workers' queues heard (once per poll). */
void arp_drain(struct stack *s);
/* The element of the rings in arp_rings. */
struct arp_news {
	uint32_t ip;
	struct rte_ether_addr mac;
	uint16_t pad;
};

/* ---- ipv4.c ---- */
void ipv4_input(struct stack *s, struct rte_mbuf *m);
/* Fills the IPv4 header after the Ethernet header of m; `payload_len`
 * bytes of L4 follow it. Its checksum is computed here, or left to the
 * port (m's TX offload flags and lengths set) where it offers that. */
void ipv4_header(struct stack *s, struct rte_mbuf *m, struct rte_ipv4_hdr *ip, uint32_t dst,
		 uint8_t proto, uint16_t payload_len);

/* ---- icmp.c ---- */
void icmp_input(struct stack *s, struct rte_mbuf *m, struct rte_ipv4_hdr *ip);

/* ---- tcp_*.c (tcp-internal.h: what they share) ---- */
int tcp_init(struct stack *s, unsigned max_conns);
void tcp_input(struct stack *s, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
	       const struct rte_ether_addr *src_mac);
void tcp_timers(struct stack *s);
/* Delivers the deferred callbacks (sent, closed) and frees what is dead. */
void tcp_events(struct stack *s);
void tcp_free_all(struct stack *s);
/* ARP learned ip's MAC: the SYNs that waited for it go out (arp_learn). */
void tcp_arp_learned(struct stack *s, uint32_t ip);

int tcp_send(struct transport_conn *tc, const void *buf, size_t len);
void tcp_pause(struct transport_conn *tc);
void tcp_resume(struct transport_conn *tc);
void tcp_close(struct transport_conn *tc);
void tcp_abort(struct transport_conn *tc);
/* The seam's transport_connect (tcp_connect.c). */
int tcp_connect(struct transport *t, const struct sockaddr_in *dst, void *upper,
		struct transport_conn **out);

#endif
