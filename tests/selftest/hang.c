/* A case that passes, then one that never returns: meson kills the
 * executable at its timeout, and the run must count as failed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <cmocka.h>

static void test_passes(void **state)
{
	(void)state;
}

static void test_hangs(void **state)
{
	(void)state;
	for (;;)
		pause();
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_passes),
					   cmocka_unit_test(test_hangs)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
