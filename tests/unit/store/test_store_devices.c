/* Device records (first/last seen, result, uploads, fingerprints), listing
 * filters, and retention by bytes and by age. */
#include "harness.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

struct fixture {
	char dir[64];
	struct store *s;
	struct tw t;
	uint64_t seed;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	tmpdir_make(f->dir);
	f->seed = 4242;
	*state = f;
	return 0;
}

static void start(struct fixture *f, const struct store_options *cfg)
{
	f->s = open_store(f->dir, cfg, 1);
	tw_attach(&f->t, f->s, 0);
}

static void stop(struct fixture *f)
{
	if (f->t.w)
		tw_detach(&f->t);
	if (f->s)
		store_close(f->s);
	f->s = NULL;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	stop(f);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static uint64_t put(struct fixture *f, const char *device, size_t len)
{
	uint8_t *data = malloc(len + 1);
	fill_random(data, len, &f->seed);
	uint64_t id;
	assert_int_equal(put_upload(&f->t, device, data, len, 30000, &f->seed, &id), 0);
	free(data);
	return id;
}

static int get_device(const char *dir, const char *device, struct device_record *d)
{
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_reader_open(dir, &r, err, sizeof err), 0);
	int rc = store_reader_device(r, device, d);
	store_reader_close(r);
	return rc;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits until the writer has indexed the device's last event. */
static void wait_device(const char *dir, const char *device, enum auth_result result,
			struct device_record *d)
{
	for (int i = 0; i < 2000; i++) {
		if (get_device(dir, device, d) == 0 && d->last_result == result)
			return;
		usleep(1000);
	}
	fail_msg("device %s never showed result %s", device, auth_result_name(result));
}

static void test_device_records(void **state)
{
	struct fixture *f = *state;
	start(f, NULL);
	uint64_t t0 = now_ms();
	uint8_t fp1[32], fp2[32];
	memset(fp1, 0x11, sizeof fp1);
	memset(fp2, 0x22, sizeof fp2);
	struct device_record d;
	assert_int_equal(get_device(f->dir, "dev-d", &d), STORE_ERR_NOTFOUND);

	store_device_seen(f->s, "dev-d", fp1, AUTH_EXPIRED);
	wait_device(f->dir, "dev-d", AUTH_EXPIRED, &d);
	assert_true(d.first_seen_unix_ms >= t0);
	assert_int_equal(d.uploads, 0);
	/* approval = auto: a new device starts approved. */
	assert_int_equal(d.state, DEVICE_APPROVED);
	assert_int_equal(d.n_fingerprints, 1);
	uint64_t first = d.first_seen_unix_ms;

	usleep(5000);
	/* From the worker's own thread: MSG_RING onto the writer. */
	assert_int_equal(store_worker_device_seen(f->t.w, "dev-d", fp2, AUTH_OK), 0);
	ring_run_once(&f->t.ring, 0); /* submits the message */
	wait_device(f->dir, "dev-d", AUTH_OK, &d);
	assert_int_equal(d.state, DEVICE_APPROVED);
	assert_int_equal(d.n_fingerprints, 2);

	/* The state is the operator's: a handshake result never changes it. */
	char msg[128];
	assert_int_equal(store_device_set_state(f->s, "dev-d", DEVICE_BLOCKED, msg, sizeof msg), 0);
	store_device_seen(f->s, "dev-d", fp2, AUTH_OTHER);
	wait_device(f->dir, "dev-d", AUTH_OTHER, &d);
	assert_int_equal(d.state, DEVICE_BLOCKED);
	assert_int_equal(store_device_set_state(f->s, "dev-d", DEVICE_APPROVED, msg, sizeof msg),
			 0);
	assert_int_equal(get_device(f->dir, "dev-d", &d), 0);
	assert_int_equal(d.state, DEVICE_APPROVED);
	/* Blocking a device never seen creates its record. */
	assert_int_equal(store_device_set_state(f->s, "dev-new", DEVICE_BLOCKED, msg, sizeof msg),
			 0);
	assert_int_equal(get_device(f->dir, "dev-new", &d), 0);
	assert_int_equal(d.state, DEVICE_BLOCKED);
	assert_int_equal(get_device(f->dir, "dev-d", &d), 0);
	assert_memory_equal(d.fingerprints[0], fp2, 32);
	assert_memory_equal(d.fingerprints[1], fp1, 32);

	put(f, "dev-d", 1000);
	put(f, "dev-d", 2000);
	put(f, "dev-e", 10);
	assert_int_equal(get_device(f->dir, "dev-d", &d), 0);
	assert_int_equal(d.uploads, 2);
	assert_int_equal(d.first_seen_unix_ms, first);
	assert_true(d.last_seen_unix_ms > first);
	/* The uploads' certificate (0x5a..) is now the most recent one. */
	assert_int_equal(d.n_fingerprints, 3);
	assert_int_equal(d.fingerprints[0][0], 0x5a);

	/* Only the 4 most recent distinct fingerprints are kept. */
	for (uint8_t i = 0; i < 6; i++) {
		uint8_t fp[32];
		memset(fp, 0x80 + i, sizeof fp);
		store_device_seen(f->s, "dev-d", fp, i == 5 ? AUTH_BLOCKED : AUTH_OK);
	}
	wait_device(f->dir, "dev-d", AUTH_BLOCKED, &d);
	assert_int_equal(d.n_fingerprints, 4);
	assert_int_equal(d.fingerprints[0][0], 0x85);
	assert_int_equal(d.fingerprints[3][0], 0x82);

	assert_int_equal(count_uploads(f->dir, "dev-d"), 2);
	assert_int_equal(count_uploads(f->dir, "dev-e"), 1);
	assert_int_equal(count_uploads(f->dir, "dev"), 0); /* a prefix is not a device */
	/* Device records survive a restart. */
	stop(f);
	assert_int_equal(get_device(f->dir, "dev-e", &d), 0);
	assert_int_equal(d.uploads, 1);
}

/* approval = require: a new device waits for an operator. */
static void test_require_approval(void **state)
{
	struct fixture *f = *state;
	struct store_options cfg = STORE_OPTIONS_DEFAULT;
	cfg.require_approval = true;
	start(f, &cfg);
	uint8_t fp[32];
	memset(fp, 0x33, sizeof fp);
	struct device_record d;
	store_device_seen(f->s, "dev-r", fp, AUTH_OK);
	wait_device(f->dir, "dev-r", AUTH_OK, &d);
	assert_int_equal(d.state, DEVICE_UNAPPROVED);
	stop(f);
}

static int collect_ids(const struct upload_record *rec, void *arg)
{
	uint64_t *ids = arg;
	ids[++ids[0]] = rec->id;
	return ids[0] == 15;
}

static void test_listing_since(void **state)
{
	struct fixture *f = *state;
	start(f, NULL);
	uint64_t a = put(f, "dev-l", 10);
	usleep(20000);
	uint64_t cut = now_ms();
	usleep(20000);
	uint64_t b = put(f, "dev-l", 10), c = put(f, "dev-m", 10);
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_reader_open(f->dir, &r, err, sizeof err), 0);
	uint64_t ids[16] = {0};
	assert_int_equal(store_reader_uploads(r, NULL, cut, collect_ids, ids), 0);
	assert_int_equal(ids[0], 2);
	assert_int_equal(ids[1], b);
	assert_int_equal(ids[2], c);
	memset(ids, 0, sizeof ids);
	assert_int_equal(store_reader_uploads(r, "dev-l", cut, collect_ids, ids), 0);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], b);
	memset(ids, 0, sizeof ids);
	assert_int_equal(store_reader_uploads(r, "dev-l", 0, collect_ids, ids), 0);
	assert_int_equal(ids[0], 2);
	assert_int_equal(ids[1], a);
	store_reader_close(r);
}

static void test_retention_by_bytes(void **state)
{
	struct fixture *f = *state;
	/* The smallest segments (1 MiB) and uploads past that size: each
	 * upload seals its own segment, so whole files can go. The cap keeps
	 * two uploads. */
	struct store_options cfg = STORE_OPTIONS_DEFAULT;
	cfg.segment_bytes = 1u << 20;
	cfg.retain_bytes = 2750000;
	start(f, &cfg);
	uint64_t ids[5];
	for (int i = 0; i < 5; i++)
		ids[i] = put(f, "dev-r", 1100000);
	/* A commit past the cap trims oldest-first right after it answers. */
	for (int i = 0; i < 2000 && count_uploads(f->dir, NULL) != 2; i++)
		usleep(1000);
	assert_int_equal(count_uploads(f->dir, NULL), 2);
	uint8_t *got;
	size_t len;
	assert_int_equal(read_back(f->dir, ids[0], &got, &len), STORE_ERR_NOTFOUND);
	assert_int_equal(read_back(f->dir, ids[3], &got, &len), 0);
	free(got);
	struct store_stats st;
	store_stats(f->s, &st);
	assert_int_equal(st.uploads_expired, 3);
	/* Emptied segments are unlinked (by retention, or at the latest by the
	 * sweep at the next start once their worker let go of them). */
	stop(f);
	start(f, &cfg);
	assert_int_equal(count_segments(f->dir, 0), 2);
	assert_int_equal(count_uploads(f->dir, NULL), 2);
}

static int collect_query(struct store_reader *r, struct upload_query *q, uint64_t *ids)
{
	memset(ids, 0, 16 * sizeof *ids);
	return store_reader_query(r, q, collect_ids, ids);
}

/* Pages from a cursor: one that retention removed starts at the oldest
 * upload left (retention goes oldest first) and says so; one the store
 * never reached is not found; the totals follow retention. */
static void test_query_cursor_and_totals(void **state)
{
	struct fixture *f = *state;
	/* As test_retention_by_bytes: the cap keeps the two newest. */
	struct store_options cfg = STORE_OPTIONS_DEFAULT;
	cfg.segment_bytes = 1u << 20;
	cfg.retain_bytes = 2750000;
	start(f, &cfg);
	uint64_t id[5];
	for (int i = 0; i < 5; i++)
		id[i] = put(f, i == 4 ? "dev-q2" : "dev-q", 1100000);
	for (int i = 0; i < 2000 && count_uploads(f->dir, NULL) != 2; i++)
		usleep(1000);
	assert_int_equal(count_uploads(f->dir, NULL), 2);
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_reader_open(f->dir, &r, err, sizeof err), 0);
	uint64_t ids[16];
	struct upload_query q = {.has_after = true, .after_id = id[0]};
	assert_int_equal(collect_query(r, &q, ids), 0);
	assert_true(q.after_gone);
	assert_int_equal(ids[0], 2);
	assert_int_equal(ids[1], id[3]);
	assert_int_equal(ids[2], id[4]);
	q = (struct upload_query){.has_after = true, .after_id = id[3]};
	assert_int_equal(collect_query(r, &q, ids), 0);
	assert_false(q.after_gone);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], id[4]);
	q = (struct upload_query){.has_after = true, .after_id = id[4] + 1};
	assert_int_equal(collect_query(r, &q, ids), STORE_ERR_NOTFOUND);
	/* By device: a seek into its own entries, the cursor need not exist. */
	q = (struct upload_query){.device = "dev-q", .has_after = true, .after_id = id[0]};
	assert_int_equal(collect_query(r, &q, ids), 0);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], id[3]);
	q = (struct upload_query){.device = "dev-q", .has_after = true, .after_id = UINT64_MAX};
	assert_int_equal(collect_query(r, &q, ids), 0);
	assert_int_equal(ids[0], 0);
	uint64_t uploads = 0, bytes = 0;
	assert_int_equal(store_reader_totals(r, &uploads, &bytes), 0);
	assert_int_equal(uploads, 2);
	assert_int_equal(bytes, 2200000);
	store_reader_close(r);
	stop(f);
}

static void test_retention_by_age(void **state)
{
	struct fixture *f = *state;
	start(f, NULL);
	put(f, "dev-old", 5000);
	stop(f);
	sleep(2);
	struct store_options cfg = STORE_OPTIONS_DEFAULT;
	cfg.retain_seconds = 1;
	start(f, &cfg); /* the writer's first pass runs at open */
	assert_int_equal(count_uploads(f->dir, NULL), 0);
	uint64_t id = put(f, "dev-new", 5000);
	assert_int_equal(count_uploads(f->dir, NULL), 1);
	stop(f);
	start(f, NULL);
	/* Ids stay increasing after everything was retained away. */
	assert_true(put(f, "dev-new", 10) > id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_device_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_require_approval, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listing_since, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention_by_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_cursor_and_totals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention_by_age, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
