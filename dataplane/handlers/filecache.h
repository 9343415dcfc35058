/*
 * filecache: one worker's hot download files, whole, in memory, so that a
 * package fetched by a hundred thousand agents is opened and read once,
 * not a hundred thousand times.
 *
 * Model. A worker owns its cache (no locks: the share-nothing rule of the
 * workers). A file is admitted on its second request seen within the
 * cache's memory of recent misses (a per-device policy file asked for once
 * a day never displaces a shared package), if it is at most `file_max`
 * bytes and its last change is at least a second old (below). Entries
 * leave least recently used first, when the bytes held would pass
 * `budget`, or when more than FILECACHE_MAX_ENTRIES are linked.
 *
 * Freshness. Every hit is checked against the file with one fstatat of its
 * path below the download directory: device, inode, size, mtime and ctime
 * must be those of the bytes held, or the entry is dropped and the file
 * opened anew. A file replaced by rename has a new inode; one written in
 * place has a new ctime. The kernel stamps ctime with a coarse clock (one
 * tick, a few ms), so two writes inside one tick could share a stamp: a
 * file changed less than a second ago is never admitted, so any change
 * after the bytes were read carries a later stamp.
 *
 * Versions. A response holds a reference to its entry until its last byte
 * left (filecache_put): an entry dropped or replaced meanwhile lives on for
 * that response, so an agent gets one version whole, never half old and
 * half new. Bytes of such entries count against the budget until freed.
 *
 * Worker thread only.
 */
#ifndef BEACON_FILECACHE_H
#define BEACON_FILECACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define FILECACHE_MAX_ENTRIES 16384

/* What identifies one version of a file's bytes. */
struct file_version {
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
};

void file_version_of(const struct stat *st, struct file_version *v);

struct filecache_entry {
	struct file_version version;
	const uint8_t *data; /* version.size bytes */
};

struct filecache;

/* A cache of at most `budget` bytes (file bytes and per-entry overhead)
 * and files of at most `file_max` bytes; `held` is a gauge it keeps equal
 * to the bytes it holds. NULL when out of memory. */
struct filecache *filecache_new(uint64_t budget, uint64_t file_max, _Atomic uint64_t *held);
void filecache_free(struct filecache *fc);

/* The entry of `path` (below dirfd) if the file is still that version:
 * a reference the caller gives back with filecache_put. NULL: not held,
 * or stale (then dropped). */
struct filecache_entry *filecache_get(struct filecache *fc, int dirfd, const char *path);

/* After a miss: the caller opened `path` as fd (st its fstat). Returns a
 * new entry with the file's bytes and a reference for the caller, or NULL
 * when it is not admitted (first sight, too big, too fresh, no room, or
 * the file changed while it was read); fd is left as it was either way,
 * its offset included (the entry is read with pread). */
struct filecache_entry *filecache_offer(struct filecache *fc, const char *path, int fd,
					const struct stat *st);

void filecache_put(struct filecache *fc, struct filecache_entry *e);

#endif
