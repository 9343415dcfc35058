/*
 * The blocks wolfSSL's large allocations take (dataplane/tls/alloc.c):
 * sizes on either side of the threshold, realloc across it, a free from
 * another thread, and the cap on a thread's spares, read from the pages'
 * residency (mincore), not from timing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../dataplane/tls/alloc.h"

/* Whether every page of [p, p + len) is resident. */
static bool resident(const void *p, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char vec[8];
	assert_true(len / page <= sizeof vec);
	assert_int_equal(mincore((void *)p, len, vec), 0);
	for (size_t i = 0; i < len / page; i++)
		if (!(vec[i] & 1))
			return false;
	return true;
}

static void fill(void *p, size_t len, unsigned char seed)
{
	unsigned char *b = p;
	for (size_t i = 0; i < len; i++)
		b[i] = (unsigned char)(seed + i);
}

static void assert_filled(const void *p, size_t len, unsigned char seed)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < len; i++)
		assert_int_equal(b[i], (unsigned char)(seed + i));
}

static int setup(void **state)
{
	(void)state;
	return tls_alloc_install();
}

static void test_small_stays_with_malloc(void **state)
{
	(void)state;
	unsigned before = tls_alloc_spares(4096);
	void *p = tls_alloc_malloc(TLS_ALLOC_MIN - 1);
	assert_non_null(p);
	fill(p, TLS_ALLOC_MIN - 1, 1);
	tls_alloc_free(p);
	assert_int_equal(tls_alloc_spares(4096), before);
	tls_alloc_free(NULL);
}

static void test_large_takes_a_block(void **state)
{
	(void)state;
	const size_t sizes[] = {TLS_ALLOC_MIN, 3368, 4096, 4232, 8192};
	const size_t blocks[] = {4096, 4096, 4096, 8192, 8192};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		void *p = tls_alloc_malloc(sizes[i]);
		unsigned before = tls_alloc_spares(blocks[i]);
		assert_non_null(p);
		assert_int_equal((uintptr_t)p % 4096, 0);
		fill(p, sizes[i], 2);
		tls_alloc_free(p);
		assert_int_equal(tls_alloc_spares(blocks[i]), before + 1);
		/* The spare is reused first. */
		assert_ptr_equal(tls_alloc_malloc(sizes[i]), p);
		tls_alloc_free(p);
	}
	/* Past the largest block: malloc's again. */
	unsigned before = tls_alloc_spares(8192);
	void *big = tls_alloc_malloc(8193);
	assert_non_null(big);
	fill(big, 8193, 3);
	tls_alloc_free(big);
	assert_int_equal(tls_alloc_spares(8192), before);
}

static void test_realloc_across_the_threshold(void **state)
{
	(void)state;
	unsigned char *p = tls_alloc_realloc(NULL, 100);
	assert_non_null(p);
	fill(p, 100, 4);
	/* malloc -> 8 KiB block -> 4 KiB block -> same block -> malloc. */
	p = tls_alloc_realloc(p, 5000);
	assert_non_null(p);
	assert_int_equal((uintptr_t)p % 4096, 0);
	assert_filled(p, 100, 4);
	fill(p, 5000, 5);
	p = tls_alloc_realloc(p, 3500);
	assert_filled(p, 3500, 5);
	unsigned char *same = tls_alloc_realloc(p, 4000);
	assert_ptr_equal(same, p);
	assert_filled(p, 3500, 5);
	p = tls_alloc_realloc(p, 200);
	assert_non_null(p);
	assert_filled(p, 200, 5);
	p = tls_alloc_realloc(p, 1000);
	assert_filled(p, 200, 5);
	assert_null(tls_alloc_realloc(p, 0)); /* frees p */
}

static void *free_all(void *arg)
{
	void **blocks = arg;
	for (size_t i = 0; blocks[i]; i++)
		tls_alloc_free(blocks[i]);
	/* They are this thread's spares until it ends. */
	return (void *)(uintptr_t)tls_alloc_spares(4096);
}

static void test_free_from_another_thread(void **state)
{
	(void)state;
	void *blocks[5] = {NULL};
	for (size_t i = 0; i < 4; i++) {
		blocks[i] = tls_alloc_malloc(4096);
		fill(blocks[i], 4096, 6);
	}
	unsigned mine = tls_alloc_spares(4096);
	pthread_t t;
	void *theirs;
	assert_int_equal(pthread_create(&t, NULL, free_all, blocks), 0);
	assert_int_equal(pthread_join(t, &theirs), 0);
	assert_int_equal((uintptr_t)theirs, 4);
	assert_int_equal(tls_alloc_spares(4096), mine);
	/* The thread gave its spares back when it ended. */
	for (size_t i = 0; i < 4; i++)
		assert_false(resident(blocks[i], 4096));
	/* Past this thread's spares, blocks come back zeroed. */
	void *held[TLS_ALLOC_KEEP];
	for (size_t i = 0; i < mine; i++)
		held[i] = tls_alloc_malloc(4096);
	void *again = tls_alloc_malloc(4096);
	unsigned char zero[4096] = {0};
	assert_memory_equal(again, zero, sizeof zero);
	tls_alloc_free(again);
	for (size_t i = 0; i < mine; i++)
		tls_alloc_free(held[i]);
}

static void test_spares_are_capped(void **state)
{
	(void)state;
	enum { N = TLS_ALLOC_KEEP + 24 };
	void *p[N];
	for (size_t i = 0; i < N; i++) {
		p[i] = tls_alloc_malloc(8192);
		assert_non_null(p[i]);
		fill(p[i], 8192, 7);
		assert_true(resident(p[i], 8192));
	}
	for (size_t i = 0; i < N; i++)
		tls_alloc_free(p[i]);
	assert_int_equal(tls_alloc_spares(8192), TLS_ALLOC_KEEP);
	size_t kept = 0, returned = 0;
	for (size_t i = 0; i < N; i++) {
		if (resident(p[i], 8192))
			kept++;
		else
			returned++;
	}
	assert_int_equal(kept, TLS_ALLOC_KEEP);
	assert_int_equal(returned, N - TLS_ALLOC_KEEP);
}

/* Memory reachable only through a block is not a leak: under the
 * sanitizer build the leak checker, at exit, must find `held` through it. */
static void **kept_block;

static void test_block_contents_reach_the_leak_checker(void **state)
{
	(void)state;
	kept_block = tls_alloc_malloc(4232);
	assert_non_null(kept_block);
	void *held = tls_alloc_malloc(64);
	assert_non_null(held);
	kept_block[0] = held;
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifdef UNDER_ASAN
enum misuse { WRITE_PAST_END, READ_AFTER_FREE, READ_PAST_REALLOC };

/* Runs one misuse of a block in a child and returns what it wrote on
 * standard error; the child must not exit 0. */
static void misuse_in_child(enum misuse what, char *report, size_t len)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], 2);
		volatile unsigned char *p = tls_alloc_malloc(3500);
		if (what == WRITE_PAST_END) {
			p[3500] = 1;
		} else if (what == READ_AFTER_FREE) {
			tls_alloc_free((void *)p);
			(void)p[100];
		} else {
			p = tls_alloc_realloc((void *)p, 3100); /* the same block, shrunk */
			(void)p[3200];
		}
		_exit(0);
	}
	close(fds[1]);
	size_t got = 0;
	ssize_t n;
	while (got + 1 < len && (n = read(fds[0], report + got, len - 1 - got)) > 0)
		got += (size_t)n;
	report[got] = '\0';
	close(fds[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
#endif

/* A block is not malloc's, so only our poisoning tells ASan its bounds:
 * a write past the bytes asked for, a read after free and a read past a
 * shrinking realloc must each be reported, as on malloc's heap. */
static void test_misuse_of_a_block_is_reported(void **state)
{
	(void)state;
#ifdef UNDER_ASAN
	static const enum misuse all[] = {WRITE_PAST_END, READ_AFTER_FREE, READ_PAST_REALLOC};
	for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
		char report[8192];
		misuse_in_child(all[i], report, sizeof report);
		if (!strstr(report, "AddressSanitizer: use-after-poison"))
			fail_msg("misuse %zu not reported:\n%s", i, report);
	}
#else
	skip(); /* only the sanitizer build can see it */
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_small_stays_with_malloc),
		cmocka_unit_test(test_large_takes_a_block),
		cmocka_unit_test(test_realloc_across_the_threshold),
		cmocka_unit_test(test_free_from_another_thread),
		cmocka_unit_test(test_spares_are_capped),
		cmocka_unit_test(test_block_contents_reach_the_leak_checker),
		cmocka_unit_test(test_misuse_of_a_block_is_reported),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
