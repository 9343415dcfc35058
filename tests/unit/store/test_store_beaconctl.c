/* beaconctl's store commands against a store that is open in this process
 * (the "server"): a separate process reads it with read transactions. */
#include "harness.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

struct fixture {
	char dir[64];
	struct store *s;
	struct tw t;
};

/* Runs beaconctl with args; returns its exit status and its stdout. */
static int ctl(const char *dir, const char *args, char **out, size_t *out_len)
{
	const char *bin = getenv("BEACONCTL");
	assert_non_null(bin);
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "%s --data-dir %s %s 2>/dev/null", bin, dir, args);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
		len += n;
		if (cap - len < 2) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	buf[len] = '\0';
	int status = pclose(p);
	*out = buf;
	if (out_len)
		*out_len = len;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static unsigned count_lines(const char *s)
{
	unsigned n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_beaconctl(void **state)
{
	struct fixture f = {0};
	tmpdir_make(f.dir);
	f.s = open_store(f.dir, NULL, 1);
	tw_attach(&f.t, f.s, 0);
	uint64_t seed = 5, ids[3];
	static uint8_t data[3][150000];
	const char *devs[3] = {"dev-a", "dev-a", "dev-b"};
	for (int i = 0; i < 3; i++) {
		fill_random(data[i], sizeof data[i], &seed);
		assert_int_equal(
			put_upload(&f.t, devs[i], data[i], sizeof data[i], 40000, &seed, &ids[i]),
			0);
	}
	char *out, args[128];
	size_t len;
	assert_int_equal(ctl(f.dir, "--json uploads list", &out, NULL), 0);
	assert_int_equal(count_lines(out), 3);
	assert_non_null(strstr(out, "\"device\":\"dev-b\""));
	free(out);
	assert_int_equal(ctl(f.dir, "--json uploads list --device dev-a", &out, NULL), 0);
	assert_int_equal(count_lines(out), 2);
	free(out);
	assert_int_equal(ctl(f.dir, "uploads list --since 4000000000", &out, NULL), 0);
	assert_int_equal(count_lines(out), 1); /* the table's header only */
	free(out);

	snprintf(args, sizeof args, "uploads get %llu", (unsigned long long)ids[1]);
	assert_int_equal(ctl(f.dir, args, &out, &len), 0);
	assert_int_equal(len, sizeof data[1]);
	assert_memory_equal(out, data[1], len);
	free(out);

	snprintf(args, sizeof args, "uploads show %llu", (unsigned long long)ids[2]);
	assert_int_equal(ctl(f.dir, args, &out, NULL), 0);
	assert_non_null(strstr(out, "device:      dev-b"));
	free(out);
	assert_int_equal(ctl(f.dir, "uploads show 999999", &out, NULL), 1);
	free(out);
	assert_int_equal(ctl(f.dir, "uploads get notanumber", &out, NULL), 2);
	free(out);
	assert_int_equal(ctl(f.dir, "uploads frobnicate", &out, NULL), 2);
	free(out);

	assert_int_equal(ctl(f.dir, "--json devices show dev-a", &out, NULL), 0);
	assert_non_null(strstr(out, "\"uploads\":2"));
	free(out);
	assert_int_equal(ctl(f.dir, "devices list", &out, NULL), 0);
	assert_int_equal(count_lines(out), 3);
	free(out);
	assert_int_equal(ctl(f.dir, "devices show nobody", &out, NULL), 1);
	free(out);

	/* A damaged record is refused and nothing of it is written. */
	char path[512];
	uint64_t off;
	segment_path_of(f.dir, ids[0], path, sizeof path, &off);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t c = (uint8_t)(data[0][100] ^ 0xff);
	assert_int_equal(pwrite(fd, &c, 1, (off_t)off + 100), 1);
	close(fd);
	snprintf(args, sizeof args, "uploads get %llu", (unsigned long long)ids[0]);
	assert_int_equal(ctl(f.dir, args, &out, &len), 1);
	assert_int_equal(len, 0);
	free(out);

	tw_detach(&f.t);
	store_close(f.s);
	assert_int_equal(ctl("/tmp/beacon-store-nonexistent", "devices list", &out, NULL), 1);
	free(out);
	tmpdir_remove(f.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_beaconctl),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
