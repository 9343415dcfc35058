/* Restarts: LMDB is the truth. Reopen keeps every committed upload and ids
 * keep increasing; bytes past the last indexed record (a crash mid-upload)
 * never show and are cut; a damaged record is refused, never served; a
 * newer index schema is refused, an older one upgraded. */
#include "harness.h"

#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
	f->s = open_store(f->dir, NULL, 1);
	tw_attach(&f->t, f->s, 0);
	f->seed = 12345;
	*state = f;
	return 0;
}

static void close_store(struct fixture *f)
{
	if (f->t.w)
		tw_detach(&f->t);
	if (f->s)
		store_close(f->s);
	f->s = NULL;
}

static void reopen(struct fixture *f)
{
	close_store(f);
	f->s = open_store(f->dir, NULL, 1);
	tw_attach(&f->t, f->s, 0);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	close_store(f);
	tmpdir_remove(f->dir);
	free(f);
	return 0;
}

static uint64_t put(struct fixture *f, uint8_t *data, size_t len)
{
	fill_random(data, len, &f->seed);
	uint64_t id;
	assert_int_equal(put_upload(&f->t, "dev-r", data, len, 50000, &f->seed, &id), 0);
	return id;
}

static void test_reopen_keeps_everything(void **state)
{
	struct fixture *f = *state;
	static uint8_t a[300000], b[10], c[70000];
	uint64_t ia = put(f, a, sizeof a), ib = put(f, b, sizeof b);
	reopen(f);
	assert_upload_equals(f->dir, ia, a, sizeof a);
	assert_upload_equals(f->dir, ib, b, sizeof b);
	uint64_t ic = put(f, c, sizeof c);
	assert_true(ic > ib && ib > ia);
	reopen(f);
	assert_int_equal(count_uploads(f->dir, NULL), 3);
	assert_upload_equals(f->dir, ic, c, sizeof c);
	struct store_stats st;
	store_stats(f->s, &st);
	assert_int_equal(st.recovered_bad_headers, 0);
}

/* A crash mid-upload: an upload that never finished wrote past the last
 * record (here: it is aborted by detach, and garbage is added after it as
 * a torn write would leave). */
static void test_garbage_past_last_record_is_cut(void **state)
{
	struct fixture *f = *state;
	static uint8_t a[200000], b[5000], junk[300000];
	uint64_t ia = put(f, a, sizeof a);
	struct upload_meta meta = {.device = "dev-r", .name = "never-finished"};
	struct store_upload *u;
	assert_int_equal(store_upload_begin(f->t.w, &meta, &u), 0);
	memset(junk, 0xab, sizeof junk);
	bool woken = false;
	size_t pos = 0;
	while (pos < sizeof junk) {
		ssize_t n = store_upload_write(u, junk + pos, sizeof junk - pos, NULL, &woken);
		assert_true(n >= 0);
		pos += (size_t)n;
		ring_run_once(&f->t.ring, 1000000ull);
	}
	close_store(f); /* detach aborts the unfinished upload */

	char path[512];
	uint64_t body_off;
	segment_path_of(f->dir, ia, path, sizeof path, &body_off);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	uint64_t end = body_off + sizeof a;
	assert_int_equal(pwrite(fd, junk, 4096, (off_t)end + 300000), 4096);
	close(fd);

	f->s = open_store(f->dir, NULL, 1);
	tw_attach(&f->t, f->s, 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, end);
	assert_int_equal(count_uploads(f->dir, NULL), 1);
	struct store_stats ss;
	store_stats(f->s, &ss);
	assert_true(ss.recovered_truncated_bytes > 0);

	uint64_t ib = put(f, b, sizeof b);
	assert_true(ib > ia);
	assert_upload_equals(f->dir, ia, a, sizeof a);
	assert_upload_equals(f->dir, ib, b, sizeof b);
	reopen(f);
	assert_int_equal(count_uploads(f->dir, NULL), 2);
	assert_upload_equals(f->dir, ib, b, sizeof b);
}

static void test_unindexed_segment_removed(void **state)
{
	struct fixture *f = *state;
	static uint8_t a[1000];
	put(f, a, sizeof a);
	close_store(f);
	char path[512];
	snprintf(path, sizeof path, "%s/spool/w0/00000000000000ff.seg", f->dir);
	int fd = open(path, O_CREAT | O_WRONLY, 0640);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "garbage", 7), 7);
	close(fd);
	unsigned before = count_segments(f->dir, 0);
	f->s = open_store(f->dir, NULL, 1);
	tw_attach(&f->t, f->s, 0);
	assert_int_equal(count_segments(f->dir, 0), before - 1);
	assert_int_equal(access(path, F_OK), -1);
	/* New segments number past everything seen on disk. */
	uint64_t ib = put(f, a, sizeof a);
	char newpath[512];
	uint64_t off;
	segment_path_of(f->dir, ib, newpath, sizeof newpath, &off);
	assert_true(strcmp(newpath, path) > 0);
}

static void flip_byte(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t c;
	assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
	c ^= 0x01;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
	close(fd);
}

static void test_flipped_byte_is_corrupt(void **state)
{
	struct fixture *f = *state;
	static uint8_t a[100000], b[3000];
	uint64_t ia = put(f, a, sizeof a), ib = put(f, b, sizeof b);
	char path[512];
	uint64_t off;
	segment_path_of(f->dir, ia, path, sizeof path, &off);
	flip_byte(path, off + 77777);
	uint8_t *got;
	size_t len;
	assert_int_equal(read_back(f->dir, ia, &got, &len), STORE_ERR_CORRUPT);
	/* Nothing of a damaged record reaches the output. */
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_reader_open(f->dir, &r, err, sizeof err), 0);
	int fd = memfd_create("out", 0);
	assert_int_equal(store_reader_copy(r, ia, fd), STORE_ERR_CORRUPT);
	assert_int_equal(lseek(fd, 0, SEEK_END), 0);
	close(fd);
	store_reader_close(r);
	assert_upload_equals(f->dir, ib, b, sizeof b);

	/* A damaged header is counted at start-up and refused too. */
	segment_path_of(f->dir, ib, path, sizeof path, &off);
	flip_byte(path, off - 40);
	reopen(f);
	struct store_stats st;
	store_stats(f->s, &st);
	assert_int_equal(st.recovered_bad_headers, 1);
	assert_int_equal(read_back(f->dir, ib, &got, &len), STORE_ERR_CORRUPT);
}

static void set_schema(const char *dir, uint32_t version)
{
	char path[512];
	snprintf(path, sizeof path, "%s/index", dir);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, path, 0, 0640), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	uint8_t v[4] = {(uint8_t)version, (uint8_t)(version >> 8), (uint8_t)(version >> 16),
			(uint8_t)(version >> 24)};
	MDB_val k = {6, "schema"}, val = {4, v};
	assert_int_equal(mdb_put(txn, meta, &k, &val, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void test_newer_schema_refused(void **state)
{
	struct fixture *f = *state;
	close_store(f);
	set_schema(f->dir, 3);
	const struct store_options opts = STORE_OPTIONS_DEFAULT;
	struct store *s = NULL;
	char err[256] = "";
	assert_int_equal(store_open(f->dir, &opts, 1, &s, err, sizeof err), STORE_ERR_SCHEMA);
	assert_null(s);
	assert_non_null(strstr(err, "index schema 3 is newer than this beacond (2)"));
	struct store_reader *r;
	assert_int_equal(store_reader_open(f->dir, &r, err, sizeof err), STORE_ERR_SCHEMA);
	set_schema(f->dir, 1);
	f->s = open_store(f->dir, NULL, 1);
	tw_attach(&f->t, f->s, 0);
}

static uint32_t get_schema(const char *dir)
{
	char path[512];
	snprintf(path, sizeof path, "%s/index", dir);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	MDB_val k = {6, "schema"}, val;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, path, MDB_RDONLY, 0640), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	assert_int_equal(mdb_get(txn, meta, &k, &val), 0);
	assert_int_equal(val.mv_size, 4);
	const uint8_t *v = val.mv_data;
	uint32_t version = v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 24;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return version;
}

/* Schema 2 adds uploads with their body's SHA-256: an index of schema 1
 * takes schema 2 when a server opens it, so an older beacond refuses it
 * rather than misreading those uploads. A reader changes nothing. */
static void test_older_schema_upgraded(void **state)
{
	struct fixture *f = *state;
	close_store(f);
	set_schema(f->dir, 1);
	struct store_reader *r;
	char err[256] = "";
	assert_int_equal(store_reader_open(f->dir, &r, err, sizeof err), 0);
	store_reader_close(r);
	assert_int_equal(get_schema(f->dir), 1);
	f->s = open_store(f->dir, NULL, 1);
	tw_attach(&f->t, f->s, 0);
	assert_int_equal(get_schema(f->dir), 2);
}

static void test_reader_without_index(void **state)
{
	struct store_reader *r;
	char err[256];
	assert_int_equal(store_reader_open("/tmp/beacon-store-does-not-exist", &r, err, sizeof err),
			 STORE_ERR_NOTFOUND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_past_last_record_is_cut, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unindexed_segment_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flipped_byte_is_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_older_schema_upgraded, setup, teardown),
		cmocka_unit_test(test_reader_without_index),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
