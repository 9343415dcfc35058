/* fsyncgate: after a failed fdatasync the kernel has reported the error
 * once and marked the lost pages clean, so the next fdatasync of the same
 * file returns 0 with the bytes possibly never on disk. The store must fail
 * every not-yet-indexed record of that segment and never sync it for
 * success again; new uploads go to a fresh segment.
 *
 * The faults come from the store's I/O probe (dataplane/store/store-probe.h),
 * which this program defines: the Nth fdatasync of a segment reports EIO,
 * and the next one really succeeds, exactly as the kernel behaves. */
#include "harness.h"
#include "store-probe.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- the probe: fail the Nth fdatasync of the first segment that gets there, once ---- */

#define SEGS_TRACKED 64

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	unsigned fail_nth; /* 0: no fault */
	unsigned failed;   /* faults injected */
	struct {
		unsigned worker;
		uint64_t seq;
		unsigned syncs;
	} segs[SEGS_TRACKED];
	unsigned n_segs;
} faults;

static unsigned *segment_sync_count(unsigned worker, uint64_t seq)
{
	for (unsigned i = 0; i < faults.n_segs; i++)
		if (faults.segs[i].worker == worker && faults.segs[i].seq == seq)
			return &faults.segs[i].syncs;
	if (faults.n_segs == SEGS_TRACKED)
		return NULL;
	faults.segs[faults.n_segs].worker = worker;
	faults.segs[faults.n_segs].seq = seq;
	faults.segs[faults.n_segs].syncs = 0;
	return &faults.segs[faults.n_segs++].syncs;
}

int store_io_probe(struct store_sync_event *ev)
{
	if (ev->phase != STORE_PROBE_DONE || ev->what != STORE_SYNC_SEGMENT)
		return ev->res;
	int res = ev->res;
	pthread_mutex_lock(&probe_lock);
	unsigned *n = segment_sync_count(ev->worker, ev->seq);
	if (n && ++*n == faults.fail_nth && res == 0 && !faults.failed) {
		res = -EIO;
		faults.failed++;
	}
	pthread_mutex_unlock(&probe_lock);
	return res;
}

static void faults_arm(unsigned nth)
{
	pthread_mutex_lock(&probe_lock);
	memset(&faults, 0, sizeof faults);
	faults.fail_nth = nth;
	pthread_mutex_unlock(&probe_lock);
}

static unsigned faults_injected(void)
{
	pthread_mutex_lock(&probe_lock);
	unsigned n = faults.failed;
	pthread_mutex_unlock(&probe_lock);
	return n;
}

/* ---- uploads finished side by side ---- */

struct pending {
	struct store_upload *u;
	bool done;
	int status;
	uint64_t id;
};

static void on_done(void *arg, int status, uint64_t id)
{
	struct pending *p = arg;
	p->done = true;
	p->status = status;
	p->id = id;
}

static void begin_with_body(struct tw *t, struct pending *p, const uint8_t *data, size_t len)
{
	struct upload_meta meta = {0};
	snprintf(meta.device, sizeof meta.device, "dev-fsyncgate");
	snprintf(meta.category, sizeof meta.category, "inventory");
	snprintf(meta.name, sizeof meta.name, "f-%zu.xml", len);
	assert_int_equal(store_upload_begin(t->w, &meta, &p->u), 0);
	/* Small bodies fit the first buffer half: the store takes them whole. */
	assert_int_equal(store_upload_write(p->u, data, len, NULL, NULL), (ssize_t)len);
}

struct fixture {
	char dir[64];
	struct store *s;
	struct tw t;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	tmpdir_make(f->dir);
	/* One upload per group: the two uploads below reach the writer in two
	 * groups, each with its own fdatasync of their shared segment. */
	struct store_options cfg = STORE_OPTIONS_DEFAULT;
	cfg.group_max = 1;
	f->s = open_store(f->dir, &cfg, 1);
	tw_attach(&f->t, f->s, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	faults_arm(0);
	if (f->t.w)
		tw_detach(&f->t);
	store_close(f->s);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

/* Two small uploads reserve records side by side in the worker's packed
 * segment before either reaches the writer. The first group's fdatasync
 * fails; the second group's succeeds (the kernel reported the error once).
 * Neither upload may be indexed. */
static void test_second_record_of_failed_segment_fails(void **state)
{
	struct fixture *f = *state;
	uint64_t seed = 12;
	uint8_t a[3000], b[5000];
	fill_random(a, sizeof a, &seed);
	fill_random(b, sizeof b, &seed);
	faults_arm(1);
	struct pending pa = {0}, pb = {0};
	begin_with_body(&f->t, &pa, a, sizeof a);
	begin_with_body(&f->t, &pb, b, sizeof b);
	store_upload_finish(pa.u, on_done, &pa);
	store_upload_finish(pb.u, on_done, &pb);
	tw_run_until(&f->t, &pa.done);
	tw_run_until(&f->t, &pb.done);

	assert_int_equal(faults_injected(), 1);
	/* Exactly one of them met the injected EIO; the other's fdatasync
	 * returned 0 but proves nothing about the lost pages. */
	if (pa.status != STORE_ERR_IO || pb.status != STORE_ERR_IO)
		fail_msg("after a failed fdatasync of their segment: first upload %s, second %s "
			 "(both must fail with \"%s\")",
			 store_strerror(pa.status), store_strerror(pb.status),
			 store_strerror(STORE_ERR_IO));
	assert_int_equal(count_uploads(f->dir, NULL), 0);
}

/* After the failure, new uploads go to a fresh segment and succeed. */
static void test_new_uploads_go_to_a_fresh_segment(void **state)
{
	struct fixture *f = *state;
	uint64_t seed = 13, id = 0;
	uint8_t a[2000], c[7000];
	fill_random(a, sizeof a, &seed);
	fill_random(c, sizeof c, &seed);
	struct store_health h;
	assert_int_equal(store_health(f->s, &h), 0);
	assert_int_equal(h.last_commit, 0);
	faults_arm(1);
	assert_int_equal(put_upload(&f->t, "dev-fsyncgate", a, sizeof a, 500, &seed, &id),
			 STORE_ERR_IO);
	assert_int_equal(faults_injected(), 1);
	/* /healthz sees the failed commit until one succeeds. */
	assert_int_equal(store_health(f->s, &h), 0);
	assert_int_equal(h.last_commit, STORE_ERR_IO);
	assert_int_equal(h.committing_ms, 0);
	assert_int_equal(put_upload(&f->t, "dev-fsyncgate", c, sizeof c, 900, &seed, &id), 0);
	assert_int_equal(store_health(f->s, &h), 0);
	assert_int_equal(h.last_commit, 0);
	assert_true(h.free_bytes > 0);
	assert_upload_equals(f->dir, id, c, sizeof c);
	char path[512];
	uint64_t off;
	segment_path_of(f->dir, id, path, sizeof path, &off);
	/* The failed segment was seq 0; the fresh one comes after it. */
	assert_null(strstr(path, "/0000000000000000.seg"));
	assert_int_equal(count_uploads(f->dir, NULL), 1);
}

/* A streaming upload (bigger than half its buffer) holds a pooled segment;
 * after its fdatasync fails, that segment leaves the pool: the next
 * streaming upload gets another one. */
static void test_pooled_segment_is_retired(void **state)
{
	struct fixture *f = *state;
	uint64_t seed = 14, id_a = 0, id_b = 0;
	size_t len = 600 * 1024;
	uint8_t *a = malloc(len), *b = malloc(len);
	fill_random(a, len, &seed);
	fill_random(b, len, &seed);
	faults_arm(1);
	assert_int_equal(put_upload(&f->t, "dev-fsyncgate", a, len, 70000, &seed, &id_a),
			 STORE_ERR_IO);
	assert_int_equal(put_upload(&f->t, "dev-fsyncgate", b, len, 70000, &seed, &id_b), 0);
	assert_upload_equals(f->dir, id_b, b, len);
	char path[512];
	uint64_t off;
	segment_path_of(f->dir, id_b, path, sizeof path, &off);
	assert_null(strstr(path, "/0000000000000000.seg"));
	assert_int_equal(count_uploads(f->dir, NULL), 1);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_second_record_of_failed_segment_fails, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_new_uploads_go_to_a_fresh_segment, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pooled_segment_is_retired, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
