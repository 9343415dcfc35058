/* Uploads stream in and read back byte for byte: sizes, chunking, back
 * pressure, concurrency on one worker and across worker threads, abort. */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MiB (1024u * 1024u)

struct fixture {
	char dir[64];
	struct store *s;
	struct tw t;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	tmpdir_make(f->dir);
	f->s = open_store(f->dir, NULL, 2);
	tw_attach(&f->t, f->s, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (f->t.w)
		tw_detach(&f->t);
	store_close(f->s);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static void roundtrip(struct fixture *f, size_t len, size_t max_chunk, uint64_t seed)
{
	uint8_t *data = malloc(len ? len : 1);
	fill_random(data, len, &seed);
	uint64_t id = 0;
	assert_int_equal(put_upload(&f->t, "dev-a", data, len, max_chunk, &seed, &id), 0);
	assert_true(id > 0);
	assert_upload_equals(f->dir, id, data, len);
	free(data);
}

static void test_sizes(void **state)
{
	struct fixture *f = *state;
	roundtrip(f, 0, 1, 1);
	roundtrip(f, 1, 1, 2);
	roundtrip(f, 1 * MiB, 70000, 3);
	roundtrip(f, 20 * MiB, 300000, 4);
	/* Many tiny writes: every byte goes through the buffer logic. */
	roundtrip(f, 100000, 17, 5);
	assert_int_equal(count_uploads(f->dir, NULL), 5);
	assert_int_equal(count_uploads(f->dir, "dev-a"), 5);
	assert_int_equal(count_uploads(f->dir, "dev-b"), 0);
}

static void test_metadata(void **state)
{
	struct fixture *f = *state;
	uint64_t seed = 9, id;
	uint8_t data[1000];
	fill_random(data, sizeof data, &seed);
	assert_int_equal(put_upload(&f->t, "dev-meta", data, sizeof data, 333, &seed, &id), 0);
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_reader_open(f->dir, &r, err, sizeof err), 0);
	struct upload_record rec;
	assert_int_equal(store_reader_upload(r, id, &rec), 0);
	assert_string_equal(rec.meta.device, "dev-meta");
	assert_string_equal(rec.meta.category, "inventory");
	assert_string_equal(rec.meta.name, "file-1000.xml");
	assert_int_equal(rec.length, sizeof data);
	assert_int_equal(rec.worker, 0);
	assert_int_equal(rec.meta.cert_sha256[31], 0x5a);
	assert_true(rec.received_unix_ms > 1600000000000ull);
	assert_int_equal(store_reader_upload(r, id + 1000, &rec), STORE_ERR_NOTFOUND);
	assert_int_equal(store_reader_copy(r, id + 1000, 1), STORE_ERR_NOTFOUND);
	store_reader_close(r);
}

/* ---- many uploads in flight on one worker ---- */

struct stream {
	struct store_upload *u;
	uint8_t *data;
	size_t len, pos;
	bool blocked, finished, done;
	int status;
	uint64_t id;
};

static void stream_wake(void *arg)
{
	((struct stream *)arg)->blocked = false;
}

static void stream_done(void *arg, int status, uint64_t id)
{
	struct stream *st = arg;
	st->done = true;
	st->status = status;
	st->id = id;
}

static void stream_step(struct stream *st, uint64_t *seed)
{
	if (st->finished || st->blocked)
		return;
	if (st->pos == st->len) {
		st->finished = true;
		store_upload_finish(st->u, stream_done, st);
		return;
	}
	size_t want = 1 + (size_t)(rnd(seed) % 40000);
	if (want > st->len - st->pos)
		want = st->len - st->pos;
	ssize_t n = store_upload_write(st->u, st->data + st->pos, want, stream_wake, st);
	assert_true(n >= 0);
	st->pos += (size_t)n;
	if ((size_t)n < want)
		st->blocked = true;
}

static void run_streams(struct tw *t, struct stream *st, unsigned n, uint64_t seed)
{
	for (unsigned i = 0; i < n; i++) {
		char dev[32];
		snprintf(dev, sizeof dev, "dev-%u", i % 7);
		struct upload_meta meta = {0};
		snprintf(meta.device, sizeof meta.device, "%s", dev);
		snprintf(meta.name, sizeof meta.name, "f%u", i);
		st[i].len = (size_t)(rnd(&seed) % 600000);
		st[i].data = malloc(st[i].len + 1);
		fill_random(st[i].data, st[i].len, &seed);
		assert_int_equal(store_upload_begin(t->w, &meta, &st[i].u), 0);
	}
	for (unsigned left = n; left > 0;) {
		for (unsigned i = 0; i < n; i++)
			stream_step(&st[i], &seed);
		ring_run_once(&t->ring, 1000000ull);
		left = 0;
		for (unsigned i = 0; i < n; i++)
			left += !st[i].done;
	}
}

static void test_concurrent_one_worker(void **state)
{
	struct fixture *f = *state;
	enum { N = 50 };
	struct stream st[N] = {0};
	run_streams(&f->t, st, N, 42);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(st[i].status, 0);
		for (unsigned j = 0; j < i; j++)
			assert_true(st[i].id != st[j].id);
		assert_upload_equals(f->dir, st[i].id, st[i].data, st[i].len);
		free(st[i].data);
	}
	assert_int_equal(count_uploads(f->dir, NULL), N);
	/* Every upload owned a segment's tail while it streamed. */
	assert_true(count_segments(f->dir, 0) <= N);
}

/* Uploads that fit their first buffer half share the worker's packed
 * segment, so a group commit syncs one file, not one per upload; bigger
 * ones stream into segments of their own beside it. */
static void test_small_uploads_share_a_segment(void **state)
{
	struct fixture *f = *state;
	enum { SMALL = 60, BIG = 3, N = SMALL + BIG };
	struct stream st[N] = {0};
	uint64_t seed = 9;
	for (unsigned i = 0; i < N; i++) {
		struct upload_meta meta = {.device = "dev-p"};
		snprintf(meta.name, sizeof meta.name, "p%u", i);
		/* Default buffer: 128 KiB halves, the header takes 48 B of the first. */
		st[i].len = i < SMALL ? (size_t)(rnd(&seed) % 100000) : 400000 + i;
		st[i].data = malloc(st[i].len + 1);
		fill_random(st[i].data, st[i].len, &seed);
		assert_int_equal(store_upload_begin(f->t.w, &meta, &st[i].u), 0);
	}
	struct store_stats before;
	store_stats(f->s, &before);
	for (unsigned left = N; left > 0;) {
		for (unsigned i = 0; i < N; i++)
			stream_step(&st[i], &seed);
		ring_run_once(&f->t.ring, 1000000ull);
		left = 0;
		for (unsigned i = 0; i < N; i++)
			left += !st[i].done;
	}
	struct store_stats after;
	store_stats(f->s, &after);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(st[i].status, 0);
		assert_upload_equals(f->dir, st[i].id, st[i].data, st[i].len);
		free(st[i].data);
	}
	assert_int_equal(count_segments(f->dir, 0), 1 + BIG);
	/* Each commit syncs the packed segment, the big ones that ended in
	 * it, and the spool directory when it holds a new segment. */
	uint64_t commits = after.commits - before.commits;
	assert_true(after.fsyncs - before.fsyncs <= commits * 2 + 2 * BIG);
	assert_true(after.fsyncs - before.fsyncs < N);
}

/* ---- two worker threads ---- */

struct thread_run {
	struct store *s;
	unsigned worker;
	struct stream st[20];
};

static void *worker_thread(void *arg)
{
	struct thread_run *tr = arg;
	struct tw t;
	/* The ring is made on its own thread: it is single-issuer. */
	tw_attach(&t, tr->s, tr->worker);
	run_streams(&t, tr->st, 20, 100 + tr->worker);
	tw_detach(&t);
	return NULL;
}

static void test_two_worker_threads(void **state)
{
	struct fixture *f = *state;
	tw_detach(&f->t); /* the fixture's worker 0 is taken by a thread below */
	static struct thread_run runs[2];
	pthread_t th[2];
	for (unsigned i = 0; i < 2; i++) {
		memset(&runs[i], 0, sizeof runs[i]);
		runs[i].s = f->s;
		runs[i].worker = i;
		assert_int_equal(pthread_create(&th[i], NULL, worker_thread, &runs[i]), 0);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < 2; i++) {
		for (unsigned j = 0; j < 20; j++) {
			struct stream *st = &runs[i].st[j];
			assert_int_equal(st->status, 0);
			assert_upload_equals(f->dir, st->id, st->data, st->len);
			free(st->data);
		}
	}
	assert_int_equal(count_uploads(f->dir, NULL), 40);
	assert_true(count_segments(f->dir, 1) >= 1);
}

/* ---- limits and abort ---- */

static void test_busy_and_abort(void **state)
{
	struct fixture *f = *state;
	tw_detach(&f->t);
	store_close(f->s);
	struct store_options cfg = STORE_OPTIONS_DEFAULT;
	cfg.max_open_uploads = 2;
	cfg.upload_buffer = 8192;
	f->s = open_store(f->dir, &cfg, 1);
	tw_attach(&f->t, f->s, 0);
	struct upload_meta meta = {.device = "dev-x", .name = "n"};
	struct store_upload *a, *b, *c;
	assert_int_equal(store_upload_begin(f->t.w, &meta, &a), 0);
	assert_int_equal(store_upload_begin(f->t.w, &meta, &b), 0);
	assert_int_equal(store_upload_begin(f->t.w, &meta, &c), STORE_ERR_BUSY);
	/* The aborted upload's bytes reach its segment, yet stay invisible. */
	uint8_t junk[4096];
	memset(junk, 0xee, sizeof junk);
	bool woken = false;
	assert_true(store_upload_write(a, junk, sizeof junk, NULL, &woken) > 0);
	store_upload_abort(a);
	store_upload_abort(b);
	/* An aborted upload counts until its segment open or write has landed:
	 * the buffer is still the kernel's until then. */
	int rc;
	for (int i = 0; (rc = store_upload_begin(f->t.w, &meta, &c)) == STORE_ERR_BUSY && i < 1000;
	     i++)
		ring_run_once(&f->t.ring, 1000000ull);
	assert_int_equal(rc, 0);
	store_upload_abort(c);
	uint64_t seed = 77, id;
	uint8_t data[50000];
	fill_random(data, sizeof data, &seed);
	/* An 8 KiB buffer: the writes keep hitting back pressure. */
	assert_int_equal(put_upload(&f->t, "dev-x", data, sizeof data, 20000, &seed, &id), 0);
	assert_int_equal(count_uploads(f->dir, NULL), 1);
	assert_upload_equals(f->dir, id, data, sizeof data);
}

static void test_bad_arguments(void **state)
{
	struct fixture *f = *state;
	struct store_upload *u;
	assert_int_equal(store_upload_begin(NULL, NULL, &u), STORE_ERR_INVAL);
	assert_int_equal(store_upload_write(NULL, "x", 1, NULL, NULL), STORE_ERR_INVAL);
	struct store_worker *w2;
	assert_int_equal(store_worker_attach(f->s, 0, &f->t.ring, &w2), STORE_ERR_INVAL);
	assert_int_equal(store_worker_attach(f->s, 9, &f->t.ring, &w2), STORE_ERR_INVAL);
	assert_string_equal(store_strerror(STORE_ERR_NOSPACE),
			    "no space left for the spool or index");
	assert_string_equal(auth_result_name(AUTH_REVOKED), "revoked");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metadata, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_one_worker, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_uploads_share_a_segment, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_two_worker_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_and_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
