/* --dpdk: the agents connect through beacond's own TCP/IPv4 stack on a DPDK
 * port (include/beacon/transport.h, the seam beacond's workers use), so
 * that neither end of a benchmark crosses the kernel: beacond on one end of
 * a net_memif pair, this on the other (issue 18).
 *
 * One simulator thread owns the one transport; it polls in a busy loop
 * (wait below), as a DPDK worker does. The transport's callbacks run inside
 * transport_poll and only move bytes and queue the connection; the loop
 * drives queued connections after the poll, so that TLS never runs inside
 * the stack's input path. wolfSSL reads and writes through custom I/O
 * callbacks: reads from a per-connection buffer that `received` fills,
 * writes into a staging buffer that goes out with transport_send, one send
 * in flight at a time (the seam's rule): what TLS writes meanwhile is
 * staged and follows when `sent` says the last went out. */
#include "io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_ethdev.h>

#include "beacon/config.h"
#include "beacon/transport.h"

#define TX_MAX (64u * 1024)  /* staged bytes at most: four TLS records */
#define RX_HIGH (64u * 1024) /* buffered past this: the peer is paused */
#define DRAIN_MS 2000	     /* at the end: how long closes may take */
#define LINK_WAIT_MS 10000   /* at the start: how long the peer may take */

struct io {
	struct transport *t;
	struct sockaddr_in dst;
	io_notify_fn *notify;
	void *loop;
	struct io_conn *ready, *ready_tail; /* to notify after the poll */
	unsigned live;			    /* connections the transport holds */
};

/* A send buffer: staged bytes, or the ones in flight. */
struct txbuf {
	uint8_t *bytes;
	size_t len, cap;
};

struct io_conn {
	struct io *io;
	void *upper;		   /* the loop's; NULL once released */
	struct transport_conn *tc; /* NULL once `closed` came */
	struct io_conn *next_ready;
	bool queued, up, connect_news, in_flight, close_pending, paused;
	int err;      /* `closed`'s: 0 or -errno */
	int send_err; /* transport_send's refusal: nothing more goes out */
	uint8_t *rx;  /* received, not yet read by TLS: [rx_off, rx_len) */
	size_t rx_off, rx_len, rx_cap;
	struct txbuf staged, flying;
};

static struct config cfg; /* the stack's; read at open too */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void conn_free(struct io_conn *ic)
{
	free(ic->rx);
	free(ic->staged.bytes);
	free(ic->flying.bytes);
	free(ic);
}

static void queue(struct io_conn *ic)
{
	struct io *io = ic->io;
	if (ic->queued || !ic->upper)
		return;
	ic->queued = true;
	ic->next_ready = NULL;
	if (io->ready_tail)
		io->ready_tail->next_ready = ic;
	else
		io->ready = ic;
	io->ready_tail = ic;
}

/* ---- the transport's events ---- */

static void *on_accepted(void *ctx, struct transport_conn *tc, const struct sockaddr *peer,
			 socklen_t len)
{
	(void)ctx, (void)tc, (void)peer, (void)len;
	return NULL; /* a client: nothing may connect to it (never called) */
}

static void on_connected(void *upper)
{
	struct io_conn *ic = upper;
	ic->up = true;
	ic->connect_news = true;
	queue(ic);
}

/* Doubles *cap until it holds `need` bytes or reaches `max`. */
static int grow(uint8_t **bytes, size_t *cap, size_t need, size_t max)
{
	if (need <= *cap || *cap >= max)
		return 0;
	size_t n = *cap ? *cap : 4096;
	while (n < need && n < max)
		n *= 2;
	uint8_t *more = realloc(*bytes, n);
	if (!more)
		return -1;
	*bytes = more;
	*cap = n;
	return 0;
}

static void on_received(void *upper, const uint8_t *data, size_t len)
{
	struct io_conn *ic = upper;
	if (!ic->upper)
		return; /* released, closing: nobody reads it */
	if (ic->rx_off && ic->rx_len + len > ic->rx_cap) {
		/* what TLS has read makes room before the buffer grows */
		memmove(ic->rx, ic->rx + ic->rx_off, ic->rx_len - ic->rx_off);
		ic->rx_len -= ic->rx_off;
		ic->rx_off = 0;
	}
	/* the seam lends bytes for the call only: whatever comes is kept */
	if (grow(&ic->rx, &ic->rx_cap, ic->rx_len + len, SIZE_MAX) < 0) {
		transport_abort(ic->tc);
		return;
	}
	memcpy(ic->rx + ic->rx_len, data, len);
	ic->rx_len += len;
	if (ic->rx_len - ic->rx_off >= RX_HIGH && !ic->paused) {
		ic->paused = true;
		transport_pause(ic->tc);
	}
	queue(ic);
}

static void flush(struct io_conn *ic)
{
	struct txbuf out = ic->flying;
	ic->flying = ic->staged;
	ic->staged = out;
	ic->staged.len = 0;
	ic->in_flight = true;
	int rc = transport_send(ic->tc, ic->flying.bytes, ic->flying.len);
	if (rc < 0) {
		ic->in_flight = false;
		ic->send_err = rc;
	}
}

static void on_sent(void *upper)
{
	struct io_conn *ic = upper;
	ic->in_flight = false;
	if (ic->staged.len && !ic->send_err)
		flush(ic);
	else if (ic->close_pending)
		transport_close(ic->tc);
	queue(ic); /* TLS may have waited for room */
}

static void on_closed(void *upper, int err)
{
	struct io_conn *ic = upper;
	ic->tc = NULL;
	ic->err = err;
	ic->io->live--;
	if (!ic->upper && !ic->queued)
		conn_free(ic);
	else
		queue(ic);
}

static const struct transport_events events = {
	.accepted = on_accepted,
	.received = on_received,
	.sent = on_sent,
	.closed = on_closed,
	.connected = on_connected,
};

/* ---- wolfSSL's I/O ---- */

static int tls_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	struct io_conn *ic = ctx;
	size_t avail = ic->rx_len - ic->rx_off;
	if (!avail) {
		if (ic->tc)
			return WOLFSSL_CBIO_ERR_WANT_READ;
		return ic->err ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_CONN_CLOSE;
	}
	size_t n = (size_t)sz < avail ? (size_t)sz : avail;
	memcpy(buf, ic->rx + ic->rx_off, n);
	ic->rx_off += n;
	if (ic->paused && ic->tc && avail - n < RX_HIGH / 2) {
		ic->paused = false;
		transport_resume(ic->tc); /* may call on_received: buf is filled */
	}
	return (int)n;
}

static int tls_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	struct io_conn *ic = ctx;
	if (!ic->tc || ic->send_err)
		return ic->err ? WOLFSSL_CBIO_ERR_CONN_RST : WOLFSSL_CBIO_ERR_CONN_CLOSE;
	/* grows with use: an idle agent's handshake needs a few KiB, an
	 * upload's records up to TX_MAX */
	struct txbuf *b = &ic->staged;
	if (grow(&b->bytes, &b->cap, b->len + (size_t)sz, TX_MAX) < 0)
		return WOLFSSL_CBIO_ERR_GENERAL;
	size_t room = ic->staged.cap - ic->staged.len;
	if (!room)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	size_t n = (size_t)sz < room ? (size_t)sz : room;
	memcpy(ic->staged.bytes + ic->staged.len, buf, n);
	ic->staged.len += n;
	if (!ic->in_flight)
		flush(ic);
	return (int)n;
}

/* ---- the I/O ---- */

/* A virtual port (memif) is up once its peer has connected; a connection
 * started before would lose its SYN to the down link and wait out a
 * retransmission. */
static int link_wait(uint16_t port)
{
	for (int waited = 0; waited < LINK_WAIT_MS; waited += 10) {
		struct rte_eth_link link;
		if (rte_eth_link_get_nowait(port, &link) == 0 &&
		    link.link_status == RTE_ETH_LINK_UP)
			return 0;
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	}
	fprintf(stderr, "agentsim: --dpdk: port %u still down after %d s (is the peer up?)\n", port,
		LINK_WAIT_MS / 1000);
	return -1;
}

static int dpdk_start(const struct sim_options *o)
{
	char err[512];
	config_defaults(&cfg);
	cfg.backend = BACKEND_DPDK;
	cfg.listen_port = 0; /* it accepts nothing */
	int n = snprintf(cfg.dpdk_eal_args, sizeof cfg.dpdk_eal_args, "%s", o->dpdk_eal);
	if (n < 0 || (size_t)n >= sizeof cfg.dpdk_eal_args) {
		fprintf(stderr, "agentsim: --dpdk: EAL arguments longer than %zu characters\n",
			sizeof cfg.dpdk_eal_args - 1);
		return -1;
	}
	cfg.dpdk_port = 0;
	cfg.dpdk_addr = o->dpdk_addr.s_addr;
	cfg.dpdk_prefix = o->dpdk_prefix;
	cfg.dpdk_mbufs = 16383;
	/* room for closing connections beside the open ones */
	if (cfg.max_connections < 4 * o->concurrency)
		cfg.max_connections = 4 * o->concurrency;
	if (transport_dpdk_init(&cfg, 1, err, sizeof err) != 0) {
		fprintf(stderr, "agentsim: %s\n", err);
		return -1;
	}
	if (link_wait((uint16_t)cfg.dpdk_port) < 0) {
		transport_dpdk_shutdown();
		return -1;
	}
	return 0;
}

static void dpdk_stop(void)
{
	transport_dpdk_shutdown();
}

static int dpdk_open(const struct sim_options *o, io_notify_fn *notify, void *loop, struct io **out)
{
	struct io *io = calloc(1, sizeof *io);
	if (!io)
		return -1;
	*io = (struct io){.dst = o->addr, .notify = notify, .loop = loop};
	int rc = transport_dpdk_open(NULL, 0, &cfg, &events, io, &io->t);
	if (rc < 0) {
		fprintf(stderr, "agentsim: transport_dpdk_open: %s\n", strerror(-rc));
		free(io);
		return -1;
	}
	transport_stop_accepting(io->t); /* it only connects */
	*out = io;
	return 0;
}

static struct io_conn *dpdk_connect(struct io *io, void *upper)
{
	struct io_conn *ic = calloc(1, sizeof *ic);
	if (!ic)
		return NULL;
	*ic = (struct io_conn){.io = io, .upper = upper};
	int rc = transport_connect(io->t, &io->dst, ic, &ic->tc);
	if (rc < 0) {
		free(ic);
		errno = -rc;
		return NULL;
	}
	io->live++; /* `closed` comes from a later poll, never from here */
	return ic;
}

static int dpdk_attach(struct io_conn *ic, WOLFSSL *ssl)
{
	wolfSSL_SSLSetIORecv(ssl, tls_recv);
	wolfSSL_SSLSetIOSend(ssl, tls_send);
	wolfSSL_SetIOReadCtx(ssl, ic);
	wolfSSL_SetIOWriteCtx(ssl, ic);
	return 0;
}

static void dpdk_release(struct io_conn *ic)
{
	ic->upper = NULL;
	if (!ic->tc) {
		if (!ic->queued)
			conn_free(ic);
		return;
	}
	if (!ic->up) {
		transport_abort(ic->tc); /* still connecting */
		return;
	}
	/* what TLS wrote last (its close_notify) goes out before the FIN */
	if (ic->staged.len && !ic->send_err) {
		if (ic->in_flight) {
			ic->close_pending = true;
			return;
		}
		flush(ic);
	}
	transport_close(ic->tc);
}

/* Connections the poll moved, in the order they moved. */
static void dispatch(struct io *io)
{
	struct io_conn *ic;
	while ((ic = io->ready)) {
		io->ready = ic->next_ready;
		if (!io->ready)
			io->ready_tail = NULL;
		ic->queued = false;
		if (!ic->upper) {
			if (!ic->tc)
				conn_free(ic);
			continue;
		}
		enum io_event ev = IO_READY;
		int err = 0;
		if (!ic->up && !ic->tc) {
			ev = IO_FAILED;
			err = ic->err ? -ic->err : ECONNRESET;
		} else if (ic->connect_news) {
			ic->connect_news = false;
			ev = IO_CONNECTED;
		}
		/* may release ic: it is not touched after */
		io->notify(io->loop, ic->upper, ev, err);
	}
}

static void dpdk_wait(struct io *io, int timeout_ms)
{
	(void)timeout_ms; /* a poll-mode driver: never sleeps */
	transport_poll(io->t, now_ms());
	dispatch(io);
}

/* Every connection was released: their closes get DRAIN_MS to finish,
 * then the transport ends what is left (and calls `closed` for it). */
static void dpdk_close(struct io *io)
{
	uint64_t until = now_ms() + DRAIN_MS;
	while (io->live && now_ms() < until) {
		transport_poll(io->t, now_ms());
		dispatch(io);
	}
	transport_free(io->t);
	dispatch(io);
	free(io);
}

const struct io_ops io_dpdk_ops = {
	.start = dpdk_start,
	.stop = dpdk_stop,
	.open = dpdk_open,
	.close = dpdk_close,
	.connect = dpdk_connect,
	.attach = dpdk_attach,
	.release = dpdk_release,
	.wait = dpdk_wait,
};
