/*
 * The worker's ring (dataplane/ring.c) over a real io_uring: a turn
 * dispatches a bounded number of completions, so what the callbacks queue
 * goes out between turns, and an urgent op's completion (a store upload's
 * I/O, which gives its slot back) is dispatched before the completions
 * queued ahead of it. Without both, a burst of handshakes kept every
 * upload's slot taken for up to a second and the store answered 503.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "beacon/ring.h"

#define QUEUED 200

struct counted {
	struct ring_op op;
	unsigned *order; /* dispatch sequence number of each call */
	unsigned *seq;
	unsigned calls;
};

static void on_complete(struct ring_op *op, int res, uint32_t flags)
{
	(void)res;
	(void)flags;
	struct counted *c = container_of(op, struct counted, op);
	c->order[c->calls++] = (*c->seq)++;
}

static void queue_nop(struct ring *r, struct ring_op *op)
{
	struct io_uring_sqe *sqe = ring_sqe(r, op);
	assert_non_null(sqe);
	io_uring_prep_nop(sqe);
}

/* Completions ready all at once: QUEUED plain ones, then one urgent. */
static void test_urgent_first_and_turns_bounded(void **state)
{
	(void)state;
	struct ring r;
	assert_int_equal(ring_init(&r, 256), 0);
	unsigned seq = 0, plain_order[QUEUED], urgent_order[1];
	struct counted plain = {.op.complete = on_complete, .order = plain_order, .seq = &seq};
	struct counted urgent = {.op = {.complete = on_complete, .urgent = true},
				 .order = urgent_order,
				 .seq = &seq};
	for (unsigned i = 0; i < QUEUED; i++)
		queue_nop(&r, &plain.op);
	queue_nop(&r, &urgent.op);
	assert_int_equal(io_uring_submit(&r.uring), QUEUED + 1);
	r.pending = 0;
	assert_int_equal(io_uring_cq_ready(&r.uring), QUEUED + 1);

	int first = ring_run_once(&r, 0);
	assert_int_equal(urgent.calls, 1);
	assert_int_equal(urgent_order[0], 0); /* before the 200 queued ahead */
	assert_true(first > 1 && first < QUEUED + 1);
	assert_int_equal(plain.calls, (unsigned)first - 1);

	int turns = 1;
	while (plain.calls < QUEUED) {
		assert_true(ring_run_once(&r, 0) > 0);
		turns++;
	}
	assert_true(turns > 1);
	assert_int_equal(urgent.calls, 1); /* its blanked entry was skipped */
	assert_int_equal(io_uring_cq_ready(&r.uring), 0);
	ring_exit(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_urgent_first_and_turns_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
