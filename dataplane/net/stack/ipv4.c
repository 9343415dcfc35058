/*
 * IPv4: header checks (version, length, checksum: the port's verdict where
 * it checks, else ours), our address only, fragments refused and counted
 * (nothing we serve needs them: peers learn our MSS from the SYN-ACK), then
 * ICMP or TCP. Options are accepted and skipped; we never send any.
 */
#include <rte_ethdev.h>

#include "stack.h"

void ipv4_header(struct stack *s, struct rte_mbuf *m, struct rte_ipv4_hdr *ip, uint32_t dst,
		 uint8_t proto, uint16_t payload_len)
{
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->type_of_service = 0;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof *ip + payload_len));
	ip->packet_id = rte_cpu_to_be_16(s->ip_id++);
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = proto;
	ip->src_addr = s->ip;
	ip->dst_addr = dst;
	ip->hdr_checksum = 0;
	/* An echo reply reuses the request's mbuf: no TX flags of its own yet
	 * (RX flags mean nothing on the way out). */
	m->ol_flags &= ~RTE_MBUF_F_TX_OFFLOAD_MASK;
	m->l2_len = sizeof(struct rte_ether_hdr);
	m->l3_len = sizeof *ip;
	if (s->tx_offloads & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM)
		m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
	else
		ip->hdr_checksum = rte_ipv4_cksum(ip);
}

/* The port's verdict where it checks IPv4 checksums and looked at this
 * one (NONE: the header's integrity verified, its field not filled in);
 * else ours. */
static bool csum_ok(const struct stack *s, const struct rte_mbuf *m, const struct rte_ipv4_hdr *ip,
		    size_t ihl)
{
	if (s->rx_offloads & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM) {
		switch (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) {
		case RTE_MBUF_F_RX_IP_CKSUM_GOOD:
		case RTE_MBUF_F_RX_IP_CKSUM_NONE:
			return true;
		case RTE_MBUF_F_RX_IP_CKSUM_BAD:
			return false;
		default: /* UNKNOWN: not looked at */
			break;
		}
	}
	return rte_raw_cksum(ip, ihl) == 0xffff;
}

static bool header_ok(struct stack *s, struct rte_mbuf *m, struct rte_ipv4_hdr *ip, size_t avail)
{
	size_t ihl = rte_ipv4_hdr_len(ip);
	size_t total = rte_be_to_cpu_16(ip->total_length);
	if ((ip->version_ihl >> 4) != 4 || ihl < sizeof *ip || ihl > avail || total < ihl ||
	    total > avail) {
		s->st.ip_bad++;
		return false;
	}
	if (!csum_ok(s, m, ip, ihl)) {
		s->st.ip_bad_csum++;
		return false;
	}
	if (rte_be_to_cpu_16(ip->fragment_offset) &
	    (RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) {
		s->st.ip_fragments++;
		return false;
	}
	if (ip->dst_addr != s->ip) {
		s->st.ip_not_ours++;
		return false;
	}
	/* Ethernet pads short frames: cut the mbuf to the datagram. */
	rte_pktmbuf_trim(m, (uint16_t)(avail - total));
	return true;
}

void ipv4_input(struct stack *s, struct rte_mbuf *m)
{
	const size_t off = sizeof(struct rte_ether_hdr);
	s->st.ip_in++;
	if (rte_pktmbuf_data_len(m) < off + sizeof(struct rte_ipv4_hdr)) {
		s->st.ip_bad++;
		rte_pktmbuf_free(m);
		return;
	}
	struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, off);
	if (!header_ok(s, m, ip, rte_pktmbuf_data_len(m) - off)) {
		rte_pktmbuf_free(m);
		return;
	}
	switch (ip->next_proto_id) {
	case IPPROTO_ICMP:
		icmp_input(s, m, ip);
		break;
	case IPPROTO_TCP:
		tcp_input(s, m, ip, &eh->src_addr);
		break;
	default:
		s->st.ip_other_proto++;
		rte_pktmbuf_free(m);
	}
}
