/* Unit tests for file_read (include/beacon/file.h), the one whole-file
 * reader the trust part loads issuers, CRLs, the server's certificate and
 * key with: contents byte for byte with a NUL after them, and errors that
 * name the file and say what errno said. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "beacon/file.h"

static char dir[] = "/tmp/beacon-file-read-XXXXXX";

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_contents_and_nul(void **state)
{
	(void)state;
	char path[128], err[256] = "";
	static const uint8_t data[] = {'a', 0, 'b', 0xff, '\n'};
	snprintf(path, sizeof path, "%s/bytes", dir);
	write_file(path, data, sizeof data);
	uint8_t *buf;
	size_t len;
	assert_int_equal(file_read(path, &buf, &len, err, sizeof err), 0);
	assert_int_equal(len, sizeof data);
	assert_memory_equal(buf, data, sizeof data);
	assert_int_equal(buf[len], 0);
	free(buf);
}

/* Larger than the first buffer: the reader grows it. */
static void test_large_file(void **state)
{
	(void)state;
	char path[128], err[256] = "";
	size_t n = 100000;
	uint8_t *data = malloc(n);
	assert_non_null(data);
	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 7);
	snprintf(path, sizeof path, "%s/large", dir);
	write_file(path, data, n);
	uint8_t *buf;
	size_t len;
	assert_int_equal(file_read(path, &buf, &len, err, sizeof err), 0);
	assert_int_equal(len, n);
	assert_memory_equal(buf, data, n);
	free(buf);
	free(data);
}

static void test_empty_file(void **state)
{
	(void)state;
	char path[128], err[256] = "";
	snprintf(path, sizeof path, "%s/empty", dir);
	write_file(path, "", 0);
	uint8_t *buf;
	size_t len = 99;
	assert_int_equal(file_read(path, &buf, &len, err, sizeof err), 0);
	assert_int_equal(len, 0);
	assert_int_equal(buf[0], 0);
	free(buf);
}

/* The error names the file and errno's reason; nothing to free. */
static void test_missing_file(void **state)
{
	(void)state;
	char path[128], err[256] = "", want[300];
	snprintf(path, sizeof path, "%s/absent", dir);
	uint8_t *buf = (uint8_t *)1;
	size_t len = 99;
	assert_int_equal(file_read(path, &buf, &len, err, sizeof err), -1);
	assert_null(buf);
	assert_int_equal(len, 0);
	snprintf(want, sizeof want, "%s: No such file or directory", path);
	assert_string_equal(err, want);
}

static void test_directory(void **state)
{
	(void)state;
	char err[256] = "", want[300];
	uint8_t *buf;
	size_t len;
	assert_int_equal(file_read(dir, &buf, &len, err, sizeof err), -1);
	assert_null(buf);
	snprintf(want, sizeof want, "%s: Is a directory", dir);
	assert_string_equal(err, want);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_contents_and_nul), cmocka_unit_test(test_large_file),
		cmocka_unit_test(test_empty_file),	 cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_directory),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
