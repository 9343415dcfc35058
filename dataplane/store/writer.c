/*
 * writer: the one thread that writes the index.
 *
 * Workers hand finished uploads over with MSG_RING onto the writer's ring
 * (the completion's op is the upload's commit_op). Device events come the
 * same way from workers, or through a locked queue and an eventfd from other
 * threads. The writer gathers a group (up to group_max uploads, or until
 * group_wait_us after the first one arrived), fdatasyncs every touched
 * segment once, in parallel through its ring (plus the spool directory of
 * segments created since the last sync), commits one LMDB transaction for
 * the group, and answers each upload on its worker's ring. An upload whose
 * segment (or whose segment's new directory entry) failed a sync fails and
 * is not indexed; so does every later upload in that segment, which is
 * retired (fsyncgate). Nothing not durable is ever visible.
 *
 * Retention runs here too: at start, every 60 s, and after a commit that
 * took the spool past retain_bytes.
 */
#include "store-internal.h"
#include "store-probe.h"

#include "beacon/log.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WRITER_RING_ENTRIES 256
#define RETENTION_PERIOD_MS 60000ull
#define RETENTION_TXN_MAX 10000

struct writer {
	struct store *s;
	struct ring ring;
	int init_rc;
	bool ready;
	pthread_mutex_t start_lock;
	pthread_cond_t start_cond;

	struct store_upload *pending, **pending_tail;
	unsigned n_pending;
	struct device_event *events, **events_tail;
	uint64_t group_deadline_us; /* 0: nothing waiting */
	uint64_t group_gen;

	struct ring_op event_op; /* read of the eventfd */
	uint64_t event_buf;
	bool event_armed;

	unsigned syncs_outstanding;
	struct sync_batch *stranded; /* ops of a broken ring, freed after ring_exit */
	uint64_t total_bytes;	     /* body bytes indexed */
	uint64_t next_retention_ms;
};

struct sync_op {
	struct ring_op op;
	struct writer *wr;
	struct segment *seg; /* NULL for a directory */
	unsigned dir_worker; /* a directory's worker */
	int fd;
	int res;
	struct store_sync_event probe;
};

/* One group's sync ops. Stranded on the writer when the ring breaks with
 * syncs in flight: a later completion still writes into them. */
struct sync_batch {
	struct sync_batch *next;
	struct sync_op ops[];
};

uint64_t store_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void writer_group_opens(struct writer *wr)
{
	if (!wr->group_deadline_us)
		wr->group_deadline_us = monotonic_us() + wr->s->opts.group_wait_us;
}

void writer_on_upload(struct ring_op *op, int res, uint32_t flags)
{
	struct store_upload *u = container_of(op, struct store_upload, commit_op);
	struct writer *wr = u->w->s->writer;
	/* Handed over whole (upload_handoff): its record written into a
	 * segment of its own worker, its buffer given back, no I/O in flight. */
	assert(u->state == UP_COMMITTING && !u->error && !u->io_busy && !u->buf);
	assert(u->seg && u->seg->w == u->w && u->stream_len >= RECORD_HEADER_BYTES);
	u->group_next = NULL;
	*wr->pending_tail = u;
	wr->pending_tail = &u->group_next;
	wr->n_pending++;
	writer_group_opens(wr);
}

static void writer_add_event(struct writer *wr, struct device_event *ev)
{
	ev->next = NULL;
	*wr->events_tail = ev;
	wr->events_tail = &ev->next;
	writer_group_opens(wr);
}

void writer_on_device_event(struct ring_op *op, int res, uint32_t flags)
{
	struct device_event *ev = container_of(op, struct device_event, op);
	writer_add_event(ev->s->writer, ev);
}

/* ---- the eventfd: queued device events from other threads, and stop ---- */

static void writer_arm_eventfd(struct writer *wr);

static void writer_take_seen_queue(struct writer *wr)
{
	struct store *s = wr->s;
	pthread_mutex_lock(&s->seen_lock);
	struct device_event *ev = s->seen_head;
	s->seen_head = NULL;
	s->seen_tail = &s->seen_head;
	pthread_mutex_unlock(&s->seen_lock);
	while (ev) {
		struct device_event *next = ev->next;
		writer_add_event(wr, ev);
		ev = next;
	}
}

static void writer_on_eventfd(struct ring_op *op, int res, uint32_t flags)
{
	struct writer *wr = container_of(op, struct writer, event_op);
	wr->event_armed = false;
	if (res < 0 && res != -EINTR && res != -EAGAIN)
		log_err("store: writer eventfd read: %s", strerror(-res));
	writer_take_seen_queue(wr);
	if (!atomic_load(&wr->s->stopping))
		writer_arm_eventfd(wr);
}

static void writer_arm_eventfd(struct writer *wr)
{
	struct io_uring_sqe *sqe = ring_sqe(&wr->ring, &wr->event_op);
	if (!sqe) {
		log_err("store: writer ring refused the eventfd read");
		return;
	}
	wr->event_op.complete = writer_on_eventfd;
	io_uring_prep_read(sqe, wr->s->event_fd, &wr->event_buf, sizeof wr->event_buf, 0);
	wr->event_armed = true;
}

/* ---- group commit ---- */

static void writer_on_synced(struct ring_op *op, int res, uint32_t flags)
{
	struct sync_op *so = container_of(op, struct sync_op, op);
	if (store_io_probe) {
		so->probe.phase = STORE_PROBE_DONE;
		so->probe.res = res;
		res = store_io_probe(&so->probe);
	}
	so->res = res;
	so->wr->syncs_outstanding--;
}

static void sync_op_describe(struct sync_op *so, struct store *s)
{
	struct store_sync_event *ev = &so->probe;
	memset(ev, 0, sizeof *ev);
	ev->fd = so->fd;
	if (so->seg) {
		ev->what = STORE_SYNC_SEGMENT;
		ev->path = so->seg->path;
		ev->worker = so->seg->w->id;
		ev->seq = so->seg->seq;
	} else {
		ev->what = STORE_SYNC_DIR;
		ev->path = s->dirs[so->dir_worker].path;
		ev->worker = so->dir_worker;
	}
}

static int writer_submit_sync(struct writer *wr, struct sync_op *so, int fd, unsigned fsync_flags)
{
	so->wr = wr;
	so->fd = fd;
	so->op.complete = writer_on_synced;
	struct io_uring_sqe *sqe = ring_sqe(&wr->ring, &so->op);
	if (!sqe)
		return -EBUSY;
	if (store_io_probe) {
		sync_op_describe(so, wr->s);
		so->probe.phase = STORE_PROBE_BEFORE;
		store_io_probe(&so->probe);
	}
	io_uring_prep_fsync(sqe, fd, fsync_flags);
	wr->syncs_outstanding++;
	return 0;
}

/* A segment whose fdatasync failed is never synced for success again
 * (fsyncgate): the kernel reports a writeback error once and marks the lost
 * pages clean, so a later fdatasync returns 0 over bytes that may never
 * reach the disk. Every record of it that is not indexed yet fails. */
static void segment_poison(struct segment *seg, int err)
{
	assert(err < 0); /* the store_error its records not yet indexed get */
	if (atomic_load(&seg->sync_failed))
		return;
	seg->sync_error = err;
	atomic_store(&seg->sync_failed, true);
	log_err("store: %s retired after a failed sync: its records not yet indexed fail, "
		"new ones go to a fresh segment",
		seg->path);
}

/* Waits for every submitted sync, even after a failure: the ops live in
 * the batch. False when the ring broke with syncs still in flight. */
static bool writer_wait_syncs(struct writer *wr)
{
	while (wr->syncs_outstanding > 0) {
		int r = ring_run_once(&wr->ring, 100000000ull);
		if (r < 0 && r != -EINTR && r != -ETIME) {
			log_err("store: writer ring: %s", strerror(-r));
			return false;
		}
	}
	return true;
}

/* Reads the results: a failed segment sync poisons its segment; a failed
 * directory sync poisons every segment of the batch whose name it was to
 * make durable. The rest learn that their name is durable now. */
static void writer_apply_sync_results(struct store *s, struct sync_op *ops, unsigned nops,
				      bool all_submitted)
{
	for (unsigned i = 0; i < nops; i++) {
		struct sync_op *so = &ops[i];
		if (so->res >= 0)
			continue;
		int err = store_error_from_errno(so->res);
		if (so->seg) {
			log_err("store: fdatasync %s: %s", so->seg->path, strerror(-so->res));
			segment_poison(so->seg, err);
			continue;
		}
		log_err("store: fsync %s: %s", s->dirs[so->dir_worker].path, strerror(-so->res));
		for (unsigned j = 0; j < nops; j++) {
			struct segment *seg = ops[j].seg;
			if (seg && !seg->dir_synced && seg->w->id == so->dir_worker)
				segment_poison(seg, err);
		}
	}
	for (unsigned i = 0; i < nops && all_submitted; i++)
		if (ops[i].seg && !atomic_load(&ops[i].seg->sync_failed))
			ops[i].seg->dir_synced = true;
}

/* fdatasyncs each touched segment once, and fsyncs the spool directory of
 * each worker with a segment created since the last sync (a new file's name
 * is not durable with its data). All in parallel; waits for all. Then
 * status[i] tells whether group[i]'s record is durable (0) or why not: an
 * upload in a segment that ever failed a sync fails, whatever this
 * group's syncs returned. */
static void writer_sync_segments(struct writer *wr, struct store_upload **group, unsigned n,
				 int *status)
{
	struct store *s = wr->s;
	struct sync_batch *batch =
		calloc(1, sizeof *batch + ((size_t)n + s->nworkers) * sizeof batch->ops[0]);
	bool *dir_needed = calloc(s->nworkers, sizeof *dir_needed);
	if (!batch || !dir_needed) {
		free(batch);
		free(dir_needed);
		for (unsigned i = 0; i < n; i++)
			status[i] = STORE_ERR_IO;
		return;
	}
	struct sync_op *ops = batch->ops;
	unsigned nops = 0;
	int rc = 0;
	wr->group_gen++;
	for (unsigned i = 0; i < n && !rc; i++) {
		struct segment *seg = group[i]->seg;
		if (seg->group_mark == wr->group_gen || atomic_load(&seg->sync_failed))
			continue;
		seg->group_mark = wr->group_gen;
		if (!seg->dir_synced)
			dir_needed[seg->w->id] = true;
		ops[nops].seg = seg;
		rc = writer_submit_sync(wr, &ops[nops++], seg->fd, IORING_FSYNC_DATASYNC);
	}
	for (unsigned id = 0; id < s->nworkers && !rc; id++) {
		if (dir_needed[id]) {
			ops[nops].dir_worker = id;
			rc = writer_submit_sync(wr, &ops[nops++], s->dirs[id].fd, 0);
		}
	}
	if (rc) {
		log_err("store: writer ring refused a sync; the group fails");
		nops--; /* the refused one was never submitted */
	}
	if (!writer_wait_syncs(wr)) {
		/* The ring is broken: the ops may still complete, so they live
		 * until the ring is gone. What they synced is unknown. */
		for (unsigned i = 0; i < nops; i++)
			if (ops[i].seg)
				segment_poison(ops[i].seg, STORE_ERR_IO);
		batch->next = wr->stranded;
		wr->stranded = batch;
		batch = NULL;
	} else {
		atomic_fetch_add(&s->n_fsyncs, nops);
		writer_apply_sync_results(s, ops, nops, rc == 0);
	}
	for (unsigned i = 0; i < n; i++) {
		struct segment *seg = group[i]->seg;
		if (atomic_load(&seg->sync_failed))
			status[i] = seg->sync_error;
		else if (rc)
			status[i] = STORE_ERR_IO; /* the ring refused a sync: none is trusted */
		else
			status[i] = 0;
	}
	free(batch);
	free(dir_needed);
}

static void upload_record_from(struct upload_record *rec, const struct store_upload *u,
			       uint64_t now_ms)
{
	memset(rec, 0, sizeof *rec);
	rec->id = u->id;
	rec->meta = u->meta;
	rec->worker = u->w->id;
	rec->segment = u->seg->seq;
	rec->offset = u->record_off + RECORD_HEADER_BYTES;
	rec->length = u->body_len;
	rec->crc32 = u->crc;
	rec->received_unix_ms = now_ms;
	rec->has_sha256 = u->has_sha256;
	memcpy(rec->sha256, u->sha256, sizeof rec->sha256);
}

/* Applies a device's upload or authentication to its record. */
static int writer_touch_device(struct store *s, MDB_txn *txn, const char *device,
			       const uint8_t sha[32], uint64_t at_ms,
			       const enum auth_result *result, bool upload)
{
	struct device_record d;
	int e = index_get_device(&s->ix, txn, device, &d);
	bool fresh = e == STORE_ERR_NOTFOUND;
	if (fresh) {
		device_record_init(&d, device, at_ms);
		/* approval = require: a new device waits for an operator. */
		d.state = s->opts.require_approval ? DEVICE_UNAPPROVED : DEVICE_APPROVED;
	} else if (e) {
		return EIO;
	}
	if (at_ms > d.last_seen_unix_ms)
		d.last_seen_unix_ms = at_ms;
	if (at_ms < d.first_seen_unix_ms)
		d.first_seen_unix_ms = at_ms;
	device_record_add_fingerprint(&d, sha);
	if (upload)
		d.uploads++;
	if (result) {
		d.last_result = *result;
		/* The state is the operator's (store_device_set_state) and the
		 * policy's for new devices; a handshake never changes it. */
	}
	return index_put_device(&s->ix, txn, &d);
}

static int writer_fill_txn(struct writer *wr, MDB_txn *txn, struct store_upload **group, unsigned n,
			   struct device_event *events, uint64_t now_ms, uint64_t *bytes)
{
	struct store *s = wr->s;
	uint64_t max_id = 0;
	*bytes = 0;
	for (unsigned i = 0; i < n; i++) {
		/* A retry's id is spent too: next_id covers it. */
		if (group[i]->id > max_id)
			max_id = group[i]->id;
		int rc = dedupe_find(s, txn, group[i], now_ms, &group[i]->duplicate_of);
		if (rc)
			return rc;
		if (group[i]->duplicate_of)
			continue;
		struct upload_record rec;
		upload_record_from(&rec, group[i], now_ms);
		rc = index_put_upload(&s->ix, txn, &rec);
		if (!rc)
			rc = drain_sets_add(s, txn, &rec);
		if (!rc)
			rc = writer_touch_device(s, txn, rec.meta.device, rec.meta.cert_sha256,
						 now_ms, NULL, true);
		if (!rc)
			rc = dedupe_remember(s, txn, &rec);
		if (rc)
			return rc;
		*bytes += rec.length;
	}
	unsigned forgotten;
	int prune_rc = dedupe_prune(s, txn, now_ms, dedupe_prune_budget(n), &forgotten);
	if (prune_rc)
		return prune_rc;
	for (struct device_event *ev = events; ev; ev = ev->next) {
		int rc = writer_touch_device(s, txn, ev->device, ev->sha, ev->at_ms, &ev->result,
					     false);
		if (rc)
			return rc;
	}
	uint64_t next_id = 0;
	if (index_get_next_id(&s->ix, txn, &next_id))
		return EIO;
	if (n && max_id + 1 > next_id)
		return index_put_next_id(&s->ix, txn, max_id + 1);
	return 0;
}

/* LMDB forbids resizing under a live read txn of this process: in-process
 * readers hold map_lock shared. */
static bool writer_grow_map(struct store *s)
{
	MDB_envinfo info;
	mdb_env_info(s->ix.env, &info);
	size_t bigger = info.me_mapsize * 2;
	pthread_rwlock_wrlock(&s->map_lock);
	int rc = mdb_env_set_mapsize(s->ix.env, bigger);
	pthread_rwlock_unlock(&s->map_lock);
	if (rc) {
		log_err("store: grow index map to %zu bytes: %s", bigger, mdb_strerror(rc));
		return false;
	}
	log_warn("store: index map full: grew it to %zu bytes", bigger);
	return true;
}

static int writer_index_group(struct writer *wr, struct store_upload **group, unsigned n,
			      struct device_event *events, uint64_t *bytes)
{
	struct store *s = wr->s;
	uint64_t now_ms = store_now_ms();
	for (int attempt = 0;; attempt++) {
		MDB_txn *txn;
		int rc = mdb_txn_begin(s->ix.env, NULL, 0, &txn);
		if (!rc) {
			rc = writer_fill_txn(wr, txn, group, n, events, now_ms, bytes);
			if (rc)
				mdb_txn_abort(txn);
			else
				rc = mdb_txn_commit(txn);
		}
		if (!rc)
			return 0;
		if (rc == MDB_MAP_FULL && attempt == 0 && writer_grow_map(s))
			continue;
		log_err("store: index commit of %u uploads: %s", n, mdb_strerror(rc));
		return index_error(rc);
	}
}

/* The last the writer touches of u: the answer gives it back to its worker. */
static void writer_answer(struct writer *wr, struct store_upload *u, int status)
{
	assert(u->state == UP_COMMITTING && status <= 0);
	u->status = status;
	int rc = ring_msg(&wr->ring, u->w->ring_fd, &u->result_op, status);
	if (rc < 0)
		log_err("store: cannot answer upload %" PRIu64 " on worker %u: %s", u->id, u->w->id,
			strerror(-rc));
}

/* Indexes the group's durable uploads (and the device events) in one
 * transaction; each upload's status says what its worker answers. */
static uint64_t writer_index_durable(struct writer *wr, struct store_upload **group, unsigned n,
				     int *status, struct device_event *events)
{
	struct store_upload *stack_ok[64];
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sizeof one pointer */
	struct store_upload **ok = n <= 64 ? stack_ok : calloc(n, sizeof *ok);
	if (!ok) {
		for (unsigned i = 0; i < n; i++)
			status[i] = status[i] ? status[i] : STORE_ERR_IO;
		ok = stack_ok;
		n = 0;
	}
	unsigned n_ok = 0;
	for (unsigned i = 0; i < n; i++)
		if (!status[i])
			ok[n_ok++] = group[i];
	uint64_t bytes = 0;
	int rc = n_ok || events ? writer_index_group(wr, ok, n_ok, events, &bytes) : 0;
	if (rc) {
		for (unsigned i = 0; i < n; i++)
			status[i] = status[i] ? status[i] : rc;
		bytes = 0;
		n_ok = 0;
	}
	unsigned n_retries = 0;
	for (unsigned i = 0; i < n_ok; i++)
		n_retries += ok[i]->duplicate_of != 0;
	atomic_fetch_add(&wr->s->n_committed, n_ok - n_retries);
	atomic_fetch_add(&wr->s->n_deduplicated, n_retries);
	if (ok != stack_ok)
		free(ok);
	return bytes;
}

/* For store_health. Only a group with uploads says whether the spool
 * commits: device records alone (every handshake adds one) would clear a
 * failure that the next upload meets again. */
static void writer_note_commit(struct store *s, const int *status, unsigned n)
{
	atomic_store(&s->commit_began_us, 0);
	if (!n)
		return;
	int result = 0;
	for (unsigned i = 0; i < n && !result; i++)
		result = status[i];
	atomic_store(&s->last_commit_status, result);
}

static void writer_commit_group(struct writer *wr)
{
	struct store *s = wr->s;
	unsigned n = wr->n_pending < s->opts.group_max ? wr->n_pending : s->opts.group_max;
	struct store_upload *stack_group[64];
	int stack_status[64];
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sizeof one pointer */
	struct store_upload **group = n <= 64 ? stack_group : calloc(n, sizeof *group);
	int *status = n <= 64 ? stack_status : calloc(n, sizeof *status);
	if (!group || !status) {
		if (group != stack_group)
			free(group);
		if (status != stack_status)
			free(status);
		group = stack_group;
		status = stack_status;
		n = n < 64 ? n : 64;
	}
	/* n_pending counts the pending list: the list ends no earlier than n. */
	unsigned taken = 0;
	while (taken < n && wr->pending) {
		group[taken++] = wr->pending;
		wr->pending = wr->pending->group_next;
		if (!wr->pending)
			wr->pending_tail = &wr->pending;
	}
	assert(taken == n);
	n = taken;
	wr->n_pending -= n;
	/* What arrives while this group syncs waits for the next one. */
	struct device_event *events = wr->events;
	wr->events = NULL;
	wr->events_tail = &wr->events;
	wr->group_deadline_us = 0;

	atomic_store(&s->commit_began_us, monotonic_us());
	if (n)
		writer_sync_segments(wr, group, n, status);
	/* Device events do not depend on the segments: they are indexed with
	 * whatever of the group is durable. */
	uint64_t bytes = writer_index_durable(wr, group, n, status, events);
	for (struct device_event *ev = events, *next; ev; ev = next) {
		next = ev->next;
		free(ev);
	}
	wr->total_bytes += bytes;
	atomic_fetch_add(&s->n_commits, 1);
	writer_note_commit(s, status, n);
	for (unsigned i = 0; i < n; i++)
		writer_answer(wr, group[i], status[i]);
	ring_run_once(&wr->ring, 0); /* submit the answers now */
	if (group != stack_group)
		free(group);
	if (status != stack_status)
		free(status);
	if (wr->n_pending || wr->events)
		writer_group_opens(wr);
	if (bytes && s->opts.retain_bytes && wr->total_bytes > s->opts.retain_bytes)
		writer_retention_pass(s, &wr->total_bytes, false);
}

/* ---- retention ---- */

struct emptied {
	unsigned worker;
	uint64_t seq;
};

static void retention_unlink(struct store *s, const struct emptied *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		/* An open segment still takes records; the periodic sweep gets it
		 * once its worker has closed it. */
		if (e[i].worker < s->nworkers && spool_dir_is_open(&s->dirs[e[i].worker], e[i].seq))
			continue;
		char path[PATH_MAX];
		if (spool_segment_path(path, sizeof path, s->data_dir, e[i].worker, e[i].seq))
			continue;
		if (unlink(path) < 0 && errno != ENOENT)
			log_warn("store: retention: unlink %s: %s", path, strerror(errno));
	}
}

static bool retention_due(const struct store_options *opts, uint64_t ms, uint64_t now_ms,
			  uint64_t total_bytes)
{
	if (opts->retain_seconds && ms + opts->retain_seconds * 1000u < now_ms)
		return true;
	return opts->retain_bytes && total_bytes > opts->retain_bytes;
}

/* Deletes up to RETENTION_TXN_MAX of the oldest uploads that are due, in one
 * txn. *more tells whether it stopped at that bound. */
static int retention_txn(struct store *s, uint64_t *total_bytes, struct emptied **emptied,
			 size_t *n_emptied, bool *more)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	uint64_t now_ms = store_now_ms(), total = *total_bytes;
	*more = false;
	int rc = mdb_txn_begin(s->ix.env, NULL, 0, &txn);
	if (rc)
		return rc;
	rc = mdb_cursor_open(txn, s->ix.by_time, &cur);
	unsigned deleted = 0;
	MDB_val k, v;
	while (!rc && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
		if (k.mv_size != 16 || !retention_due(&s->opts, be64_get(k.mv_data), now_ms, total))
			break;
		if (deleted == RETENTION_TXN_MAX) {
			*more = true;
			break;
		}
		struct upload_record rec;
		uint64_t id = be64_get((uint8_t *)k.mv_data + 8);
		/* The oldest first: stop at one a drain sink has not taken. */
		if (drain_sets_hold(s, txn, id))
			break;
		int e = index_get_upload(&s->ix, txn, id, &rec);
		if (e) {
			/* by_time entry without its upload: drop just the entry. */
			rc = mdb_cursor_del(cur, 0);
			continue;
		}
		bool seg_empty = false;
		rc = index_delete_upload(&s->ix, txn, &rec, &seg_empty);
		total = total >= rec.length ? total - rec.length : 0;
		deleted++;
		if (!rc && seg_empty) {
			struct emptied *ne = realloc(*emptied, (*n_emptied + 1) * sizeof *ne);
			if (ne) {
				*emptied = ne;
				ne[(*n_emptied)++] = (struct emptied){rec.worker, rec.segment};
			}
		}
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
	if (!rc && deleted)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (!rc) {
		*total_bytes = total;
		atomic_fetch_add(&s->n_retained_out, deleted);
		if (deleted)
			log_info("store: retention removed %u uploads", deleted);
	}
	return rc;
}

int writer_retention_pass(struct store *s, uint64_t *total_bytes, bool sweep)
{
	dedupe_prune_all(s); /* logs its own failure; retention goes on */
	if (s->opts.retain_seconds || s->opts.retain_bytes) {
		bool more = true;
		while (more) {
			struct emptied *emptied = NULL;
			size_t n_emptied = 0;
			int rc = retention_txn(s, total_bytes, &emptied, &n_emptied, &more);
			if (rc) {
				log_err("store: retention: %s", mdb_strerror(rc));
				free(emptied);
				return index_error(rc);
			}
			retention_unlink(s, emptied, n_emptied);
			free(emptied);
		}
	}
	return sweep ? spool_sweep_orphans(s) : 0;
}

/* Sums the live bytes from the segments database. */
static int writer_count_bytes(struct store *s, uint64_t *total)
{
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	*total = 0;
	int rc = mdb_txn_begin(s->ix.env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return rc;
	rc = mdb_cursor_open(txn, s->ix.segments, &cur);
	MDB_val k, v;
	MDB_cursor_op op = MDB_FIRST;
	while (!rc && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		struct segment_row row;
		if (segment_row_decode(&v, &row) == 0)
			*total += row.bytes;
		op = MDB_NEXT;
	}
	if (cur)
		mdb_cursor_close(cur); /* a read txn's cursors outlive it */
	mdb_txn_abort(txn);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- the thread ---- */

static bool writer_group_due(struct writer *wr, uint64_t now_us)
{
	if (!wr->n_pending && !wr->events)
		return false;
	return wr->n_pending >= wr->s->opts.group_max || now_us >= wr->group_deadline_us ||
	       atomic_load(&wr->s->stopping);
}

static uint64_t writer_wait_ns(struct writer *wr, uint64_t now_us)
{
	uint64_t until_us = wr->next_retention_ms * 1000u;
	if (wr->group_deadline_us && wr->group_deadline_us < until_us)
		until_us = wr->group_deadline_us;
	uint64_t wait_us = until_us > now_us ? until_us - now_us : 1;
	return wait_us * 1000u;
}

static void writer_loop(struct writer *wr)
{
	struct store *s = wr->s;
	for (;;) {
		uint64_t now_us = monotonic_us();
		if (writer_group_due(wr, now_us)) {
			writer_commit_group(wr);
			continue;
		}
		if (atomic_load(&s->stopping)) {
			writer_take_seen_queue(wr);
			if (!wr->n_pending && !wr->events)
				break;
			continue;
		}
		if (atomic_exchange(&s->retention_wanted, false)) {
			/* A drain took uploads: what only it kept may go. */
			writer_retention_pass(s, &wr->total_bytes, false);
			continue;
		}
		if (now_us / 1000u >= wr->next_retention_ms) {
			writer_retention_pass(s, &wr->total_bytes, true);
			wr->next_retention_ms = monotonic_us() / 1000u + RETENTION_PERIOD_MS;
			continue;
		}
		int rc = ring_run_once(&wr->ring, writer_wait_ns(wr, now_us));
		if (rc < 0 && rc != -EINTR && rc != -ETIME)
			log_err("store: writer ring: %s", strerror(-rc));
	}
}

static void writer_signal_started(struct writer *wr, int rc)
{
	pthread_mutex_lock(&wr->start_lock);
	wr->init_rc = rc;
	wr->ready = true;
	pthread_cond_signal(&wr->start_cond);
	pthread_mutex_unlock(&wr->start_lock);
}

static void *writer_main(void *arg)
{
	struct writer *wr = arg;
	struct store *s = wr->s;
	/* The ring is made on this thread: it is a single-issuer ring. */
	int rc = ring_init(&wr->ring, WRITER_RING_ENTRIES);
	if (rc < 0) {
		writer_signal_started(wr, rc);
		return NULL;
	}
	s->writer_ring_fd = wr->ring.uring.ring_fd;
	writer_arm_eventfd(wr);
	rc = writer_count_bytes(s, &wr->total_bytes);
	if (rc)
		log_err("store: count spool bytes: %s", mdb_strerror(rc));
	writer_retention_pass(s, &wr->total_bytes, false);
	wr->next_retention_ms = monotonic_us() / 1000u + RETENTION_PERIOD_MS;
	writer_signal_started(wr, 0);
	writer_loop(wr);
	/* The eventfd read may still be armed; ring_exit cancels it. */
	ring_exit(&wr->ring);
	for (struct sync_batch *b = wr->stranded, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	wr->stranded = NULL;
	return NULL;
}

int writer_start(struct store *s, char *err, size_t errlen)
{
	struct writer *wr = calloc(1, sizeof *wr);
	if (!wr) {
		snprintf(err, errlen, "store: out of memory");
		return STORE_ERR_IO;
	}
	wr->s = s;
	wr->pending_tail = &wr->pending;
	wr->events_tail = &wr->events;
	pthread_mutex_init(&wr->start_lock, NULL);
	pthread_cond_init(&wr->start_cond, NULL);
	s->writer = wr;
	s->event_fd = eventfd(0, EFD_CLOEXEC);
	if (s->event_fd < 0) {
		snprintf(err, errlen, "store: eventfd: %s", strerror(errno));
		goto fail;
	}
	int rc = pthread_create(&s->writer_thread, NULL, writer_main, wr);
	if (rc) {
		snprintf(err, errlen, "store: start writer thread: %s", strerror(rc));
		goto fail;
	}
	pthread_mutex_lock(&wr->start_lock);
	while (!wr->ready)
		pthread_cond_wait(&wr->start_cond, &wr->start_lock);
	pthread_mutex_unlock(&wr->start_lock);
	if (wr->init_rc < 0) {
		snprintf(err, errlen, "store: writer io_uring: %s", strerror(-wr->init_rc));
		pthread_join(s->writer_thread, NULL);
		goto fail;
	}
	return 0;
fail:
	if (s->event_fd >= 0)
		close(s->event_fd);
	s->event_fd = -1;
	s->writer = NULL;
	free(wr);
	return STORE_ERR_IO;
}

static void writer_kick(struct store *s)
{
	uint64_t one = 1;
	if (write(s->event_fd, &one, sizeof one) < 0)
		log_err("store: wake writer: %s", strerror(errno));
}

void writer_stop(struct store *s)
{
	struct writer *wr = s->writer;
	if (!wr)
		return;
	atomic_store(&s->stopping, true);
	writer_kick(s);
	pthread_join(s->writer_thread, NULL);
	close(s->event_fd);
	s->event_fd = -1;
	/* Events queued after the writer's last look. */
	for (struct device_event *ev = s->seen_head, *next; ev; ev = next) {
		next = ev->next;
		free(ev);
	}
	s->seen_head = NULL;
	pthread_cond_destroy(&wr->start_cond);
	pthread_mutex_destroy(&wr->start_lock);
	free(wr);
	s->writer = NULL;
}

/* ---- device events ---- */

static struct device_event *device_event_new(const char *device, const uint8_t sha[32],
					     enum auth_result result)
{
	if (!device || !device[0] || (unsigned)result >= AUTH_RESULT_COUNT)
		return NULL;
	struct device_event *ev = calloc(1, sizeof *ev);
	if (!ev)
		return NULL;
	snprintf(ev->device, sizeof ev->device, "%s", device);
	if (sha)
		memcpy(ev->sha, sha, 32);
	ev->result = result;
	ev->at_ms = store_now_ms();
	return ev;
}

void store_device_seen(struct store *s, const char *device, const uint8_t cert_sha256[32],
		       enum auth_result result)
{
	if (!s)
		return;
	struct device_event *ev = device_event_new(device, cert_sha256, result);
	if (!ev)
		return;
	pthread_mutex_lock(&s->seen_lock);
	*s->seen_tail = ev;
	s->seen_tail = &ev->next;
	pthread_mutex_unlock(&s->seen_lock);
	writer_kick(s);
}

int store_worker_device_seen(struct store_worker *w, const char *device,
			     const uint8_t cert_sha256[32], enum auth_result result)
{
	if (!w)
		return STORE_ERR_INVAL;
	struct device_event *ev = device_event_new(device, cert_sha256, result);
	if (!ev)
		return STORE_ERR_INVAL;
	ev->s = w->s;
	ev->op.complete = writer_on_device_event;
	int rc = ring_msg(w->ring, w->s->writer_ring_fd, &ev->op, 0);
	if (rc < 0) {
		free(ev);
		return STORE_ERR_IO;
	}
	return 0;
}

/* Operator changes are rare and must be durable before beaconctl hears
 * "ok": one short write transaction of their own. LMDB serialises it with
 * the writer's group commits, which it may delay by one commit. */
int store_device_set_state(struct store *s, const char *device, enum device_state state, char *msg,
			   size_t msglen)
{
	if (!device || !device[0] || strlen(device) >= STORE_DEVICE_MAX) {
		snprintf(msg, msglen, "bad device name");
		return STORE_ERR_INVAL;
	}
	MDB_txn *txn;
	int rc = mdb_txn_begin(s->ix.env, NULL, 0, &txn);
	if (rc) {
		snprintf(msg, msglen, "index: %s", mdb_strerror(rc));
		return index_error(rc);
	}
	struct device_record d;
	int e = index_get_device(&s->ix, txn, device, &d);
	if (e == STORE_ERR_NOTFOUND) {
		/* Approving or blocking ahead of a device's first visit is fine. */
		device_record_init(&d, device, store_now_ms());
		d.first_seen_unix_ms = d.last_seen_unix_ms = 0;
		e = 0;
	}
	if (!e) {
		d.state = state;
		e = index_put_device(&s->ix, txn, &d);
	}
	if (e) {
		mdb_txn_abort(txn);
		snprintf(msg, msglen, "index: %s", store_strerror(e));
		return e;
	}
	rc = mdb_txn_commit(txn);
	if (rc) {
		snprintf(msg, msglen, "index commit: %s", mdb_strerror(rc));
		return index_error(rc);
	}
	snprintf(msg, msglen, "%s is now %s", device,
		 state == DEVICE_BLOCKED    ? "blocked"
		 : state == DEVICE_APPROVED ? "approved"
					    : "unapproved");
	return 0;
}
