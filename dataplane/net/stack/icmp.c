/*
 * ICMP: echo requests are answered in place (the request's mbuf becomes
 * the reply); everything else is counted and dropped.
 */
#include <rte_icmp.h>

#include "stack.h"

void icmp_input(struct stack *s, struct rte_mbuf *m, struct rte_ipv4_hdr *ip)
{
	size_t ihl = rte_ipv4_hdr_len(ip);
	size_t len = rte_be_to_cpu_16(ip->total_length) - ihl;
	struct rte_icmp_hdr *ic = (struct rte_icmp_hdr *)((uint8_t *)ip + ihl);
	s->st.icmp_in++;
	if (len < sizeof *ic || stack_cksum(ic, len) != 0xffff) {
		s->st.icmp_bad++;
		rte_pktmbuf_free(m);
		return;
	}
	if (ic->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || ic->icmp_code != 0 ||
	    rte_is_broadcast_ether_addr(&rte_pktmbuf_mtod(m, struct rte_ether_hdr *)->dst_addr)) {
		rte_pktmbuf_free(m);
		return;
	}
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ether_addr peer = eh->src_addr;
	eth_header(s, m, &peer, RTE_ETHER_TYPE_IPV4);
	uint32_t src = ip->src_addr;
	/* The reply carries no IP options: move the ICMP message up if the
	 * request had some. */
	if (ihl > sizeof *ip) {
		memmove((uint8_t *)ip + sizeof *ip, ic, len);
		ic = (struct rte_icmp_hdr *)((uint8_t *)ip + sizeof *ip);
		rte_pktmbuf_trim(m, (uint16_t)(ihl - sizeof *ip));
	}
	ic->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	ic->icmp_cksum = 0;
	ic->icmp_cksum = (uint16_t)~stack_cksum(ic, len);
	ipv4_header(s, m, ip, src, IPPROTO_ICMP, (uint16_t)len);
	stack_tx(s, m);
	s->st.icmp_echo_replies++;
}
