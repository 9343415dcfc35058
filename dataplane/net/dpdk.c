/*
 * The DPDK transport: our own TCP/IPv4 stack (stack/) over a DPDK port,
 * one stack per worker, share-nothing.
 *
 * transport_dpdk_init (main thread, once, before the workers) starts the
 * EAL with [dpdk] eal_args and sets up [dpdk] port: one RX/TX queue pair
 * and one mempool of [dpdk] mbufs per worker when the port can spread TCP
 * flows over queues by RSS, or is a multi-queue tap (the kernel keeps each
 * flow on one queue: queue_plan says how), else a single pair that worker
 * 0 serves alone (the others then sleep in their rings). With several
 * queues each also gets a ring on which the others pass on what ARP frames
 * taught them (an ARP reply lands on any queue: stack/arp.c). IPv4 header and TCP checksums
 * are checked and filled in by the port where it offers that ([dpdk]
 * checksum_offload = no declines), in software otherwise, each of the four
 * on its own: the stack reads which from its rx_offloads and tx_offloads.
 *
 * transport_dpdk_open (on each worker thread) registers the thread with
 * DPDK and builds that worker's stack; its poll receives a burst, runs the
 * stack's timers, delivers the deferred callbacks and flushes the frames
 * queued for transmission.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "beacon/config.h"
#include "beacon/log.h"
#include "transport-internal.h"

#ifdef BEACON_DPDK

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "stack/stack.h"

#define MAX_QUEUES 64
#define RX_BURST 32
#define RING_DESC 1024
#define MEMPOOL_CACHE 256
#define ARP_RING_SIZE 256 /* news of ARP frames from the other queues */

static struct {
	bool ready;
	uint16_t port;
	unsigned nqueues;
	struct rte_mempool *pools[MAX_QUEUES];
	struct rte_ring *arp_rings[MAX_QUEUES]; /* with several queues only */
	struct rte_ether_addr mac;
	uint16_t mtu;
	uint64_t rx_offloads, tx_offloads; /* checksums the port does for us */
	char name[64];
} dp;

/* ---- the port ---- */

static int eal_start(const struct config *cfg, char *err, size_t errlen)
{
	char args[sizeof cfg->dpdk_eal_args];
	char *argv[64] = {"beacond"};
	int argc = 1;
	char *save = NULL;
	snprintf(args, sizeof args, "%s", cfg->dpdk_eal_args);
	for (char *tok = strtok_r(args, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (argc == 63) {
			snprintf(err, errlen, "[dpdk] eal_args: more than 62 arguments");
			return -1;
		}
		argv[argc++] = tok;
	}
	/* The EAL pins the calling thread to its main lcore; the threads main
	 * starts later (control, store writer) must not all inherit that. */
	cpu_set_t saved;
	bool have_mask = pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0;
	int rc = rte_eal_init(argc, argv);
	if (have_mask)
		(void)pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
	if (rc < 0) {
		snprintf(err, errlen, "DPDK EAL (eal_args \"%s\"): %s", cfg->dpdk_eal_args,
			 rte_strerror(rte_errno));
		return -1;
	}
	return 0;
}

/* How the port spreads flows over the queues (for the start-up log). */
static const char *spread = "";

static bool is_tap(const struct rte_eth_dev_info *info)
{
	return info->driver_name && !strcmp(info->driver_name, "net_tap");
}

/* One queue per worker when the port keeps each TCP flow on one queue:
 * by RSS over the TCP/IPv4 4-tuple (a NIC), or, on a tap, by the kernel's
 * own choice (below); else one queue, served by worker 0 alone. */
static unsigned queue_plan(const struct rte_eth_dev_info *info, unsigned nworkers,
			   struct rte_eth_conf *conf)
{
	uint64_t hf = info->flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_TCP;
	unsigned maxq = info->max_rx_queues < info->max_tx_queues ? info->max_rx_queues
								  : info->max_tx_queues;
	bool enough = nworkers > 1 && maxq >= nworkers && nworkers <= MAX_QUEUES;
	/* A tap claims RSS but programs it with a BPF program behind the
	 * multiq qdisc, which this project's kernels lack: it is left off.
	 * Its queues are the fds of a multi-queue tun device instead, and the
	 * kernel picks one per frame by the symmetric flow hash of its
	 * addresses and ports (tun_automq_select_queue); a frame we write on a
	 * queue makes the kernel send that flow's next frames to the same
	 * one. Each worker writes only its own flows' frames on its own
	 * queue, so every frame of a connection, from the SYN to the last
	 * TIME_WAIT ACK, reaches the worker that holds its TCB. */
	if (enough && is_tap(info)) {
		conf->rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
		spread = " (kernel flow hash)";
		return nworkers;
	}
	if (enough && hf) {
		conf->rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf->rx_adv_conf.rss_conf.rss_hf = hf;
		spread = " (RSS)";
		return nworkers;
	}
	if (nworkers > 1)
		log_warn("dpdk port %u (%s): no usable RSS on TCP/IPv4 (or too few queues): one "
			 "queue, served by worker 0 alone; workers 1 to %u stay idle",
			 dp.port, info->driver_name ? info->driver_name : "?", nworkers - 1);
	return 1;
}

/* The checksum offloads the port offers, enabled port-wide (every queue). */
static void offload_plan(const struct config *cfg, const struct rte_eth_dev_info *info,
			 struct rte_eth_conf *conf)
{
	dp.rx_offloads = dp.tx_offloads = 0;
	if (!cfg->dpdk_checksum_offload)
		return;
	dp.rx_offloads = info->rx_offload_capa &
			 (RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM);
	dp.tx_offloads = info->tx_offload_capa &
			 (RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM);
	conf->rxmode.offloads |= dp.rx_offloads;
	conf->txmode.offloads |= dp.tx_offloads;
}

/* "rx ipv4+tcp, tx software" and the like, for the start-up log. */
static void offload_describe(char *buf, size_t len)
{
	const uint64_t rip = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM, rtcp = RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
	const uint64_t tip = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM, ttcp = RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
	static const char *const how[4] = {"software", "ipv4 offloaded", "tcp offloaded",
					   "ipv4+tcp offloaded"};
	snprintf(buf, len, "rx %s, tx %s",
		 how[(dp.rx_offloads & rip ? 1 : 0) + (dp.rx_offloads & rtcp ? 2 : 0)],
		 how[(dp.tx_offloads & tip ? 1 : 0) + (dp.tx_offloads & ttcp ? 2 : 0)]);
}

static int queues_setup(const struct config *cfg, uint16_t nrx, uint16_t ntx, char *err,
			size_t errlen)
{
	int socket = rte_eth_dev_socket_id(dp.port);
	if (socket < 0)
		socket = SOCKET_ID_ANY; /* virtual devices have no NUMA node */
	for (unsigned q = 0; q < dp.nqueues; q++) {
		char name[RTE_MEMPOOL_NAMESIZE];
		snprintf(name, sizeof name, "bcn_p%u_q%u", dp.port, q);
		dp.pools[q] = rte_pktmbuf_pool_create(name, cfg->dpdk_mbufs, MEMPOOL_CACHE, 0,
						      RTE_MBUF_DEFAULT_BUF_SIZE, socket);
		if (!dp.pools[q]) {
			snprintf(err, errlen, "dpdk: mempool of %u mbufs: %s", cfg->dpdk_mbufs,
				 rte_strerror(rte_errno));
			return -1;
		}
		int rc = rte_eth_rx_queue_setup(dp.port, (uint16_t)q, nrx, (unsigned)socket, NULL,
						dp.pools[q]);
		if (rc == 0)
			rc = rte_eth_tx_queue_setup(dp.port, (uint16_t)q, ntx, (unsigned)socket,
						    NULL);
		if (rc < 0) {
			snprintf(err, errlen, "dpdk port %u queue %u: %s", dp.port, q,
				 rte_strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/* One ring a queue for what ARP frames on the other queues teach
 * (stack/arp.c says why): many workers enqueue, its own worker dequeues. */
static int arp_rings_setup(int socket, char *err, size_t errlen)
{
	if (dp.nqueues < 2)
		return 0;
	for (unsigned q = 0; q < dp.nqueues; q++) {
		char name[RTE_RING_NAMESIZE];
		snprintf(name, sizeof name, "bcn_arp_p%u_q%u", dp.port, q);
		dp.arp_rings[q] = rte_ring_create_elem(name, sizeof(struct arp_news), ARP_RING_SIZE,
						       socket, RING_F_SC_DEQ);
		if (!dp.arp_rings[q]) {
			snprintf(err, errlen, "dpdk: ARP ring: %s", rte_strerror(rte_errno));
			return -1;
		}
	}
	return 0;
}

static int port_setup(const struct config *cfg, unsigned nworkers, char *err, size_t errlen)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof conf);
	dp.port = (uint16_t)cfg->dpdk_port;
	if (cfg->dpdk_port >= RTE_MAX_ETHPORTS || !rte_eth_dev_is_valid_port(dp.port)) {
		snprintf(err, errlen,
			 "[dpdk] port %u: no such DPDK port (%u available; check "
			 "eal_args: -a PCI or --vdev)",
			 cfg->dpdk_port, rte_eth_dev_count_avail());
		return -1;
	}
	int rc = rte_eth_dev_info_get(dp.port, &info);
	if (rc < 0) {
		snprintf(err, errlen, "dpdk port %u: %s", dp.port, rte_strerror(-rc));
		return -1;
	}
	snprintf(dp.name, sizeof dp.name, "%s", info.device ? rte_dev_name(info.device) : "?");
	dp.nqueues = queue_plan(&info, nworkers, &conf);
	offload_plan(cfg, &info, &conf);
	uint16_t nrx = RING_DESC, ntx = RING_DESC;
	rc = rte_eth_dev_configure(dp.port, (uint16_t)dp.nqueues, (uint16_t)dp.nqueues, &conf);
	if (rc == 0)
		rc = rte_eth_dev_adjust_nb_rx_tx_desc(dp.port, &nrx, &ntx);
	if (rc < 0) {
		snprintf(err, errlen, "dpdk port %u: configure: %s", dp.port, rte_strerror(-rc));
		return -1;
	}
	if (queues_setup(cfg, nrx, ntx, err, errlen) < 0 ||
	    arp_rings_setup(rte_eth_dev_socket_id(dp.port), err, errlen) < 0)
		return -1;
	rc = rte_eth_dev_start(dp.port);
	if (rc < 0) {
		snprintf(err, errlen, "dpdk port %u: start: %s", dp.port, rte_strerror(-rc));
		return -1;
	}
	/* A tap gives its kernel side our MAC: frames for us may not carry
	 * it as their destination only; eth.c checks what arrives. */
	(void)rte_eth_promiscuous_enable(dp.port);
	if (rte_eth_macaddr_get(dp.port, &dp.mac) < 0 || rte_eth_dev_get_mtu(dp.port, &dp.mtu) < 0)
		dp.mtu = RTE_ETHER_MTU;
	if (dp.mtu > RTE_MBUF_DEFAULT_DATAROOM - RTE_ETHER_HDR_LEN)
		dp.mtu = RTE_ETHER_MTU; /* frames must fit one mbuf */
	return 0;
}

static void port_teardown(void)
{
	(void)rte_eth_dev_stop(dp.port);
	(void)rte_eth_dev_close(dp.port);
	for (unsigned q = 0; q < MAX_QUEUES; q++) {
		rte_mempool_free(dp.pools[q]);
		dp.pools[q] = NULL;
		rte_ring_free(dp.arp_rings[q]);
		dp.arp_rings[q] = NULL;
	}
}

int transport_dpdk_init(const struct config *cfg, unsigned nworkers, char *err, size_t errlen)
{
	if (eal_start(cfg, err, errlen) < 0)
		return -1;
	if (port_setup(cfg, nworkers, err, errlen) < 0) {
		port_teardown();
		(void)rte_eal_cleanup();
		return -1;
	}
	dp.ready = true;
	char mac[RTE_ETHER_ADDR_FMT_SIZE], csum[80];
	rte_ether_format_addr(mac, sizeof mac, &dp.mac);
	offload_describe(csum, sizeof csum);
	log_info("dpdk port %u (%s): MAC %s, MTU %u, %u queue%s%s; checksums: %s", dp.port, dp.name,
		 mac, dp.mtu, dp.nqueues, dp.nqueues == 1 ? "" : "s", spread, csum);
	return 0;
}

void transport_dpdk_shutdown(void)
{
	if (!dp.ready)
		return;
	dp.ready = false;
	port_teardown();
	(void)rte_eal_cleanup();
}

/* ---- the transport ---- */

static uint64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int dpdk_poll(struct transport *t, uint64_t now_ms)
{
	struct stack *s = (struct stack *)t;
	struct rte_mbuf *rx[RX_BURST];
	s->now_ms = now_ms;
	uint16_t n = rte_eth_rx_burst(s->port, s->queue, rx, RX_BURST);
	for (uint16_t i = 0; i < n; i++) {
		if (i + 1 < n)
			rte_prefetch0(rte_pktmbuf_mtod(rx[i + 1], void *));
		eth_input(s, rx[i]);
	}
	arp_drain(s);
	tcp_timers(s);
	tcp_events(s);
	stack_tx_flush(s);
	return n;
}

static void dpdk_stop_accepting(struct transport *t)
{
	((struct stack *)t)->accepting = false;
}

static void stats_log(const struct stack *s)
{
	const struct transport_net_stats *st = &s->st;
	log_info("dpdk queue %u: rx %llu frames (not for us %llu, bad eth %llu, other %llu); "
		 "arp %llu (bad %llu, replies %llu); ip %llu (bad %llu, bad checksum %llu, "
		 "fragments %llu, not ours %llu); icmp %llu (echo replies %llu); tcp %llu (bad "
		 "%llu, "
		 "bad checksum %llu, cookies %llu, bad cookies %llu, accepted %llu, unacceptable "
		 "%llu, challenge ACKs %llu, RST in %llu, RST out %llu, out of order %llu/dropped "
		 "%llu, retransmits %llu, fast %llu, RTO %llu, timeouts %llu, probes %llu, "
		 "TIME_WAIT reused %llu, table full %llu, PAWS %llu, no timestamp %llu, keepalive "
		 "probes %llu, keepalive drops %llu); tx %llu (dropped %llu, no mbuf %llu)",
		 s->queue, (unsigned long long)st->rx_frames, (unsigned long long)st->rx_not_for_us,
		 (unsigned long long)st->rx_bad_eth, (unsigned long long)st->rx_other_proto,
		 (unsigned long long)st->arp_in, (unsigned long long)st->arp_bad,
		 (unsigned long long)st->arp_replies_sent, (unsigned long long)st->ip_in,
		 (unsigned long long)st->ip_bad, (unsigned long long)st->ip_bad_csum,
		 (unsigned long long)st->ip_fragments, (unsigned long long)st->ip_not_ours,
		 (unsigned long long)st->icmp_in, (unsigned long long)st->icmp_echo_replies,
		 (unsigned long long)st->tcp_in, (unsigned long long)st->tcp_bad,
		 (unsigned long long)st->tcp_bad_csum, (unsigned long long)st->syn_cookies_sent,
		 (unsigned long long)st->syn_cookies_bad, (unsigned long long)st->tcp_accepted,
		 (unsigned long long)st->tcp_unacceptable,
		 (unsigned long long)st->tcp_challenge_acks, (unsigned long long)st->tcp_rst_in,
		 (unsigned long long)st->tcp_rst_sent, (unsigned long long)st->tcp_ooo_queued,
		 (unsigned long long)st->tcp_ooo_dropped, (unsigned long long)st->tcp_retransmits,
		 (unsigned long long)st->tcp_fast_retransmits,
		 (unsigned long long)st->tcp_rto_expiries, (unsigned long long)st->tcp_timeouts,
		 (unsigned long long)st->tcp_window_probes,
		 (unsigned long long)st->tcp_time_wait_reused,
		 (unsigned long long)st->tcp_table_full, (unsigned long long)st->tcp_paws_rejected,
		 (unsigned long long)st->tcp_ts_missing,
		 (unsigned long long)st->tcp_keepalive_probes,
		 (unsigned long long)st->tcp_keepalive_drops, (unsigned long long)st->tx_frames,
		 (unsigned long long)st->tx_dropped, (unsigned long long)st->tx_nombuf);
}

static void dpdk_net_stats(const struct transport *t, struct transport_net_stats *out)
{
	*out = ((const struct stack *)t)->st;
}

static void dpdk_free(struct transport *t)
{
	struct stack *s = (struct stack *)t;
	tcp_free_all(s);
	stack_tx_flush(s);
	stats_log(s);
	free(s);
	rte_thread_unregister();
}

static const struct transport_ops dpdk_ops = {
	.send = tcp_send,
	.pause = tcp_pause,
	.resume = tcp_resume,
	.close = tcp_close,
	.abort = tcp_abort,
	.poll = dpdk_poll,
	.stop_accepting = dpdk_stop_accepting,
	.connect = tcp_connect,
	.net_stats = dpdk_net_stats,
	.free = dpdk_free,
};

/* A worker without a queue (one queue, several workers): it never has a
 * connection, and with no poll hook it sleeps in its ring. */
static void idle_stop_accepting(struct transport *t)
{
	(void)t;
}

static void idle_free(struct transport *t)
{
	free(t);
	rte_thread_unregister();
}

static const struct transport_ops idle_ops = {
	.send = tcp_send,
	.pause = tcp_pause,
	.resume = tcp_resume,
	.close = tcp_close,
	.abort = tcp_abort,
	.stop_accepting = idle_stop_accepting,
	.free = idle_free,
};

static int stack_setup(struct stack *s, unsigned q, const struct config *cfg)
{
	s->pool = dp.pools[q];
	s->port = dp.port;
	s->queue = (uint16_t)q;
	s->mac = dp.mac;
	s->mtu = dp.mtu;
	s->rx_offloads = dp.rx_offloads;
	s->tx_offloads = dp.tx_offloads;
	s->nqueues = dp.nqueues;
	s->arp_rings = dp.nqueues > 1 ? dp.arp_rings : NULL;
	s->ip = cfg->dpdk_addr;
	s->netmask = htonl(cfg->dpdk_prefix ? ~0u << (32 - cfg->dpdk_prefix) : 0);
	s->listen_port = cfg->listen_port;
	s->accepting = true;
	s->now_ms = monotonic_ms();
	s->max_ooo_mbufs = cfg->dpdk_mbufs / 4;
	s->keep_idle_ms = cfg->dpdk_keepalive_idle_ms;
	s->keep_intvl_ms = cfg->dpdk_keepalive_interval_ms;
	s->keep_probes = cfg->dpdk_keepalive_probes;
	stimer_wheel_init(&s->timers, s->now_ms);
	if (getrandom(s->cookie_key, sizeof s->cookie_key, 0) != (ssize_t)sizeof s->cookie_key)
		return -EIO;
	int rc = tcp_init(s, cfg->max_connections);
	if (rc < 0)
		return rc;
	arp_gratuitous(s);
	stack_tx_flush(s);
	return 0;
}

int transport_dpdk_open(struct ring *ring, unsigned worker_id, const struct config *cfg,
			const struct transport_events *ev, void *ctx, struct transport **out)
{
	(void)ring; /* packets come from the port, not the ring */
	if (!dp.ready)
		return -ENODEV;
	if (rte_lcore_id() == LCORE_ID_ANY && rte_thread_register() < 0)
		return -rte_errno ? -rte_errno : -ENOMEM;
	struct stack *s = calloc(1, sizeof *s);
	if (!s) {
		rte_thread_unregister();
		return -ENOMEM;
	}
	s->base.ev = ev;
	s->base.ctx = ctx;
	s->base.ops = &idle_ops;
	if (worker_id < dp.nqueues) {
		s->base.ops = &dpdk_ops;
		int rc = stack_setup(s, worker_id, cfg);
		if (rc < 0) {
			free(s->buckets);
			free(s);
			rte_thread_unregister();
			return rc;
		}
	}
	*out = &s->base;
	return 0;
}

#else /* !BEACON_DPDK: a build without DPDK says so */

int transport_dpdk_init(const struct config *cfg, unsigned nworkers, char *err, size_t errlen)
{
	(void)cfg;
	(void)nworkers;
	snprintf(err, errlen,
		 "[server] backend = dpdk: this build has no DPDK "
		 "(meson setup -Ddpdk=enabled); set backend = kernel");
	return -1;
}

void transport_dpdk_shutdown(void)
{
}

int transport_dpdk_open(struct ring *ring, unsigned worker_id, const struct config *cfg,
			const struct transport_events *ev, void *ctx, struct transport **out)
{
	(void)ring;
	(void)worker_id;
	(void)cfg;
	(void)ev;
	(void)ctx;
	(void)out;
	return -ENODEV;
}

#endif
