/*
 * watermark: what each drain sink has not acknowledged yet.
 *
 *   drain:<sink>          id (u64 BE) -> length (u64 BE) received ms (u64 BE)
 *   meta "drain_bytes:<sink>"          -> u64 BE, the sum of those lengths
 *
 * The writer adds each upload it commits to every sink's set in the same
 * transaction (drain_sets_add), so an upload is never committed without
 * being pending. The drain thread removes what its sink acknowledged in a
 * short transaction of its own (LMDB serialises it with the group commits)
 * under map_lock shared: the writer resizes the map only with the lock held
 * exclusively and no transaction of its own open, so neither waits on the
 * other for long. Retention (writer.c) stops at the oldest upload any set
 * holds.
 */
#include "store-internal.h"

#include "beacon/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PENDING_VALUE_BYTES 16

static int sink_index(const struct store *s, const char *sink)
{
	for (unsigned i = 0; sink && i < s->opts.n_drain_sinks; i++)
		if (!strcmp(s->opts.drain_sinks[i], sink))
			return (int)i;
	return -1;
}

static void bytes_key(char *buf, size_t len, const char *sink)
{
	snprintf(buf, len, "drain_bytes:%s", sink);
}

static uint64_t bytes_get(struct store *s, MDB_txn *txn, const char *sink)
{
	char key[64];
	bytes_key(key, sizeof key, sink);
	MDB_val k = {strlen(key), key}, v;
	if (mdb_get(txn, s->ix.meta, &k, &v) || v.mv_size != 8)
		return 0;
	return be64_get(v.mv_data);
}

static int bytes_put(struct store *s, MDB_txn *txn, const char *sink, uint64_t bytes)
{
	char key[64];
	uint8_t b[8];
	bytes_key(key, sizeof key, sink);
	be64_put(b, bytes);
	MDB_val k = {strlen(key), key}, v = {sizeof b, b};
	return mdb_put(txn, s->ix.meta, &k, &v, 0);
}

/* Puts rec into one sink's set unless it is there; *added its bytes. */
static int pending_put(MDB_txn *txn, MDB_dbi dbi, const struct upload_record *rec, uint64_t *added)
{
	uint8_t kb[8], vb[PENDING_VALUE_BYTES];
	be64_put(kb, rec->id);
	be64_put(vb, rec->length);
	be64_put(vb + 8, rec->received_unix_ms);
	MDB_val k = {sizeof kb, kb}, v = {sizeof vb, vb};
	int rc = mdb_put(txn, dbi, &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST)
		return 0;
	if (!rc)
		*added += rec->length;
	return rc;
}

/* Every upload from from_id on becomes pending for sink i. */
static int pending_fill(struct store *s, MDB_txn *txn, unsigned i, uint64_t from_id,
			uint64_t *count)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, s->ix.uploads, &cur);
	if (rc)
		return rc;
	uint8_t kb[8];
	be64_put(kb, from_id);
	MDB_val k = {sizeof kb, kb}, v;
	uint64_t added = 0, n = 0;
	MDB_cursor_op op = MDB_SET_RANGE;
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		op = MDB_NEXT;
		struct upload_record rec;
		if (k.mv_size != 8 || upload_decode(be64_get(k.mv_data), &v, &rec))
			continue;
		uint64_t before = added;
		if ((rc = pending_put(txn, s->drain_dbi[i], &rec, &added)))
			break;
		n += added != before || !rec.length;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	*count = n;
	const char *sink = s->opts.drain_sinks[i];
	return bytes_put(s, txn, sink, bytes_get(s, txn, sink) + added);
}

int drain_sets_open(struct store *s, char *err, size_t errlen)
{
	if (!s->opts.n_drain_sinks)
		return 0;
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->ix.env, NULL, 0, &txn);
	if (rc) {
		snprintf(err, errlen, "index: drain sets: %s", mdb_strerror(rc));
		return index_error(rc);
	}
	for (unsigned i = 0; !rc && i < s->opts.n_drain_sinks; i++) {
		char name[32];
		snprintf(name, sizeof name, "drain:%s", s->opts.drain_sinks[i]);
		rc = mdb_dbi_open(txn, name, 0, &s->drain_dbi[i]);
		if (rc != MDB_NOTFOUND)
			continue;
		/* A sink new to this index: everything stored is still to go. */
		uint64_t n = 0;
		rc = mdb_dbi_open(txn, name, MDB_CREATE, &s->drain_dbi[i]);
		if (!rc)
			rc = pending_fill(s, txn, i, 0, &n);
		if (!rc)
			log_info("store: drain %s: new sink, %" PRIu64 " stored uploads to drain",
				 s->opts.drain_sinks[i], n);
	}
	if (!rc)
		rc = mdb_txn_commit(txn); /* frees txn, whatever it returns */
	else
		mdb_txn_abort(txn);
	if (!rc)
		return 0;
	snprintf(err, errlen, "index: drain sets: %s", mdb_strerror(rc));
	return index_error(rc);
}

int drain_sets_add(struct store *s, MDB_txn *txn, const struct upload_record *rec)
{
	for (unsigned i = 0; i < s->opts.n_drain_sinks; i++) {
		uint64_t added = 0;
		int rc = pending_put(txn, s->drain_dbi[i], rec, &added);
		const char *sink = s->opts.drain_sinks[i];
		if (!rc && added)
			rc = bytes_put(s, txn, sink, bytes_get(s, txn, sink) + added);
		if (rc)
			return rc;
	}
	return 0;
}

bool drain_sets_hold(struct store *s, MDB_txn *txn, uint64_t id)
{
	uint8_t kb[8];
	be64_put(kb, id);
	for (unsigned i = 0; i < s->opts.n_drain_sinks; i++) {
		MDB_val k = {sizeof kb, kb}, v;
		int rc = mdb_get(txn, s->drain_dbi[i], &k, &v);
		/* Unreadable is held: retention never guesses in favour of deleting. */
		if (rc != MDB_NOTFOUND)
			return true;
	}
	return false;
}

/* ---- the drain's side ---- */

static int txn_begin(struct store *s, unsigned flags, MDB_txn **txn)
{
	pthread_rwlock_rdlock(&s->map_lock);
	int rc = mdb_txn_begin(s->ix.env, NULL, flags, txn);
	if (rc)
		pthread_rwlock_unlock(&s->map_lock);
	return rc;
}

static void txn_end(struct store *s, MDB_txn *txn, bool commit, int *rc)
{
	if (commit && !*rc)
		*rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	pthread_rwlock_unlock(&s->map_lock);
}

/* Removes ids from sink i's set in txn; *removed counts them. */
static int pending_remove(struct store *s, MDB_txn *txn, unsigned i, const uint64_t *ids, size_t n,
			  size_t *removed)
{
	uint64_t gone = 0;
	*removed = 0;
	for (size_t j = 0; j < n; j++) {
		uint8_t kb[8];
		be64_put(kb, ids[j]);
		MDB_val k = {sizeof kb, kb}, v;
		int rc = mdb_get(txn, s->drain_dbi[i], &k, &v);
		if (rc == MDB_NOTFOUND)
			continue;
		if (!rc && v.mv_size == PENDING_VALUE_BYTES)
			gone += be64_get(v.mv_data);
		if (!rc)
			rc = mdb_del(txn, s->drain_dbi[i], &k, NULL);
		if (rc)
			return rc;
		(*removed)++;
	}
	const char *sink = s->opts.drain_sinks[i];
	uint64_t bytes = bytes_get(s, txn, sink);
	return *removed ? bytes_put(s, txn, sink, bytes > gone ? bytes - gone : 0) : 0;
}

int store_drain_done(struct store *s, const char *sink, const uint64_t *ids, size_t n)
{
	int i = sink_index(s, sink);
	if (i < 0 || (n && !ids))
		return STORE_ERR_INVAL;
	if (!n)
		return 0;
	MDB_txn *txn;
	int rc = txn_begin(s, 0, &txn);
	if (rc)
		return index_error(rc);
	size_t removed = 0;
	rc = pending_remove(s, txn, (unsigned)i, ids, n, &removed);
	txn_end(s, txn, true, &rc);
	if (rc) {
		log_err("store: drain %s: record %zu acknowledged uploads: %s", sink, n,
			mdb_strerror(rc));
		return index_error(rc);
	}
	if (removed && (s->opts.retain_seconds || s->opts.retain_bytes)) {
		/* What was only kept for the sink may go now. */
		atomic_store(&s->retention_wanted, true);
		uint64_t one = 1;
		if (write(s->event_fd, &one, sizeof one) < 0)
			log_warn("store: drain %s: wake the writer: %s", sink, strerror(errno));
	}
	return 0;
}

int store_drain_replay(struct store *s, const char *sink, uint64_t from_id, uint64_t *count)
{
	int i = sink_index(s, sink);
	if (i < 0 || !count)
		return STORE_ERR_INVAL;
	MDB_txn *txn;
	int rc = txn_begin(s, 0, &txn);
	if (rc)
		return index_error(rc);
	rc = pending_fill(s, txn, (unsigned)i, from_id, count);
	txn_end(s, txn, true, &rc);
	if (rc)
		log_err("store: drain %s: replay from %" PRIu64 ": %s", sink, from_id,
			mdb_strerror(rc));
	return rc ? index_error(rc) : 0;
}

/* Up to max pending ids above after_id with their uploads, into out[*n];
 * ids whose upload is gone go into orphans (at most max_orphans). */
static int batch_in_txn(struct store *s, MDB_txn *txn, unsigned i, uint64_t after_id,
			store_drain_skip_fn skip, void *arg, struct upload_record *out, size_t max,
			size_t *n, uint64_t *orphans, size_t max_orphans, size_t *n_orphans)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, s->drain_dbi[i], &cur);
	if (rc)
		return index_error(rc);
	uint8_t kb[8];
	be64_put(kb, after_id + 1);
	MDB_val k = {sizeof kb, kb}, v;
	int e = 0;
	MDB_cursor_op op = MDB_SET_RANGE;
	while (*n < max && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0 && k.mv_size == 8) {
		op = MDB_NEXT;
		uint64_t id = be64_get(k.mv_data);
		if (skip && skip(id, arg))
			continue;
		e = index_get_upload(&s->ix, txn, id, &out[*n]);
		if (!e) {
			(*n)++;
			continue;
		}
		if (e != STORE_ERR_NOTFOUND)
			break;
		e = 0;
		if (*n_orphans < max_orphans)
			orphans[(*n_orphans)++] = id;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return index_error(rc);
	if (*n)
		return 0; /* a read error, if any, comes again on the next call */
	return e ? e : STORE_ERR_NOTFOUND;
}

int store_drain_next_batch(struct store *s, const char *sink, uint64_t after_id,
			   store_drain_skip_fn skip, void *arg, struct upload_record *out,
			   size_t max, size_t *n)
{
	int i = sink_index(s, sink);
	if (i < 0 || !out || !max || !n)
		return STORE_ERR_INVAL;
	*n = 0;
	uint64_t orphans[64];
	size_t n_orphans = 0;
	MDB_txn *txn;
	int rc = txn_begin(s, MDB_RDONLY, &txn);
	if (rc)
		return index_error(rc);
	int e = batch_in_txn(s, txn, (unsigned)i, after_id, skip, arg, out, max, n, orphans, 64,
			     &n_orphans);
	txn_end(s, txn, false, &rc);
	if (n_orphans) {
		log_warn("store: drain %s: %zu pending uploads were already gone", sink, n_orphans);
		store_drain_done(s, sink, orphans, n_orphans);
	}
	return e;
}

int store_drain_next(struct store *s, const char *sink, uint64_t after_id, store_drain_skip_fn skip,
		     void *arg, struct upload_record *out)
{
	size_t n;
	return store_drain_next_batch(s, sink, after_id, skip, arg, out, 1, &n);
}

int store_drain_lag(struct store *s, const char *sink, struct store_drain_lag *out)
{
	int i = sink_index(s, sink);
	if (i < 0 || !out)
		return STORE_ERR_INVAL;
	memset(out, 0, sizeof *out);
	MDB_txn *txn;
	int rc = txn_begin(s, MDB_RDONLY, &txn);
	if (rc)
		return index_error(rc);
	MDB_stat st;
	rc = mdb_stat(txn, s->drain_dbi[i], &st);
	MDB_cursor *cur = NULL;
	if (!rc)
		rc = mdb_cursor_open(txn, s->drain_dbi[i], &cur);
	MDB_val k, v;
	if (!rc && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0 && k.mv_size == 8 &&
	    v.mv_size == PENDING_VALUE_BYTES) {
		out->first_id = be64_get(k.mv_data);
		out->first_unix_ms = be64_get((uint8_t *)v.mv_data + 8);
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
	if (!rc) {
		out->uploads = st.ms_entries;
		out->bytes = bytes_get(s, txn, sink);
	}
	if (cur)
		mdb_cursor_close(cur);
	txn_end(s, txn, false, &rc);
	out->drained_before = out->first_id ? out->first_id : atomic_load(&s->next_id);
	return rc ? index_error(rc) : 0;
}

int store_segment_open(struct store *s, const struct upload_record *rec, int *fd)
{
	char path[PATH_MAX];
	if (!rec || !fd ||
	    spool_segment_path(path, sizeof path, s->data_dir, rec->worker, rec->segment))
		return STORE_ERR_INVAL;
	int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0) {
		log_err("store: upload %" PRIu64 ": open %s: %s", rec->id, path, strerror(errno));
		return errno == ENOENT ? STORE_ERR_NOTFOUND : store_error_from_errno(errno);
	}
	*fd = f;
	return 0;
}

/* Header and body in one read, when they fit buf: the common small upload
 * costs one pread. 1 when they do not fit (check them the long way). */
static int verify_in_one_read(const struct upload_record *rec, int fd, const char *path,
			      uint8_t *buf, size_t buflen, const uint8_t **body)
{
	if (rec->offset < RECORD_HEADER_BYTES || rec->length > buflen - RECORD_HEADER_BYTES)
		return 1;
	size_t want = RECORD_HEADER_BYTES + (size_t)rec->length, got = 0;
	while (got < want) {
		ssize_t r = pread(fd, buf + got, want - got,
				  (off_t)(rec->offset - RECORD_HEADER_BYTES + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			log_err("store: read %s: %s", path, strerror(errno));
			return store_error_from_errno(-errno);
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	struct record_header h;
	if (got < RECORD_HEADER_BYTES || record_header_decode(buf, &h) || h.id != rec->id ||
	    h.length != rec->length || h.crc != rec->crc32) {
		log_err("store: upload %" PRIu64 ": record header in %s does not match the index",
			rec->id, path);
		return STORE_ERR_CORRUPT;
	}
	if (got < want) {
		log_err("store: upload %" PRIu64 ": %s ends inside its body", rec->id, path);
		return STORE_ERR_CORRUPT;
	}
	if (record_crc32(0, buf + RECORD_HEADER_BYTES, (size_t)rec->length) != rec->crc32) {
		log_err("store: upload %" PRIu64 ": body in %s fails its checksum", rec->id, path);
		return STORE_ERR_CORRUPT;
	}
	*body = buf + RECORD_HEADER_BYTES;
	return 0;
}

int store_body_verify(struct store *s, const struct upload_record *rec, int fd, uint8_t *buf,
		      size_t buflen, const uint8_t **body)
{
	char path[PATH_MAX];
	if (body)
		*body = NULL;
	if (!rec || fd < 0 || !buf || !body || buflen < STORE_VERIFY_BUF_BYTES ||
	    spool_segment_path(path, sizeof path, s->data_dir, rec->worker, rec->segment))
		return STORE_ERR_INVAL;
	int e = verify_in_one_read(rec, fd, path, buf, buflen, body);
	if (e != 1)
		return e;
	e = record_check_header(fd, rec, path);
	uint32_t crc = 0;
	if (!e)
		e = record_pass(fd, rec, path, buf, -1, &crc);
	if (!e && crc != rec->crc32) {
		log_err("store: upload %" PRIu64 ": body in %s fails its checksum", rec->id, path);
		e = STORE_ERR_CORRUPT;
	}
	return e;
}

int store_body_open_verified(struct store *s, const struct upload_record *rec, int *fd)
{
	int f = -1;
	int e = store_segment_open(s, rec, &f);
	if (e)
		return e;
	uint8_t *buf = malloc(STORE_VERIFY_BUF_BYTES);
	const uint8_t *body;
	e = buf ? store_body_verify(s, rec, f, buf, STORE_VERIFY_BUF_BYTES, &body) : STORE_ERR_IO;
	free(buf);
	if (e) {
		close(f);
		return e;
	}
	*fd = f;
	return 0;
}
