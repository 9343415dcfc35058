/*
 * recover: what store_open does to the spool before any worker runs.
 *
 * LMDB is the truth. A segment's valid bytes end where its furthest indexed
 * record ends (segments database, `end`); everything past it was written by
 * uploads that never committed (crash, failure, abort) or is preallocation,
 * and is cut off with ftruncate. A segment with no indexed record is removed.
 * Old segments are never appended to again: each worker starts a new
 * sequence number after the highest one on disk, so a cut-off tail never
 * turns into the middle of a new record.
 *
 * recover_plan walks the same way and only counts (beacond -t).
 *
 * Each indexed record's header is read back and compared with the index
 * (magic, id, length, crc): cheap, and it reports a damaged or replaced
 * segment at start-up instead of at the first read. Bodies are not checked
 * here; store_reader_copy checks each body before serving it.
 */
#include "store-internal.h"

#include "beacon/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef void (*segment_file_fn)(struct store *s, MDB_txn *txn, unsigned worker, uint64_t seq,
				void *arg);

/* Calls fn for every DATA/spool/wN/SEQ.seg on disk. */
static int spool_for_each_file(struct store *s, MDB_txn *txn, segment_file_fn fn, void *arg)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s/spool", s->data_dir) >= (int)sizeof path)
		return STORE_ERR_INVAL;
	DIR *spool = opendir(path);
	if (!spool) {
		log_err("store: open %s: %s", path, strerror(errno));
		return store_error_from_errno(errno);
	}
	struct dirent *de;
	while ((de = readdir(spool))) {
		unsigned worker;
		if (!spool_worker_dir_parse(de->d_name, &worker))
			continue;
		char wpath[PATH_MAX];
		if (snprintf(wpath, sizeof wpath, "%s/%s", path, de->d_name) >= (int)sizeof wpath)
			continue;
		DIR *wd = opendir(wpath);
		if (!wd) {
			log_err("store: open %s: %s", wpath, strerror(errno));
			continue;
		}
		struct dirent *fe;
		while ((fe = readdir(wd))) {
			uint64_t seq;
			if (spool_segment_name_parse(fe->d_name, &seq))
				fn(s, txn, worker, seq, arg);
		}
		closedir(wd);
	}
	closedir(spool);
	return 0;
}

/* ---- cut garbage, remove unindexed segments ---- */

static void recover_segment_file(struct store *s, MDB_txn *txn, unsigned worker, uint64_t seq,
				 void *arg)
{
	struct recovery_report *rep = arg;
	char path[PATH_MAX];
	if (spool_segment_path(path, sizeof path, s->data_dir, worker, seq))
		return;
	if (worker < s->nworkers && seq >= s->dirs[worker].next_seq)
		s->dirs[worker].next_seq = seq + 1;
	struct segment_row row;
	int e = index_get_segment(&s->ix, txn, worker, seq, &row);
	if (e == STORE_ERR_NOTFOUND) {
		rep->removed_segments++;
		if (!rep->apply)
			return;
		log_info("store: removing %s: no indexed upload in it", path);
		if (unlink(path) < 0)
			log_err("store: unlink %s: %s", path, strerror(errno));
		return;
	}
	if (e) {
		log_err("store: %s: index row unreadable: %s", path, store_strerror(e));
		return;
	}
	struct stat st;
	if (stat(path, &st) < 0) {
		log_err("store: stat %s: %s", path, strerror(errno));
		return;
	}
	if ((uint64_t)st.st_size < row.end) {
		log_err("store: %s is %lld bytes but indexed records reach %" PRIu64
			": records are missing",
			path, (long long)st.st_size, row.end);
		rep->short_segments++;
		return;
	}
	if ((uint64_t)st.st_size == row.end)
		return;
	rep->cut_segments++;
	rep->cut_bytes += (uint64_t)st.st_size - row.end;
	if (!rep->apply)
		return;
	if (truncate(path, (off_t)row.end) < 0) {
		log_err("store: cut %s to %" PRIu64 " bytes: %s", path, row.end, strerror(errno));
		return;
	}
	s->recovered_truncated_bytes += (uint64_t)st.st_size - row.end;
}

/* ---- check each indexed record's header ---- */

struct open_segment {
	unsigned worker;
	uint64_t seq;
	int fd;
};

static int header_check_fd(struct store *s, struct open_segment *cache,
			   const struct upload_record *rec)
{
	if (cache->fd >= 0 && cache->worker == rec->worker && cache->seq == rec->segment)
		return cache->fd;
	if (cache->fd >= 0)
		close(cache->fd);
	char path[PATH_MAX];
	cache->fd = -1;
	cache->worker = rec->worker;
	cache->seq = rec->segment;
	if (spool_segment_path(path, sizeof path, s->data_dir, rec->worker, rec->segment))
		return -1;
	cache->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (cache->fd < 0)
		log_err("store: upload %" PRIu64 ": open %s: %s", rec->id, path, strerror(errno));
	return cache->fd;
}

static bool header_matches(int fd, const struct upload_record *rec)
{
	uint8_t b[RECORD_HEADER_BYTES];
	struct record_header h;
	if (rec->offset < RECORD_HEADER_BYTES)
		return false;
	ssize_t n = pread(fd, b, sizeof b, (off_t)(rec->offset - RECORD_HEADER_BYTES));
	if (n != (ssize_t)sizeof b || record_header_decode(b, &h))
		return false;
	return h.id == rec->id && h.length == rec->length && h.crc == rec->crc32;
}

static int recover_check_headers(struct store *s, MDB_txn *txn)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, s->ix.uploads, &cur);
	if (rc)
		return index_error(rc);
	struct open_segment cache = {.fd = -1};
	MDB_val k, v;
	MDB_cursor_op op = MDB_FIRST;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		struct upload_record rec;
		if (k.mv_size != 8 || upload_decode(be64_get(k.mv_data), &v, &rec)) {
			log_err("store: index: an uploads entry cannot be decoded");
			s->recovered_bad_headers++;
			continue;
		}
		int fd = header_check_fd(s, &cache, &rec);
		if (fd < 0 || !header_matches(fd, &rec)) {
			log_err("store: upload %" PRIu64 ": record header in w%u/%016" PRIx64
				".seg at %" PRIu64
				" does not match the index; it will not be served",
				rec.id, rec.worker, rec.segment, rec.offset - RECORD_HEADER_BYTES);
			s->recovered_bad_headers++;
		}
	}
	if (cache.fd >= 0)
		close(cache.fd);
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : index_error(rc);
}

/* next_id: past both the last indexed id and the recorded high mark, so ids
 * keep increasing across restarts and retention. */
static int recover_next_id(struct store *s, MDB_txn *txn)
{
	uint64_t next = 0;
	int e = index_get_next_id(&s->ix, txn, &next);
	if (e)
		return e;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, s->ix.uploads, &cur);
	if (rc)
		return index_error(rc);
	MDB_val k, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8 && be64_get(k.mv_data) + 1 > next)
		next = be64_get(k.mv_data) + 1;
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return index_error(rc);
	atomic_store(&s->next_id, next ? next : 1);
	return 0;
}

int recover_spool(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->ix.env, NULL, MDB_RDONLY, &txn);
	if (rc) {
		snprintf(err, errlen, "index: begin: %s", mdb_strerror(rc));
		return index_error(rc);
	}
	struct recovery_report rep = {.apply = true};
	int e = spool_for_each_file(s, txn, recover_segment_file, &rep);
	if (!e)
		e = recover_check_headers(s, txn);
	if (!e)
		e = recover_next_id(s, txn);
	mdb_txn_abort(txn);
	if (e) {
		snprintf(err, errlen, "%s/spool: recovery failed: %s", s->data_dir,
			 store_strerror(e));
		return e;
	}
	if (s->recovered_bad_headers)
		log_err("store: %" PRIu64 " indexed uploads have a damaged record header",
			s->recovered_bad_headers);
	if (s->recovered_truncated_bytes)
		log_info("store: cut %" PRIu64 " spool bytes past the last indexed records",
			 s->recovered_truncated_bytes);
	return 0;
}

int recover_plan(struct store *s, struct recovery_report *out)
{
	memset(out, 0, sizeof *out);
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->ix.env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return index_error(rc);
	MDB_stat st;
	rc = mdb_stat(txn, s->ix.uploads, &st);
	if (rc) {
		mdb_txn_abort(txn);
		return index_error(rc);
	}
	out->uploads = st.ms_entries;
	int e = spool_for_each_file(s, txn, recover_segment_file, out);
	if (!e)
		e = recover_check_headers(s, txn);
	out->bad_headers = s->recovered_bad_headers;
	mdb_txn_abort(txn);
	return e;
}

/* ---- the periodic sweep ---- */

static void sweep_segment_file(struct store *s, MDB_txn *txn, unsigned worker, uint64_t seq,
			       void *arg)
{
	unsigned *removed = arg;
	if (worker < s->nworkers && spool_dir_is_open(&s->dirs[worker], seq))
		return;
	struct segment_row row;
	if (index_get_segment(&s->ix, txn, worker, seq, &row) != STORE_ERR_NOTFOUND)
		return;
	char path[PATH_MAX];
	if (spool_segment_path(path, sizeof path, s->data_dir, worker, seq))
		return;
	if (unlink(path) < 0 && errno != ENOENT) {
		log_warn("store: unlink %s: %s", path, strerror(errno));
		return;
	}
	(*removed)++;
}

int spool_sweep_orphans(struct store *s)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->ix.env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return index_error(rc);
	unsigned removed = 0;
	int e = spool_for_each_file(s, txn, sweep_segment_file, &removed);
	mdb_txn_abort(txn);
	if (removed)
		log_info("store: removed %u segments with no indexed upload", removed);
	return e;
}
