/*
 * upload: one upload's body, streamed from the worker into its segment.
 *
 * The upload's buffer (opts.upload_buffer) is two halves: one fills while the
 * other is written through the worker's ring at its explicit offset, so at
 * most one disk operation per upload is in flight and the record stays in
 * order. The first half starts with a zeroed header. An upload takes no
 * segment until it needs one: one that finishes inside its first half
 * reserves its exact record in the worker's packed segment and goes to disk
 * in one write, header included; one that outgrows it takes a segment of
 * its own when the first half is written, starts the writeback of every
 * EARLY_WRITEBACK_BYTES it writes, and rewrites the header once the body is
 * on disk. Then the upload travels to the writer thread (MSG_RING)
 * and comes back with its commit status.
 */
#include "store-internal.h"

#include "beacon/log.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024ull * 1024ull)
#define PREALLOC_MIN (1 * MiB)
#define PREALLOC_MAX (64 * MiB)
/* A streaming upload starts the writeback of what it has written every this
 * many bytes: the disk works while the body still arrives, and the commit's
 * fdatasync finds little left to write. */
#define EARLY_WRITEBACK_BYTES (512 * 1024ull)

static void upload_pump(struct store_upload *u);
static void upload_settle(struct store_upload *u);

static uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

static void upload_list_remove(struct store_upload *u)
{
	struct store_worker *w = u->w;
	if (u->prev)
		u->prev->next = u->next;
	else if (w->open_uploads == u)
		w->open_uploads = u->next;
	if (u->next)
		u->next->prev = u->prev;
	u->prev = u->next = NULL;
}

static uint8_t *upload_buffer_take(struct store_worker *w)
{
	if (w->n_spare)
		return w->spare_bufs[--w->n_spare];
	return malloc(w->s->opts.upload_buffer);
}

/* Called after w->streaming counts this upload out. */
static void upload_buffer_give(struct store_worker *w, uint8_t *buf)
{
	assert(w->n_spare <= UPLOAD_BUFFERS_KEPT);
	if (w->n_spare < UPLOAD_BUFFERS_KEPT &&
	    w->streaming + w->n_spare < w->s->opts.max_open_uploads)
		w->spare_bufs[w->n_spare++] = buf;
	else
		free(buf);
}

void upload_spare_buffers_free(struct store_worker *w)
{
	while (w->n_spare)
		free(w->spare_bufs[--w->n_spare]);
}

static void upload_release_buffer(struct store_upload *u)
{
	if (!u->buf)
		return;
	uint8_t *buf = u->buf;
	u->buf = NULL;
	u->half[0].data = u->half[1].data = NULL;
	assert(u->w->streaming > 0);
	u->w->streaming--;
	atomic_fetch_sub_explicit(&u->w->s->n_streaming, 1, memory_order_relaxed);
	upload_buffer_give(u->w, buf);
}

/* An owned segment goes back untouched: the next upload overwrites this
 * one's bytes. A packed record's range stays unused (nothing indexes it).
 * After an I/O error the segment is not trusted with more records. */
static void upload_release_segment(struct store_upload *u)
{
	struct segment *seg = u->seg;
	if (!seg)
		return;
	u->seg = NULL;
	if (seg->packed) {
		if (u->error == STORE_ERR_IO)
			spool_segment_seal(seg);
		spool_segment_unref(seg);
		return;
	}
	if (u->error == STORE_ERR_IO)
		seg->sealed = true;
	spool_segment_put_back(seg, seg->tail);
}

/* An aborted upload, once no I/O of its own is in flight. */
static void upload_destroy(struct store_upload *u)
{
	struct store_worker *w = u->w;
	assert(u->state == UP_ABORTED && !u->io_busy && w->live > 0);
	dedupe_hash_drop(u);
	upload_release_segment(u);
	upload_release_buffer(u);
	w->live--;
	free(u);
}

static void upload_on_result(struct ring_op *op, int res, uint32_t flags)
{
	struct store_upload *u = container_of(op, struct store_upload, result_op);
	struct store_worker *w = u->w;
	int status = u->status;
	/* Back from the writer (or failed before reaching it): the worker owns
	 * it again, and nothing of it is in flight or listed as open. */
	assert(u->state == UP_COMMITTING && !u->io_busy && !u->buf && w->live > 0);
	assert(!u->prev && !u->next && w->open_uploads != u);
	/* Only a durable upload comes back without its segment's reference
	 * given up: a failed one may have let go of it before. */
	assert(status != 0 || u->seg);
	if (u->seg) {
		if (u->seg->sync_failed)
			spool_segment_seal(u->seg);
		spool_segment_unref(u->seg);
		u->seg = NULL;
	}
	store_done_fn done = u->done;
	void *arg = u->done_arg;
	/* A retry the writer recognised answers with the first upload's id. */
	uint64_t id = u->duplicate_of ? u->duplicate_of : u->id;
	dedupe_hash_drop(u);
	w->live--;
	free(u);
	if (done)
		done(arg, status, status == 0 ? id : 0);
}

/* Answers a failed upload from the worker's own ring, never from inside
 * store_upload_finish: the caller's done callback must not re-enter it. */
static void upload_deliver_error(struct store_upload *u)
{
	struct store_worker *w = u->w;
	/* upload_settle let go of its segment and buffer first. */
	assert(u->state == UP_FINISHING && u->error && !u->io_busy && !u->seg && !u->buf);
	u->status = u->error;
	u->state = UP_COMMITTING;
	u->result_op.complete = upload_on_result;
	if (ring_msg(w->ring, w->ring_fd, &u->result_op, u->status) < 0)
		upload_on_result(&u->result_op, u->status, 0);
}

static void upload_wake(struct store_upload *u)
{
	store_wake_fn wake = u->wake;
	if (u->state != UP_OPEN || !wake)
		return;
	u->wake = NULL;
	wake(u->wake_arg);
}

static void upload_fail(struct store_upload *u, int err)
{
	if (!u->error)
		u->error = err;
	if (err == STORE_ERR_NOSPACE)
		spool_pool_give_back_space(u->w);
	upload_settle(u);
}

/* A failed upload lets go of its segment and buffer as soon as no I/O of
 * its own is in flight, and is answered once the caller has finished it. */
static void upload_settle(struct store_upload *u)
{
	if (u->io_busy || (u->seg && u->seg->state == SEG_OPENING))
		return;
	upload_release_segment(u);
	upload_release_buffer(u);
	if (u->state == UP_FINISHING)
		upload_deliver_error(u);
	else
		upload_wake(u); /* its next write call learns of the error */
}

/* Returns true when the completion may go on with the upload. */
static bool upload_io_done(struct store_upload *u)
{
	u->io_busy = false;
	if (u->state == UP_ABORTED) {
		upload_destroy(u);
		return false;
	}
	if (u->error) {
		upload_settle(u);
		return false;
	}
	return true;
}

static struct io_uring_sqe *upload_sqe(struct store_upload *u, ring_complete_fn fn)
{
	u->io_op.complete = fn;
	/* Its completion gives back the upload's slot (max_open_uploads). */
	u->io_op.urgent = true;
	struct io_uring_sqe *sqe = ring_sqe(u->w->ring, &u->io_op);
	if (!sqe) {
		log_err("store: upload %" PRIu64 ": worker ring refused a submission", u->id);
		upload_fail(u, STORE_ERR_IO);
		return NULL;
	}
	u->io_busy = true;
	return sqe;
}

static void upload_submit_fallocate(struct store_upload *u, uint64_t target);

static void upload_on_fallocated(struct ring_op *op, int res, uint32_t flags)
{
	struct store_upload *u = container_of(op, struct store_upload, io_op);
	if (!upload_io_done(u))
		return;
	struct segment *seg = u->seg;
	if (res == -EOPNOTSUPP) {
		seg->no_falloc = true; /* appends still work, fdatasync costs more */
		upload_pump(u);
		return;
	}
	if (res < 0) {
		/* A big preallocation step may not fit where the record still does. */
		struct upload_half *h = &u->half[u->queued];
		uint64_t exact = round_up(u->record_off + h->stream_off + h->fill, 4096);
		if ((res == -ENOSPC || res == -EDQUOT) && u->falloc_target > exact) {
			upload_submit_fallocate(u, exact);
			return;
		}
		log_err("store: preallocate %s to %" PRIu64 " bytes: %s", seg->path,
			u->falloc_target, strerror(-res));
		upload_fail(u, store_error_from_errno(res));
		return;
	}
	/* Packed uploads grow one segment side by side: never shrink it. */
	if (u->falloc_target > seg->allocated)
		seg->allocated = u->falloc_target;
	upload_pump(u);
}

static void upload_submit_fallocate(struct store_upload *u, uint64_t target)
{
	struct segment *seg = u->seg;
	struct io_uring_sqe *sqe = upload_sqe(u, upload_on_fallocated);
	if (!sqe)
		return;
	u->falloc_target = target;
	io_uring_prep_fallocate(sqe, seg->fd, 0, (off_t)seg->allocated,
				(off_t)(target - seg->allocated));
}

/* Grows the preallocation geometrically (1 MiB up to 64 MiB steps) so small
 * segments stay small and big uploads do not fallocate every half. */
static uint64_t prealloc_target(const struct segment *seg, uint64_t end)
{
	uint64_t step = seg->allocated < PREALLOC_MIN ? PREALLOC_MIN : seg->allocated;
	if (step > PREALLOC_MAX)
		step = PREALLOC_MAX;
	uint64_t target = round_up(end, PREALLOC_MIN);
	if (target < seg->allocated + step)
		target = seg->allocated + step;
	return target;
}

/* Once writeback has been started the upload goes on as after its write;
 * a failure to start it costs nothing but time: the commit's fdatasync
 * writes the range and reports any error. */
static void upload_on_writeback_started(struct ring_op *op, int res, uint32_t flags)
{
	struct store_upload *u = container_of(op, struct store_upload, io_op);
	if (!upload_io_done(u))
		return;
	if (res < 0)
		log_warn("store: start writeback of %s: %s", u->seg->path, strerror(-res));
	bool open = u->state == UP_OPEN;
	upload_pump(u);
	if (open)
		upload_wake(u);
}

/* Starts the writeback of what the upload wrote since it last did, when
 * that is at least EARLY_WRITEBACK_BYTES; true when it did (the upload
 * goes on from its completion). */
static bool upload_start_writeback(struct store_upload *u, uint64_t written_to)
{
	if (u->seg->packed || written_to - u->writeback_to < EARLY_WRITEBACK_BYTES)
		return false;
	struct io_uring_sqe *sqe = upload_sqe(u, upload_on_writeback_started);
	if (!sqe)
		return true; /* failed: upload_sqe settled it */
	io_uring_prep_sync_file_range(sqe, u->seg->fd, (unsigned)(written_to - u->writeback_to),
				      u->record_off + u->writeback_to, SYNC_FILE_RANGE_WRITE);
	u->writeback_to = written_to;
	return true;
}

static void upload_on_written(struct ring_op *op, int res, uint32_t flags)
{
	struct store_upload *u = container_of(op, struct store_upload, io_op);
	if (!upload_io_done(u))
		return;
	struct upload_half *h = &u->half[u->queued];
	if (res <= 0) {
		log_err("store: write %s at %" PRIu64 ": %s", u->seg->path,
			u->record_off + h->stream_off + h->written,
			res == 0 ? "wrote nothing" : strerror(-res));
		upload_fail(u, res == 0 ? STORE_ERR_IO : store_error_from_errno(res));
		return;
	}
	h->written += (size_t)res;
	if (h->written == h->fill) {
		uint64_t written_to = h->stream_off + h->fill;
		h->fill = h->written = 0;
		u->queued = -1;
		if (upload_start_writeback(u, written_to))
			return;
	}
	/* A short write leaves the half queued: pump writes the rest. Only an
	 * open upload has a writer to wake; a finishing one may be handed over
	 * by the pump and, if the writer cannot be reached, answered and freed
	 * before it returns, so it is not read after. */
	bool open = u->state == UP_OPEN;
	upload_pump(u);
	if (open)
		upload_wake(u);
}

static void upload_write_queued(struct store_upload *u)
{
	struct segment *seg = u->seg;
	struct upload_half *h = &u->half[u->queued];
	uint64_t end = u->record_off + h->stream_off + h->fill;
	if (!seg->no_falloc && end > seg->allocated) {
		upload_submit_fallocate(u, prealloc_target(seg, end));
		return;
	}
	struct io_uring_sqe *sqe = upload_sqe(u, upload_on_written);
	if (!sqe)
		return;
	io_uring_prep_write(sqe, seg->fd, h->data + h->written, (unsigned)(h->fill - h->written),
			    u->record_off + h->stream_off + h->written);
}

static void upload_on_header_written(struct ring_op *op, int res, uint32_t flags)
{
	struct store_upload *u = container_of(op, struct store_upload, io_op);
	if (!upload_io_done(u))
		return;
	if (res != (int)RECORD_HEADER_BYTES) {
		/* 48 bytes inside an allocated range: short means broken. */
		log_err("store: write header of upload %" PRIu64 " in %s: %s", u->id, u->seg->path,
			res < 0 ? strerror(-res) : "short write");
		upload_fail(u, res < 0 ? store_error_from_errno(res) : STORE_ERR_IO);
		return;
	}
	u->header_written = true;
	upload_pump(u);
}

static void upload_write_header(struct store_upload *u)
{
	struct io_uring_sqe *sqe = upload_sqe(u, upload_on_header_written);
	if (!sqe)
		return;
	io_uring_prep_write(sqe, u->seg->fd, u->header, RECORD_HEADER_BYTES, u->record_off);
}

/* The record is whole on disk (not yet synced): the segment is free for the
 * next upload, and the writer takes this one into its next group. */
static void upload_handoff(struct store_upload *u)
{
	struct store_worker *w = u->w;
	struct segment *seg = u->seg;
	/* The whole record, header last, is written and nothing else is in
	 * flight: from here until its answer the writer reads it. */
	assert(u->state == UP_FINISHING && !u->io_busy && !u->error && u->header_written);
	assert(u->queued < 0 && u->half[u->filling].fill == 0);
	assert(seg && seg->state == SEG_READY && seg->w == w && seg->refs > 0);
	assert(!seg->in_pool); /* owned (streaming) or packed, never pooled */
	u->body_len = u->stream_len - RECORD_HEADER_BYTES;
	upload_release_buffer(u);
	if (!seg->packed) {
		spool_segment_ref(seg); /* held by the commit */
		spool_segment_put_back(seg, u->record_off + u->stream_len);
	} /* else the upload's reference is the commit's */
	u->state = UP_COMMITTING;
	u->commit_op.complete = writer_on_upload;
	u->result_op.complete = upload_on_result;
	int rc = ring_msg(w->ring, w->s->writer_ring_fd, &u->commit_op, 0);
	if (rc < 0) {
		log_err("store: upload %" PRIu64 ": cannot reach the writer: %s", u->id,
			strerror(-rc));
		u->status = STORE_ERR_IO;
		upload_on_result(&u->result_op, u->status, 0);
	}
}

/* Whether the upload's one disk operation may start now. */
static bool upload_io_ready(const struct store_upload *u)
{
	return !u->io_busy && !u->error && u->seg && u->seg->state == SEG_READY;
}

/* Moves the upload forward by one disk operation, in record order: the
 * queued half, then (finishing) the last half, the header, the hand over. */
static void upload_pump(struct store_upload *u)
{
	if (!upload_io_ready(u))
		return;
	if (u->queued >= 0) {
		upload_write_queued(u);
		return;
	}
	if (u->state != UP_FINISHING)
		return;
	if (u->half[u->filling].fill > 0) {
		u->queued = u->filling;
		u->filling ^= 1;
		upload_write_queued(u);
	} else if (!u->header_written) {
		upload_write_header(u);
	} else {
		upload_handoff(u);
	}
}

void upload_segment_ready(struct store_upload *u, int err)
{
	if (err)
		u->seg = NULL; /* spool freed it */
	if (u->state == UP_ABORTED) {
		upload_destroy(u);
		return;
	}
	if (err) {
		upload_fail(u, err);
		return;
	}
	upload_pump(u);
}

/* The body outgrew the first half: from now on the upload streams into a
 * segment of its own (opened through the ring when the pool has none). */
static bool upload_take_segment(struct store_upload *u)
{
	int err = 0;
	u->seg = spool_segment_take(u->w, u, &err);
	if (!u->seg) {
		upload_fail(u, err);
		return false;
	}
	u->record_off = u->seg->tail;
	return true;
}

/* The full half goes to disk and the other one fills; false while the other
 * half is still being written. */
static bool upload_rotate(struct store_upload *u)
{
	if (u->queued >= 0)
		return false;
	if (!u->seg && !upload_take_segment(u))
		return false;
	u->queued = u->filling;
	u->filling ^= 1;
	struct upload_half *h = &u->half[u->filling];
	h->fill = h->written = 0;
	h->stream_off = u->stream_len;
	u->flushed_any = true;
	/* What upload_pump does for an open upload: only the queued half, never
	 * the hand over, so the caller's upload stays alive. */
	if (upload_io_ready(u))
		upload_write_queued(u);
	return true;
}

int store_upload_begin(struct store_worker *w, const struct upload_meta *meta,
		       struct store_upload **out)
{
	if (!w || !meta || !out)
		return STORE_ERR_INVAL;
	if (w->streaming >= w->s->opts.max_open_uploads)
		return STORE_ERR_BUSY;
	struct store_upload *u = calloc(1, sizeof *u);
	if (!u)
		return STORE_ERR_IO;
	u->half_size = w->s->opts.upload_buffer / 2;
	u->buf = upload_buffer_take(w);
	if (!u->buf) {
		free(u);
		return STORE_ERR_IO;
	}
	u->w = w;
	u->meta = *meta;
	u->meta.device[STORE_DEVICE_MAX - 1] = '\0';
	u->meta.category[STORE_CATEGORY_MAX - 1] = '\0';
	u->meta.name[STORE_NAME_MAX - 1] = '\0';
	u->half[0].data = u->buf;
	u->half[1].data = u->buf + u->half_size;
	memset(u->buf, 0, RECORD_HEADER_BYTES); /* placeholder header */
	u->half[0].fill = RECORD_HEADER_BYTES;
	u->stream_len = RECORD_HEADER_BYTES;
	u->queued = -1;
	u->crc = 0;
	w->streaming++;
	atomic_fetch_add_explicit(&w->s->n_streaming, 1, memory_order_relaxed);
	w->live++;
	u->id = atomic_fetch_add(&w->s->next_id, 1);
	dedupe_hash_begin(u);
	u->next = w->open_uploads;
	if (u->next)
		u->next->prev = u;
	w->open_uploads = u;
	*out = u;
	return 0;
}

ssize_t store_upload_window(struct store_upload *u, uint8_t **at, store_wake_fn wake, void *arg)
{
	if (!u || !at)
		return STORE_ERR_INVAL;
	if (u->error)
		return u->error;
	if (u->state != UP_OPEN)
		return STORE_ERR_INVAL;
	if (u->half[u->filling].fill == u->half_size && !upload_rotate(u)) {
		if (u->error)
			return u->error;
		u->wake = wake;
		u->wake_arg = arg;
		return 0;
	}
	struct upload_half *h = &u->half[u->filling];
	*at = h->data + h->fill;
	return (ssize_t)(u->half_size - h->fill);
}

/* Counts n bytes written at the window; a full half goes to disk at once
 * rather than on the next call. */
static void upload_take(struct store_upload *u, size_t n)
{
	struct upload_half *h = &u->half[u->filling];
	u->crc = record_crc32(u->crc, h->data + h->fill, n);
	dedupe_hash_update(u, h->data + h->fill, n);
	h->fill += n;
	u->stream_len += n;
	if (h->fill == u->half_size)
		upload_rotate(u);
}

int store_upload_wrote(struct store_upload *u, size_t n)
{
	if (!u || u->state != UP_OPEN)
		return STORE_ERR_INVAL;
	if (u->error)
		return u->error;
	if (n > u->half_size - u->half[u->filling].fill)
		return STORE_ERR_INVAL;
	upload_take(u, n);
	return u->error;
}

ssize_t store_upload_write(struct store_upload *u, const void *data, size_t len, store_wake_fn wake,
			   void *arg)
{
	if (!u || (!data && len))
		return STORE_ERR_INVAL;
	const uint8_t *p = data;
	size_t taken = 0;
	while (taken < len) {
		uint8_t *at = NULL;
		ssize_t room = store_upload_window(u, &at, wake, arg);
		if (room <= 0 || !at)
			return taken == 0 && room < 0 ? room : (ssize_t)taken;
		size_t n = len - taken < (size_t)room ? len - taken : (size_t)room;
		memcpy(at, p + taken, n);
		upload_take(u, n);
		taken += n;
	}
	return (ssize_t)taken;
}

void store_upload_finish(struct store_upload *u, store_done_fn done, void *arg)
{
	if (!u)
		return;
	if (u->state != UP_OPEN) {
		log_err("store: upload %" PRIu64 " finished twice or after abort", u->id);
		return;
	}
	upload_list_remove(u);
	u->done = done;
	u->done_arg = arg;
	u->wake = NULL;
	u->state = UP_FINISHING;
	if (u->error) {
		upload_settle(u);
		return;
	}
	dedupe_hash_end(u);
	struct record_header h = {
		.id = u->id, .length = u->stream_len - RECORD_HEADER_BYTES, .crc = u->crc};
	record_header_encode(u->header, &h);
	if (!u->flushed_any) {
		/* Still all in the first half: one write carries header and body,
		 * packed with the worker's other small records. */
		memcpy(u->half[0].data, u->header, RECORD_HEADER_BYTES);
		u->header_written = true;
		int err = 0;
		u->seg = spool_packed_reserve(u->w, u, u->stream_len, &err);
		if (!u->seg) {
			upload_fail(u, err);
			return;
		}
	}
	upload_pump(u);
}

void store_upload_abort(struct store_upload *u)
{
	if (!u)
		return;
	if (u->state != UP_OPEN) {
		log_err("store: upload %" PRIu64 " aborted after finish", u->id);
		return;
	}
	upload_list_remove(u);
	u->state = UP_ABORTED;
	u->wake = NULL;
	/* An in-flight write or open must land before the segment is reused. */
	if (u->io_busy || (u->seg && u->seg->state == SEG_OPENING))
		return;
	upload_destroy(u);
}
