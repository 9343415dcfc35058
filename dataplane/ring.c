#include "beacon/ring.h"

#include <errno.h>
#include <string.h>
#include <time.h>

int ring_init(struct ring *r, unsigned entries)
{
	memset(r, 0, sizeof *r);
	struct io_uring_params p = {0};
	/* One thread owns the ring: the kernel may skip cross-thread wakeups.
	 * CQ twice the SQ: completions of multishot ops outnumber submissions. */
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 4;
	int rc = io_uring_queue_init_params(entries, &r->uring, &p);
	if (rc == -EINVAL) {
		/* Older kernels: the plain ring still works. */
		memset(&p, 0, sizeof p);
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 4;
		rc = io_uring_queue_init_params(entries, &r->uring, &p);
	}
	return rc;
}

void ring_exit(struct ring *r)
{
	io_uring_queue_exit(&r->uring);
}

struct io_uring_sqe *ring_sqe(struct ring *r, struct ring_op *op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
	if (!sqe) {
		if (io_uring_submit(&r->uring) < 0)
			return NULL;
		r->pending = 0;
		sqe = io_uring_get_sqe(&r->uring);
		if (!sqe)
			return NULL;
	}
	io_uring_sqe_set_data(sqe, op);
	r->pending++;
	if (op && op->urgent)
		r->urgent++;
	return sqe;
}

static void dispatch(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	if (!op)
		return;
	if (op->urgent && r->urgent)
		r->urgent--;
	if (op->complete)
		op->complete(op, res, flags);
}

/* Urgent completions first, wherever they are in the queue; each one taken
 * is blanked (user_data 0) so that the in-order pass skips it. */
static int dispatch_urgent(struct ring *r)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&r->uring, head, cqe)
	{
		if (!r->urgent)
			break;
		struct ring_op *op = io_uring_cqe_get_data(cqe);
		if (!op || !op->urgent)
			continue;
		cqe->user_data = 0;
		n++;
		dispatch(r, op, cqe->res, cqe->flags);
	}
	return (int)n;
}

static int dispatch_ready(struct ring *r)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&r->uring, head, cqe)
	{
		struct ring_op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		uint32_t flags = cqe->flags;
		/* Advance before the callback: it may submit and re-enter. */
		io_uring_cq_advance(&r->uring, 1);
		n++;
		dispatch(r, op, res, flags);
		break;
	}
	return (int)n;
}

/* Completions dispatched in one turn, urgent ones aside. */
#define RING_TURN_MAX 64

int ring_run_once(struct ring *r, uint64_t timeout_ns)
{
	int rc;
	if (timeout_ns) {
		struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_ns / 1000000000ull),
					       .tv_nsec = (long long)(timeout_ns % 1000000000ull)};
		struct io_uring_cqe *cqe;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1, &ts, NULL);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		r->waited_ns += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
					   (t1.tv_nsec - t0.tv_nsec));
		if (rc < 0 && rc != -ETIME && rc != -EINTR)
			return rc;
	} else {
		rc = io_uring_submit(&r->uring);
		if (rc < 0 && rc != -EINTR)
			return rc;
	}
	r->pending = 0;
	int total = 0, n;
	/* A bounded number a turn, urgent ones first. What the callbacks queue
	 * (spool writes, the server's handshake flights) is submitted and
	 * flushed only at the end of the turn: a turn of thousands of
	 * handshake steps held it back for up to a second in a burst. */
	int urgent = dispatch_urgent(r);
	while (total < RING_TURN_MAX && (n = dispatch_ready(r)) > 0)
		total += n;
	return urgent + total;
}

int ring_msg(struct ring *self, int target_fd, struct ring_op *op, int res)
{
	struct io_uring_sqe *sqe = ring_sqe(self, NULL);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_msg_ring(sqe, target_fd, (unsigned)res, (uint64_t)(uintptr_t)op, 0);
	/* The sender needs no completion of its own on success. */
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	return 0;
}
