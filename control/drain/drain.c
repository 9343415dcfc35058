/*
 * drain: the generic thread between the store and one sink.
 *
 * It keeps a table of the uploads in flight (at most `window` messages, and
 * at most DRAIN_INFLIGHT_BYTES of bodies, but always one upload). The sink's
 * acknowledgements count each upload down; an upload whose messages are all
 * acknowledged is marked drained in the store in the next batch. Acks may
 * complete uploads in any order: the store's pending set is exact, so an
 * upload's place in it does not depend on its neighbours. A failed message
 * fails the round: the drain waits for what is still in flight, records what
 * did complete, and after a backoff scans the pending set from its start.
 */
#include "drain-internal.h"

#include "beacon/config.h"
#include "beacon/log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_INFLIGHT_BYTES (64ull << 20)
#define BACKOFF_MIN_MS 500u
#define BACKOFF_MAX_MS 30000u
#define IDLE_POLL_MS 100u
#define FLUSH_TIMEOUT_MS 15000u
/* Spool segments kept open between uploads: one per worker in practice
 * (opening a worker's next segment closes its previous one). */
#define OPEN_SEGMENTS 8u
/* Pending uploads read from the store in one transaction. */
#define READ_BATCH 64u

struct open_segment {
	uint32_t worker;
	uint64_t segment;
	int fd; /* -1: slot free */
	uint64_t last_use;
};

struct inflight {
	uint64_t id;
	uint64_t bytes;
	long outstanding; /* messages queued minus messages reported */
	bool queued;	  /* publish returned: outstanding is final */
	bool failed;
	bool refused; /* the sink refused it for good: done, counted failed */
};

struct drain {
	struct store *store;
	const struct drain_sink_ops *ops;
	void *sink;
	unsigned window;
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* under lock */
	bool stopping, paused, kick, rescan;
	enum drain_state state;
	char last_error[256];
	struct inflight *inflight; /* window entries */
	unsigned n_inflight;
	unsigned msgs_inflight;
	uint64_t bytes_inflight;

	/* The drain thread's own: bodies are checked through verify_buf, in
	 * segments kept open while it sends without a pause. */
	struct open_segment segs[OPEN_SEGMENTS];
	uint64_t seg_clock;
	uint8_t *verify_buf;
	const uint8_t *verified_body; /* in verify_buf: verified_id's, whole */
	uint64_t verified_id;
	/* Pending uploads read ahead, in id order: batch[next .. n_batch). */
	struct upload_record *batch;
	size_t n_batch, next_batch;

	_Atomic uint64_t uploads_published, bytes_published, uploads_acked, bytes_acked,
		uploads_failed, bytes_failed;
};

static struct inflight *inflight_find(struct drain *d, uint64_t id)
{
	for (unsigned i = 0; i < d->n_inflight; i++)
		if (d->inflight[i].id == id)
			return &d->inflight[i];
	return NULL;
}

void drain_message_done(struct drain *d, uint64_t id, bool ok, const char *why)
{
	pthread_mutex_lock(&d->lock);
	struct inflight *f = inflight_find(d, id);
	if (f) {
		f->outstanding--;
		/* A report before publish returned is netted out there. */
		if (f->queued && d->msgs_inflight)
			d->msgs_inflight--;
		if (!ok && !f->failed) {
			f->failed = true;
			snprintf(d->last_error, sizeof d->last_error, "%s", why ? why : "failed");
		}
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
}

void drain_message_refused(struct drain *d, uint64_t id, const char *why)
{
	log_err("drain %s: upload %" PRIu64 " refused for good, left behind: %s", d->ops->name, id,
		why);
	pthread_mutex_lock(&d->lock);
	struct inflight *f = inflight_find(d, id);
	if (f)
		f->refused = true;
	pthread_mutex_unlock(&d->lock);
	drain_message_done(d, id, true, NULL);
}

/* Waits until woken or ms passed. Under lock. */
static void wait_ms(struct drain *d, unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000u;
	ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&d->cond, &d->lock, &ts);
}

static void set_state(struct drain *d, enum drain_state st, const char *why)
{
	if (st == DRAIN_DISCONNECTED && why) {
		if (d->state != DRAIN_DISCONNECTED || strcmp(d->last_error, why) != 0)
			log_warn("drain %s: %s", d->ops->name, why);
		snprintf(d->last_error, sizeof d->last_error, "%s", why);
	} else if (st == DRAIN_CONNECTED && d->state != DRAIN_CONNECTED) {
		log_info("drain %s: connected", d->ops->name);
	}
	d->state = st;
}

/* Takes the completed uploads out of the table (under lock) into ids;
 * returns how many, and whether one failed. */
static size_t take_completed(struct drain *d, uint64_t *ids, uint64_t *bytes, size_t *refused,
			     bool *failed)
{
	size_t n = 0;
	*refused = 0;
	*failed = false;
	*bytes = 0;
	for (unsigned i = 0; i < d->n_inflight;) {
		struct inflight *f = &d->inflight[i];
		*failed |= f->failed;
		if (f->queued && f->outstanding <= 0 && !f->failed) {
			ids[n++] = f->id;
			if (f->refused) {
				(*refused)++;
				atomic_fetch_add(&d->uploads_failed, 1);
				atomic_fetch_add(&d->bytes_failed, f->bytes);
			} else {
				*bytes += f->bytes;
			}
			d->bytes_inflight -= f->bytes;
			*f = d->inflight[--d->n_inflight];
			continue;
		}
		i++;
	}
	return n;
}

/* Records completed uploads as drained. Unlocks around the store. */
static void record_completed(struct drain *d, bool *failed)
{
	uint64_t *ids = malloc((d->n_inflight + 1) * sizeof *ids);
	if (!ids) {
		*failed = true;
		return;
	}
	uint64_t bytes;
	size_t refused;
	size_t n = take_completed(d, ids, &bytes, &refused, failed);
	if (n) {
		pthread_mutex_unlock(&d->lock);
		/* A lost write is harmless: the upload is sent again and
		 * the sink drops it as a duplicate. */
		int e = store_drain_done(d->store, d->ops->name, ids, n);
		if (!e) {
			atomic_fetch_add(&d->uploads_acked, n - refused);
			atomic_fetch_add(&d->bytes_acked, bytes);
		}
		pthread_mutex_lock(&d->lock);
	}
	free(ids);
}

/* After a failure: let what is in flight report, keep what completed,
 * forget the rest (it is still pending in the store). Under lock. */
static void settle_after_failure(struct drain *d)
{
	pthread_mutex_unlock(&d->lock);
	d->ops->flush(d->sink, FLUSH_TIMEOUT_MS);
	pthread_mutex_lock(&d->lock);
	bool failed;
	record_completed(d, &failed);
	for (unsigned i = 0; i < d->n_inflight; i++) {
		if (d->inflight[i].failed) {
			atomic_fetch_add(&d->uploads_failed, 1);
			atomic_fetch_add(&d->bytes_failed, d->inflight[i].bytes);
		}
	}
	d->n_inflight = 0;
	d->msgs_inflight = 0;
	d->bytes_inflight = 0;
}

static void segment_close(struct open_segment *g)
{
	if (g->fd >= 0)
		close(g->fd);
	g->fd = -1;
}

/* Closes every kept segment: whenever the drain pauses (nothing to send, a
 * failure, stop), so that a segment retention removed meanwhile frees its
 * space; while it sends, a worker's older segment closes as its next opens. */
static void segments_close_all(struct drain *d)
{
	for (unsigned i = 0; i < OPEN_SEGMENTS; i++)
		segment_close(&d->segs[i]);
}

static struct open_segment *segment_find(struct drain *d, const struct upload_record *rec)
{
	for (unsigned i = 0; i < OPEN_SEGMENTS; i++) {
		struct open_segment *g = &d->segs[i];
		if (g->fd >= 0 && g->worker == rec->worker && g->segment == rec->segment)
			return g;
	}
	return NULL;
}

/* Which slot a new open of rec's segment takes, best first: the same
 * worker's older segment (the drain reads in id order and a worker's
 * segments grow with its ids; a rescan reopens it), a free slot, the least
 * recently used. */
static unsigned slot_rank(const struct open_segment *g, const struct upload_record *rec)
{
	if (g->fd >= 0 && g->worker == rec->worker && g->segment < rec->segment)
		return 0;
	return g->fd < 0 ? 1 : 2;
}

/* The slot with rec's segment open: the kept one, or a fresh open. */
static int segment_get(struct drain *d, const struct upload_record *rec, struct open_segment **out)
{
	struct open_segment *g = segment_find(d, rec);
	if (!g) {
		g = &d->segs[0];
		for (unsigned i = 1; i < OPEN_SEGMENTS; i++) {
			struct open_segment *c = &d->segs[i];
			unsigned rc = slot_rank(c, rec), rg = slot_rank(g, rec);
			if (rc < rg || (rc == rg && rc == 2 && c->last_use < g->last_use))
				g = c;
		}
		segment_close(g);
		int e = store_segment_open(d->store, rec, &g->fd);
		if (e)
			return e;
		g->worker = rec->worker;
		g->segment = rec->segment;
	}
	g->last_use = ++d->seg_clock;
	*out = g;
	return 0;
}

/* rec's body checked against its CRC, in a kept segment: *fd reads it (the
 * drain keeps it; do not close). A check that fails on a kept fd is done
 * again on a fresh open, so a stale descriptor never makes an upload look
 * corrupt. Errors as store_body_open_verified's. */
static int body_verified(struct drain *d, const struct upload_record *rec, int *fd)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		struct open_segment *g;
		bool kept = segment_find(d, rec) != NULL;
		int e = segment_get(d, rec, &g);
		if (e)
			return e;
		e = store_body_verify(d->store, rec, g->fd, d->verify_buf, STORE_VERIFY_BUF_BYTES,
				      &d->verified_body);
		d->verified_id = d->verified_body ? rec->id : 0;
		if (!e) {
			*fd = g->fd;
			return 0;
		}
		segment_close(g);
		if (!kept)
			return e;
	}
	return STORE_ERR_IO; /* not reached: a fresh open returns above */
}

const uint8_t *drain_verified_body(const struct drain *d, const struct upload_record *rec)
{
	return d->verified_body && d->verified_id == rec->id ? d->verified_body : NULL;
}

/* A body that fails its CRC is never sent: it is logged, counted and left
 * behind (marked drained) so that it does not stop the uploads after it. */
static void skip_corrupt(struct drain *d, const struct upload_record *rec)
{
	log_err("drain %s: upload %" PRIu64 " fails its checksum in the spool: not sent",
		d->ops->name, rec->id);
	atomic_fetch_add(&d->uploads_failed, 1);
	atomic_fetch_add(&d->bytes_failed, rec->length);
	store_drain_done(d->store, d->ops->name, &rec->id, 1);
}

/* Sends rec (under lock; unlocked around the sink). 1 sent, -1 failed. */
static int publish_one(struct drain *d, const struct upload_record *rec, int fd)
{
	struct inflight *f = &d->inflight[d->n_inflight++];
	*f = (struct inflight){.id = rec->id, .bytes = rec->length};
	d->bytes_inflight += rec->length;
	char err[256] = "";
	unsigned queued = 0;
	pthread_mutex_unlock(&d->lock);
	int rc = d->ops->publish(d->sink, rec, fd, &queued, err, sizeof err);
	pthread_mutex_lock(&d->lock);
	/* Only this thread moves entries: f still points at rec's. */
	f->outstanding += (long)queued;
	f->queued = true;
	d->msgs_inflight += f->outstanding > 0 ? (unsigned)f->outstanding : 0;
	if (rc) {
		f->failed = true;
		snprintf(d->last_error, sizeof d->last_error, "%s", err);
		return -1;
	}
	atomic_fetch_add(&d->uploads_published, 1);
	atomic_fetch_add(&d->bytes_published, rec->length);
	return 1;
}

/* For store_drain_next_batch, inside its read txn: passes over what is in flight
 * (a rescan from the start meets it). */
static bool in_flight(uint64_t id, void *arg)
{
	struct drain *d = arg;
	pthread_mutex_lock(&d->lock);
	bool found = inflight_find(d, id) != NULL;
	pthread_mutex_unlock(&d->lock);
	return found;
}

/* The next pending upload after *cursor into *rec, from the read-ahead, or
 * a new batch of it from the store. 0, or a store error. */
static int next_pending(struct drain *d, uint64_t cursor, struct upload_record *rec)
{
	if (d->next_batch >= d->n_batch) {
		d->n_batch = d->next_batch = 0;
		int e = store_drain_next_batch(d->store, d->ops->name, cursor, in_flight, d,
					       d->batch, READ_BATCH, &d->n_batch);
		if (e)
			return e;
	}
	*rec = d->batch[d->next_batch++];
	return 0;
}

/* The read-ahead is only good from the cursor it was read at. */
static void forget_read_ahead(struct drain *d)
{
	d->n_batch = d->next_batch = 0;
}

/* The next pending upload after *cursor: 1 sent, 2 passed over (in flight
 * already, or corrupt), 0 none left, -1 failed. Under lock. */
static int publish_next(struct drain *d, uint64_t *cursor)
{
	struct upload_record rec;
	pthread_mutex_unlock(&d->lock);
	int e = next_pending(d, *cursor, &rec);
	pthread_mutex_lock(&d->lock);
	if (e) {
		/* Retention cannot take a pending upload; a read error waits. */
		if (e != STORE_ERR_NOTFOUND)
			log_err("drain %s: read upload after %" PRIu64 ": %s", d->ops->name,
				*cursor, store_strerror(e));
		return 0;
	}
	*cursor = rec.id;
	if (inflight_find(d, rec.id))
		return 2; /* a rescan met it: it is on its way */
	int fd = -1;
	pthread_mutex_unlock(&d->lock);
	e = body_verified(d, &rec, &fd);
	if (e == STORE_ERR_CORRUPT)
		skip_corrupt(d, &rec);
	pthread_mutex_lock(&d->lock);
	if (e == STORE_ERR_CORRUPT)
		return 2;
	if (e) {
		log_err("drain %s: upload %" PRIu64 ": %s", d->ops->name, rec.id,
			store_strerror(e));
		return 0;
	}
	return publish_one(d, &rec, fd);
}

static bool window_full(const struct drain *d)
{
	return d->n_inflight && (d->msgs_inflight >= d->window || d->n_inflight >= d->window ||
				 d->bytes_inflight >= DRAIN_INFLIGHT_BYTES);
}

/* The sink's link is gone for good: the round fails rather than wait for
 * reports that cannot come, and, idle or not, the drain reconnects and its
 * state says so. Under lock; unlocks around the sink. */
static bool sink_lost(struct drain *d)
{
	char why[256] = "";
	if (!d->ops->lost)
		return false;
	pthread_mutex_unlock(&d->lock);
	bool lost = d->ops->lost(d->sink, why, sizeof why);
	pthread_mutex_lock(&d->lock);
	if (lost)
		snprintf(d->last_error, sizeof d->last_error, "%s", why);
	return lost;
}

/* One round: publish while the window allows, record what completed.
 * false when the round failed. Under lock. */
static bool drain_round(struct drain *d, uint64_t *cursor)
{
	bool sent_any = false;
	while (!d->stopping && !d->paused && !window_full(d)) {
		int r = publish_next(d, cursor);
		if (r < 0)
			return false;
		if (r == 0) {
			/* Ids are taken when uploads begin, so one below the
			 * cursor may commit later: the next round starts over,
			 * passing over what is in flight. */
			*cursor = 0;
			forget_read_ahead(d);
			break;
		}
		sent_any |= r == 1;
	}
	bool failed;
	record_completed(d, &failed);
	if (failed || sink_lost(d))
		return false;
	if (!sent_any)
		segments_close_all(d);
	if (!sent_any && !d->kick)
		wait_ms(d, IDLE_POLL_MS);
	d->kick = false;
	return true;
}

static int connect_sink(struct drain *d)
{
	char err[256] = "";
	pthread_mutex_unlock(&d->lock);
	int rc = d->ops->connect(d->sink, err, sizeof err);
	pthread_mutex_lock(&d->lock);
	if (rc)
		set_state(d, DRAIN_DISCONNECTED, err);
	else
		set_state(d, DRAIN_CONNECTED, NULL);
	return rc;
}

static void *drain_main(void *arg)
{
	struct drain *d = arg;
	unsigned backoff = BACKOFF_MIN_MS;
	uint64_t cursor = 0;
	bool ready = false;
	pthread_mutex_lock(&d->lock);
	while (!d->stopping) {
		if (d->rescan) {
			cursor = 0;
			forget_read_ahead(d);
			d->rescan = false;
		}
		if (d->paused) {
			segments_close_all(d);
			d->state = DRAIN_PAUSED;
			wait_ms(d, 1000);
			continue;
		}
		if (!ready && connect_sink(d) != 0) {
			wait_ms(d, backoff);
			backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
			continue;
		}
		if (d->state != DRAIN_CONNECTED)
			set_state(d, DRAIN_CONNECTED, NULL);
		ready = true;
		if (drain_round(d, &cursor)) {
			backoff = BACKOFF_MIN_MS;
			continue;
		}
		char why[256];
		snprintf(why, sizeof why, "%s", d->last_error);
		set_state(d, DRAIN_DISCONNECTED, why);
		settle_after_failure(d);
		segments_close_all(d);
		cursor = 0; /* the pending set from its start: what failed is there */
		forget_read_ahead(d);
		ready = false;
		wait_ms(d, backoff);
		backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
	}
	settle_after_failure(d);
	segments_close_all(d);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

typedef void *(*sink_create_fn)(const struct config *cfg, struct drain *d, char *err,
				size_t errlen);

static int start_sink(const struct config *cfg, struct store *s, const struct drain_sink_ops *ops,
		      sink_create_fn create, unsigned window, struct drain **out, char *err,
		      size_t errlen)
{
	struct drain *d = calloc(1, sizeof *d);
	if (d) {
		d->inflight = calloc(window + 1, sizeof *d->inflight);
		d->verify_buf = malloc(STORE_VERIFY_BUF_BYTES);
		d->batch = calloc(READ_BATCH, sizeof *d->batch);
		for (unsigned i = 0; i < OPEN_SEGMENTS; i++)
			d->segs[i].fd = -1;
	}
	if (!d || !d->inflight || !d->verify_buf || !d->batch) {
		if (d) {
			free(d->inflight);
			free(d->verify_buf);
			free(d->batch);
		}
		free(d);
		snprintf(err, errlen, "drain: out of memory");
		return -1;
	}
	d->store = s;
	d->ops = ops;
	d->window = window;
	d->state = DRAIN_CONNECTING;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	d->sink = create(cfg, d, err, errlen);
	int rc = d->sink ? pthread_create(&d->thread, NULL, drain_main, d) : -1;
	if (rc) {
		if (rc > 0)
			snprintf(err, errlen, "drain: start thread: %s", strerror(rc));
		drain_stop(d);
		return -1;
	}
	d->thread_started = true;
	*out = d;
	return 0;
}

int drain_start(const struct config *cfg, struct store *s, struct drain **out, char *err,
		size_t errlen)
{
	*out = NULL;
	if (!cfg->drain_nats[0])
		return 0;
	return start_sink(cfg, s, &nats_sink_ops, nats_sink_create, cfg->drain_window, out, err,
			  errlen);
}

int drain_start_upstream(const struct config *cfg, struct store *s, struct drain **out, char *err,
			 size_t errlen)
{
	*out = NULL;
	if (!cfg->upstream_url[0])
		return 0;
	/* One PUT at a time on one keep-alive connection: the window is the
	 * upload being sent. */
	return start_sink(cfg, s, &upstream_sink_ops, upstream_sink_create, 1, out, err, errlen);
}

void drain_stop(struct drain *d)
{
	if (!d)
		return;
	if (d->thread_started) {
		pthread_mutex_lock(&d->lock);
		d->stopping = true;
		pthread_cond_broadcast(&d->cond);
		pthread_mutex_unlock(&d->lock);
		pthread_join(d->thread, NULL);
	}
	if (d->sink)
		d->ops->destroy(d->sink);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d->inflight);
	free(d->verify_buf);
	free(d->batch);
	free(d);
}

void drain_status(struct drain *d, struct drain_status *out)
{
	memset(out, 0, sizeof *out);
	out->state = DRAIN_OFF;
	if (!d)
		return;
	snprintf(out->sink, sizeof out->sink, "%s", d->ops->name);
	pthread_mutex_lock(&d->lock);
	out->state = d->state;
	snprintf(out->last_error, sizeof out->last_error, "%s", d->last_error);
	pthread_mutex_unlock(&d->lock);
	out->uploads_published = atomic_load(&d->uploads_published);
	out->bytes_published = atomic_load(&d->bytes_published);
	out->uploads_acked = atomic_load(&d->uploads_acked);
	out->bytes_acked = atomic_load(&d->bytes_acked);
	out->uploads_failed = atomic_load(&d->uploads_failed);
	out->bytes_failed = atomic_load(&d->bytes_failed);
	struct store_drain_lag lag;
	if (store_drain_lag(d->store, d->ops->name, &lag) == 0) {
		out->lag_uploads = lag.uploads;
		out->lag_bytes = lag.bytes;
		out->drained_before = lag.drained_before;
		uint64_t now_ms = (uint64_t)time(NULL) * 1000u;
		if (lag.first_id && now_ms > lag.first_unix_ms)
			out->lag_oldest_s = (now_ms - lag.first_unix_ms) / 1000u;
	}
}

int drain_pause(struct drain *d, bool pause, char *msg, size_t msglen)
{
	if (!d) {
		snprintf(msg, msglen, "the drain is off ([drain] nats is empty)");
		return -1;
	}
	pthread_mutex_lock(&d->lock);
	bool was = d->paused;
	d->paused = pause;
	d->kick = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	snprintf(msg, msglen, "drain %s %s", d->ops->name,
		 was == pause ? (pause ? "was already paused" : "was not paused")
			      : (pause ? "paused" : "resumed"));
	return 0;
}

int drain_replay(struct drain *d, uint64_t from_id, char *msg, size_t msglen)
{
	if (!d) {
		snprintf(msg, msglen, "the drain is off ([drain] nats is empty)");
		return -1;
	}
	uint64_t n = 0;
	int e = store_drain_replay(d->store, d->ops->name, from_id, &n);
	if (e) {
		snprintf(msg, msglen, "replay from %" PRIu64 ": %s", from_id, store_strerror(e));
		return -1;
	}
	pthread_mutex_lock(&d->lock);
	d->kick = true;
	d->rescan = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	snprintf(msg, msglen,
		 "drain %s: %" PRIu64 " uploads from id %" PRIu64 " queued to publish again",
		 d->ops->name, n, from_id);
	return 0;
}
