/* The kernel's TCP: a non-blocking socket per connection, one epoll set per
 * simulator thread, edge-triggered; wolfSSL reads and writes the socket
 * itself (wolfSSL_set_fd). */
#include "io.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

struct io {
	const struct sim_options *o;
	int ep;
	io_notify_fn *notify;
	void *loop;
};

struct io_conn {
	struct io *io;
	void *upper;
	int fd;
	bool up; /* connect() completed */
};

static int tcp_socket(const struct sim_options *o)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* IP_BIND_ADDRESS_NO_PORT: the port is picked at connect(), per
	 * 4-tuple, so each source address has the whole ephemeral range */
	if (o->source.sin_family &&
	    (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) != 0 ||
	     bind(fd, (const struct sockaddr *)&o->source, sizeof o->source) != 0)) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)&o->addr, sizeof o->addr) != 0 &&
	    errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int sock_open(const struct sim_options *o, io_notify_fn *notify, void *loop, struct io **out)
{
	struct io *io = calloc(1, sizeof *io);
	if (!io)
		return -1;
	*io = (struct io){.o = o, .notify = notify, .loop = loop};
	io->ep = epoll_create1(EPOLL_CLOEXEC);
	if (io->ep < 0) {
		free(io);
		return -1;
	}
	*out = io;
	return 0;
}

static void sock_close(struct io *io)
{
	close(io->ep);
	free(io);
}

static struct io_conn *sock_connect(struct io *io, void *upper)
{
	struct io_conn *ic = calloc(1, sizeof *ic);
	if (!ic)
		return NULL;
	*ic = (struct io_conn){.io = io, .upper = upper, .fd = tcp_socket(io->o)};
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				 .data.ptr = ic};
	if (ic->fd < 0 || epoll_ctl(io->ep, EPOLL_CTL_ADD, ic->fd, &ev) != 0) {
		int e = errno;
		if (ic->fd >= 0)
			close(ic->fd);
		free(ic);
		errno = e;
		return NULL;
	}
	return ic;
}

static int sock_attach(struct io_conn *ic, WOLFSSL *ssl)
{
	return wolfSSL_set_fd(ssl, ic->fd) == WOLFSSL_SUCCESS ? 0 : -1;
}

static void sock_release(struct io_conn *ic)
{
	close(ic->fd); /* also leaves the epoll set */
	free(ic);
}

/* Until connect() completes, an event says whether it did. */
static void sock_event(struct io *io, struct io_conn *ic, uint32_t events)
{
	if (ic->up) {
		io->notify(io->loop, ic->upper, IO_READY, 0);
		return;
	}
	int err = 0;
	socklen_t len = sizeof err;
	getsockopt(ic->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err != 0 || (events & EPOLLERR)) {
		io->notify(io->loop, ic->upper, IO_FAILED, err ? err : ECONNREFUSED);
		return;
	}
	if (!(events & EPOLLOUT))
		return;
	ic->up = true;
	io->notify(io->loop, ic->upper, IO_CONNECTED, 0);
}

static void sock_wait(struct io *io, int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(io->ep, evs, 256, timeout_ms);
	for (int i = 0; i < n; i++)
		sock_event(io, evs[i].data.ptr, evs[i].events);
}

const struct io_ops io_socket_ops = {
	.open = sock_open,
	.close = sock_close,
	.connect = sock_connect,
	.attach = sock_attach,
	.release = sock_release,
	.wait = sock_wait,
};
