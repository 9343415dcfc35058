/*
 * dedupe: an agent that lost its 201 (the connection dropped after the
 * commit) sends the same file again; it gets the first upload's id and the
 * store keeps one record.
 *
 * A worker hashes the body (SHA-256) as it streams, next to the CRC. The
 * writer looks the upload up inside the commit transaction, so identical
 * uploads in one group or from two workers still make one record: the
 * first one indexed is found by the next one in the same transaction.
 *
 * The `dedupe` database holds two kinds of entries:
 *
 *   'h' key (32)           -> v1, upload id (u64 LE), received ms (u64 LE)
 *   't' ms (BE) id (BE)    -> key (32)      oldest first, for pruning
 *
 * where key = SHA-256 of the device, category and name (each a u16 LE
 * length and its bytes) and the body's SHA-256: fixed-size whatever the
 * names (LMDB keys are at most 511 bytes). A hit is checked against the
 * upload it names: that upload must still be indexed and have the same
 * device, category, name and body digest, so a retry is never answered
 * with another device's upload nor with one retention has removed.
 *
 * Bound: each commit forgets up to (uploads in it + PRUNE_SLACK) entries
 * past the window, and the retention pass (at start and every 60 s)
 * forgets all of them, PRUNE_TXN_MAX per transaction: the database holds
 * the uploads of one window plus at most a minute's worth more.
 */
#include "store-internal.h"

#include "beacon/log.h"

#include <string.h>

#define DEDUPE_V1 1u
#define DEDUPE_KEY_BYTES 32u
#define ENTRY_VALUE_BYTES 17u /* v1, id, ms */
#define PRUNE_SLACK 16u
#define PRUNE_TXN_MAX 10000u

static uint64_t window_ms(const struct store *s)
{
	return s->opts.dedupe_window_s * 1000u;
}

static bool dedupe_on(const struct store *s)
{
	return s->opts.dedupe_window_s != 0;
}

/* ---- the body's hash, on the worker ---- */

void dedupe_hash_begin(struct store_upload *u)
{
	u->hashing = false;
	u->has_sha256 = false;
	if (!dedupe_on(u->w->s))
		return;
	if (wc_InitSha256(&u->sha) != 0) {
		/* Without a digest the upload is stored, just never matched. */
		log_warn("store: upload %llu: SHA-256 init failed; it is not checked for retries",
			 (unsigned long long)u->id);
		return;
	}
	u->hashing = true;
}

void dedupe_hash_update(struct store_upload *u, const void *data, size_t len)
{
	if (!u->hashing || !len)
		return;
	if (wc_Sha256Update(&u->sha, data, (word32)len) != 0)
		dedupe_hash_drop(u);
}

void dedupe_hash_end(struct store_upload *u)
{
	if (!u->hashing)
		return;
	u->has_sha256 = wc_Sha256Final(&u->sha, u->sha256) == 0;
	wc_Sha256Free(&u->sha);
	u->hashing = false;
}

void dedupe_hash_drop(struct store_upload *u)
{
	if (!u->hashing)
		return;
	wc_Sha256Free(&u->sha);
	u->hashing = false;
}

/* ---- the database, on the writer ---- */

int dedupe_open(struct store *s, char *err, size_t errlen)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->ix.env, NULL, 0, &txn);
	if (!rc) {
		rc = mdb_dbi_open(txn, "dedupe", MDB_CREATE, &s->dedupe_dbi);
		if (rc)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
	}
	if (rc) {
		snprintf(err, errlen, "index: open database dedupe: %s", mdb_strerror(rc));
		return index_error(rc);
	}
	return 0;
}

static void hash_field(wc_Sha256 *h, const char *field, size_t max)
{
	size_t n = strnlen(field, max - 1);
	uint8_t len[2] = {(uint8_t)n, (uint8_t)(n >> 8)};
	wc_Sha256Update(h, len, sizeof len);
	wc_Sha256Update(h, (const uint8_t *)field, (word32)n);
}

/* 'h' and the key. False when SHA-256 fails (the upload is then treated as
 * new and not remembered). */
static bool content_key(uint8_t out[1 + DEDUPE_KEY_BYTES], const struct upload_meta *m,
			const uint8_t body_sha[32])
{
	wc_Sha256 h;
	if (wc_InitSha256(&h) != 0)
		return false;
	hash_field(&h, m->device, STORE_DEVICE_MAX);
	hash_field(&h, m->category, STORE_CATEGORY_MAX);
	hash_field(&h, m->name, STORE_NAME_MAX);
	wc_Sha256Update(&h, body_sha, 32);
	out[0] = 'h';
	bool ok = wc_Sha256Final(&h, out + 1) == 0;
	wc_Sha256Free(&h);
	return ok;
}

static void time_key(uint8_t out[17], uint64_t ms, uint64_t id)
{
	out[0] = 't';
	be64_put(out + 1, ms);
	be64_put(out + 9, id);
}

static void le64_put(uint8_t out[8], uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		out[i] = (uint8_t)v;
}

static uint64_t le64_get(const uint8_t in[8])
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | in[i];
	return v;
}

static bool entry_decode(const MDB_val *v, uint64_t *id, uint64_t *ms)
{
	const uint8_t *p = v->mv_data;
	if (v->mv_size != ENTRY_VALUE_BYTES || p[0] != DEDUPE_V1)
		return false;
	*id = le64_get(p + 1);
	*ms = le64_get(p + 9);
	return true;
}

static bool same_upload(const struct upload_record *rec, const struct store_upload *u)
{
	return rec->has_sha256 && !memcmp(rec->sha256, u->sha256, 32) &&
	       !strcmp(rec->meta.device, u->meta.device) &&
	       !strcmp(rec->meta.category, u->meta.category) &&
	       !strcmp(rec->meta.name, u->meta.name);
}

int dedupe_find(struct store *s, MDB_txn *txn, const struct store_upload *u, uint64_t now_ms,
		uint64_t *original)
{
	uint8_t kb[1 + DEDUPE_KEY_BYTES];
	*original = 0;
	if (!dedupe_on(s) || !u->has_sha256 || !content_key(kb, &u->meta, u->sha256))
		return 0;
	MDB_val k = {sizeof kb, kb}, v;
	int rc = mdb_get(txn, s->dedupe_dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	uint64_t id, ms;
	if (!entry_decode(&v, &id, &ms) || ms + window_ms(s) < now_ms)
		return 0; /* damaged or past the window: this upload is new */
	struct upload_record rec;
	int e = index_get_upload(&s->ix, txn, id, &rec);
	if (e == STORE_ERR_NOTFOUND)
		return 0; /* retention removed the first one: keep this one */
	if (e)
		return EIO;
	if (same_upload(&rec, u))
		*original = id;
	return 0;
}

int dedupe_remember(struct store *s, MDB_txn *txn, const struct upload_record *rec)
{
	uint8_t kb[1 + DEDUPE_KEY_BYTES], tk[17], vb[ENTRY_VALUE_BYTES];
	if (!dedupe_on(s) || !rec->has_sha256 || !content_key(kb, &rec->meta, rec->sha256))
		return 0;
	vb[0] = DEDUPE_V1;
	le64_put(vb + 1, rec->id);
	le64_put(vb + 9, rec->received_unix_ms);
	MDB_val k = {sizeof kb, kb}, v = {sizeof vb, vb};
	int rc = mdb_put(txn, s->dedupe_dbi, &k, &v, 0);
	if (rc)
		return rc;
	time_key(tk, rec->received_unix_ms, rec->id);
	MDB_val tkv = {sizeof tk, tk}, hv = {DEDUPE_KEY_BYTES, kb + 1};
	return mdb_put(txn, s->dedupe_dbi, &tkv, &hv, 0);
}

/* Deletes the 'h' entry the 't' entry under the cursor names, unless a
 * later upload of the same content has taken it over since. */
static int forget_entry(struct store *s, MDB_txn *txn, const MDB_val *tk, const MDB_val *tv)
{
	if (tv->mv_size != DEDUPE_KEY_BYTES)
		return 0;
	uint8_t kb[1 + DEDUPE_KEY_BYTES];
	kb[0] = 'h';
	memcpy(kb + 1, tv->mv_data, DEDUPE_KEY_BYTES);
	MDB_val k = {sizeof kb, kb}, v;
	int rc = mdb_get(txn, s->dedupe_dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	uint64_t id, ms;
	if (entry_decode(&v, &id, &ms) && id != be64_get((const uint8_t *)tk->mv_data + 9))
		return 0;
	return mdb_del(txn, s->dedupe_dbi, &k, NULL);
}

int dedupe_prune(struct store *s, MDB_txn *txn, uint64_t now_ms, unsigned max, unsigned *forgotten)
{
	MDB_cursor *cur;
	*forgotten = 0;
	int rc = mdb_cursor_open(txn, s->dedupe_dbi, &cur);
	if (rc)
		return rc;
	while (!rc && *forgotten < max) {
		/* From the oldest 't' entry each time: forget_entry changes the
		 * database under the cursor. */
		uint8_t first = 't';
		MDB_val k = {1, &first}, v;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc)
			break;
		const uint8_t *kp = k.mv_data;
		if (k.mv_size != 17 || kp[0] != 't' || be64_get(kp + 1) + window_ms(s) >= now_ms)
			break;
		uint8_t tk[17];
		memcpy(tk, kp, sizeof tk);
		MDB_val tkv = {sizeof tk, tk};
		rc = forget_entry(s, txn, &tkv, &v);
		if (!rc)
			rc = mdb_del(txn, s->dedupe_dbi, &tkv, NULL);
		(*forgotten)++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int dedupe_prune_all(struct store *s)
{
	unsigned forgotten = PRUNE_TXN_MAX;
	while (forgotten == PRUNE_TXN_MAX) {
		MDB_txn *txn = NULL;
		int rc = mdb_txn_begin(s->ix.env, NULL, 0, &txn);
		if (!rc) {
			rc = dedupe_prune(s, txn, store_now_ms(), PRUNE_TXN_MAX, &forgotten);
			if (rc || !forgotten)
				mdb_txn_abort(txn);
			else
				rc = mdb_txn_commit(txn);
		}
		if (rc) {
			log_err("store: forget old retries: %s", mdb_strerror(rc));
			return index_error(rc);
		}
	}
	return 0;
}

unsigned dedupe_prune_budget(unsigned uploads)
{
	return uploads + PRUNE_SLACK;
}
