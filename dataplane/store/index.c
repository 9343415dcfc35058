/*
 * index: the LMDB schema and the encoding of its values.
 *
 *   uploads        id (u64 BE)                  -> upload v1, or v2: v1 and the body's
 *                                                  SHA-256 (hashed with dedupe_window on)
 *   device_uploads device NUL id (u64 BE)       -> empty
 *   by_time        received ms (u64 BE) id (BE) -> empty   (listing, retention)
 *   devices        device                       -> device v1
 *   segments       worker (u32 BE) seq (u64 BE) -> segment v1 (live records)
 *   meta           "schema" -> u32 LE, "next_id" -> u64 LE
 *   dedupe         (dedupe.c)
 *
 * Every value starts with a version byte; numbers are little-endian and
 * strings are a u16 length and the bytes, so fields can be added behind a
 * new version without rewriting old entries. Keys are big-endian so LMDB's
 * byte order is numeric order.
 */
#include "store-internal.h"

#include "beacon/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define VALUE_V1 1u
#define UPLOAD_V2 2u /* an upload with its body's SHA-256 */

void be64_put(uint8_t out[8], uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		out[i] = (uint8_t)v;
}

uint64_t be64_get(const uint8_t in[8])
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | in[i];
	return v;
}

int index_error(int mdb_rc)
{
	switch (mdb_rc) {
	case 0:
		return 0;
	case MDB_NOTFOUND:
		return STORE_ERR_NOTFOUND;
	case MDB_MAP_FULL:
	case ENOSPC:
	case EDQUOT:
		return STORE_ERR_NOSPACE;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
		return STORE_ERR_CORRUPT;
	case MDB_VERSION_MISMATCH:
		return STORE_ERR_SCHEMA;
	default:
		return STORE_ERR_IO;
	}
}

/* ---- a bounds-checked encoder and decoder ---- */

struct enc {
	uint8_t *p;
	size_t len, cap;
	bool overflow;
};

static void enc_bytes(struct enc *e, const void *b, size_t n)
{
	if (e->len + n > e->cap) {
		e->overflow = true;
		return;
	}
	memcpy(e->p + e->len, b, n);
	e->len += n;
}

static void enc_uint(struct enc *e, uint64_t v, unsigned bytes)
{
	uint8_t b[8];
	for (unsigned i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	enc_bytes(e, b, bytes);
}

static void enc_str(struct enc *e, const char *s, size_t max)
{
	size_t n = strnlen(s, max - 1);
	enc_uint(e, n, 2);
	enc_bytes(e, s, n);
}

struct dec {
	const uint8_t *p;
	size_t len, off;
	bool bad;
};

static void dec_bytes(struct dec *d, void *out, size_t n)
{
	if (d->off + n > d->len) {
		d->bad = true;
		memset(out, 0, n);
		return;
	}
	memcpy(out, d->p + d->off, n);
	d->off += n;
}

static uint64_t dec_uint(struct dec *d, unsigned bytes)
{
	uint8_t b[8];
	dec_bytes(d, b, bytes);
	uint64_t v = 0;
	for (unsigned i = bytes; i-- > 0;)
		v = (v << 8) | b[i];
	return v;
}

static void dec_str(struct dec *d, char *out, size_t max)
{
	size_t n = (size_t)dec_uint(d, 2);
	if (n >= max) {
		d->bad = true;
		n = 0;
	}
	dec_bytes(d, out, n);
	out[n] = '\0';
}

/* ---- uploads ---- */

#define UPLOAD_VALUE_MAX                                                                           \
	(1 + 4 + 8 * 5 + 4 + 32 + 6 + STORE_DEVICE_MAX + STORE_CATEGORY_MAX + STORE_NAME_MAX + 32)

static size_t upload_encode(const struct upload_record *r, uint8_t *buf, size_t cap)
{
	struct enc e = {.p = buf, .cap = cap};
	enc_uint(&e, r->has_sha256 ? UPLOAD_V2 : VALUE_V1, 1);
	enc_uint(&e, r->worker, 4);
	enc_uint(&e, r->segment, 8);
	enc_uint(&e, r->offset, 8);
	enc_uint(&e, r->length, 8);
	enc_uint(&e, r->crc32, 4);
	enc_uint(&e, r->received_unix_ms, 8);
	enc_bytes(&e, r->meta.cert_sha256, 32);
	enc_str(&e, r->meta.device, STORE_DEVICE_MAX);
	enc_str(&e, r->meta.category, STORE_CATEGORY_MAX);
	enc_str(&e, r->meta.name, STORE_NAME_MAX);
	if (r->has_sha256)
		enc_bytes(&e, r->sha256, 32);
	return e.overflow ? 0 : e.len;
}

int upload_decode(uint64_t id, const MDB_val *v, struct upload_record *out)
{
	struct dec d = {.p = v->mv_data, .len = v->mv_size};
	memset(out, 0, sizeof *out);
	uint64_t version = dec_uint(&d, 1);
	if (version != VALUE_V1 && version != UPLOAD_V2)
		return STORE_ERR_SCHEMA;
	out->id = id;
	out->worker = (uint32_t)dec_uint(&d, 4);
	out->segment = dec_uint(&d, 8);
	out->offset = dec_uint(&d, 8);
	out->length = dec_uint(&d, 8);
	out->crc32 = (uint32_t)dec_uint(&d, 4);
	out->received_unix_ms = dec_uint(&d, 8);
	dec_bytes(&d, out->meta.cert_sha256, 32);
	dec_str(&d, out->meta.device, STORE_DEVICE_MAX);
	dec_str(&d, out->meta.category, STORE_CATEGORY_MAX);
	dec_str(&d, out->meta.name, STORE_NAME_MAX);
	if (version == UPLOAD_V2) {
		dec_bytes(&d, out->sha256, 32);
		out->has_sha256 = true;
	}
	return d.bad ? STORE_ERR_CORRUPT : 0;
}

static size_t device_upload_key(uint8_t *key, const char *device, uint64_t id)
{
	size_t n = strnlen(device, STORE_DEVICE_MAX - 1);
	memcpy(key, device, n);
	key[n] = '\0';
	be64_put(key + n + 1, id);
	return n + 9;
}

static void time_key(uint8_t key[16], uint64_t ms, uint64_t id)
{
	be64_put(key, ms);
	be64_put(key + 8, id);
}

int index_get_upload(struct index *ix, MDB_txn *txn, uint64_t id, struct upload_record *out)
{
	uint8_t kb[8];
	be64_put(kb, id);
	MDB_val k = {sizeof kb, kb}, v;
	int rc = mdb_get(txn, ix->uploads, &k, &v);
	if (rc)
		return index_error(rc);
	return upload_decode(id, &v, out);
}

/* ---- segments ---- */

void index_segment_key(uint8_t key[12], unsigned worker, uint64_t seq)
{
	for (int i = 0; i < 4; i++)
		key[i] = (uint8_t)(worker >> (8 * (3 - i)));
	be64_put(key + 4, seq);
}

void index_segment_key_parse(const uint8_t key[12], unsigned *worker, uint64_t *seq)
{
	*worker = (unsigned)key[0] << 24 | (unsigned)key[1] << 16 | (unsigned)key[2] << 8 | key[3];
	*seq = be64_get(key + 4);
}

int segment_row_decode(const MDB_val *v, struct segment_row *out)
{
	struct dec d = {.p = v->mv_data, .len = v->mv_size};
	if (dec_uint(&d, 1) != VALUE_V1)
		return STORE_ERR_SCHEMA;
	out->records = dec_uint(&d, 8);
	out->bytes = dec_uint(&d, 8);
	out->end = dec_uint(&d, 8);
	return d.bad ? STORE_ERR_CORRUPT : 0;
}

int index_get_segment(struct index *ix, MDB_txn *txn, unsigned worker, uint64_t seq,
		      struct segment_row *out)
{
	uint8_t kb[12];
	index_segment_key(kb, worker, seq);
	MDB_val k = {sizeof kb, kb}, v;
	int rc = mdb_get(txn, ix->segments, &k, &v);
	if (rc)
		return index_error(rc);
	return segment_row_decode(&v, out);
}

static int index_put_segment(struct index *ix, MDB_txn *txn, unsigned worker, uint64_t seq,
			     const struct segment_row *row)
{
	uint8_t kb[12], vb[25];
	index_segment_key(kb, worker, seq);
	MDB_val k = {sizeof kb, kb};
	if (row->records == 0)
		return mdb_del(txn, ix->segments, &k, NULL);
	struct enc e = {.p = vb, .cap = sizeof vb};
	enc_uint(&e, VALUE_V1, 1);
	enc_uint(&e, row->records, 8);
	enc_uint(&e, row->bytes, 8);
	enc_uint(&e, row->end, 8);
	MDB_val v = {e.len, vb};
	return mdb_put(txn, ix->segments, &k, &v, 0);
}

/* Returns an LMDB code (not a store_error) so the caller can tell
 * MDB_MAP_FULL, which it answers by growing the map. */
int index_put_upload(struct index *ix, MDB_txn *txn, const struct upload_record *rec)
{
	uint8_t vb[UPLOAD_VALUE_MAX], kb[8], dk[STORE_DEVICE_MAX + 9], tk[16];
	size_t n = upload_encode(rec, vb, sizeof vb);
	if (!n)
		return EINVAL;
	be64_put(kb, rec->id);
	MDB_val k = {sizeof kb, kb}, v = {n, vb}, empty = {0, NULL};
	int rc = mdb_put(txn, ix->uploads, &k, &v, MDB_NOOVERWRITE);
	if (rc)
		return rc;
	MDB_val dkv = {device_upload_key(dk, rec->meta.device, rec->id), dk};
	if ((rc = mdb_put(txn, ix->device_uploads, &dkv, &empty, 0)))
		return rc;
	time_key(tk, rec->received_unix_ms, rec->id);
	MDB_val tkv = {sizeof tk, tk};
	if ((rc = mdb_put(txn, ix->by_time, &tkv, &empty, 0)))
		return rc;
	struct segment_row row = {0};
	int err = index_get_segment(ix, txn, rec->worker, rec->segment, &row);
	if (err && err != STORE_ERR_NOTFOUND)
		return EIO;
	row.records++;
	row.bytes += rec->length;
	uint64_t end = rec->offset + rec->length;
	if (end > row.end)
		row.end = end;
	return index_put_segment(ix, txn, rec->worker, rec->segment, &row);
}

static int del_ignoring_absent(MDB_txn *txn, MDB_dbi dbi, MDB_val *k)
{
	int rc = mdb_del(txn, dbi, k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int index_delete_upload(struct index *ix, MDB_txn *txn, const struct upload_record *rec,
			bool *segment_emptied)
{
	uint8_t kb[8], dk[STORE_DEVICE_MAX + 9], tk[16];
	be64_put(kb, rec->id);
	MDB_val k = {sizeof kb, kb};
	int rc = del_ignoring_absent(txn, ix->uploads, &k);
	MDB_val dkv = {device_upload_key(dk, rec->meta.device, rec->id), dk};
	if (!rc)
		rc = del_ignoring_absent(txn, ix->device_uploads, &dkv);
	time_key(tk, rec->received_unix_ms, rec->id);
	MDB_val tkv = {sizeof tk, tk};
	if (!rc)
		rc = del_ignoring_absent(txn, ix->by_time, &tkv);
	if (rc)
		return rc;
	struct segment_row row = {0};
	int err = index_get_segment(ix, txn, rec->worker, rec->segment, &row);
	if (err == STORE_ERR_NOTFOUND) {
		*segment_emptied = true;
		return 0;
	}
	if (err)
		return EIO;
	row.records = row.records ? row.records - 1 : 0;
	row.bytes = row.bytes >= rec->length ? row.bytes - rec->length : 0;
	*segment_emptied = row.records == 0;
	return index_put_segment(ix, txn, rec->worker, rec->segment, &row);
}

/* ---- devices ---- */

int device_decode(const MDB_val *k, const MDB_val *v, struct device_record *out)
{
	memset(out, 0, sizeof *out);
	if (k->mv_size >= STORE_DEVICE_MAX)
		return STORE_ERR_CORRUPT;
	memcpy(out->device, k->mv_data, k->mv_size);
	struct dec d = {.p = v->mv_data, .len = v->mv_size};
	if (dec_uint(&d, 1) != VALUE_V1)
		return STORE_ERR_SCHEMA;
	out->first_seen_unix_ms = dec_uint(&d, 8);
	out->last_seen_unix_ms = dec_uint(&d, 8);
	out->state = (enum device_state)dec_uint(&d, 1);
	out->last_result = (enum auth_result)dec_uint(&d, 1);
	out->uploads = dec_uint(&d, 8);
	out->n_fingerprints = (unsigned)dec_uint(&d, 1);
	if (out->n_fingerprints > 4 || out->state > DEVICE_BLOCKED ||
	    out->last_result >= AUTH_RESULT_COUNT)
		return STORE_ERR_CORRUPT;
	for (unsigned i = 0; i < out->n_fingerprints; i++)
		dec_bytes(&d, out->fingerprints[i], 32);
	return d.bad ? STORE_ERR_CORRUPT : 0;
}

int index_get_device(struct index *ix, MDB_txn *txn, const char *device, struct device_record *out)
{
	MDB_val k = {strnlen(device, STORE_DEVICE_MAX - 1), (void *)device}, v;
	if (k.mv_size == 0)
		return STORE_ERR_NOTFOUND;
	int rc = mdb_get(txn, ix->devices, &k, &v);
	if (rc)
		return index_error(rc);
	return device_decode(&k, &v, out);
}

/* Returns an LMDB code, like index_put_upload. */
int index_put_device(struct index *ix, MDB_txn *txn, const struct device_record *rec)
{
	uint8_t vb[1 + 8 + 8 + 1 + 1 + 8 + 1 + 4 * 32];
	struct enc e = {.p = vb, .cap = sizeof vb};
	enc_uint(&e, VALUE_V1, 1);
	enc_uint(&e, rec->first_seen_unix_ms, 8);
	enc_uint(&e, rec->last_seen_unix_ms, 8);
	enc_uint(&e, (uint64_t)rec->state, 1);
	enc_uint(&e, (uint64_t)rec->last_result, 1);
	enc_uint(&e, rec->uploads, 8);
	unsigned n = rec->n_fingerprints > 4 ? 4 : rec->n_fingerprints;
	enc_uint(&e, n, 1);
	for (unsigned i = 0; i < n; i++)
		enc_bytes(&e, rec->fingerprints[i], 32);
	MDB_val k = {strnlen(rec->device, STORE_DEVICE_MAX - 1), (void *)rec->device};
	MDB_val v = {e.len, vb};
	if (k.mv_size == 0 || e.overflow)
		return EINVAL;
	return mdb_put(txn, ix->devices, &k, &v, 0);
}

void device_record_init(struct device_record *d, const char *device, uint64_t now_ms)
{
	memset(d, 0, sizeof *d);
	snprintf(d->device, sizeof d->device, "%s", device);
	d->first_seen_unix_ms = now_ms;
	d->last_seen_unix_ms = now_ms;
	d->state = DEVICE_UNAPPROVED;
	d->last_result = AUTH_OTHER;
}

/* Keeps the most recent distinct fingerprints, newest first. */
void device_record_add_fingerprint(struct device_record *d, const uint8_t sha[32])
{
	static const uint8_t zero[32];
	if (!memcmp(sha, zero, 32))
		return;
	unsigned n = d->n_fingerprints > 4 ? 4 : d->n_fingerprints;
	unsigned at = n;
	for (unsigned i = 0; i < n; i++) {
		if (!memcmp(d->fingerprints[i], sha, 32)) {
			at = i;
			break;
		}
	}
	if (at == n && n < 4)
		n++;
	if (at >= n)
		at = n - 1; /* full: the oldest falls off */
	memmove(d->fingerprints[1], d->fingerprints[0], (size_t)at * 32);
	memcpy(d->fingerprints[0], sha, 32);
	d->n_fingerprints = n;
}

/* ---- meta ---- */

int index_get_next_id(struct index *ix, MDB_txn *txn, uint64_t *out)
{
	MDB_val k = {7, "next_id"}, v;
	int rc = mdb_get(txn, ix->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		*out = 0;
		return 0;
	}
	if (rc)
		return index_error(rc);
	struct dec d = {.p = v.mv_data, .len = v.mv_size};
	*out = dec_uint(&d, 8);
	return d.bad ? STORE_ERR_CORRUPT : 0;
}

int index_put_next_id(struct index *ix, MDB_txn *txn, uint64_t next_id)
{
	uint8_t b[8];
	struct enc e = {.p = b, .cap = sizeof b};
	enc_uint(&e, next_id, 8);
	MDB_val k = {7, "next_id"}, v = {sizeof b, b};
	return mdb_put(txn, ix->meta, &k, &v, 0);
}

/* Reads (and on a fresh index writes) the schema version; a newer one is
 * refused before anything else is touched. */
static int index_put_schema(struct index *ix, MDB_txn *txn, char *err, size_t errlen)
{
	uint8_t b[4];
	struct enc e = {.p = b, .cap = sizeof b};
	enc_uint(&e, SCHEMA_VERSION, 4);
	MDB_val k = {6, "schema"}, v = {sizeof b, b};
	int rc = mdb_put(txn, ix->meta, &k, &v, 0);
	if (rc)
		snprintf(err, errlen, "index: write schema version: %s", mdb_strerror(rc));
	return index_error(rc);
}

static int index_check_schema(struct index *ix, MDB_txn *txn, bool rdonly, char *err, size_t errlen)
{
	MDB_val k = {6, "schema"}, v;
	int rc = mdb_get(txn, ix->meta, &k, &v);
	if (rc == MDB_NOTFOUND && !rdonly)
		return index_put_schema(ix, txn, err, errlen);
	if (rc) {
		snprintf(err, errlen, "index: read schema version: %s", mdb_strerror(rc));
		return index_error(rc);
	}
	struct dec d = {.p = v.mv_data, .len = v.mv_size};
	uint64_t version = dec_uint(&d, 4);
	if (d.bad || version == 0) {
		snprintf(err, errlen, "index: schema version entry is damaged");
		return STORE_ERR_CORRUPT;
	}
	if (version > SCHEMA_VERSION) {
		snprintf(err, errlen, "index schema %llu is newer than this beacond (%u)",
			 (unsigned long long)version, SCHEMA_VERSION);
		return STORE_ERR_SCHEMA;
	}
	/* An older index takes this schema's values from now on: an older
	 * beacond must refuse it rather than misread them. */
	if (version < SCHEMA_VERSION && !rdonly)
		return index_put_schema(ix, txn, err, errlen);
	return 0;
}

static int index_open_dbis(struct index *ix, MDB_txn *txn, bool rdonly, char *err, size_t errlen)
{
	unsigned flags = rdonly ? 0 : MDB_CREATE;
	struct {
		const char *name;
		MDB_dbi *dbi;
	} dbs[] = {{"meta", &ix->meta},
		   {"uploads", &ix->uploads},
		   {"device_uploads", &ix->device_uploads},
		   {"by_time", &ix->by_time},
		   {"devices", &ix->devices},
		   {"segments", &ix->segments}};
	for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
		int rc = mdb_dbi_open(txn, dbs[i].name, flags, dbs[i].dbi);
		if (rc) {
			snprintf(err, errlen, "index: open database %s: %s", dbs[i].name,
				 mdb_strerror(rc));
			return rc == MDB_NOTFOUND ? STORE_ERR_NOTFOUND : index_error(rc);
		}
		/* Schema first: a newer index is refused before it is changed. */
		if (i == 0) {
			int e = index_check_schema(ix, txn, rdonly, err, errlen);
			if (e)
				return e;
		}
	}
	return 0;
}

int index_open(struct index *ix, const char *data_dir, uint64_t map_bytes, enum index_mode mode,
	       char *err, size_t errlen)
{
	bool rdonly = mode != INDEX_WRITE;
	char path[PATH_MAX];
	memset(ix, 0, sizeof *ix);
	if (snprintf(path, sizeof path, "%s/index", data_dir) >= (int)sizeof path) {
		snprintf(err, errlen, "%s/index: path too long", data_dir);
		return STORE_ERR_INVAL;
	}
	if (!rdonly && mkdir(path, 0750) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return store_error_from_errno(errno);
	}
	int rc = mdb_env_create(&ix->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(ix->env, 16);
	if (!rc && !rdonly)
		rc = mdb_env_set_mapsize(ix->env, map_bytes);
	/* NOTLS: in-process readers share the env across threads. */
	if (!rc)
		rc = mdb_env_open(ix->env, path,
				  MDB_NOTLS | (rdonly ? MDB_RDONLY : 0) |
					  (mode == INDEX_READ_NOLOCK ? MDB_NOLOCK : 0),
				  0640);
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, mdb_strerror(rc));
		index_close(ix);
		return rc == ENOENT ? STORE_ERR_NOTFOUND : index_error(rc);
	}
	MDB_txn *txn;
	rc = mdb_txn_begin(ix->env, NULL, rdonly ? MDB_RDONLY : 0, &txn);
	if (rc) {
		snprintf(err, errlen, "%s: begin: %s", path, mdb_strerror(rc));
		index_close(ix);
		return index_error(rc);
	}
	int e = index_open_dbis(ix, txn, rdonly, err, errlen);
	if (e) {
		mdb_txn_abort(txn);
		index_close(ix);
		return e;
	}
	rc = mdb_txn_commit(txn);
	if (rc) {
		snprintf(err, errlen, "%s: commit: %s", path, mdb_strerror(rc));
		index_close(ix);
		return index_error(rc);
	}
	return 0;
}

void index_close(struct index *ix)
{
	if (ix->env)
		mdb_env_close(ix->env);
	ix->env = NULL;
}
