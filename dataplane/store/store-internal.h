/*
 * store-internal: the pieces of the store shared between its files.
 *
 *   spool.c    segment files: naming, record framing, the per-worker pool
 *   upload.c   one upload's body streaming through the worker's ring
 *   index.c    the LMDB schema and the encoding of its values
 *   writer.c   the writer thread: group commit, device records, retention
 *   recover.c  start-up: cut spool garbage, check headers, sweep orphans
 *   dedupe.c   an agent's retry of a committed upload: the body's SHA-256
 *              and the `dedupe` database the writer checks at commit
 *   reader.c   the read side (store_reader_*)
 *   store.c    store_open/close, worker attach/detach, beacond -t's check
 *
 * Ownership, which keeps the data path free of locks: a segment and every
 * upload belong to the worker thread that made them. The writer thread reads
 * an upload (and its segment's fd) only between the worker's MSG_RING hand
 * over and the writer's MSG_RING answer, and writes only the fields marked
 * "writer" below. The one lock a worker takes is spool_dir.lock, and only
 * when it creates or closes a segment file (so that retention never unlinks
 * a file that a worker has open).
 *
 * The hand overs are asserted (on in the test and sanitizer builds, which
 * leave NDEBUG unset): the upload going to the writer (upload_handoff,
 * writer_on_upload), coming back (writer_answer, upload_on_result), a
 * failed one answered without it (upload_deliver_error), and a segment's
 * references (the pool, the packed slot, an owner, commits): its last one
 * cannot go while the pool or the packed slot still lists it.
 */
#ifndef BEACON_STORE_INTERNAL_H
#define BEACON_STORE_INTERNAL_H

#include "beacon/ring.h"
#include "beacon/store.h"

#include <lmdb.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <isa-l/crc.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha256.h>

/* 2: uploads may be v2 (with the body's SHA-256), and the dedupe database */
#define SCHEMA_VERSION 2u

/* ---- record framing (spool.c) ---- */

#define RECORD_HEADER_BYTES 48u
#define RECORD_MAGIC 0x314e4342u /* "BCN1" read as little-endian bytes */
#define RECORD_VERSION 1u

struct record_header {
	uint64_t id;
	uint64_t length; /* body bytes */
	uint32_t crc;	 /* zlib crc32 of the body */
	uint16_t flags;
};

/* Encodes the 48-byte header (little-endian fields, header crc, zero pad). */
void record_header_encode(uint8_t out[RECORD_HEADER_BYTES], const struct record_header *h);
/* 0, or STORE_ERR_CORRUPT when magic, version or header crc is wrong. */
int record_header_decode(const uint8_t in[RECORD_HEADER_BYTES], struct record_header *h);

/* DATA/spool/wN/SEQ.seg, SEQ 16 hex digits. -ENAMETOOLONG if it does not fit. */
int spool_segment_path(char *buf, size_t len, const char *data_dir, unsigned worker, uint64_t seq);
/* Parses "SEQ.seg"; false for any other name. */
bool spool_segment_name_parse(const char *name, uint64_t *seq);
/* Parses "wN"; false for any other name. */
bool spool_worker_dir_parse(const char *name, unsigned *worker);

/* Maps an errno (positive or negative) to a store_error. */
int store_error_from_errno(int err);

/* ---- index (index.c) ---- */

struct index {
	MDB_env *env;
	MDB_dbi uploads, device_uploads, by_time, devices, segments, meta;
};

/* Live records of one segment, kept in the `segments` database so recovery
 * and retention need not walk every upload. */
struct segment_row {
	uint64_t records;
	uint64_t bytes; /* body bytes of those records */
	uint64_t end;	/* end of the furthest record ever indexed in it */
};

enum index_mode {
	INDEX_WRITE,	   /* creates what is missing, refuses a newer schema */
	INDEX_READ,	   /* an existing index, beside a live writer (beaconctl) */
	INDEX_READ_NOLOCK, /* an existing index nobody writes: touches no file at all */
};
/* Opens DATA/index. */
int index_open(struct index *ix, const char *data_dir, uint64_t map_bytes, enum index_mode mode,
	       char *err, size_t errlen);
void index_close(struct index *ix);
/* Maps an LMDB return code to a store_error. */
int index_error(int mdb_rc);

void be64_put(uint8_t out[8], uint64_t v);
uint64_t be64_get(const uint8_t in[8]);

int index_get_upload(struct index *ix, MDB_txn *txn, uint64_t id, struct upload_record *out);
int index_put_upload(struct index *ix, MDB_txn *txn, const struct upload_record *rec);
/* Removes an upload from every database; *segment_emptied tells whether its
 * segment has no live record left. */
int index_delete_upload(struct index *ix, MDB_txn *txn, const struct upload_record *rec,
			bool *segment_emptied);
int index_get_device(struct index *ix, MDB_txn *txn, const char *device, struct device_record *out);
int index_put_device(struct index *ix, MDB_txn *txn, const struct device_record *rec);
int index_get_segment(struct index *ix, MDB_txn *txn, unsigned worker, uint64_t seq,
		      struct segment_row *out);
void index_segment_key(uint8_t key[12], unsigned worker, uint64_t seq);
void index_segment_key_parse(const uint8_t key[12], unsigned *worker, uint64_t *seq);
int segment_row_decode(const MDB_val *v, struct segment_row *out);
int upload_decode(uint64_t id, const MDB_val *v, struct upload_record *out);
int device_decode(const MDB_val *k, const MDB_val *v, struct device_record *out);
/* meta "next_id": the id the next upload gets (0 when never written). */
int index_get_next_id(struct index *ix, MDB_txn *txn, uint64_t *out);
int index_put_next_id(struct index *ix, MDB_txn *txn, uint64_t next_id);

/* Device bookkeeping shared by the writer's upload and seen paths. */
void device_record_init(struct device_record *d, const char *device, uint64_t now_ms);
void device_record_add_fingerprint(struct device_record *d, const uint8_t sha[32]);

/* ---- spool directories and the store ---- */

/* Per worker id: the part of a worker's spool that outlives attach/detach
 * and that the writer may look at. */
struct spool_dir {
	char path[PATH_MAX];
	int fd;		   /* O_DIRECTORY, for fsync after a segment is created */
	uint64_t next_seq; /* only the attached worker (or recovery) touches it */
	bool attached;
	pthread_mutex_t lock; /* guards open_seqs */
	uint64_t *open_seqs;
	size_t n_open, cap_open;
};

bool spool_dir_is_open(struct spool_dir *d, uint64_t seq);

struct writer;

struct store {
	struct store_options opts; /* asserted at store_open */
	char data_dir[PATH_MAX];   /* canonical (realpath) */
	struct spool_dir *dirs;
	struct index ix;
	/* In-process readers hold it shared during a read txn; the writer holds
	 * it exclusively while it grows the map (LMDB forbids resizing under
	 * live read txns in the same process). */
	pthread_rwlock_t map_lock;
	_Atomic uint64_t next_id;

	struct writer *writer;
	pthread_t writer_thread;

	pthread_mutex_t seen_lock; /* store_device_seen from non-worker threads */
	struct device_event *seen_head, **seen_tail;

	struct store *next_open;

	/* The writer's commits, for store_health: when (CLOCK_MONOTONIC
	 * microseconds) the commit under way began, 0 when none is; and the
	 * result of its latest commit of uploads (0 or a store_error), below. */
	_Atomic uint64_t commit_began_us;

	/* counters, for metrics and tests */
	_Atomic uint64_t n_commits, n_fsyncs, n_committed, n_retained_out;
	_Atomic uint64_t n_deduplicated; /* retries answered with the first id */
	/* uploads streaming now, over every worker: the sum of the workers'
	 * `streaming`, which the control thread cannot read */
	_Atomic uint64_t n_streaming;
	uint64_t recovered_bad_headers;
	uint64_t recovered_truncated_bytes;

	unsigned nworkers;
	int lock_fd; /* DATA/lock, flock'ed exclusively while open */
	int writer_ring_fd;
	int event_fd; /* wakes the writer: device_seen queue, stop */
	int readers;  /* in-process readers sharing ix.env; guarded by the registry lock */
	atomic_int last_commit_status;
	MDB_dbi dedupe_dbi; /* dedupe.c; opened by dedupe_open */
	/* the drain's pending sets (watermark.c), one per drain sink */
	MDB_dbi drain_dbi[STORE_DRAIN_SINKS_MAX];
	atomic_bool stopping;
	/* set by a drain that took uploads out of them: the writer runs a
	 * retention pass */
	atomic_bool retention_wanted;
};

/* A device seen event, from a worker (MSG_RING) or another thread (queue). */
struct device_event {
	struct ring_op op;
	struct store *s;
	struct device_event *next;
	char device[STORE_DEVICE_MAX];
	uint8_t sha[32];
	enum auth_result result;
	uint64_t at_ms;
};

uint64_t store_now_ms(void);

/* In-process registry of open stores, for readers that share the env. */
struct store *store_registry_borrow(const char *canonical_dir);
void store_registry_return(struct store *s);

/* ---- segments and uploads (spool.c, upload.c) ---- */

enum segment_state { SEG_OPENING, SEG_READY, SEG_CLOSING };

/* The CRC-32 of spool records (zlib's: reflected 0xEDB88320, so records
 * written before stay valid), with ISA-L's carry-less-multiply code: about
 * 8x zlib's speed here, and every body byte passes through it twice (on
 * the way in and when served). Start with 0. */
static inline uint32_t record_crc32(uint32_t crc, const void *data, size_t len)
{
	return crc32_gzip_refl(crc, data, len);
}

struct segment {
	struct ring_op op; /* open, punch, close */
	struct store_worker *w;
	uint64_t seq;
	int fd;
	enum segment_state state;
	uint64_t tail;	    /* where the next record starts */
	uint64_t allocated; /* bytes preallocated with fallocate */
	bool no_falloc;	    /* the file system cannot preallocate */
	bool sealed;	    /* takes no new record */
	unsigned refs;	    /* pool or worker (packed) + owner + uploads in flight */
	struct store_upload *owner;
	bool packed;		      /* the worker's packed segment: no owner */
	struct store_upload *waiters; /* packed uploads waiting for the open */
	struct segment *pool_prev, *pool_next;
	bool in_pool;
	/* writer-only fields */
	bool dir_synced;
	uint64_t group_mark;
	int sync_error; /* the store_error its uploads get once sync_failed */
	/* Set by the writer when a sync of it failed; the worker then takes
	 * no new record into it. Never cleared (fsyncgate). */
	atomic_bool sync_failed;
	char path[PATH_MAX];
};

/* At most this many free upload buffers stay with a worker, and never more
 * than max_open_uploads with the ones in use. */
#define UPLOAD_BUFFERS_KEPT 16

struct store_worker {
	struct store *s;
	unsigned id;
	struct ring *ring;
	int ring_fd;
	struct spool_dir *dir;
	struct segment *pool;	/* free segments, most recently used first */
	struct segment *packed; /* where finished small uploads reserve their record */
	struct store_upload *open_uploads;
	unsigned streaming; /* uploads that hold a buffer and a segment */
	/* Upload buffers kept for the next uploads: a fresh 256 KiB malloc is
	 * an mmap, page faults and an munmap per upload. */
	uint8_t *spare_bufs[UPLOAD_BUFFERS_KEPT];
	unsigned n_spare;
	unsigned live;	  /* upload structs not yet freed */
	unsigned closing; /* segments being closed */
};

/* Reserves `len` bytes at the tail of the worker's packed segment for u's
 * whole record (u->record_off), taking a reference for u. When the
 * segment's file is still being created, u waits and upload_segment_ready
 * follows. NULL with *err set when no segment can be had. */
struct segment *spool_packed_reserve(struct store_worker *w, struct store_upload *u, uint64_t len,
				     int *err);
/* Takes a segment for a streaming upload (from the pool or new). NULL with
 * *err set when none can be had. */
struct segment *spool_segment_take(struct store_worker *w, struct store_upload *owner, int *err);
/* Returns the owner's segment with its new tail; seals it past segment_bytes. */
void spool_segment_put_back(struct segment *seg, uint64_t tail);
void spool_segment_ref(struct segment *seg);
void spool_segment_unref(struct segment *seg);
void spool_segment_seal(struct segment *seg);
/* Called by spool when the owner's segment is open (or failed to open). */
void upload_segment_ready(struct store_upload *u, int err);
/* Closes every pooled segment synchronously (detach). */
void spool_pool_drain(struct store_worker *w);
/* Frees the worker's spare upload buffers (detach). */
void upload_spare_buffers_free(struct store_worker *w);
/* The disk is full: seals every idle segment, so their preallocations go
 * back to the file system for the uploads that are still being written
 * (the small ones all share one segment and would be refused while idle
 * segments hold free space). */
void spool_pool_give_back_space(struct store_worker *w);

enum upload_state { UP_OPEN, UP_FINISHING, UP_COMMITTING, UP_ABORTED };

struct upload_half {
	uint8_t *data;
	size_t fill;	     /* bytes in it */
	size_t written;	     /* bytes of it already on disk */
	uint64_t stream_off; /* offset of data[0] within the record */
};

struct store_upload {
	struct store_worker *w;
	struct segment *seg;
	struct store_upload *prev, *next;   /* worker's open_uploads */
	struct store_upload *seg_wait_next; /* waiting for a packed segment's open */
	uint64_t id;
	struct upload_meta meta;
	uint64_t record_off; /* header's offset in the segment */
	uint64_t stream_len; /* record bytes taken: header + body */
	uint32_t crc;
	enum upload_state state;
	int error;
	bool io_busy;
	bool flushed_any; /* a half went to disk: the header needs a rewrite */
	bool header_written;
	struct upload_half half[2];
	int filling; /* half being filled */
	int queued;  /* half waiting for / under a write, -1 none */
	size_t half_size;
	uint8_t *buf;
	uint8_t header[RECORD_HEADER_BYTES];
	uint64_t falloc_target;
	uint64_t writeback_to; /* record bytes whose writeback has been started */
	struct ring_op io_op;
	store_wake_fn wake;
	void *wake_arg;
	store_done_fn done;
	void *done_arg;

	/* hand over to the writer and back */
	struct ring_op commit_op; /* completes on the writer's ring */
	struct ring_op result_op; /* completes on the worker's ring */
	int status;
	uint64_t body_len;
	struct store_upload *group_next; /* writer-only */

	/* the body's SHA-256 (dedupe.c), while dedupe_window is on: a fixed
	 * sizeof(wc_Sha256) per upload in flight, whatever its size */
	wc_Sha256 sha;
	bool hashing;	 /* sha is initialised and not yet final */
	bool has_sha256; /* sha256 holds the final digest */
	uint8_t sha256[32];
	uint64_t duplicate_of; /* writer: the committed upload this one repeats */
};

/* ---- writer (writer.c) ---- */

int writer_start(struct store *s, char *err, size_t errlen);
/* Drains what was handed over, commits it, and joins the thread. */
void writer_stop(struct store *s);
/* The writer-side completion of an upload's commit_op. */
void writer_on_upload(struct ring_op *op, int res, uint32_t flags);
void writer_on_device_event(struct ring_op *op, int res, uint32_t flags);
/* Runs the retention pass now (also at open and every 60 s). */
int writer_retention_pass(struct store *s, uint64_t *total_bytes, bool sweep);

/* ---- drain pending sets (watermark.c) ---- */

/* Opens (creating) each drain sink's pending set; a new one starts with
 * every indexed upload. At store_open, before the writer starts. */
int drain_sets_open(struct store *s, char *err, size_t errlen);
/* In the writer's commit txn: the upload is pending for every sink. An
 * LMDB code. */
int drain_sets_add(struct store *s, MDB_txn *txn, const struct upload_record *rec);
/* In retention's txn: whether a sink still needs the upload. */
bool drain_sets_hold(struct store *s, MDB_txn *txn, uint64_t id);

/* reader.c's checks of a spool record, shared with watermark.c. */
int record_check_header(int fd, const struct upload_record *rec, const char *path);
int record_pass(int fd, const struct upload_record *rec, const char *path, uint8_t *buf, int out_fd,
		uint32_t *crc);

/* ---- retries (dedupe.c) ---- */

/* Worker side, next to the CRC: each does nothing while dedupe_window is
 * off. dedupe_hash_end leaves the digest in u->sha256; dedupe_hash_drop
 * frees a hash that will not end (abort, failure). */
void dedupe_hash_begin(struct store_upload *u);
void dedupe_hash_update(struct store_upload *u, const void *data, size_t len);
void dedupe_hash_end(struct store_upload *u);
void dedupe_hash_drop(struct store_upload *u);

/* Opens (creating) the `dedupe` database of a writable index. */
int dedupe_open(struct store *s, char *err, size_t errlen);
/* Writer, inside the commit txn. *original: the id of a live upload of the
 * same device, category, name and body committed within the window, or 0.
 * LMDB return codes, like index_put_upload. */
int dedupe_find(struct store *s, MDB_txn *txn, const struct store_upload *u, uint64_t now_ms,
		uint64_t *original);
/* Remembers a newly indexed upload (no-op without its SHA-256). */
int dedupe_remember(struct store *s, MDB_txn *txn, const struct upload_record *rec);
/* Forgets up to `max` uploads older than the window, oldest first, and
 * says how many (max: there may be more). */
int dedupe_prune(struct store *s, MDB_txn *txn, uint64_t now_ms, unsigned max, unsigned *forgotten);
/* How many a commit of `uploads` uploads forgets at most: more than it
 * adds, so a steady load cannot grow the database past the window. */
unsigned dedupe_prune_budget(unsigned uploads);
/* Forgets every entry older than the window, in bounded txns (retention). */
int dedupe_prune_all(struct store *s);

/* ---- recovery (recover.c) ---- */

/* Cuts garbage, checks record headers, removes unindexed segments, and sets
 * each spool_dir's next_seq and the store's next_id. */
int recover_spool(struct store *s, char *err, size_t errlen);

/* What recovery did, or would do. */
struct recovery_report {
	bool apply; /* false: count only, change nothing */
	uint64_t uploads;
	uint64_t cut_bytes;
	unsigned cut_segments;
	unsigned removed_segments;
	unsigned short_segments; /* shorter than their indexed records */
	uint64_t bad_headers;
};
/* Counts what recover_spool would do, changing nothing on disk. s needs
 * data_dir and an open ix; nworkers may be 0. */
int recover_plan(struct store *s, struct recovery_report *out);
/* Unlinks segment files that hold no indexed record and no worker has open. */
int spool_sweep_orphans(struct store *s);

#endif
