/* A case that passes, then one that kills the process with a signal
 * cmocka does not catch: the run must count as failed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <cmocka.h>

static void test_passes(void **state)
{
	(void)state;
}

static void test_crashes(void **state)
{
	(void)state;
	raise(SIGKILL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_passes),
					   cmocka_unit_test(test_crashes)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
