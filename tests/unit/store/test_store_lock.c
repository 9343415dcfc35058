/* One owner per data directory: a second store_open on it is refused and
 * names the holder's PID; store_check (beacond -t) reports what recovery
 * would do and changes no byte of the directory, LMDB's lock file
 * included. */
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static void test_second_open_names_the_holder(void **state)
{
	char dir[64];
	tmpdir_make(dir);
	struct store *s = open_store(dir, NULL, 1);
	const struct store_options opts = STORE_OPTIONS_DEFAULT;
	struct store *second = NULL;
	char err[512] = "", want[64];
	assert_int_equal(store_open(dir, &opts, 1, &second, err, sizeof err), STORE_ERR_LOCKED);
	assert_null(second);
	snprintf(want, sizeof want, "in use by pid %ld", (long)getpid());
	if (!strstr(err, want))
		fail_msg("refusal '%s' does not say '%s'", err, want);
	store_close(s);
	/* Closed: the next one may have it. */
	s = open_store(dir, NULL, 1);
	store_close(s);
	tmpdir_remove(dir);
}

/* A file's size and bytes, for comparing a directory before and after. */
struct file_state {
	char path[512];
	size_t len;
	uint8_t *data;
};

static unsigned dir_state(const char *dir, struct file_state *out, unsigned max)
{
	const char *subs[] = {"", "/index", "/spool", "/spool/w0"};
	unsigned n = 0;
	for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
		char path[256];
		snprintf(path, sizeof path, "%s%s", dir, subs[i]);
		DIR *d = opendir(path);
		assert_non_null(d);
		struct dirent *de;
		while ((de = readdir(d))) {
			struct file_state *f = &out[n];
			snprintf(f->path, sizeof f->path, "%s/%s", path, de->d_name);
			struct stat st;
			assert_int_equal(stat(f->path, &st), 0);
			if (!S_ISREG(st.st_mode))
				continue;
			assert_true(n < max);
			f->len = (size_t)st.st_size;
			f->data = malloc(f->len + 1);
			int fd = open(f->path, O_RDONLY);
			assert_true(fd >= 0);
			assert_int_equal(read(fd, f->data, f->len), (ssize_t)f->len);
			close(fd);
			n++;
		}
		closedir(d);
	}
	return n;
}

static void test_check_reports_and_changes_nothing(void **state)
{
	char dir[64];
	tmpdir_make(dir);
	struct store *s = open_store(dir, NULL, 1);
	struct tw t;
	tw_attach(&t, s, 0);
	uint64_t seed = 3, id;
	uint8_t body[4000];
	fill_random(body, sizeof body, &seed);
	assert_int_equal(put_upload(&t, "dev-lock", body, sizeof body, 1000, &seed, &id), 0);
	tw_detach(&t);
	store_close(s);
	/* What a crash leaves: bytes past the last indexed record, and a
	 * segment no upload was indexed in. */
	char seg[512], orphan[512];
	uint64_t off;
	segment_path_of(dir, id, seg, sizeof seg, &off);
	int fd = open(seg, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, body, 100), 100);
	close(fd);
	snprintf(orphan, sizeof orphan, "%s/spool/w0/00000000000000ff.seg", dir);
	fd = open(orphan, O_WRONLY | O_CREAT, 0640);
	assert_true(fd >= 0);
	close(fd);

	static struct file_state before[32], after[32];
	unsigned n = dir_state(dir, before, 32);
	char report[1024], err[256];
	assert_int_equal(store_check(dir, report, sizeof report, err, sizeof err), 0);
	if (!strstr(report, "1 uploads indexed") ||
	    !strstr(report, "would cut 100 unindexed bytes from 1 segments and remove 1 segments"))
		fail_msg("report: %s", report);
	assert_int_equal(dir_state(dir, after, 32), n);
	for (unsigned i = 0; i < n; i++) {
		assert_string_equal(before[i].path, after[i].path);
		if (before[i].len != after[i].len ||
		    memcmp(before[i].data, after[i].data, before[i].len))
			fail_msg("store_check changed %s", before[i].path);
		free(before[i].data);
		free(after[i].data);
	}
	/* The next open does what the check announced. */
	s = open_store(dir, NULL, 1);
	struct store_stats st;
	store_stats(s, &st);
	assert_int_equal(st.recovered_truncated_bytes, 100);
	store_close(s);
	assert_int_equal(access(orphan, F_OK), -1);
	assert_upload_equals(dir, id, body, sizeof body);
	tmpdir_remove(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_second_open_names_the_holder),
		cmocka_unit_test(test_check_reports_and_changes_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
