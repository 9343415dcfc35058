/*
 * The refusal log's budget (TLS_REFUSAL_LOG_PER_S lines a second), with a
 * clock the test sets: a flood of refused handshakes writes at most the
 * budget each second, and the next line written says how many were left
 * out.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "beacon/tls.h"

static void test_budget_per_second(void **state)
{
	(void)state;
	struct tls_log_budget b = {0};
	uint64_t left_out = 99;
	for (unsigned i = 0; i < 10; i++) {
		assert_true(tls_log_budget_take(&b, 10, 1000, &left_out));
		assert_int_equal(left_out, 0);
	}
	for (unsigned i = 0; i < 25; i++)
		assert_false(tls_log_budget_take(&b, 10, 1000, &left_out));
	/* The next second: a line again, saying 25 were left out. */
	assert_true(tls_log_budget_take(&b, 10, 1001, &left_out));
	assert_int_equal(left_out, 25);
	assert_true(tls_log_budget_take(&b, 10, 1001, &left_out));
	assert_int_equal(left_out, 0);
}

static void test_budget_clock_jumps(void **state)
{
	(void)state;
	struct tls_log_budget b = {0};
	uint64_t left_out;
	assert_true(tls_log_budget_take(&b, 1, 50, &left_out));
	assert_false(tls_log_budget_take(&b, 1, 50, &left_out));
	/* A clock set back is a new second too: never a stuck log. */
	assert_true(tls_log_budget_take(&b, 1, 40, &left_out));
	assert_int_equal(left_out, 1);
}

/* A flood that stops is summed up once its second has ended, and what the
 * summary counted is not counted again by the next line. */
static void test_budget_flush(void **state)
{
	(void)state;
	struct tls_log_budget b = {0};
	uint64_t left_out;
	assert_true(tls_log_budget_take(&b, 2, 70, &left_out));
	assert_true(tls_log_budget_take(&b, 2, 70, &left_out));
	for (int i = 0; i < 5; i++)
		assert_false(tls_log_budget_take(&b, 2, 70, &left_out));
	assert_int_equal(tls_log_budget_flush(&b, 70), 0); /* the second still runs */
	assert_int_equal(tls_log_budget_flush(&b, 71), 5);
	assert_int_equal(tls_log_budget_flush(&b, 72), 0);
	assert_true(tls_log_budget_take(&b, 2, 73, &left_out));
	assert_int_equal(left_out, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_budget_flush),
		cmocka_unit_test(test_budget_per_second),
		cmocka_unit_test(test_budget_clock_jumps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
