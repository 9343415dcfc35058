/*
 * ARP: answers requests for our address, learns the MACs of on-link
 * neighbours from ARP and from the IPv4 frames they send us, asks for an
 * unknown one, and announces us (gratuitous ARP) at start. The cache is
 * direct-mapped on the address: a collision replaces the older entry, which
 * is relearned from the next frame of that neighbour.
 */
#include <rte_arp.h>

#include "stack.h"

static struct arp_entry *slot(struct stack *s, uint32_t ip)
{
	uint32_t h = rte_be_to_cpu_32(ip) * 2654435761u;
	return &s->arp[h >> (32 - 8) & (ARP_CACHE_SIZE - 1)];
}

void arp_learn(struct stack *s, uint32_t ip, const struct rte_ether_addr *mac)
{
	if (!stack_on_link(s, ip) || ip == s->ip || rte_is_zero_ether_addr(mac) ||
	    !rte_is_unicast_ether_addr(mac))
		return;
	struct arp_entry *e = slot(s, ip);
	e->ip = ip;
	rte_ether_addr_copy(mac, &e->mac);
	e->seen_ms = s->now_ms;
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
	struct rte_arp_hdr *a = rte_pktmbuf_mtod_offset(m, struct rte_arp_hdr *,
							 sizeof(struct rte_ether_hdr));
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

bool arp_resolve(struct stack *s, uint32_t ip, struct rte_ether_addr *mac)
{
	struct arp_entry *e = slot(s, ip);
	if (e->ip == ip && s->now_ms - e->seen_ms < ARP_ENTRY_TTL_MS) {
		rte_ether_addr_copy(&e->mac, mac);
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
	struct arp_entry *e = slot(s, a->arp_data.arp_sip);
	if (a->arp_data.arp_tip == s->ip || e->ip == a->arp_data.arp_sip)
		arp_learn(s, a->arp_data.arp_sip, &a->arp_data.arp_sha);
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
