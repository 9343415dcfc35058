#include "stack_fixture.h"

#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <rte_arp.h>

#include "beacon/config.h"
#include "beacon/ring.h"
#include "beacon/transport.h"

#include "../../common/null_port.h"

static struct config cfg;
static struct ring ring;

bool stack_fixture_root(const char *test)
{
	if (geteuid() == 0)
		return true;
	fprintf(stderr, "%s: needs root (the DPDK EAL): skipped\n", test);
	return false;
}

int stack_fixture_open(const char *test, unsigned n, struct stack **st)
{
	char err[512];
	if (null_port_start(&cfg, n, err, sizeof err) != 0) {
		fprintf(stderr, "%s: %s\n", test, err);
		return -1;
	}
	if (ring_init(&ring, 64) != 0)
		return -1;
	for (unsigned w = 0; w < n; w++) {
		struct transport *t = NULL;
		if (transport_dpdk_open(&ring, w, &cfg, &null_port_events, NULL, &t) != 0)
			return -1;
		st[w] = (struct stack *)t;
	}
	return 0;
}

void stack_fixture_close(unsigned n, struct stack **st)
{
	for (unsigned w = 0; w < n; w++)
		if (st[w])
			transport_free(&st[w]->base);
	transport_dpdk_shutdown();
	ring_exit(&ring);
}

struct rte_mbuf *stack_fixture_segment(struct stack *s, const struct test_seg *g)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(s->pool);
	assert_non_null(m);
	size_t l4 = sizeof(struct rte_tcp_hdr) + g->optlen + g->datalen;
	size_t len = sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) + l4;
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m, (uint16_t)len);
	assert_non_null(eh);
	memset(eh, 0, len);
	eh->dst_addr = s->mac;
	struct rte_ether_addr from = {{0x02, 0, 0, 0, 0, g->src_mac_last}};
	eh->src_addr = from;
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(sizeof *ip + l4));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_TCP;
	ip->src_addr = g->src_ip;
	ip->dst_addr = s->ip;
	ip->hdr_checksum = rte_ipv4_cksum(ip) ^ g->ip_spoil;
	struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)(ip + 1);
	th->src_port = rte_cpu_to_be_16(g->sport);
	th->dst_port = rte_cpu_to_be_16(g->dport ? g->dport : s->listen_port);
	th->sent_seq = rte_cpu_to_be_32(g->seq);
	th->recv_ack = rte_cpu_to_be_32(g->ack);
	th->data_off = (uint8_t)(((sizeof *th + g->optlen) / 4) << 4);
	th->tcp_flags = g->flags;
	th->rx_win = rte_cpu_to_be_16(65535);
	if (g->optlen)
		memcpy(th + 1, g->opt, g->optlen);
	if (g->datalen)
		memcpy((uint8_t *)(th + 1) + g->optlen, g->data, g->datalen);
	th->cksum = rte_ipv4_udptcp_cksum(ip, th) ^ g->tcp_spoil;
	return m;
}

struct rte_mbuf *stack_fixture_arp(struct stack *s, uint16_t op, uint32_t sip, uint8_t mac_last,
				   uint32_t tip)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(s->pool);
	assert_non_null(m);
	size_t len = sizeof(struct rte_ether_hdr) + sizeof(struct rte_arp_hdr);
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)rte_pktmbuf_append(m, (uint16_t)len);
	assert_non_null(eh);
	struct rte_ether_addr from = {{0x02, 0, 0, 0, 0, mac_last}};
	eh->dst_addr = s->mac;
	eh->src_addr = from;
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
	struct rte_arp_hdr *a = (struct rte_arp_hdr *)(eh + 1);
	a->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
	a->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	a->arp_hlen = RTE_ETHER_ADDR_LEN;
	a->arp_plen = 4;
	a->arp_opcode = rte_cpu_to_be_16(op);
	a->arp_data.arp_sha = from;
	a->arp_data.arp_sip = sip;
	a->arp_data.arp_tha = s->mac;
	a->arp_data.arp_tip = tip;
	return m;
}

/* ---- the test layer above ---- */

static void *app_accepted(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
			  socklen_t len)
{
	(void)peer;
	(void)len;
	struct test_app *a = ctx;
	a->tc = tc;
	a->accepted++;
	return a;
}

static void app_received(void *upper, const uint8_t *data, size_t len)
{
	struct test_app *a = upper;
	assert_true(a->rxlen + len <= sizeof a->rx);
	if (!a->rxlen)
		a->connected_before_rx = a->connected == 1;
	memcpy(a->rx + a->rxlen, data, len);
	a->rxlen += len;
}

static void app_sent(void *upper)
{
	((struct test_app *)upper)->sent++;
}

static void app_closed(void *upper, int err)
{
	struct test_app *a = upper;
	a->closed++;
	a->err = err;
	a->tc = NULL;
}

static void app_connected(void *upper)
{
	((struct test_app *)upper)->connected++;
}

const struct transport_events test_app_events = {
	.accepted = app_accepted,
	.received = app_received,
	.sent = app_sent,
	.closed = app_closed,
	.connected = app_connected,
};
