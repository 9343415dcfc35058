/* Durable names: a file or directory is found after a power cut only if
 * its parent directory was fsynced after it was created. store_open makes
 * spool/, spool/wN, index/ (and LMDB's files in it) and a new data
 * directory durable in their parents; a new segment's name is durable
 * before an upload in it is acknowledged, and an upload whose segment
 * name could not be made durable is not acknowledged.
 *
 * The store's I/O probe (dataplane/store/store-probe.h), defined here,
 * logs every directory sync and every acknowledgement in one sequence. */
#include "harness.h"
#include "store-probe.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define LOG_MAX 256

struct entry {
	char what[8]; /* "dir", "ack" */
	char path[PATH_MAX];
	int res;
};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry entries[LOG_MAX];
static unsigned n_entries;
static char fail_dir[PATH_MAX]; /* the next sync of this directory reports EIO */

static void log_add(const char *what, const char *path, int res)
{
	pthread_mutex_lock(&log_lock);
	if (n_entries < LOG_MAX) {
		snprintf(entries[n_entries].what, sizeof entries[n_entries].what, "%s", what);
		snprintf(entries[n_entries].path, sizeof entries[n_entries].path, "%s", path);
		entries[n_entries].res = res;
		n_entries++;
	}
	pthread_mutex_unlock(&log_lock);
}

int store_io_probe(struct store_sync_event *ev)
{
	if (ev->phase != STORE_PROBE_DONE || ev->what != STORE_SYNC_DIR)
		return ev->res;
	int res = ev->res;
	pthread_mutex_lock(&log_lock);
	if (fail_dir[0] && strcmp(fail_dir, ev->path) == 0) {
		fail_dir[0] = '\0';
		res = -EIO;
	}
	pthread_mutex_unlock(&log_lock);
	log_add("dir", ev->path, res);
	return res;
}

static void log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	n_entries = 0;
	fail_dir[0] = '\0';
	pthread_mutex_unlock(&log_lock);
}

/* Index of the first successful sync of `path` at or after `from`, or -1. */
static int synced_at(const char *path, unsigned from)
{
	int at = -1;
	pthread_mutex_lock(&log_lock);
	for (unsigned i = from; i < n_entries && at < 0; i++)
		if (!strcmp(entries[i].what, "dir") && !strcmp(entries[i].path, path) &&
		    entries[i].res == 0)
			at = (int)i;
	pthread_mutex_unlock(&log_lock);
	return at;
}

static void dump_log(void)
{
	for (unsigned i = 0; i < n_entries; i++)
		fprintf(stderr, "  %u: %s %s %d\n", i, entries[i].what, entries[i].path,
			entries[i].res);
}

struct fixture {
	char tmp[64];
	char dir[128]; /* tmp/data: store_open creates it */
	struct store *s;
	struct tw t;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	tmpdir_make(f->tmp);
	snprintf(f->dir, sizeof f->dir, "%s/data", f->tmp);
	log_reset();
	f->s = open_store(f->dir, NULL, 2);
	tw_attach(&f->t, f->s, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	tw_detach(&f->t);
	store_close(f->s);
	tmpdir_remove(f->tmp);
	free(f);
	return 0;
}

static void test_open_makes_new_directories_durable(void **state)
{
	struct fixture *f = *state;
	char path[256];
	const char *parents[] = {"%s", "%s/data", "%s/data/spool", "%s/data/index"};
	for (size_t i = 0; i < sizeof parents / sizeof parents[0]; i++) {
		snprintf(path, sizeof path, parents[i], f->tmp);
		if (synced_at(path, 0) < 0) {
			dump_log();
			fail_msg("store_open created entries in %s but never fsynced it", path);
		}
	}
}

struct ack {
	bool done;
	int status;
	uint64_t id;
};

static void on_done(void *arg, int status, uint64_t id)
{
	struct ack *a = arg;
	a->done = true;
	a->status = status;
	a->id = id;
	log_add("ack", "", status);
}

static int upload(struct fixture *f, const void *data, size_t len, uint64_t *id)
{
	struct upload_meta meta = {0};
	snprintf(meta.device, sizeof meta.device, "dev-names");
	snprintf(meta.category, sizeof meta.category, "inventory");
	snprintf(meta.name, sizeof meta.name, "n.xml");
	struct store_upload *u;
	assert_int_equal(store_upload_begin(f->t.w, &meta, &u), 0);
	assert_int_equal(store_upload_write(u, data, len, NULL, NULL), (ssize_t)len);
	struct ack a = {0};
	store_upload_finish(u, on_done, &a);
	tw_run_until(&f->t, &a.done);
	*id = a.id;
	return a.status;
}

/* The first upload lands in a new segment: spool/w0 is fsynced after the
 * store opened and before the upload is acknowledged. */
static void test_new_segment_name_durable_before_ack(void **state)
{
	struct fixture *f = *state;
	unsigned opened = n_entries;
	uint64_t id;
	uint8_t data[1000] = {1, 2, 3};
	assert_int_equal(upload(f, data, sizeof data, &id), 0);
	char w0[256];
	snprintf(w0, sizeof w0, "%s/data/spool/w0", f->tmp);
	int sync = synced_at(w0, opened);
	int ack = -1;
	for (unsigned i = opened; i < n_entries && ack < 0; i++)
		if (!strcmp(entries[i].what, "ack"))
			ack = (int)i;
	if (sync < 0 || sync > ack) {
		dump_log();
		fail_msg("upload %llu acknowledged (log %d) before %s was fsynced (log %d)",
			 (unsigned long long)id, ack, w0, sync);
	}
}

/* The directory sync that would make the new segment's name durable
 * fails: the upload in it is not acknowledged, and the next one goes to a
 * fresh segment whose name is made durable. */
static void test_failed_directory_sync_fails_the_upload(void **state)
{
	struct fixture *f = *state;
	char w0[256];
	snprintf(w0, sizeof w0, "%s/data/spool/w0", f->tmp);
	pthread_mutex_lock(&log_lock);
	snprintf(fail_dir, sizeof fail_dir, "%s", w0);
	pthread_mutex_unlock(&log_lock);
	uint64_t id;
	uint8_t a[1000] = {4}, b[2000] = {5};
	assert_int_equal(upload(f, a, sizeof a, &id), STORE_ERR_IO);
	assert_int_equal(count_uploads(f->dir, NULL), 0);
	unsigned before = n_entries;
	assert_int_equal(upload(f, b, sizeof b, &id), 0);
	assert_true(synced_at(w0, before) >= 0);
	assert_upload_equals(f->dir, id, b, sizeof b);
	char path[512];
	uint64_t off;
	segment_path_of(f->dir, id, path, sizeof path, &off);
	assert_null(strstr(path, "/0000000000000000.seg"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_makes_new_directories_durable, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_new_segment_name_durable_before_ack, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_failed_directory_sync_fails_the_upload, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
