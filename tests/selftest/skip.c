/* A case that calls skip(): cmocka exits 0, and it must count as skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void test_skips(void **state)
{
	(void)state;
	skip();
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_skips)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
