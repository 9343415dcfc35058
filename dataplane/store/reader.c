/*
 * reader: the read side. LMDB read transactions only, so it runs beside a
 * live server (another process: beaconctl) without blocking its writer.
 * Inside the server's own process a reader shares the open store's env,
 * because LMDB must not open one environment twice in a process.
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

#define COPY_CHUNK (1024u * 1024u)

struct store_reader {
	struct index ix;
	struct store *shared; /* the in-process store whose env this borrows */
	char data_dir[PATH_MAX];
	uint64_t entries_read; /* by store_reader_query, for the tests */
};

int store_reader_open(const char *data_dir, struct store_reader **out, char *err, size_t errlen)
{
	if (!data_dir || !out) {
		snprintf(err, errlen, "store: no data directory");
		return STORE_ERR_INVAL;
	}
	struct store_reader *r = calloc(1, sizeof *r);
	if (!r) {
		snprintf(err, errlen, "store: out of memory");
		return STORE_ERR_IO;
	}
	if (!realpath(data_dir, r->data_dir)) {
		snprintf(err, errlen, "%s: %s", data_dir, strerror(errno));
		free(r);
		return errno == ENOENT ? STORE_ERR_NOTFOUND : STORE_ERR_IO;
	}
	r->shared = store_registry_borrow(r->data_dir);
	if (r->shared) {
		r->ix = r->shared->ix;
	} else {
		int e = index_open(&r->ix, r->data_dir, 0, INDEX_READ, err, errlen);
		if (e) {
			free(r);
			return e;
		}
	}
	*out = r;
	return 0;
}

void store_reader_close(struct store_reader *r)
{
	if (!r)
		return;
	if (r->shared)
		store_registry_return(r->shared);
	else
		index_close(&r->ix);
	free(r);
}

static int reader_txn_begin(struct store_reader *r, MDB_txn **txn)
{
	if (r->shared)
		pthread_rwlock_rdlock(&r->shared->map_lock);
	int rc = mdb_txn_begin(r->ix.env, NULL, MDB_RDONLY, txn);
	if (rc == MDB_MAP_RESIZED && !r->shared) {
		/* The server grew the map: adopt its size. */
		rc = mdb_env_set_mapsize(r->ix.env, 0);
		if (!rc)
			rc = mdb_txn_begin(r->ix.env, NULL, MDB_RDONLY, txn);
	}
	if (rc) {
		if (r->shared)
			pthread_rwlock_unlock(&r->shared->map_lock);
		log_err("store: %s/index: read txn: %s", r->data_dir, mdb_strerror(rc));
		return index_error(rc);
	}
	return 0;
}

static void reader_txn_end(struct store_reader *r, MDB_txn *txn)
{
	mdb_txn_abort(txn);
	if (r->shared)
		pthread_rwlock_unlock(&r->shared->map_lock);
}

/* ---- uploads ---- */

static int visit_device_uploads(struct store_reader *r, MDB_txn *txn, MDB_cursor *cur,
				const char *device, uint64_t since_ms, upload_visit_fn fn,
				void *arg)
{
	size_t n = strnlen(device, STORE_DEVICE_MAX - 1);
	uint8_t kb[STORE_DEVICE_MAX + 9] = {0};
	memcpy(kb, device, n);
	MDB_val k = {n + 1, kb}, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != n + 9 || memcmp(k.mv_data, kb, n + 1) != 0)
			break;
		struct upload_record rec;
		int e = index_get_upload(&r->ix, txn, be64_get((uint8_t *)k.mv_data + n + 1), &rec);
		if (e == STORE_ERR_NOTFOUND)
			continue;
		if (e)
			return e;
		if (rec.received_unix_ms < since_ms)
			continue;
		if (fn(&rec, arg))
			return 0;
	}
	return rc == MDB_NOTFOUND ? 0 : index_error(rc);
}

static int visit_by_time(struct store_reader *r, MDB_txn *txn, MDB_cursor *cur, uint64_t since_ms,
			 upload_visit_fn fn, void *arg)
{
	uint8_t kb[16] = {0};
	be64_put(kb, since_ms);
	MDB_val k = {sizeof kb, kb}, v;
	int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 16)
			continue;
		struct upload_record rec;
		int e = index_get_upload(&r->ix, txn, be64_get((uint8_t *)k.mv_data + 8), &rec);
		if (e == STORE_ERR_NOTFOUND)
			continue;
		if (e)
			return e;
		if (fn(&rec, arg))
			return 0;
	}
	return rc == MDB_NOTFOUND ? 0 : index_error(rc);
}

int store_reader_uploads(struct store_reader *r, const char *device, uint64_t since_unix_ms,
			 upload_visit_fn fn, void *arg)
{
	if (!r || !fn)
		return STORE_ERR_INVAL;
	MDB_txn *txn;
	int e = reader_txn_begin(r, &txn);
	if (e)
		return e;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, device ? r->ix.device_uploads : r->ix.by_time, &cur);
	if (rc) {
		reader_txn_end(r, txn);
		return index_error(rc);
	}
	if (device)
		e = visit_device_uploads(r, txn, cur, device, since_unix_ms, fn, arg);
	else
		e = visit_by_time(r, txn, cur, since_unix_ms, fn, arg);
	mdb_cursor_close(cur);
	reader_txn_end(r, txn);
	return e;
}

int store_reader_upload(struct store_reader *r, uint64_t id, struct upload_record *out)
{
	if (!r || !out)
		return STORE_ERR_INVAL;
	MDB_txn *txn;
	int e = reader_txn_begin(r, &txn);
	if (e)
		return e;
	e = index_get_upload(&r->ix, txn, id, out);
	reader_txn_end(r, txn);
	return e;
}

/* ---- pages: range scans from a cursor ---- */

static int query_step(struct store_reader *r, MDB_cursor *cur, MDB_val *k, MDB_val *v,
		      MDB_cursor_op op)
{
	r->entries_read++;
	return mdb_cursor_get(cur, k, v, op);
}

static int query_lookup(struct store_reader *r, MDB_txn *txn, uint64_t id,
			struct upload_record *rec)
{
	r->entries_read++;
	return index_get_upload(&r->ix, txn, id, rec);
}

static bool query_match(const struct upload_query *q, const struct upload_record *rec)
{
	if (q->since_unix_ms && rec->received_unix_ms < q->since_unix_ms)
		return false;
	if (q->until_unix_ms && rec->received_unix_ms > q->until_unix_ms)
		return false;
	return !q->category || strcmp(rec->meta.category, q->category) == 0;
}

/* One index entry's upload offered to the visitor: 0 to go on (also when
 * retention removed it since the entry was read), 1 when the visitor has
 * enough, or a negative store_error. */
static int query_offer(struct store_reader *r, MDB_txn *txn, const struct upload_query *q,
		       uint64_t id, upload_visit_fn fn, void *arg)
{
	struct upload_record rec;
	int e = query_lookup(r, txn, id, &rec);
	if (e == STORE_ERR_NOTFOUND)
		return 0;
	if (e)
		return e;
	return query_match(q, &rec) && fn(&rec, arg) ? 1 : 0;
}

/* device NUL id keys, from the first id after the cursor. Device names hold
 * no NUL, so one device's keys are contiguous. */
static int query_device(struct store_reader *r, MDB_txn *txn, MDB_cursor *cur,
			const struct upload_query *q, upload_visit_fn fn, void *arg)
{
	if (q->has_after && q->after_id == UINT64_MAX)
		return 0;
	size_t n = strnlen(q->device, STORE_DEVICE_MAX - 1);
	uint8_t kb[STORE_DEVICE_MAX + 9] = {0};
	memcpy(kb, q->device, n);
	be64_put(kb + n + 1, q->has_after ? q->after_id + 1 : 0);
	MDB_val k = {n + 9, kb}, v;
	int rc = query_step(r, cur, &k, &v, MDB_SET_RANGE);
	for (; rc == 0; rc = query_step(r, cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != n + 9 || memcmp(k.mv_data, kb, n + 1) != 0)
			break;
		int e = query_offer(r, txn, q, be64_get((uint8_t *)k.mv_data + n + 1), fn, arg);
		if (e)
			return e < 0 ? e : 0;
	}
	return rc == MDB_NOTFOUND ? 0 : index_error(rc);
}

/* Where a by_time page starts: (ms, id) of the cursor, or since. *skip_id
 * is the cursor's own entry, which the page leaves out. */
static int query_time_start(struct store_reader *r, MDB_txn *txn, struct upload_query *q,
			    uint64_t *from_ms, uint64_t *from_id, bool *skip)
{
	*from_ms = q->since_unix_ms;
	*from_id = 0;
	*skip = false;
	if (!q->has_after)
		return 0;
	struct upload_record a;
	int e = query_lookup(r, txn, q->after_id, &a);
	if (e == STORE_ERR_NOTFOUND) {
		uint64_t next_id;
		if ((e = index_get_next_id(&r->ix, txn, &next_id)))
			return e;
		if (q->after_id >= next_id)
			return STORE_ERR_NOTFOUND;
		q->after_gone = true;
		return 0;
	}
	if (e)
		return e;
	if (a.received_unix_ms >= *from_ms) {
		*from_ms = a.received_unix_ms;
		*from_id = a.id;
		*skip = true;
	}
	return 0;
}

static int query_by_time(struct store_reader *r, MDB_txn *txn, MDB_cursor *cur,
			 struct upload_query *q, upload_visit_fn fn, void *arg)
{
	uint64_t from_ms, from_id;
	bool skip;
	int e = query_time_start(r, txn, q, &from_ms, &from_id, &skip);
	if (e)
		return e;
	uint8_t kb[16];
	be64_put(kb, from_ms);
	be64_put(kb + 8, from_id);
	MDB_val k = {sizeof kb, kb}, v;
	int rc = query_step(r, cur, &k, &v, MDB_SET_RANGE);
	for (; rc == 0; rc = query_step(r, cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 16)
			continue;
		uint64_t ms = be64_get(k.mv_data), id = be64_get((uint8_t *)k.mv_data + 8);
		if (skip && ms == from_ms && id == from_id)
			continue;
		if (q->until_unix_ms && ms > q->until_unix_ms)
			break;
		e = query_offer(r, txn, q, id, fn, arg);
		if (e)
			return e < 0 ? e : 0;
	}
	return rc == MDB_NOTFOUND ? 0 : index_error(rc);
}

int store_reader_query(struct store_reader *r, struct upload_query *q, upload_visit_fn fn,
		       void *arg)
{
	if (!r || !q || !fn)
		return STORE_ERR_INVAL;
	q->after_gone = false;
	MDB_txn *txn;
	int e = reader_txn_begin(r, &txn);
	if (e)
		return e;
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, q->device ? r->ix.device_uploads : r->ix.by_time, &cur);
	if (rc) {
		reader_txn_end(r, txn);
		return index_error(rc);
	}
	if (q->device)
		e = query_device(r, txn, cur, q, fn, arg);
	else
		e = query_by_time(r, txn, cur, q, fn, arg);
	mdb_cursor_close(cur);
	reader_txn_end(r, txn);
	return e;
}

uint64_t store_reader_entries_read(const struct store_reader *r)
{
	return r ? r->entries_read : 0;
}

static int segments_bytes(MDB_txn *txn, MDB_dbi dbi, uint64_t *bytes)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		return index_error(rc);
	MDB_val k, v;
	int e = 0;
	*bytes = 0;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !e;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct segment_row row;
		if (!(e = segment_row_decode(&v, &row)))
			*bytes += row.bytes;
	}
	mdb_cursor_close(cur);
	if (!e && rc != MDB_NOTFOUND)
		e = index_error(rc);
	return e;
}

int store_reader_totals(struct store_reader *r, uint64_t *uploads, uint64_t *bytes)
{
	if (!r || !uploads || !bytes)
		return STORE_ERR_INVAL;
	MDB_txn *txn;
	int e = reader_txn_begin(r, &txn);
	if (e)
		return e;
	MDB_stat st;
	int rc = mdb_stat(txn, r->ix.uploads, &st);
	if (rc)
		e = index_error(rc);
	else
		*uploads = st.ms_entries;
	if (!e)
		e = segments_bytes(txn, r->ix.segments, bytes);
	reader_txn_end(r, txn);
	return e;
}

/* ---- bytes ---- */

static int read_exact(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA; /* the file ends before the record */
		done += (size_t)n;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

int record_check_header(int fd, const struct upload_record *rec, const char *path)
{
	uint8_t b[RECORD_HEADER_BYTES];
	struct record_header h;
	if (rec->offset < RECORD_HEADER_BYTES)
		return STORE_ERR_CORRUPT;
	int rc = read_exact(fd, b, sizeof b, rec->offset - RECORD_HEADER_BYTES);
	if (rc == -ENODATA || (!rc && record_header_decode(b, &h)) ||
	    (!rc && (h.id != rec->id || h.length != rec->length || h.crc != rec->crc32))) {
		log_err("store: upload %" PRIu64 ": record header in %s does not match the index",
			rec->id, path);
		return STORE_ERR_CORRUPT;
	}
	if (rc) {
		log_err("store: read %s: %s", path, strerror(-rc));
		return store_error_from_errno(rc);
	}
	return 0;
}

/* Reads the body through, or writes it to out_fd when out_fd >= 0. */
int record_pass(int fd, const struct upload_record *rec, const char *path, uint8_t *buf, int out_fd,
		uint32_t *crc)
{
	*crc = 0;
	for (uint64_t done = 0; done < rec->length;) {
		size_t n =
			rec->length - done < COPY_CHUNK ? (size_t)(rec->length - done) : COPY_CHUNK;
		int rc = read_exact(fd, buf, n, rec->offset + done);
		if (rc == -ENODATA) {
			log_err("store: upload %" PRIu64 ": %s ends inside its body", rec->id,
				path);
			return STORE_ERR_CORRUPT;
		}
		if (rc) {
			log_err("store: read %s: %s", path, strerror(-rc));
			return store_error_from_errno(rc);
		}
		*crc = record_crc32(*crc, buf, n);
		if (out_fd >= 0 && (rc = write_all(out_fd, buf, n)) < 0)
			return store_error_from_errno(rc);
		done += n;
	}
	return 0;
}

/* The whole body is checked before the first byte goes out: a reader never
 * gets a prefix of a damaged record. */
static int record_copy(int fd, const struct upload_record *rec, const char *path, int out_fd)
{
	int e = record_check_header(fd, rec, path);
	if (e)
		return e;
	uint8_t *buf = malloc(COPY_CHUNK);
	if (!buf)
		return STORE_ERR_IO;
	uint32_t crc;
	e = record_pass(fd, rec, path, buf, -1, &crc);
	if (!e && crc != rec->crc32) {
		log_err("store: upload %" PRIu64 ": body in %s fails its checksum", rec->id, path);
		e = STORE_ERR_CORRUPT;
	}
	if (!e)
		e = record_pass(fd, rec, path, buf, out_fd, &crc);
	free(buf);
	return e;
}

int store_reader_copy(struct store_reader *r, uint64_t id, int out_fd)
{
	if (!r || out_fd < 0)
		return STORE_ERR_INVAL;
	struct upload_record rec;
	int e = store_reader_upload(r, id, &rec);
	if (e)
		return e;
	char path[PATH_MAX];
	if (spool_segment_path(path, sizeof path, r->data_dir, rec.worker, rec.segment))
		return STORE_ERR_INVAL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		/* Retention may have taken it since the lookup. */
		if (err == ENOENT && store_reader_upload(r, id, &rec) == STORE_ERR_NOTFOUND)
			return STORE_ERR_NOTFOUND;
		log_err("store: upload %" PRIu64 ": open %s: %s", id, path, strerror(err));
		return err == ENOENT ? STORE_ERR_CORRUPT : store_error_from_errno(err);
	}
	e = record_copy(fd, &rec, path, out_fd);
	close(fd);
	return e;
}

/* ---- devices ---- */

int store_reader_devices_after(struct store_reader *r, const char *after, device_visit_fn fn,
			       void *arg)
{
	if (!r || !fn)
		return STORE_ERR_INVAL;
	MDB_txn *txn;
	int e = reader_txn_begin(r, &txn);
	if (e)
		return e;
	MDB_cursor *cur = NULL;
	int rc = mdb_cursor_open(txn, r->ix.devices, &cur);
	MDB_val k = {0, NULL}, v;
	MDB_cursor_op op = MDB_FIRST;
	if (after && *after) {
		k = (MDB_val){strnlen(after, STORE_DEVICE_MAX - 1), (void *)after};
		op = MDB_SET_RANGE;
	}
	while (!rc && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		bool cursor_itself = op == MDB_SET_RANGE && k.mv_size == strlen(after) &&
				     !memcmp(k.mv_data, after, k.mv_size);
		op = MDB_NEXT;
		if (cursor_itself)
			continue;
		struct device_record d;
		if ((e = device_decode(&k, &v, &d)))
			break;
		if (fn(&d, arg))
			break;
	}
	if (!e && rc && rc != MDB_NOTFOUND)
		e = index_error(rc);
	if (cur)
		mdb_cursor_close(cur);
	reader_txn_end(r, txn);
	return e;
}

int store_reader_devices(struct store_reader *r, device_visit_fn fn, void *arg)
{
	return store_reader_devices_after(r, NULL, fn, arg);
}

int store_reader_device(struct store_reader *r, const char *device, struct device_record *out)
{
	if (!r || !device || !out)
		return STORE_ERR_INVAL;
	MDB_txn *txn;
	int e = reader_txn_begin(r, &txn);
	if (e)
		return e;
	e = index_get_device(&r->ix, txn, device, out);
	reader_txn_end(r, txn);
	return e;
}
