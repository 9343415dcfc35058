/*
 * ring: the io_uring of one worker (or of the store's writer thread), shared
 * by every part that does I/O on that thread: the kernel transport, the
 * spool, the store's completions.
 *
 * Model: each submission carries a `struct ring_op *` as its user_data; when
 * the completion arrives, the loop calls op->complete(op, res, flags). A part
 * embeds a ring_op in its own struct and recovers the struct with
 * container_of. A ring belongs to exactly one thread; only that thread may
 * take SQEs from it. Other threads reach it only with IORING_OP_MSG_RING
 * (ring_msg), which posts a completion carrying their op pointer.
 */
#ifndef BEACON_RING_H
#define BEACON_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ring_op;
typedef void (*ring_complete_fn)(struct ring_op *op, int res, uint32_t cqe_flags);

struct ring_op {
	ring_complete_fn complete;
	/* Dispatched ahead of the completions queued before it: for an op whose
	 * completion gives back a bounded resource (an upload's store slot),
	 * which in arrival order would wait behind every handshake step
	 * queued first. Set before ring_sqe; single-shot ops only. */
	bool urgent;
};

struct ring {
	struct io_uring uring;
	unsigned pending; /* SQEs taken but not yet submitted */
	unsigned urgent;  /* urgent ops submitted whose completion is not dispatched */
	/* Nanoseconds spent in io_uring_enter waiting for completions (its
	 * thread's idle time, for the worker's busy share; the submission the
	 * same call makes is counted in it, a few microseconds). */
	uint64_t waited_ns;
};

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/* Sets up a ring with `entries` SQEs. Returns 0 or -errno. */
int ring_init(struct ring *r, unsigned entries);
void ring_exit(struct ring *r);

/* An SQE whose user_data is `op`. Submits first when the SQ is full, so it
 * never returns NULL unless the kernel refuses the submit (then NULL). */
struct io_uring_sqe *ring_sqe(struct ring *r, struct ring_op *op);

/* Submits what was queued, waits up to `timeout_ns` (0: do not wait) for at
 * least one completion, and dispatches every completion that is ready.
 * Returns the number dispatched or -errno. */
int ring_run_once(struct ring *r, uint64_t timeout_ns);

/* Posts a completion carrying `op` and `res` onto the ring whose fd is
 * `target_fd`, from the thread that owns `self`. Returns 0 or -errno. */
int ring_msg(struct ring *self, int target_fd, struct ring_op *op, int res);

#endif
