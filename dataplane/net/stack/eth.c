/*
 * Ethernet: frames for our MAC or broadcast, IPv4 and ARP; anything else is
 * counted and dropped. The port may run promiscuous (a tap shares its MAC
 * with the kernel side), so the destination is checked here.
 */
#include "stack.h"

void eth_header(struct stack *s, struct rte_mbuf *m, const struct rte_ether_addr *dst,
		uint16_t ether_type)
{
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	rte_ether_addr_copy(dst, &eh->dst_addr);
	rte_ether_addr_copy(&s->mac, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(ether_type);
}

static bool for_us(const struct stack *s, const struct rte_ether_addr *dst)
{
	return rte_is_same_ether_addr(dst, &s->mac) || rte_is_broadcast_ether_addr(dst);
}

void eth_input(struct stack *s, struct rte_mbuf *m)
{
	s->st.rx_frames++;
	/* Multi-segment frames never come from our queue setup (no scatter,
	 * MTU below the mbuf size); refuse them rather than walk chains. */
	if (!rte_pktmbuf_is_contiguous(m) ||
	    rte_pktmbuf_data_len(m) < sizeof(struct rte_ether_hdr)) {
		s->st.rx_bad_eth++;
		rte_pktmbuf_free(m);
		return;
	}
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	if (!for_us(s, &eh->dst_addr)) {
		s->st.rx_not_for_us++;
		rte_pktmbuf_free(m);
		return;
	}
	switch (rte_be_to_cpu_16(eh->ether_type)) {
	case RTE_ETHER_TYPE_IPV4:
		ipv4_input(s, m);
		break;
	case RTE_ETHER_TYPE_ARP:
		arp_input(s, m);
		break;
	default:
		s->st.rx_other_proto++;
		rte_pktmbuf_free(m);
	}
}
