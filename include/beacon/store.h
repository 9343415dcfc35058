/*
 * store: durable uploads. A worker streams an upload's body into its spool
 * (per-worker, append-only segment files written through the worker's
 * io_uring); when the body is complete it hands the upload to the store's
 * writer thread, which fdatasyncs the touched segments and indexes the whole
 * group in one LMDB transaction, then posts the result back onto the
 * worker's ring. Only then may the worker answer 201: an acknowledged upload
 * is durable.
 *
 * Threads: store_open/store_close on the main thread (no worker attached
 * while closing). store_worker_* and store_upload_* only on the worker thread
 * that attached, and their callbacks run on that thread from its ring loop.
 * The store_reader_* side opens the index read-only and may run in another
 * process (beaconctl) while the server writes.
 *
 * Types: the options (struct store_options, with their defaults and limits
 * in one table) are in beacon/store-t.h, the device states and
 * authentication results that tls and the control plane share in
 * beacon/auth-t.h; both are types only, so the headers of other parts
 * include them and not this one.
 *
 * Memory: each upload in flight holds at most `upload_buffer` bytes of body
 * (default 256 KiB, two halves: one fills while the other is written), so a
 * worker holds at most max_open_uploads * upload_buffer (64 MiB by default,
 * counting the few buffers it keeps for the next uploads)
 * whatever the upload sizes; a writer that is ahead of the disk is told to
 * wait (store_upload_write accepts fewer bytes and calls the wake callback
 * later). Disk: segments belong to one worker and are preallocated in
 * growing steps (1 MiB up to 64 MiB). An upload that fits its first buffer
 * half is written in one operation into the worker's shared (packed)
 * segment, so a group commit of small uploads fdatasyncs about one file per
 * worker; a bigger one streams into a segment it holds until its record is
 * whole.
 *
 * Failure: every function returns 0 / a count or a negative store_error; the
 * store never aborts the process on bad input or I/O errors. A segment whose
 * fdatasync failed is retired: its records not yet indexed fail (503), even
 * when a later fdatasync returns 0, and new uploads go to a fresh segment
 * (the kernel reports a lost writeback once). After a crash,
 * LMDB is the truth: spool bytes past the last indexed record are cut off at
 * the next store_open.
 *
 * Retries: with dedupe_window on, an upload whose device, category, name and
 * body SHA-256 match one committed within the window is not indexed again:
 * the writer recognises it inside the commit transaction (so identical
 * uploads in flight at once still make one record) and done() gets the
 * first upload's id. Its spool bytes are garbage, as a failed upload's.
 */
#ifndef BEACON_STORE_H
#define BEACON_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "beacon/auth-t.h"
#include "beacon/store-t.h"

struct ring;
struct store;
struct store_worker;
struct store_upload;

enum store_error {
	STORE_ERR_BUSY = -1,	/* too many uploads in flight: answer 503 */
	STORE_ERR_NOSPACE = -2, /* ENOSPC/EDQUOT: answer 507, retry later */
	STORE_ERR_IO = -3,	/* EIO or another I/O fault: answer 503 */
	STORE_ERR_INVAL = -4,	/* bad argument (programming error) */
	STORE_ERR_SCHEMA = -5,	/* index written by a newer beacond */
	STORE_ERR_NOTFOUND = -6,
	STORE_ERR_CORRUPT = -7, /* spool record fails its checksum */
	STORE_ERR_LOCKED = -8,	/* the data directory is in use by another beacond */
};

/* A short English reason for a store_error. */
const char *store_strerror(int err);

#define STORE_CATEGORY_MAX 64
#define STORE_NAME_MAX 256

struct upload_meta {
	char device[STORE_DEVICE_MAX];	   /* device identity from the certificate */
	char category[STORE_CATEGORY_MAX]; /* first path segment after /ManageSoftRL/ */
	char name[STORE_NAME_MAX];	   /* file name, already validated */
	uint8_t cert_sha256[32];	   /* fingerprint of the client certificate */
};

/* Opens (creating if needed) data_dir (DATA below: DATA/spool/wN/ and
 * DATA/index) for `nworkers` workers, recovers the spool, and starts the
 * writer thread. On failure returns a negative store_error and writes a
 * reason into err. The options must keep the rules of STORE_OPTIONS
 * (beacon/store-t.h): they are asserted, not checked; the configuration
 * refuses values outside them with the file and line.
 *
 * One process owns a data directory: store_open takes an exclusive flock on
 * DATA/lock (held until store_close) before recovery touches anything, and
 * writes its PID into the file. A second store_open on the same directory
 * fails with STORE_ERR_LOCKED and a reason that names the holder's PID. */
int store_open(const char *data_dir, const struct store_options *opts, unsigned nworkers,
	       struct store **out, char *err, size_t errlen);
void store_close(struct store *s);

/* beacond -t: checks the store read-only and changes nothing on disk (not
 * even DATA/lock or LMDB's lock file while no server runs). Writes one or
 * more lines into report: whether a server owns the directory (its PID),
 * how many uploads are indexed, and, when none runs, what recovery WOULD
 * do at the next start. 0, or a negative store_error with a reason in err
 * (an index that cannot be read, a newer schema). */
int store_check(const char *data_dir, char *report, size_t reportlen, char *err, size_t errlen);

/* Called on worker `worker_id`'s thread with that worker's ring, before any
 * upload. The ring must be run by the caller's loop (ring_run_once). */
int store_worker_attach(struct store *s, unsigned worker_id, struct ring *ring,
			struct store_worker **out);
/* Waits (running the ring) until the worker's uploads in flight have
 * completed or been aborted, then releases it. */
void store_worker_detach(struct store_worker *w);

/* Starts an upload. STORE_ERR_BUSY when the worker has max_open_uploads in
 * flight. */
int store_upload_begin(struct store_worker *w, const struct upload_meta *meta,
		       struct store_upload **out);

/* Takes up to `len` body bytes; returns how many it took (possibly 0 when the
 * buffer is full: `wake(arg)` is called on the worker thread once it can take
 * more) or a negative store_error once the upload has failed. */
typedef void (*store_wake_fn)(void *arg);
ssize_t store_upload_write(struct store_upload *u, const void *data, size_t len, store_wake_fn wake,
			   void *arg);

/* The same without the copy: *at gets where the next body bytes go (TLS
 * decrypts straight into the upload's buffer), and the return value how
 * many fit there; 0 when the buffer is full (wake(arg) follows, as above),
 * or a negative store_error. store_upload_wrote then takes the n bytes
 * written at *at (n no more than the window): 0 or a negative store_error.
 * The window is valid until the next store_upload_* call. */
ssize_t store_upload_window(struct store_upload *u, uint8_t **at, store_wake_fn wake, void *arg);
int store_upload_wrote(struct store_upload *u, size_t n);

/* Body complete: flushes, hands the upload to the writer, and calls
 * done(arg, status, upload_id) on the worker thread once it is durable
 * (status 0) or failed (negative store_error). The upload handle is invalid
 * after this call. */
typedef void (*store_done_fn)(void *arg, int status, uint64_t upload_id);
void store_upload_finish(struct store_upload *u, store_done_fn done, void *arg);

/* Drops an upload whose body will not complete (client gone, bad chunk). No
 * callback follows; nothing of it becomes visible. */
void store_upload_abort(struct store_upload *u);

/* Records a device's authentication attempt (first/last seen, last result,
 * fingerprint). Fire and forget: batched into the writer's next commit. Safe
 * from any thread (a short lock and an eventfd write). */
void store_device_seen(struct store *s, const char *device, const uint8_t cert_sha256[32],
		       enum auth_result result);

/* The same from the thread of an attached worker: posted onto the writer's
 * ring with MSG_RING (no lock, no syscall of its own). store_device_seen
 * instead takes a short lock and writes an eventfd; use it from threads
 * that own no store_worker (control thread, tests). */
int store_worker_device_seen(struct store_worker *w, const char *device,
			     const uint8_t cert_sha256[32], enum auth_result result);

/* Counters since store_open, for metrics and the benchmark (fdatasyncs per
 * second, mean group size = uploads_committed / commits). */
struct store_stats {
	uint64_t commits;		    /* group commits (LMDB write txns of the writer) */
	uint64_t fsyncs;		    /* fdatasyncs of segments and spool directories */
	uint64_t uploads_committed;	    /* uploads made durable */
	uint64_t uploads_expired;	    /* uploads removed by retention */
	uint64_t uploads_deduplicated;	    /* retries answered with the first upload's id */
	uint64_t recovered_bad_headers;	    /* indexed records whose header did not match */
	uint64_t recovered_truncated_bytes; /* uncommitted spool bytes cut at open */
	uint64_t disk_free_bytes;  /* of the data directory's filesystem, for unprivileged users */
	uint64_t disk_size_bytes;  /* of that filesystem */
	uint64_t spool_bytes;	   /* the segment files under DATA/spool */
	uint64_t map_used_bytes;   /* LMDB pages in use (last page + 1) × page size */
	uint64_t map_size_bytes;   /* LMDB map size now: map_size, doubled each time it filled */
	uint64_t uploads_open;	   /* uploads streaming now, over every worker */
	uint64_t uploads_open_max; /* max_open_uploads × workers */
};
void store_stats(struct store *s, struct store_stats *out);

/* Sets a device's approval state (creating its record if it was never
 * seen), durably, before returning. From the control thread. 0, or a
 * negative store_error with a reason in msg; on success msg says what
 * changed. */
int store_device_set_state(struct store *s, const char *device, enum device_state state, char *msg,
			   size_t msglen);

/* Whether the store takes uploads, for /healthz and /readyz. */
struct store_health {
	/* 0, or the store_error of the writer's latest commit of uploads (a
	 * failed fdatasync or index transaction): nothing commits while it
	 * lasts; the next good commit clears it */
	int last_commit;
	/* how long the commit under way has run (a disk that hangs in
	 * fdatasync); 0 when none is */
	uint64_t committing_ms;
	/* free on the data directory's file system, for the server's user */
	uint64_t free_bytes;
	/* less free than this (upload_buffer: what one upload writes at its
	 * first flush) and uploads get 507 */
	uint64_t need_bytes;
};
/* From any thread while the store is open. 0, or STORE_ERR_IO with the
 * rest filled in when the free space cannot be read (free_bytes 0). */
int store_health(struct store *s, struct store_health *out);

/* ---- read side: beaconctl, export, tests ---- */

struct store_reader;

struct upload_record {
	uint64_t id;
	struct upload_meta meta;
	uint32_t worker;
	uint64_t segment;
	uint64_t offset; /* of the body within the segment file */
	uint64_t length;
	uint32_t crc32;
	uint64_t received_unix_ms;
	bool has_sha256;    /* hashed while it streamed (dedupe_window was on) */
	uint8_t sha256[32]; /* of the body */
};

struct device_record {
	char device[STORE_DEVICE_MAX];
	uint64_t first_seen_unix_ms;
	uint64_t last_seen_unix_ms;
	enum device_state state;
	enum auth_result last_result;
	uint64_t uploads;
	unsigned n_fingerprints;
	uint8_t fingerprints[4][32]; /* the most recent distinct ones */
};

int store_reader_open(const char *data_dir, struct store_reader **out, char *err, size_t errlen);
void store_reader_close(struct store_reader *r);

/* Calls fn for each upload, oldest first; `device` NULL for all devices;
 * since_unix_ms 0 for all times. fn returns non-zero to stop. */
typedef int (*upload_visit_fn)(const struct upload_record *rec, void *arg);
int store_reader_uploads(struct store_reader *r, const char *device, uint64_t since_unix_ms,
			 upload_visit_fn fn, void *arg);
int store_reader_upload(struct store_reader *r, uint64_t id, struct upload_record *out);

/* A page of uploads without a full scan, whatever the store's size. Without
 * a device, uploads come in the order they were stored (received time, then
 * id): an LMDB range scan of the by_time database from the cursor, which
 * stops past until_unix_ms. With a device, in id order: a range scan of
 * that device's entries. after_id is the cursor: the last upload of the
 * previous page; one lookup places it. An after_id that retention has
 * removed since (it removes the oldest first) starts at the oldest upload
 * and sets after_gone; one the store never reached (>= the next id) is
 * STORE_ERR_NOTFOUND. category filters within the scan. fn returns
 * non-zero to stop (the page is full). */
struct upload_query {
	const char *device;   /* NULL: every device */
	const char *category; /* NULL: every category */
	bool has_after;	      /* start after upload after_id */
	uint64_t after_id;
	uint64_t since_unix_ms; /* received at or after; 0: no bound */
	uint64_t until_unix_ms; /* received at or before; 0: no bound */
	bool after_gone;	/* out: after_id was removed by retention */
};
int store_reader_query(struct store_reader *r, struct upload_query *q, upload_visit_fn fn,
		       void *arg);
/* Index entries (cursor steps and lookups) this reader has read: how the
 * tests see that a page is a range scan and not a walk of the store. */
uint64_t store_reader_entries_read(const struct store_reader *r);
/* What the index holds: uploads (an O(1) LMDB count) and their body bytes
 * (summed over the spool segments, not the uploads). */
int store_reader_totals(struct store_reader *r, uint64_t *uploads, uint64_t *bytes);
/* Writes the upload's bytes to fd after checking its checksum
 * (STORE_ERR_CORRUPT when it fails: nothing wrong is served silently). */
int store_reader_copy(struct store_reader *r, uint64_t id, int fd);

typedef int (*device_visit_fn)(const struct device_record *rec, void *arg);
int store_reader_devices(struct store_reader *r, device_visit_fn fn, void *arg);
/* The same from the first device whose name sorts after `after` (NULL:
 * the first), so a caller can read in batches and hold no transaction
 * while it prints. */
int store_reader_devices_after(struct store_reader *r, const char *after, device_visit_fn fn,
			       void *arg);
int store_reader_device(struct store_reader *r, const char *device, struct device_record *out);

/* ---- drains: what each sink has not acknowledged yet (watermark.c) ----
 *
 * For each sink named in store_options.drain_sinks the index keeps the set
 * of committed uploads that sink has not acknowledged: the writer adds an
 * upload to it in the transaction that commits the upload, and the sink's
 * drain removes it once the sink acknowledged all of it. Upload ids are
 * taken when an upload begins and commits come in the order uploads end,
 * so a single "drained up to id N" mark could pass over an upload still
 * streaming; the set is that watermark made exact: everything below its
 * lowest id is drained. Retention stops at the oldest upload a sink still
 * holds. A sink new to the index starts with every upload pending.
 *
 * Threads: any thread of the process that opened the store (the drain's);
 * each call is one LMDB transaction. */

/* The first upload pending for `sink` with an id above after_id for which
 * skip (NULL: none) returns false, into *out; skip passes over the ones the
 * caller already has in flight within the same read transaction. It runs
 * inside that transaction: it must not call the store.
 * STORE_ERR_NOTFOUND when there is none. A pending id whose upload is gone
 * (never the case while the sink is required) is dropped on the way. */
typedef bool (*store_drain_skip_fn)(uint64_t id, void *arg);
int store_drain_next(struct store *s, const char *sink, uint64_t after_id, store_drain_skip_fn skip,
		     void *arg, struct upload_record *out);
/* The same for up to max uploads in id order, in one read transaction, into
 * out[0 .. *n): 0 with *n >= 1, or STORE_ERR_NOTFOUND (*n = 0). They stay
 * pending until store_drain_done, so a caller may send them later. */
int store_drain_next_batch(struct store *s, const char *sink, uint64_t after_id,
			   store_drain_skip_fn skip, void *arg, struct upload_record *out,
			   size_t max, size_t *n);
/* Marks the uploads acknowledged by `sink`, durably, and lets retention
 * run. 0, or a negative store_error (nothing changed; call again). */
int store_drain_done(struct store *s, const char *sink, const uint64_t *ids, size_t n);
/* Makes every upload with an id at or above from_id pending again for
 * `sink` (beaconctl drain replay); *count says how many were added. */
int store_drain_replay(struct store *s, const char *sink, uint64_t from_id, uint64_t *count);

struct store_drain_lag {
	uint64_t uploads;	 /* pending for the sink */
	uint64_t bytes;		 /* their body bytes */
	uint64_t first_id;	 /* the lowest pending id (0: none) */
	uint64_t first_unix_ms;	 /* when that one was received */
	uint64_t drained_before; /* every upload below this id is drained */
};
int store_drain_lag(struct store *s, const char *sink, struct store_drain_lag *out);

/* Opens the upload's spool segment after checking its record header and its
 * whole body against the CRC32 in the index (STORE_ERR_CORRUPT when either
 * fails). *fd then reads the body at rec->offset .. rec->offset +
 * rec->length; the caller closes it. */
int store_body_open_verified(struct store *s, const struct upload_record *rec, int *fd);
/* The same in two steps, for a caller that checks many bodies of one segment
 * in a row (the drain) and keeps the segment open between them:
 * store_segment_open opens rec's spool segment read-only (the caller closes
 * it); store_body_verify checks rec's record header and body in that fd,
 * reading through buf (at least STORE_VERIFY_BUF_BYTES). Same errors. When
 * the record fits buf, *body then points at the checked body in buf (the
 * bytes the CRC was computed on), else it is NULL. */
#define STORE_VERIFY_BUF_BYTES (1024u * 1024u)
int store_segment_open(struct store *s, const struct upload_record *rec, int *fd);
int store_body_verify(struct store *s, const struct upload_record *rec, int fd, uint8_t *buf,
		      size_t buflen, const uint8_t **body);

#endif
