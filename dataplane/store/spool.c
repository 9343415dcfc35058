/*
 * spool: per-worker segment files and the framing of the records in them.
 *
 * A segment is DATA/spool/wN/SEQ.seg holding records:
 *
 *   [header 48 B: magic "BCN1" u32, version u16, flags u16, id u64,
 *    body length u64, body crc32 u32, header crc32 u32, zero pad]
 *   [body]
 *
 * Two ways into a segment keep every record contiguous:
 * - An upload whose body outgrows its first buffer half streams: it owns a
 *   segment's tail until its record is whole, then gives the segment back
 *   to the worker's pool for the next one.
 * - An upload that finished inside its first half knows its record's
 *   length: it reserves exactly that range at the tail of the worker's
 *   packed segment, which nobody owns, and writes it in one operation.
 *   Most uploads are small, so a group commit usually fdatasyncs one packed
 *   segment per worker instead of one segment per upload.
 * Past segment_bytes a segment is sealed and closed once its last commit
 * has answered. Every file operation of the data path goes through the
 * worker's ring.
 */
#include "store-internal.h"

#include "beacon/log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void le16_put(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void le32_put(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le64_put(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t le16_get(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t le32_get(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t le64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

#define HEADER_CRC_OFF 28u

void record_header_encode(uint8_t out[RECORD_HEADER_BYTES], const struct record_header *h)
{
	memset(out, 0, RECORD_HEADER_BYTES);
	le32_put(out, RECORD_MAGIC);
	le16_put(out + 4, RECORD_VERSION);
	le16_put(out + 6, h->flags);
	le64_put(out + 8, h->id);
	le64_put(out + 16, h->length);
	le32_put(out + 24, h->crc);
	le32_put(out + HEADER_CRC_OFF, record_crc32(0, out, HEADER_CRC_OFF));
}

int record_header_decode(const uint8_t in[RECORD_HEADER_BYTES], struct record_header *h)
{
	if (le32_get(in) != RECORD_MAGIC || le16_get(in + 4) != RECORD_VERSION)
		return STORE_ERR_CORRUPT;
	if (le32_get(in + HEADER_CRC_OFF) != record_crc32(0, in, HEADER_CRC_OFF))
		return STORE_ERR_CORRUPT;
	h->flags = le16_get(in + 6);
	h->id = le64_get(in + 8);
	h->length = le64_get(in + 16);
	h->crc = le32_get(in + 24);
	return 0;
}

int spool_segment_path(char *buf, size_t len, const char *data_dir, unsigned worker, uint64_t seq)
{
	int n = snprintf(buf, len, "%s/spool/w%u/%016" PRIx64 ".seg", data_dir, worker, seq);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

bool spool_segment_name_parse(const char *name, uint64_t *seq)
{
	if (strlen(name) != 20 || strcmp(name + 16, ".seg") != 0)
		return false;
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return false;
		v = (v << 4) | (uint64_t)d;
	}
	*seq = v;
	return true;
}

bool spool_worker_dir_parse(const char *name, unsigned *worker)
{
	if (name[0] != 'w' || name[1] < '0' || name[1] > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long v = strtoul(name + 1, &end, 10);
	if (*end || errno || v > UINT32_MAX)
		return false;
	*worker = (unsigned)v;
	return true;
}

int store_error_from_errno(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return STORE_ERR_NOSPACE;
	case EINVAL:
		return STORE_ERR_INVAL;
	default:
		return STORE_ERR_IO;
	}
}

/* ---- the open-segment registry that retention consults ---- */

static int spool_dir_register(struct spool_dir *d, uint64_t seq)
{
	int rc = 0;
	pthread_mutex_lock(&d->lock);
	if (d->n_open == d->cap_open) {
		size_t cap = d->cap_open ? d->cap_open * 2 : 16;
		uint64_t *n = realloc(d->open_seqs, cap * sizeof *n);
		if (!n) {
			rc = -ENOMEM;
			goto out;
		}
		d->open_seqs = n;
		d->cap_open = cap;
	}
	d->open_seqs[d->n_open++] = seq;
out:
	pthread_mutex_unlock(&d->lock);
	return rc;
}

static void spool_dir_unregister(struct spool_dir *d, uint64_t seq)
{
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->n_open; i++) {
		if (d->open_seqs[i] == seq) {
			d->open_seqs[i] = d->open_seqs[--d->n_open];
			break;
		}
	}
	pthread_mutex_unlock(&d->lock);
}

bool spool_dir_is_open(struct spool_dir *d, uint64_t seq)
{
	bool open = false;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->n_open && !open; i++)
		open = d->open_seqs[i] == seq;
	pthread_mutex_unlock(&d->lock);
	return open;
}

/* ---- the worker's pool ---- */

static void pool_remove(struct segment *seg)
{
	struct store_worker *w = seg->w;
	if (seg->pool_prev)
		seg->pool_prev->pool_next = seg->pool_next;
	else
		w->pool = seg->pool_next;
	if (seg->pool_next)
		seg->pool_next->pool_prev = seg->pool_prev;
	seg->pool_prev = seg->pool_next = NULL;
	seg->in_pool = false;
}

static void pool_push(struct segment *seg)
{
	struct store_worker *w = seg->w;
	/* Pooled: whole, open, and nobody's: no owner, not the packed one. */
	assert(!seg->in_pool && !seg->sealed && !seg->owner && !seg->packed);
	assert(seg->state == SEG_READY && w->packed != seg);
	seg->pool_prev = NULL;
	seg->pool_next = w->pool;
	if (w->pool)
		w->pool->pool_prev = seg;
	w->pool = seg;
	seg->in_pool = true;
}

static void segment_free(struct segment *seg)
{
	assert(!seg->in_pool && seg->w->packed != seg);
	spool_dir_unregister(seg->w->dir, seg->seq);
	free(seg);
}

/* Tells whoever waits for the segment's file (its owner, or the uploads
 * packed into it meanwhile) that it is open, or that it failed and is
 * gone. */
static void segment_on_open(struct ring_op *op, int res, uint32_t flags)
{
	struct segment *seg = container_of(op, struct segment, op);
	struct store_upload *waiting = seg->owner ? seg->owner : seg->waiters;
	seg->owner = NULL;
	seg->waiters = NULL;
	if (res < 0) {
		log_err("store: cannot create segment %s: %s", seg->path, strerror(-res));
		if (seg->w->packed == seg)
			seg->w->packed = NULL;
		segment_free(seg);
	} else {
		seg->fd = res;
		seg->state = SEG_READY;
	}
	while (waiting) {
		struct store_upload *u = waiting;
		waiting = u->seg_wait_next;
		u->seg_wait_next = NULL;
		upload_segment_ready(u, res < 0 ? store_error_from_errno(res) : 0);
	}
}

static struct segment *segment_create(struct store_worker *w, struct store_upload *owner, int *err)
{
	struct segment *seg = calloc(1, sizeof *seg);
	if (!seg) {
		*err = STORE_ERR_IO;
		return NULL;
	}
	seg->w = w;
	seg->fd = -1;
	seg->seq = w->dir->next_seq++;
	seg->state = SEG_OPENING;
	seg->owner = owner;
	seg->refs = 1;
	int rc = spool_segment_path(seg->path, sizeof seg->path, w->s->data_dir, w->id, seg->seq);
	/* Registered before the file exists: retention must never see it as an
	 * orphan while it is being created. */
	if (rc == 0)
		rc = spool_dir_register(w->dir, seg->seq);
	if (rc < 0) {
		log_err("store: segment w%u/%016" PRIx64 ": %s", w->id, seg->seq, strerror(-rc));
		free(seg);
		*err = STORE_ERR_IO;
		return NULL;
	}
	seg->op.complete = segment_on_open;
	struct io_uring_sqe *sqe = ring_sqe(w->ring, &seg->op);
	if (!sqe) {
		log_err("store: %s: worker ring refused a submission", seg->path);
		segment_free(seg);
		*err = STORE_ERR_IO;
		return NULL;
	}
	io_uring_prep_openat(sqe, AT_FDCWD, seg->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	return seg;
}

struct segment *spool_segment_take(struct store_worker *w, struct store_upload *owner, int *err)
{
	/* A segment the writer retired after a failed sync takes no record,
	 * even before an upload's answer has told the worker so. */
	struct segment *seg = w->pool;
	assert(!owner->seg); /* one segment per upload */
	while (seg && atomic_load(&seg->sync_failed)) {
		struct segment *next = seg->pool_next; /* the head once seg is out */
		pool_remove(seg);
		seg->sealed = true;
		spool_segment_unref(seg); /* the pool's reference */
		seg = next;
	}
	if (!seg)
		return segment_create(w, owner, err);
	/* The pool's reference becomes the owner's. */
	assert(!seg->sealed && !seg->packed && seg->refs > 0);
	pool_remove(seg);
	seg->owner = owner;
	return seg;
}

struct segment *spool_packed_reserve(struct store_worker *w, struct store_upload *u, uint64_t len,
				     int *err)
{
	struct segment *seg = w->packed;
	if (seg && atomic_load(&seg->sync_failed)) {
		/* Retired by the writer: see spool_segment_take. */
		seg->sealed = true;
		w->packed = NULL;
		spool_segment_unref(seg); /* the worker's reference */
		seg = NULL;
	}
	if (!seg) {
		seg = segment_create(w, NULL, err);
		if (!seg)
			return NULL;
		seg->packed = true;
		w->packed = seg; /* the create's reference is the worker's */
	}
	/* The worker's packed segment takes records until it is sealed, and
	 * it is let go of (w->packed cleared) when it is. */
	assert(seg->packed && !seg->sealed && !seg->owner && !seg->in_pool && seg->refs > 0);
	seg->refs++; /* the upload's, then its commit's */
	u->record_off = seg->tail;
	seg->tail += len;
	if (seg->state == SEG_OPENING) {
		u->seg_wait_next = seg->waiters;
		seg->waiters = u;
	}
	if (seg->tail >= w->s->opts.segment_bytes) {
		/* Full: it takes no new record and the worker lets go of it;
		 * never the last reference, the upload holds one. */
		seg->sealed = true;
		w->packed = NULL;
		seg->refs--;
	}
	return seg;
}

void spool_segment_ref(struct segment *seg)
{
	seg->refs++;
}

void spool_segment_seal(struct segment *seg)
{
	if (seg->sealed)
		return;
	seg->sealed = true;
	if (seg->in_pool) {
		pool_remove(seg);
		spool_segment_unref(seg);
	} else if (seg->w->packed == seg) {
		seg->w->packed = NULL;
		spool_segment_unref(seg);
	}
}

void spool_pool_give_back_space(struct store_worker *w)
{
	for (struct segment *seg = w->pool, *next; seg; seg = next) {
		next = seg->pool_next;
		pool_remove(seg);
		seg->sealed = true;
		spool_segment_unref(seg);
	}
}

void spool_segment_put_back(struct segment *seg, uint64_t tail)
{
	assert(!seg->packed && !seg->in_pool && seg->refs > 0 && tail >= seg->tail);
	seg->owner = NULL;
	seg->tail = tail;
	if (seg->fd < 0 || tail >= seg->w->s->opts.segment_bytes)
		seg->sealed = true;
	if (seg->sealed) {
		spool_segment_unref(seg);
		return;
	}
	pool_push(seg); /* the owner's reference becomes the pool's */
}

static void segment_on_closed(struct ring_op *op, int res, uint32_t flags)
{
	struct segment *seg = container_of(op, struct segment, op);
	if (res < 0)
		log_warn("store: close %s: %s", seg->path, strerror(-res));
	seg->w->closing--;
	segment_free(seg);
}

static void segment_submit_close(struct segment *seg)
{
	seg->op.complete = segment_on_closed;
	struct io_uring_sqe *sqe = ring_sqe(seg->w->ring, &seg->op);
	if (!sqe) {
		/* Shutdown-like state of the ring: closing inline is harmless. */
		close(seg->fd);
		segment_on_closed(&seg->op, 0, 0);
		return;
	}
	io_uring_prep_close(sqe, seg->fd);
}

static void segment_on_punched(struct ring_op *op, int res, uint32_t flags)
{
	struct segment *seg = container_of(op, struct segment, op);
	if (res < 0 && res != -EOPNOTSUPP)
		log_warn("store: release preallocation of %s: %s", seg->path, strerror(-res));
	segment_submit_close(seg);
}

/* Last reference gone: give the unused preallocation back (the size stays;
 * recovery trims it) and close the file. */
void spool_segment_unref(struct segment *seg)
{
	assert(seg->refs > 0);
	if (--seg->refs > 0)
		return;
	/* The pool and the worker's packed slot each hold a reference: the
	 * last one cannot go while either still lists the segment. */
	assert(!seg->in_pool && seg->w->packed != seg && !seg->owner && !seg->waiters);
	if (seg->fd < 0) {
		segment_free(seg);
		return;
	}
	seg->state = SEG_CLOSING;
	seg->w->closing++;
	if (seg->allocated <= seg->tail) {
		segment_submit_close(seg);
		return;
	}
	seg->op.complete = segment_on_punched;
	struct io_uring_sqe *sqe = ring_sqe(seg->w->ring, &seg->op);
	if (!sqe) {
		segment_submit_close(seg);
		return;
	}
	io_uring_prep_fallocate(sqe, seg->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)seg->tail, (off_t)(seg->allocated - seg->tail));
}

void spool_pool_drain(struct store_worker *w)
{
	if (w->packed && w->packed->state == SEG_READY) {
		/* Treated like a pooled segment: its last reference closes it. */
		struct segment *seg = w->packed;
		w->packed = NULL;
		seg->packed = false;
		pool_push(seg);
	}
	/* The next is taken before seg may be freed: pool_remove of the head
	 * makes it the new head. */
	for (struct segment *seg = w->pool, *next; seg; seg = next) {
		next = seg->pool_next;
		pool_remove(seg);
		if (--seg->refs > 0)
			continue; /* a commit still holds it; unref closes it later */
		/* Shutdown may block: a clean stop leaves no preallocation behind. */
		if (ftruncate(seg->fd, (off_t)seg->tail) < 0)
			log_warn("store: trim %s: %s", seg->path, strerror(errno));
		if (close(seg->fd) < 0)
			log_warn("store: close %s: %s", seg->path, strerror(errno));
		segment_free(seg);
	}
}
