/* How a simulator thread's connections reach the server. The loop (loop.c)
 * owns each connection's state machine, its TLS and its HTTP; an I/O
 * carries the bytes and says when a connection can make progress:
 *
 *   io_socket.c  kernel sockets, an epoll set per thread (the default)
 *   io_dpdk.c    beacond's own TCP/IPv4 stack over a DPDK port (--dpdk):
 *                both ends of a benchmark kernel-free
 *
 * Threads: `start` and `stop` run on the main thread, before the first
 * simulator thread starts and after the last has ended; everything else
 * on the simulator thread that opened the I/O. */
#ifndef AGENTSIM_IO_H
#define AGENTSIM_IO_H

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "agentsim.h"

struct io;	/* one simulator thread's */
struct io_conn; /* one connection's */

enum io_event {
	IO_CONNECTED, /* the TCP handshake completed */
	IO_READY,     /* bytes, room or the peer's close: try TLS again */
	IO_FAILED,    /* the connection could not be made (err: errno) */
};

/* The loop's side: connection `upper` (what connect was given) has news. */
typedef void io_notify_fn(void *loop, void *upper, enum io_event ev, int err);

struct io_ops {
	/* Process-wide set-up and teardown; NULL where there is none.
	 * start returns 0, or -1 after saying why on stderr. */
	int (*start)(const struct sim_options *o);
	void (*stop)(void);
	/* This thread's I/O; `notify` is called with `loop` from `wait`. */
	int (*open)(const struct sim_options *o, io_notify_fn *notify, void *loop, struct io **out);
	/* Closes what is left and frees the I/O. */
	void (*close)(struct io *io);
	/* Starts a TCP connection to o->addr for `upper`. NULL with errno
	 * set when it cannot start; else IO_CONNECTED or IO_FAILED follows. */
	struct io_conn *(*connect)(struct io *io, void *upper);
	/* Routes ssl's records through the connection. 0 or -1. */
	int (*attach)(struct io_conn *ic, WOLFSSL *ssl);
	/* The loop is done with the connection (its TLS object is freed
	 * first); the I/O closes it, and says nothing more about it. */
	void (*release)(struct io_conn *ic);
	/* Takes in what happened, waiting at most timeout_ms where the I/O
	 * sleeps, and notifies the connections concerned. */
	void (*wait)(struct io *io, int timeout_ms);
};

extern const struct io_ops io_socket_ops;
#ifdef AGENTSIM_DPDK
extern const struct io_ops io_dpdk_ops;
#endif

#endif
