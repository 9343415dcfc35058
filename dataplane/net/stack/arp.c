/*
 * ARP: answers requests for our address, learns the MACs of on-link
 * neighbours from ARP and from the TCP segments they send us (once their
 * checksum passed: a corrupt frame teaches nothing), asks for an
 * unknown one, and announces us (gratuitous ARP) at start. The cache is
 * direct-mapped on the address: a collision replaces the older entry, which
 * is relearned from the next frame of that neighbour.
 *
 * Several queues: RSS spreads TCP flows, but an ARP frame (no ports to hash)
 * lands on whichever queue the NIC picks, so the reply to worker 2's request
 * may reach worker 0. What an ARP frame teaches one worker is therefore
 * sent to every other through a ring per worker (many producers, one
 * consumer), drained once per poll. Why rings and not one shared table
 * under seqlocks: every segment we send reads the cache, and ARP frames are
 * rare (a few a minute per neighbour); copying each one N - 1 times costs
 * nothing, while a shared table would put every send on cache lines that
 * other cores write, and bring torn-read retries into the data path. Each
 * cache stays private and lock-free. A full ring drops the news (counted):
 * the neighbour's next frame, or our next request, teaches it again. What TCP
 * segments teach is not shared: a worker only sends to the peers whose
 * flows it receives.
 */
#include <rte_arp.h>
#include <rte_ring.h>

#include "stack.h"

static unsigned slot_of(uint32_t ip)
{
	uint32_t h = rte_be_to_cpu_32(ip) * 2654435761u;
	return h >> (32 - 8) & (ARP_CACHE_SIZE - 1);
}

/* Tells every other queue's worker what an ARP frame taught us. */
static void arp_share(struct stack *s, uint32_t ip, const struct rte_ether_addr *mac)
{
	if (!s->arp_rings)
		return;
	struct arp_news n = {.ip = ip, .mac = *mac};
	for (unsigned q = 0; q < s->nqueues; q++) {
		if (q == s->queue)
			continue;
		if (rte_ring_enqueue_elem(s->arp_rings[q], &n, sizeof n) == 0)
			s->st.arp_shared++;
		else
			s->st.arp_share_dropped++;
	}
}

void arp_drain(struct stack *s)
{
	struct arp_news n[16] = {0}; /* the dequeue fills n[0..k); the analyzer cannot tell */
	if (!s->arp_rings)
		return;
	unsigned k = rte_ring_dequeue_burst_elem(s->arp_rings[s->queue], n, sizeof *n, 16, NULL);
	for (unsigned i = 0; i < k; i++)
		(void)arp_learn(s, n[i].ip, &n[i].mac);
	s->st.arp_from_peers += k;
}

bool arp_learn(struct stack *s, uint32_t ip, const struct rte_ether_addr *mac)
{
	if (!stack_on_link(s, ip) || ip == s->ip || rte_is_zero_ether_addr(mac) ||
	    !rte_is_unicast_ether_addr(mac))
		return false;
	struct arp_entry *e = &s->arp[slot_of(ip)];
	e->ip = ip;
	rte_ether_addr_copy(mac, &e->mac);
	e->seen_ms = s->now_ms;
	if (s->arp_waiters)
		tcp_arp_learned(s, ip); /* a SYN waits for exactly this */
	return true;
}

static struct rte_mbuf *arp_frame(struct stack *s, uint16_t op, const struct rte_ether_addr *dst,
				  const struct rte_ether_addr *tha, uint32_t tip)
{
	struct rte_mbuf *m = stack_alloc(s);
	if (!m)
		return NULL;
	size_t len = sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr);
	if (!rte_pktmbuf_append(m, (uint16_t)len)) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	eth_header(s, m, dst, RTE_ETHER_TYPE_ARP);
	struct rte_arp_hdr *a =
		rte_pktmbuf_mtod_offset(m, struct rte_arp_hdr *, sizeof(struct rte_ether_hdr));
	a->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	a->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	a->arp_hlen = RTE_ETHER_ADDR_LEN;
	a->arp_plen = 4;
	a->arp_opcode = rte_cpu_to_be_16(op);
	rte_ether_addr_copy(&s->mac, &a->arp_data.arp_sha);
	a->arp_data.arp_sip = s->ip;
	rte_ether_addr_copy(tha, &a->arp_data.arp_tha);
	a->arp_data.arp_tip = tip;
	return m;
}

static void arp_request(struct stack *s, uint32_t tip)
{
	static const struct rte_ether_addr zero = {{0}};
	struct rte_ether_addr bcast;
	memset(&bcast, 0xff, sizeof bcast);
	struct rte_mbuf *m = arp_frame(s, RTE_ARP_OP_REQUEST, &bcast, &zero, tip);
	if (m) {
		stack_tx(s, m);
		s->st.arp_requests_sent++;
	}
}

const struct rte_ether_addr *arp_lookup(const struct stack *s, uint32_t ip)
{
	const struct arp_entry *e = &s->arp[slot_of(ip)];
	if (e->ip == ip && s->now_ms - e->seen_ms < ARP_ENTRY_TTL_MS)
		return &e->mac;
	return NULL;
}

bool arp_resolve(struct stack *s, uint32_t ip, struct rte_ether_addr *mac)
{
	const struct rte_ether_addr *known = arp_lookup(s, ip);
	if (known) {
		rte_ether_addr_copy(known, mac);
		return true;
	}
	if (stack_on_link(s, ip))
		arp_request(s, ip);
	return false;
}

void arp_gratuitous(struct stack *s)
{
	/* A request for our own address: neighbours update their caches. */
	arp_request(s, s->ip);
}

void arp_input(struct stack *s, struct rte_mbuf *m)
{
	s->st.arp_in++;
	const size_t off = sizeof(struct rte_ether_hdr);
	if (rte_pktmbuf_data_len(m) < off + sizeof(struct rte_arp_hdr))
		goto bad;
	struct rte_arp_hdr *a = rte_pktmbuf_mtod_offset(m, struct rte_arp_hdr *, off);
	if (a->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
	    a->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
	    a->arp_hlen != RTE_ETHER_ADDR_LEN || a->arp_plen != 4)
		goto bad;
	uint16_t op = rte_be_to_cpu_16(a->arp_opcode);
	if (op != RTE_ARP_OP_REQUEST && op != RTE_ARP_OP_REPLY)
		goto bad;
	/* RFC 826: refresh a known sender; add it when the frame is for us. */
	const struct arp_entry *e = &s->arp[slot_of(a->arp_data.arp_sip)];
	if ((a->arp_data.arp_tip == s->ip || e->ip == a->arp_data.arp_sip) &&
	    arp_learn(s, a->arp_data.arp_sip, &a->arp_data.arp_sha))
		arp_share(s, a->arp_data.arp_sip, &a->arp_data.arp_sha);
	if (op == RTE_ARP_OP_REQUEST && a->arp_data.arp_tip == s->ip &&
	    a->arp_data.arp_sip != s->ip) {
		struct rte_mbuf *r = arp_frame(s, RTE_ARP_OP_REPLY, &a->arp_data.arp_sha,
					       &a->arp_data.arp_sha, a->arp_data.arp_sip);
		if (r) {
			stack_tx(s, r);
			s->st.arp_replies_sent++;
		}
	}
	rte_pktmbuf_free(m);
	return;
bad:
	s->st.arp_bad++;
	rte_pktmbuf_free(m);
}
