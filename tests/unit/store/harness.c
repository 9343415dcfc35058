#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

void tmpdir_make(char *dir)
{
	strcpy(dir, "/tmp/beacon-store-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

void tmpdir_remove(const char *dir)
{
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct store *open_store(const char *dir, const struct store_options *opts, unsigned nworkers)
{
	const struct store_options defaults = STORE_OPTIONS_DEFAULT;
	struct store *s = NULL;
	char err[256] = "";
	int rc = store_open(dir, opts ? opts : &defaults, nworkers, &s, err, sizeof err);
	if (rc)
		fail_msg("store_open(%s): %s: %s", dir, store_strerror(rc), err);
	return s;
}

void tw_attach(struct tw *t, struct store *s, unsigned id)
{
	assert_int_equal(ring_init(&t->ring, 256), 0);
	assert_int_equal(store_worker_attach(s, id, &t->ring, &t->w), 0);
}

void tw_detach(struct tw *t)
{
	store_worker_detach(t->w);
	ring_exit(&t->ring);
	t->w = NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tw_run_until(struct tw *t, const bool *flag)
{
	double deadline = now_s() + 60;
	while (!*flag) {
		int rc = ring_run_once(&t->ring, 2000000ull);
		if (rc < 0 && rc != -ETIME && rc != -EINTR)
			fail_msg("ring_run_once: %s", strerror(-rc));
		if (now_s() > deadline)
			fail_msg("timed out waiting for the store");
	}
}

uint64_t rnd(uint64_t *seed)
{
	/* xorshift64*: fast enough to fill 20 MiB */
	uint64_t x = *seed ? *seed : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*seed = x;
	return x * 0x2545f4914f6cdd1dull;
}

void fill_random(uint8_t *p, size_t len, uint64_t *seed)
{
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = rnd(seed);
		memcpy(p + i, &v, 8);
	}
	for (; i < len; i++)
		p[i] = (uint8_t)rnd(seed);
}

struct upload_wait {
	bool woken, done;
	int status;
	uint64_t id;
};

static void on_wake(void *arg)
{
	((struct upload_wait *)arg)->woken = true;
}

static void on_done(void *arg, int status, uint64_t id)
{
	struct upload_wait *uw = arg;
	uw->done = true;
	uw->status = status;
	uw->id = id;
}

int put_upload(struct tw *t, const char *device, const void *data, size_t len, size_t max_chunk,
	       uint64_t *seed, uint64_t *id)
{
	struct upload_meta meta = {0};
	snprintf(meta.device, sizeof meta.device, "%s", device);
	snprintf(meta.category, sizeof meta.category, "inventory");
	snprintf(meta.name, sizeof meta.name, "file-%zu.xml", len);
	memset(meta.cert_sha256, 0x5a, sizeof meta.cert_sha256);
	struct store_upload *u;
	int rc = store_upload_begin(t->w, &meta, &u);
	if (rc)
		return rc;
	struct upload_wait uw = {0};
	const uint8_t *p = data;
	for (size_t pos = 0; pos < len;) {
		size_t want = 1 + (size_t)(rnd(seed) % max_chunk);
		if (want > len - pos)
			want = len - pos;
		uw.woken = false;
		ssize_t n = store_upload_write(u, p + pos, want, on_wake, &uw);
		if (n < 0)
			break; /* finish reports it */
		pos += (size_t)n;
		if ((size_t)n < want)
			tw_run_until(t, &uw.woken);
	}
	store_upload_finish(u, on_done, &uw);
	tw_run_until(t, &uw.done);
	*id = uw.id;
	return uw.status;
}

int read_back(const char *dir, uint64_t id, uint8_t **data, size_t *len)
{
	struct store_reader *r;
	char err[256];
	int rc = store_reader_open(dir, &r, err, sizeof err);
	if (rc)
		fail_msg("store_reader_open(%s): %s", dir, err);
	int fd = memfd_create("upload", MFD_CLOEXEC);
	assert_true(fd >= 0);
	rc = store_reader_copy(r, id, fd);
	store_reader_close(r);
	if (rc) {
		close(fd);
		return rc;
	}
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	*data = malloc(*len ? *len : 1);
	assert_non_null(*data);
	assert_int_equal(pread(fd, *data, *len, 0), (ssize_t)*len);
	close(fd);
	return 0;
}

void assert_upload_equals(const char *dir, uint64_t id, const void *data, size_t len)
{
	uint8_t *got;
	size_t got_len;
	int rc = read_back(dir, id, &got, &got_len);
	if (rc)
		fail_msg("upload %" PRIu64 ": %s", id, store_strerror(rc));
	assert_int_equal(got_len, len);
	assert_true(len == 0 || memcmp(got, data, len) == 0);
	free(got);
}

static int count_visit(const struct upload_record *rec, void *arg)
{
	(*(unsigned *)arg)++;
	return 0;
}

unsigned count_uploads(const char *dir, const char *device)
{
	struct store_reader *r;
	char err[256];
	if (store_reader_open(dir, &r, err, sizeof err))
		fail_msg("store_reader_open(%s): %s", dir, err);
	unsigned n = 0;
	assert_int_equal(store_reader_uploads(r, device, 0, count_visit, &n), 0);
	store_reader_close(r);
	return n;
}

unsigned count_segments(const char *dir, unsigned worker)
{
	char path[512];
	snprintf(path, sizeof path, "%s/spool/w%u", dir, worker);
	DIR *d = opendir(path);
	assert_non_null(d);
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".seg"))
			n++;
	closedir(d);
	return n;
}

void segment_path_of(const char *dir, uint64_t id, char *path, size_t len, uint64_t *body_off)
{
	struct store_reader *r;
	char err[256];
	if (store_reader_open(dir, &r, err, sizeof err))
		fail_msg("store_reader_open(%s): %s", dir, err);
	struct upload_record rec;
	assert_int_equal(store_reader_upload(r, id, &rec), 0);
	store_reader_close(r);
	snprintf(path, len, "%s/spool/w%u/%016" PRIx64 ".seg", dir, rec.worker, rec.segment);
	*body_off = rec.offset;
}
