/*
 * The kernel transport: the kernel's TCP through the worker's io_uring. One
 * SO_REUSEPORT listener per worker (the kernel spreads connections over
 * them), multishot recv into a ring of provided buffers (so an idle
 * connection holds no receive buffer at all), and sends straight from the
 * upper layer's buffer.
 *
 * Accepts are single-shot, at most ACCEPT_BATCH in flight and never more
 * than the upper layer has room for (accept_room): a multishot accept would
 * drain the whole listen queue at once, and what the upper layer cannot
 * take would have to be closed. Past its room connections wait in the
 * kernel's accept queue (LISTEN_BACKLOG, capped by net.core.somaxconn);
 * when that is full the kernel drops new SYNs and clients retry them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/ring.h"
#include "transport-internal.h"

#define RECV_BUF_SIZE (16 * 1024)
#define RECV_BUF_COUNT 256 /* power of two; 4 MiB per worker */
#define RECV_GROUP 1
#define ACCEPT_BATCH 32
/* The kernel caps it at net.core.somaxconn (4096 by default): raising that
 * sysctl deepens the queue that a burst of connections waits in. */
#define LISTEN_BACKLOG 65535

struct kernel_transport;

struct accept_slot {
	struct ring_op op;
	struct kernel_transport *kt;
	bool armed;
	/* The accept writes the peer's address here: no getpeername. */
	struct sockaddr_storage peer;
	socklen_t peer_len;
};

struct kernel_transport {
	struct transport base;
	struct ring *ring;
	int listen_fd;
	bool accepting;
	struct accept_slot accepts[ACCEPT_BATCH];
	unsigned accepts_armed;
	struct io_uring_buf_ring *br;
	size_t br_bytes;
	uint8_t *bufs;
};

struct kconn {
	struct transport_conn base;
	struct kernel_transport *kt;
	int fd;
	struct ring_op recv_op;
	struct ring_op send_op;
	struct ring_op shutdown_op;
	const uint8_t *send_buf;
	size_t send_len, send_done;
	unsigned inflight; /* our SQEs not yet completed for good */
	unsigned busy;	   /* our completion handlers on the stack */
	bool recv_armed, sending, paused, closing, draining, dead;
	bool peer_reset; /* shutdown found the socket closed by the peer */
	int close_err;
	uint8_t *stash; /* bytes that arrived while paused */
	size_t stash_len, stash_cap;
};

static void accept_fill(struct kernel_transport *kt);
static void recv_complete(struct ring_op *op, int res, uint32_t flags);
static void send_complete(struct ring_op *op, int res, uint32_t flags);
static void shutdown_complete(struct ring_op *op, int res, uint32_t flags);

/* Cancels the op now rather than at the next submit: by then the op's
 * memory may belong to a new connection whose op the cancel would hit. */
static void cancel_now(struct ring *ring, struct ring_op *op)
{
	struct io_uring_sqe *sqe = ring_sqe(ring, NULL);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	io_uring_submit(&ring->uring);
}
static void recv_arm(struct kconn *c);
static void conn_finish(struct kconn *c);

/* ---- listener ---- */

static int listen_socket(const struct config *cfg)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, cfg->listen_addr, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(cfg->listen_port);
		len = sizeof *a4;
	} else if (inet_pton(AF_INET6, cfg->listen_addr, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(cfg->listen_port);
		len = sizeof *a6;
	} else {
		return -EINVAL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	/* TCP_NODELAY here: Linux copies it to every accepted socket, one
	 * setsockopt per connection fewer. Responses are written whole;
	 * Nagle would only delay their tail. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
	    bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static int recv_buffers_setup(struct kernel_transport *kt)
{
	kt->br_bytes = RECV_BUF_COUNT * sizeof(struct io_uring_buf);
	void *mem = mmap(NULL, kt->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
			 -1, 0);
	if (mem == MAP_FAILED)
		return -errno;
	kt->br = mem;
	kt->bufs = malloc((size_t)RECV_BUF_COUNT * RECV_BUF_SIZE);
	if (!kt->bufs)
		return -ENOMEM;
	struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)mem,
				       .ring_entries = RECV_BUF_COUNT,
				       .bgid = RECV_GROUP};
	int rc = io_uring_register_buf_ring(&kt->ring->uring, &reg, 0);
	if (rc != 0)
		return rc;
	io_uring_buf_ring_init(kt->br);
	int mask = io_uring_buf_ring_mask(RECV_BUF_COUNT);
	for (int i = 0; i < RECV_BUF_COUNT; i++)
		io_uring_buf_ring_add(kt->br, kt->bufs + (size_t)i * RECV_BUF_SIZE, RECV_BUF_SIZE,
				      (unsigned short)i, mask, i);
	io_uring_buf_ring_advance(kt->br, RECV_BUF_COUNT);
	return 0;
}

static void recv_buffer_recycle(struct kernel_transport *kt, unsigned bid)
{
	io_uring_buf_ring_add(kt->br, kt->bufs + (size_t)bid * RECV_BUF_SIZE, RECV_BUF_SIZE,
			      (unsigned short)bid, io_uring_buf_ring_mask(RECV_BUF_COUNT), 0);
	io_uring_buf_ring_advance(kt->br, 1);
}

/* ---- connections ---- */

static void conn_start(struct kernel_transport *kt, int fd, const struct sockaddr_storage *peer,
		       socklen_t plen)
{
	struct kconn *c = calloc(1, sizeof *c);
	if (!c) {
		close(fd);
		return;
	}
	c->base.t = &kt->base;
	c->kt = kt;
	c->fd = fd;
	c->recv_op.complete = recv_complete;
	c->send_op.complete = send_complete;
	c->shutdown_op.complete = shutdown_complete;
	kt->base.conns++;
	c->base.upper =
		kt->base.ev->accepted(kt->base.ctx, &c->base, (const struct sockaddr *)peer, plen);
	if (!c->base.upper) {
		kt->base.conns--;
		close(fd);
		free(c);
		return;
	}
	recv_arm(c);
}

static void conn_deliver(struct kconn *c, const uint8_t *data, size_t len)
{
	if (c->draining || c->closing)
		return; /* closing: what the peer still sends is dropped */
	if (c->paused) {
		/* Until the cancel lands, the multishot recv hands over what the
		 * socket buffer holds, one 16 KiB buffer at a time: grow by
		 * doubling, or each append would copy the whole stash again. */
		if (c->stash_len + len > c->stash_cap) {
			size_t cap = c->stash_cap ? c->stash_cap : RECV_BUF_SIZE;
			while (cap < c->stash_len + len)
				cap *= 2;
			uint8_t *grown = realloc(c->stash, cap);
			if (!grown) {
				transport_abort(&c->base);
				return;
			}
			c->stash = grown;
			c->stash_cap = cap;
		}
		memcpy(c->stash + c->stash_len, data, len);
		c->stash_len += len;
		return;
	}
	c->base.t->ev->received(c->base.upper, data, len);
}

static void recv_complete(struct ring_op *op, int res, uint32_t flags)
{
	struct kconn *c = container_of(op, struct kconn, recv_op);
	c->busy++;
	if (flags & IORING_CQE_F_BUFFER) {
		unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
		if (res > 0)
			conn_deliver(c, c->kt->bufs + (size_t)bid * RECV_BUF_SIZE, (size_t)res);
		recv_buffer_recycle(c->kt, bid);
	}
	if (flags & IORING_CQE_F_MORE) {
		c->busy--;
		conn_finish(c);
		return;
	}
	c->recv_armed = false;
	c->inflight--;
	if ((res == -ENOBUFS || res == -ECANCELED) && !c->dead) {
		/* ENOBUFS: every buffer was busy. ECANCELED: our own pause,
		 * possibly already lifted before this completion arrived. */
		if (!c->paused)
			recv_arm(c);
	} else if (res <= 0 || c->dead) {
		/* EOF, error or cancellation: the conversation is over. */
		if (!c->dead) {
			c->close_err = res < 0 && res != -ECANCELED ? res : 0;
			transport_abort(&c->base);
		}
	} else if (!c->paused) {
		recv_arm(c);
	}
	c->busy--;
	conn_finish(c);
}

static void recv_arm(struct kconn *c)
{
	if (c->recv_armed || c->dead)
		return;
	struct io_uring_sqe *sqe = ring_sqe(c->kt->ring, &c->recv_op);
	if (!sqe) {
		transport_abort(&c->base);
		return;
	}
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RECV_GROUP;
	c->recv_armed = true;
	c->inflight++;
}

static void send_submit(struct kconn *c)
{
	struct io_uring_sqe *sqe = ring_sqe(c->kt->ring, &c->send_op);
	if (!sqe) {
		c->sending = false;
		transport_abort(&c->base);
		return;
	}
	io_uring_prep_send(sqe, c->fd, c->send_buf + c->send_done, c->send_len - c->send_done,
			   MSG_NOSIGNAL);
	c->inflight++;
}

static void shutdown_failed(struct kconn *c, int err)
{
	c->peer_reset = err == ENOTCONN;
	transport_abort(&c->base);
}

static void drain_start(struct kconn *c)
{
	/* FIN after the last byte; keep reading (and dropping) until the peer
	 * closes, so our last response is not lost to a reset. Through the
	 * ring, with the loop turn's other submissions: no system call of
	 * its own. */
	c->draining = true;
	struct io_uring_sqe *sqe = ring_sqe(c->kt->ring, &c->shutdown_op);
	if (!sqe) {
		if (shutdown(c->fd, SHUT_WR) != 0)
			shutdown_failed(c, errno);
		return;
	}
	io_uring_prep_shutdown(sqe, c->fd, SHUT_WR);
	c->inflight++;
}

static void shutdown_complete(struct ring_op *op, int res, uint32_t flags)
{
	(void)flags;
	struct kconn *c = container_of(op, struct kconn, shutdown_op);
	c->busy++;
	c->inflight--;
	if (res < 0 && !c->dead)
		shutdown_failed(c, -res);
	c->busy--;
	conn_finish(c);
}

static void send_complete(struct ring_op *op, int res, uint32_t flags)
{
	(void)flags;
	struct kconn *c = container_of(op, struct kconn, send_op);
	c->busy++;
	c->inflight--;
	if (res < 0 || c->dead) {
		c->sending = false;
		if (!c->dead) {
			c->close_err = res;
			transport_abort(&c->base);
		}
	} else {
		c->send_done += (size_t)res;
		if (c->send_done < c->send_len) {
			send_submit(c);
		} else {
			c->sending = false;
			if (c->closing)
				drain_start(c);
			else
				c->base.t->ev->sent(c->base.upper);
		}
	}
	c->busy--;
	conn_finish(c);
}

/* Frees the connection once it is dead and nothing of it is in flight. */
static void conn_finish(struct kconn *c)
{
	if (!c->dead || c->inflight || c->busy)
		return;
	struct kernel_transport *kt = c->kt;
	/* Closed by the ring with the loop turn's other submissions; nothing
	 * uses the descriptor after this, and its number stays taken until
	 * the close runs. */
	struct io_uring_sqe *sqe = ring_sqe(kt->ring, NULL);
	if (sqe)
		io_uring_prep_close(sqe, c->fd);
	else
		close(c->fd);
	kt->base.conns--;
	kt->base.ev->closed(c->base.upper, c->close_err);
	free(c->stash);
	free(c);
}

static int kconn_send(struct transport_conn *tc, const void *buf, size_t len)
{
	struct kconn *c = (struct kconn *)tc;
	if (c->dead || c->closing)
		return -EPIPE;
	if (c->sending)
		return -EBUSY;
	c->send_buf = buf;
	c->send_len = len;
	c->send_done = 0;
	c->sending = true;
	send_submit(c);
	return 0;
}

static void kconn_pause(struct transport_conn *tc)
{
	struct kconn *c = (struct kconn *)tc;
	c->paused = true;
	/* Stop the multishot recv so TCP's window pushes back on the peer. */
	if (c->recv_armed)
		cancel_now(c->kt->ring, &c->recv_op);
}

static void kconn_resume(struct transport_conn *tc)
{
	struct kconn *c = (struct kconn *)tc;
	if (!c->paused || c->dead)
		return;
	c->paused = false;
	c->busy++;
	/* Hand over what arrived while paused; the upper layer may pause
	 * again inside the callback, and then keeps what it did not take. */
	while (c->stash_len && !c->paused && !c->dead && !c->closing) {
		uint8_t *data = c->stash;
		size_t len = c->stash_len;
		c->stash = NULL;
		c->stash_len = c->stash_cap = 0;
		c->base.t->ev->received(c->base.upper, data, len);
		free(data);
	}
	if (!c->paused)
		recv_arm(c);
	c->busy--;
	conn_finish(c);
}

static void kconn_close(struct transport_conn *tc)
{
	struct kconn *c = (struct kconn *)tc;
	if (c->closing || c->dead)
		return;
	c->closing = true;
	c->paused = false;
	free(c->stash);
	c->stash = NULL;
	c->stash_len = c->stash_cap = 0;
	if (!c->sending)
		drain_start(c);
	recv_arm(c); /* draining needs a reader */
}

static void kconn_abort(struct transport_conn *tc)
{
	struct kconn *c = (struct kconn *)tc;
	if (c->dead)
		return;
	c->dead = true;
	/* shutdown wakes the recv (EOF) and fails a send in flight; the
	 * completions then release the connection. With neither in flight
	 * (the peer's FIN or reset ended the recv: the usual end), or with
	 * the socket already closed by a reset, there is nothing to wake. */
	if ((c->recv_armed || c->sending) && !c->peer_reset)
		shutdown(c->fd, SHUT_RDWR);
	if (c->recv_armed)
		cancel_now(c->kt->ring, &c->recv_op);
	conn_finish(c);
}

/* ---- accept ---- */

static void accept_complete(struct ring_op *op, int res, uint32_t flags)
{
	(void)flags;
	struct accept_slot *slot = container_of(op, struct accept_slot, op);
	struct kernel_transport *kt = slot->kt;
	slot->armed = false;
	kt->accepts_armed--;
	if (res >= 0) {
		if (kt->accepting)
			conn_start(kt, res, &slot->peer, slot->peer_len);
		else
			close(res);
	} else if (res != -ECANCELED) {
		log_warn("accept: %s", strerror(-res));
	}
	accept_fill(kt);
}

/* How many more connections the upper layer takes now. */
static unsigned accept_room(const struct kernel_transport *kt)
{
	const struct transport *t = &kt->base;
	return t->ev->accept_room ? t->ev->accept_room(t->ctx) : ACCEPT_BATCH;
}

/* Arms accepts up to the upper layer's room: each armed accept may hand
 * over one connection, and none may arrive that would have to be closed. */
static void accept_fill(struct kernel_transport *kt)
{
	if (!kt->accepting)
		return;
	unsigned room = accept_room(kt);
	for (unsigned i = 0; i < ACCEPT_BATCH && kt->accepts_armed < room; i++) {
		struct accept_slot *slot = &kt->accepts[i];
		if (slot->armed)
			continue;
		struct io_uring_sqe *sqe = ring_sqe(kt->ring, &slot->op);
		if (!sqe) {
			log_err("accept: cannot get a submission slot");
			return;
		}
		slot->peer_len = sizeof slot->peer;
		io_uring_prep_accept(sqe, kt->listen_fd, (struct sockaddr *)&slot->peer,
				     &slot->peer_len, SOCK_CLOEXEC);
		slot->armed = true;
		kt->accepts_armed++;
	}
}

static void kernel_accept_ready(struct transport *t)
{
	accept_fill((struct kernel_transport *)t);
}

static void kernel_stop_accepting(struct transport *t)
{
	struct kernel_transport *kt = (struct kernel_transport *)t;
	if (!kt->accepting)
		return;
	kt->accepting = false;
	for (unsigned i = 0; i < ACCEPT_BATCH; i++)
		if (kt->accepts[i].armed)
			cancel_now(kt->ring, &kt->accepts[i].op);
	close(kt->listen_fd);
	kt->listen_fd = -1;
}

static void kernel_free(struct transport *t)
{
	struct kernel_transport *kt = (struct kernel_transport *)t;
	if (kt->listen_fd >= 0)
		close(kt->listen_fd);
	if (kt->br) {
		io_uring_unregister_buf_ring(&kt->ring->uring, RECV_GROUP);
		munmap(kt->br, kt->br_bytes);
	}
	free(kt->bufs);
	free(kt);
}

static const struct transport_ops kernel_ops = {
	.send = kconn_send,
	.pause = kconn_pause,
	.resume = kconn_resume,
	.close = kconn_close,
	.abort = kconn_abort,
	.stop_accepting = kernel_stop_accepting,
	.accept_ready = kernel_accept_ready,
	.free = kernel_free,
};

int transport_kernel_open(struct ring *ring, const struct config *cfg,
			  const struct transport_events *ev, void *ctx, struct transport **out)
{
	struct kernel_transport *kt = calloc(1, sizeof *kt);
	if (!kt)
		return -ENOMEM;
	kt->base.ops = &kernel_ops;
	kt->base.ev = ev;
	kt->base.ctx = ctx;
	kt->ring = ring;
	for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
		kt->accepts[i].op.complete = accept_complete;
		kt->accepts[i].kt = kt;
	}
	kt->listen_fd = listen_socket(cfg);
	if (kt->listen_fd < 0) {
		int e = kt->listen_fd;
		free(kt);
		return e;
	}
	int rc = recv_buffers_setup(kt);
	if (rc != 0) {
		kernel_free(&kt->base);
		return rc;
	}
	kt->accepting = true;
	accept_fill(kt);
	*out = &kt->base;
	return 0;
}
