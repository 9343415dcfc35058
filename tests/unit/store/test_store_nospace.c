/* A full disk: on an 8 MiB tmpfs an upload that does not fit fails with
 * STORE_ERR_NOSPACE (HTTP 507), what was stored stays readable, and once
 * space returns the next upload succeeds without a restart. Needs root to
 * mount; skipped otherwise. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cmocka.h>

#define MiB (1024u * 1024u)

/* Writes up to `bytes` into path; stops quietly at ENOSPC. */
static void write_filler(const char *path, size_t bytes)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	assert_true(fd >= 0);
	static uint8_t block[64 * 1024];
	for (size_t done = 0; done < bytes;) {
		ssize_t n = write(fd, block, sizeof block);
		if (n < 0 && errno == ENOSPC)
			break;
		assert_true(n > 0);
		done += (size_t)n;
	}
	close(fd);
}

static void test_full_disk(void **state)
{
	if (geteuid() != 0)
		skip();
	char mnt[64];
	tmpdir_make(mnt);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=8m") < 0) {
		fprintf(stderr, "cannot mount a tmpfs on %s (%s): skipped\n", mnt, strerror(errno));
		tmpdir_remove(mnt);
		skip();
	}
	char dir[128], filler[128];
	snprintf(dir, sizeof dir, "%s/data", mnt);
	snprintf(filler, sizeof filler, "%s/filler", mnt);
	/* A small map: LMDB's file must fit on the tmpfs too. */
	struct store_options cfg = STORE_OPTIONS_DEFAULT;
	cfg.map_bytes = 64 * MiB;
	struct store *s = open_store(dir, &cfg, 1);
	struct tw t;
	tw_attach(&t, s, 0);
	uint64_t seed = 99, id_small, id;
	static uint8_t small[20000];
	fill_random(small, sizeof small, &seed);
	assert_int_equal(put_upload(&t, "dev-f", small, sizeof small, 5000, &seed, &id_small), 0);

	write_filler(filler, 4 * MiB);
	size_t big_len = 6 * MiB;
	uint8_t *big = malloc(big_len);
	fill_random(big, big_len, &seed);
	assert_int_equal(put_upload(&t, "dev-f", big, big_len, 300000, &seed, &id),
			 STORE_ERR_NOSPACE);
	assert_int_equal(count_uploads(dir, NULL), 1);
	assert_upload_equals(dir, id_small, small, sizeof small);

	/* Space comes back: the same store takes uploads again. */
	assert_int_equal(unlink(filler), 0);
	static uint8_t after[50000];
	fill_random(after, sizeof after, &seed);
	assert_int_equal(put_upload(&t, "dev-f", after, sizeof after, 7000, &seed, &id), 0);
	assert_true(id > id_small);
	assert_upload_equals(dir, id, after, sizeof after);
	assert_int_equal(put_upload(&t, "dev-f", big, 3 * MiB, 300000, &seed, &id), 0);
	assert_upload_equals(dir, id, big, 3 * MiB);
	assert_int_equal(count_uploads(dir, NULL), 3);

	tw_detach(&t);
	store_close(s);
	free(big);
	umount2(mnt, MNT_DETACH);
	tmpdir_remove(mnt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_disk),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
