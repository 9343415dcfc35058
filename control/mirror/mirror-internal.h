/*
 * The mirror's parts (beacon/mirror.h): mirror.c the thread and its state,
 * manifest.c the parent's file list, fetch.c one file's conditional GET and
 * atomic replace, tree.c the checked paths and the removal of what the
 * parent no longer has.
 */
#ifndef BEACON_MIRROR_INTERNAL_H
#define BEACON_MIRROR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct parent_conn;

#define MIRROR_PATH_MAX 1024		/* bytes of a path, NUL included */
#define MIRROR_MANIFEST_MAX (16u << 20) /* the parent's bound, bytes */
#define MIRROR_TEMP_PREFIX ".beacon-mirror-"
#define MIRROR_XATTR "user.beacon.etag"

/* One file the parent has. Strings point into the manifest's buffer. */
struct mirror_entry {
	const char *path; /* checked: mirror_path_ok */
	const char *etag; /* "" while the parent's version has not settled */
	uint64_t size;
	int64_t mtime_ns;
};

struct mirror_manifest {
	char *buf;
	struct mirror_entry *e; /* sorted by path */
	size_t n;
};

/* What one round did; err keeps the first error. */
struct mirror_round {
	struct parent_conn *conn;
	int root; /* the download directory */
	const volatile bool *stop;
	uint64_t synced, bytes, removed;
	unsigned errors;
	char err[256];
};

void mirror_round_error(struct mirror_round *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* GET /ManageSoftDL-index and parse it. 0, or -1 (r->err says why; a bad
 * line refuses the whole manifest). */
int mirror_manifest_fetch(struct mirror_round *r, struct mirror_manifest *m);
void mirror_manifest_free(struct mirror_manifest *m);

/* Brings one file up to date. 0 (done, unchanged, or a per-file error
 * recorded in r), or -1 when the connection can no longer be trusted and
 * the round must end. */
int mirror_fetch_file(struct mirror_round *r, const struct mirror_entry *e);

/* True when path (from the parent) may be written below the root: 1 to
 * MIRROR_PATH_MAX - 1 bytes, every '/'-separated component a name the
 * download route accepts, none a mirror temporary. */
bool mirror_path_ok(const char *path);
/* The directory of path below root, made where missing, never through a
 * symlink; its fd, or -errno. *leaf points at the last component. */
int mirror_open_dir(int root, const char *path, const char **leaf);
/* Removes what m does not name (files, symlinks, leftovers) and the
 * directories left empty. */
void mirror_remove_stale(struct mirror_round *r, const struct mirror_manifest *m);

#endif
