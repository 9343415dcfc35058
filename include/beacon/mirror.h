/*
 * mirror: content down. The download directory ([server] download_dir) of
 * a beacon under a parent ([upstream] url, sync = on) is kept a copy of the
 * parent's: every [upstream] sync_interval (0: only on demand) and on
 * `beaconctl upstream sync`, one round on its own thread:
 *
 *   1. GET /ManageSoftDL-index from the parent (a beacond answers it to its
 *      children only): every file's path, size, mtime and strong ETag;
 *   2. each file whose ETag differs from the one held (kept in the file's
 *      user.beacon.etag extended attribute) is fetched with a conditional
 *      GET (If-None-Match), its body written to an unnamed temporary file
 *      (O_TMPFILE) in its directory, fsynced, then renamed over the old
 *      one: an agent gets the old file or the new one, never part of one;
 *   3. files the manifest does not name are removed (and directories left
 *      empty), once a whole manifest was read, even when some file failed.
 *
 * Paths from the parent are untrusted: each is refused unless every
 * component is a name the download route accepts (no "..", no absolute
 * path, no control character, under 1024 bytes); files are opened with
 * openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so no symlink in the tree
 * is followed. A bad manifest line refuses the whole manifest.
 *
 * Failure: a lost connection, a 5xx, or a body shorter or longer than its
 * Content-Length leaves the old file in place and fails the round, which
 * is retried with backoff (1 s doubling to 60 s). The thread never stops
 * the server; mirror_status says what happened.
 *
 * Threads: mirror_start and mirror_stop on the main thread; mirror_sync_now
 * and mirror_status from any thread (the control thread).
 */
#ifndef BEACON_MIRROR_H
#define BEACON_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct mirror;

struct mirror_status {
	bool on;      /* false: [upstream] sync is off (the rest is zero) */
	bool syncing; /* a round is running now */
	char last_error[256];
	uint64_t rounds_ok, rounds_failed;
	uint64_t files_synced; /* fetched and renamed into place */
	uint64_t bytes_synced;
	uint64_t files_removed;
	uint64_t files;		     /* in the last manifest */
	int64_t last_success_unix_s; /* 0: no round has succeeded yet */
	int64_t started_unix_s;
};

/* Starts the thread when cfg has [upstream] sync on (*out NULL when off);
 * its first round begins at once. 0, or -1 with the reason in err. */
int mirror_start(const struct config *cfg, struct mirror **out, char *err, size_t errlen);
/* Stops the thread (a round in progress ends at its next file) and frees
 * m. NULL is fine. */
void mirror_stop(struct mirror *m);
/* Asks for a round now (or right after the one running). 0 with what was
 * done in msg, or -1 when sync is off. */
int mirror_sync_now(struct mirror *m, char *msg, size_t msglen);
/* NULL: on = false and zeros. */
void mirror_status(struct mirror *m, struct mirror_status *out);

#endif
