/*
 * store: open and close, worker attach and detach, error names, and
 * beacond -t's read-only check.
 * The data path lives in upload.c and spool.c, the writer in writer.c.
 */
#include "store-internal.h"
#include "store-probe.h"

#include "beacon/log.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

const char *store_strerror(int err)
{
	switch (err) {
	case 0:
		return "ok";
	case STORE_ERR_BUSY:
		return "too many uploads in flight";
	case STORE_ERR_NOSPACE:
		return "no space left for the spool or index";
	case STORE_ERR_IO:
		return "I/O error";
	case STORE_ERR_INVAL:
		return "invalid argument";
	case STORE_ERR_SCHEMA:
		return "index written by a newer beacond";
	case STORE_ERR_NOTFOUND:
		return "not found";
	case STORE_ERR_CORRUPT:
		return "record fails its checksum";
	case STORE_ERR_LOCKED:
		return "data directory in use by another beacond";
	default:
		return "unknown store error";
	}
}

/* The *.seg files' bytes of one spool directory (an fd it takes). */
static uint64_t segment_bytes(int dfd)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return 0;
	}
	uint64_t total = 0;
	struct dirent *e;
	struct stat st;
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		if (l > 4 && !strcmp(e->d_name + l - 4, ".seg") &&
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode))
			total += (uint64_t)st.st_size;
	}
	closedir(d);
	return total;
}

/* Every segment file under DATA/spool/w*: what the disk holds for uploads,
 * committed or not, a worker's directory from a run with more workers
 * included. A file gone between readdir and stat (retention) counts
 * nothing. */
static uint64_t spool_bytes(const struct store *s)
{
	char path[PATH_MAX + 8];
	snprintf(path, sizeof path, "%s/spool", s->data_dir);
	DIR *top = opendir(path);
	if (!top)
		return 0;
	uint64_t total = 0;
	struct dirent *e;
	while ((e = readdir(top)) != NULL) {
		if (e->d_name[0] != 'w')
			continue;
		int dfd = openat(dirfd(top), e->d_name,
				 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd >= 0)
			total += segment_bytes(dfd);
	}
	closedir(top);
	return total;
}

/* Under map_lock shared: the writer may be growing the map. */
static void map_use(struct store *s, struct store_stats *out)
{
	MDB_envinfo info;
	MDB_stat st;
	pthread_rwlock_rdlock(&s->map_lock);
	if (mdb_env_info(s->ix.env, &info) == 0 && mdb_env_stat(s->ix.env, &st) == 0) {
		out->map_size_bytes = info.me_mapsize;
		out->map_used_bytes = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
	}
	pthread_rwlock_unlock(&s->map_lock);
}

static void disk_space(const struct store *s, struct store_stats *out)
{
	struct statvfs vfs;
	if (statvfs(s->data_dir, &vfs) != 0)
		return;
	out->disk_free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	out->disk_size_bytes = (uint64_t)vfs.f_blocks * vfs.f_frsize;
}

void store_stats(struct store *s, struct store_stats *out)
{
	memset(out, 0, sizeof *out);
	if (!s)
		return;
	out->commits = atomic_load(&s->n_commits);
	out->fsyncs = atomic_load(&s->n_fsyncs);
	out->uploads_committed = atomic_load(&s->n_committed);
	out->uploads_expired = atomic_load(&s->n_retained_out);
	out->uploads_deduplicated = atomic_load(&s->n_deduplicated);
	out->recovered_bad_headers = s->recovered_bad_headers;
	out->recovered_truncated_bytes = s->recovered_truncated_bytes;
	out->uploads_open = atomic_load_explicit(&s->n_streaming, memory_order_relaxed);
	out->uploads_open_max = (uint64_t)s->opts.max_open_uploads * s->nworkers;
	disk_space(s, out);
	out->spool_bytes = spool_bytes(s);
	map_use(s, out);
}

/* ---- the in-process registry, so readers can share an open store's env ---- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct store *registry;

static void store_registry_add(struct store *s)
{
	pthread_mutex_lock(&registry_lock);
	s->next_open = registry;
	registry = s;
	pthread_mutex_unlock(&registry_lock);
}

static void store_registry_remove(struct store *s)
{
	pthread_mutex_lock(&registry_lock);
	for (struct store **p = &registry; *p; p = &(*p)->next_open) {
		if (*p == s) {
			*p = s->next_open;
			break;
		}
	}
	if (s->readers)
		log_err("store: %s closed with %d readers still open", s->data_dir, s->readers);
	pthread_mutex_unlock(&registry_lock);
}

struct store *store_registry_borrow(const char *canonical_dir)
{
	pthread_mutex_lock(&registry_lock);
	struct store *s = registry;
	while (s && strcmp(s->data_dir, canonical_dir) != 0)
		s = s->next_open;
	if (s)
		s->readers++;
	pthread_mutex_unlock(&registry_lock);
	return s;
}

void store_registry_return(struct store *s)
{
	pthread_mutex_lock(&registry_lock);
	s->readers--;
	pthread_mutex_unlock(&registry_lock);
}

/* ---- open and close ---- */

/* *created (may be NULL) tells whether the directory is new: its name is
 * then durable only once its parent is fsynced. */
static int mkdir_if_missing(const char *path, bool *created, char *err, size_t errlen)
{
	if (mkdir(path, 0750) == 0) {
		if (created)
			*created = true;
		return 0;
	}
	if (errno == EEXIST)
		return 0;
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return store_error_from_errno(errno);
}

/* fsync of a directory, reported to the I/O probe like the writer's. */
static int dir_sync(const char *path, unsigned worker, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return store_error_from_errno(errno);
	}
	struct store_sync_event ev = {
		.what = STORE_SYNC_DIR, .fd = fd, .path = path, .worker = worker};
	if (store_io_probe) {
		ev.phase = STORE_PROBE_BEFORE;
		store_io_probe(&ev);
	}
	int res = fsync(fd) == 0 ? 0 : -errno;
	if (store_io_probe) {
		ev.phase = STORE_PROBE_DONE;
		ev.res = res;
		res = store_io_probe(&ev);
	}
	close(fd);
	if (res < 0) {
		snprintf(err, errlen, "fsync %s: %s", path, strerror(-res));
		return store_error_from_errno(res);
	}
	return 0;
}

/* Makes every name the store depends on durable before it takes an
 * upload: the workers' directories in spool/, the spool and index
 * directories in the data directory, LMDB's files in index/ (LMDB never
 * fsyncs a directory), and the data directory in its parent when it is
 * new. Four or five fsyncs per start; segments created later are the
 * writer's (their worker's directory is fsynced before their first
 * upload is answered). */
static int store_sync_names(struct store *s, bool data_dir_created, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int e = 0;
	if (snprintf(path, sizeof path, "%s/spool", s->data_dir) < (int)sizeof path)
		e = dir_sync(path, UINT32_MAX, err, errlen);
	if (!e && snprintf(path, sizeof path, "%s/index", s->data_dir) < (int)sizeof path)
		e = dir_sync(path, UINT32_MAX, err, errlen);
	if (!e)
		e = dir_sync(s->data_dir, UINT32_MAX, err, errlen);
	if (!e && data_dir_created) {
		snprintf(path, sizeof path, "%s", s->data_dir);
		e = dir_sync(dirname(path), UINT32_MAX, err, errlen);
	}
	return e;
}

static bool in_range(uint64_t v, uint64_t min, uint64_t max)
{
	return v >= min && v <= max;
}

/* The configuration refuses what breaks these rules, with its file and
 * line (beacon/store-t.h); here they are the caller's promise. */
static void store_options_assert(const struct store_options *opts)
{
#define STORE_OPTION_ASSERT_(type, field, key, form, def, min, max)                                \
	assert(in_range(opts->field, min, max));
	STORE_OPTIONS(STORE_OPTION_ASSERT_)
#undef STORE_OPTION_ASSERT_
	assert(opts->upload_buffer <= opts->segment_bytes);
	(void)opts;
	(void)in_range;
}

static int spool_dirs_open(struct store *s, char *err, size_t errlen)
{
	char path[PATH_MAX];
	/* store_open keeps data_dir short enough for every derived path. */
	if (snprintf(path, sizeof path, "%s/spool", s->data_dir) >= (int)sizeof path)
		return STORE_ERR_INVAL;
	int e = mkdir_if_missing(path, NULL, err, errlen);
	if (e)
		return e;
	s->dirs = calloc(s->nworkers, sizeof *s->dirs);
	if (!s->dirs) {
		snprintf(err, errlen, "store: out of memory");
		return STORE_ERR_IO;
	}
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct spool_dir *d = &s->dirs[i];
		d->fd = -1;
		pthread_mutex_init(&d->lock, NULL);
		if (snprintf(d->path, sizeof d->path, "%s/spool/w%u", s->data_dir, i) >=
		    (int)sizeof d->path)
			return STORE_ERR_INVAL;
		if ((e = mkdir_if_missing(d->path, NULL, err, errlen)))
			return e;
		d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d->fd < 0) {
			snprintf(err, errlen, "%s: %s", d->path, strerror(errno));
			return store_error_from_errno(errno);
		}
	}
	return 0;
}

static void spool_dirs_close(struct store *s)
{
	if (!s->dirs)
		return;
	for (unsigned i = 0; i < s->nworkers; i++) {
		if (s->dirs[i].fd >= 0)
			close(s->dirs[i].fd);
		free(s->dirs[i].open_seqs);
		pthread_mutex_destroy(&s->dirs[i].lock);
	}
	free(s->dirs);
	s->dirs = NULL;
}

/* ---- the data directory's owner ---- */

/* How long store_open waits for a lock held briefly (beacond -t holds a
 * shared one while it reads) before it names the holder and gives up. */
#define LOCK_PATIENCE_MS 2000
#define LOCK_POLL_MS 50

static int lock_path(char *buf, size_t len, const char *data_dir)
{
	return snprintf(buf, len, "%s/lock", data_dir) >= (int)len ? STORE_ERR_INVAL : 0;
}

/* "pid N" from the lock file, or "an unknown process". */
static void lock_holder(int fd, char *out, size_t len)
{
	char buf[32] = "";
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	char *end = NULL;
	long pid = n > 0 ? strtol(buf, &end, 10) : 0;
	if (pid > 0 && end && (*end == '\n' || *end == '\0'))
		snprintf(out, len, "pid %ld", pid);
	else
		snprintf(out, len, "an unknown process (no PID in the lock file)");
}

static bool lock_try(int fd, int how, bool patient)
{
	for (int waited = 0;; waited += LOCK_POLL_MS) {
		if (flock(fd, how | LOCK_NB) == 0)
			return true;
		if (errno != EWOULDBLOCK || !patient || waited >= LOCK_PATIENCE_MS)
			return false;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = LOCK_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* Takes DATA/lock exclusively and writes our PID into it: nothing else
 * may run recovery on, or write into, a directory a beacond serves. */
static int data_dir_lock(struct store *s, char *err, size_t errlen)
{
	char path[PATH_MAX];
	if (lock_path(path, sizeof path, s->data_dir))
		return STORE_ERR_INVAL;
	s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (s->lock_fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return store_error_from_errno(errno);
	}
	if (!lock_try(s->lock_fd, LOCK_EX, true)) {
		int e = errno;
		if (e != EWOULDBLOCK) {
			snprintf(err, errlen, "%s: flock: %s", path, strerror(e));
			return store_error_from_errno(e);
		}
		char holder[96];
		lock_holder(s->lock_fd, holder, sizeof holder);
		snprintf(err, errlen,
			 "data directory %s is in use by %s (it holds %s); refusing to start a "
			 "second server on it",
			 s->data_dir, holder, path);
		return STORE_ERR_LOCKED;
	}
	char pid[32];
	int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(s->lock_fd, 0) < 0 || pwrite(s->lock_fd, pid, (size_t)n, 0) != n) {
		snprintf(err, errlen, "%s: write PID: %s", path, strerror(errno));
		return store_error_from_errno(errno);
	}
	return 0;
}

static void store_free(struct store *s)
{
	index_close(&s->ix);
	spool_dirs_close(s);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* releases the flock */
	pthread_rwlock_destroy(&s->map_lock);
	pthread_mutex_destroy(&s->seen_lock);
	free(s);
}

int store_open(const char *data_dir, const struct store_options *opts, unsigned nworkers,
	       struct store **out, char *err, size_t errlen)
{
	assert(opts && out);
	store_options_assert(opts);
	if (!data_dir || !data_dir[0] || nworkers == 0) {
		snprintf(err, errlen, "store: a data directory and at least one worker are needed");
		return STORE_ERR_INVAL;
	}
	bool created = false;
	int e = mkdir_if_missing(data_dir, &created, err, errlen);
	if (e)
		return e;
	struct store *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "store: out of memory");
		return STORE_ERR_IO;
	}
	pthread_rwlock_init(&s->map_lock, NULL);
	pthread_mutex_init(&s->seen_lock, NULL);
	s->seen_tail = &s->seen_head;
	s->event_fd = -1;
	s->lock_fd = -1;
	s->nworkers = nworkers;
	if (!realpath(data_dir, s->data_dir)) {
		snprintf(err, errlen, "%s: %s", data_dir, strerror(errno));
		store_free(s);
		return STORE_ERR_IO;
	}
	if (strlen(s->data_dir) > PATH_MAX - 64) {
		snprintf(err, errlen, "%s: path too long", s->data_dir);
		store_free(s);
		return STORE_ERR_INVAL;
	}
	s->opts = *opts;
	e = data_dir_lock(s, err, errlen);
	if (!e)
		e = spool_dirs_open(s, err, errlen);
	if (!e)
		e = index_open(&s->ix, s->data_dir, s->opts.map_bytes, INDEX_WRITE, err, errlen);
	if (!e)
		e = dedupe_open(s, err, errlen);
	if (!e)
		e = store_sync_names(s, created, err, errlen);
	if (!e)
		e = drain_sets_open(s, err, errlen);
	if (!e)
		e = recover_spool(s, err, errlen);
	if (!e)
		e = writer_start(s, err, errlen);
	if (e) {
		store_free(s);
		return e;
	}
	store_registry_add(s);
	*out = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	store_registry_remove(s);
	for (unsigned i = 0; i < s->nworkers; i++)
		if (s->dirs[i].attached)
			log_err("store: closing with worker %u still attached", i);
	writer_stop(s);
	store_free(s);
}

/* ---- workers ---- */

int store_worker_attach(struct store *s, unsigned worker_id, struct ring *ring,
			struct store_worker **out)
{
	if (!s || !ring || !out || worker_id >= s->nworkers)
		return STORE_ERR_INVAL;
	struct spool_dir *d = &s->dirs[worker_id];
	if (d->attached)
		return STORE_ERR_INVAL;
	struct store_worker *w = calloc(1, sizeof *w);
	if (!w)
		return STORE_ERR_IO;
	w->s = s;
	w->id = worker_id;
	w->ring = ring;
	w->ring_fd = ring->uring.ring_fd;
	w->dir = d;
	d->attached = true;
	*out = w;
	return 0;
}

void store_worker_detach(struct store_worker *w)
{
	if (!w)
		return;
	while (w->open_uploads) {
		log_warn("store: worker %u detaching: aborting an unfinished upload", w->id);
		store_upload_abort(w->open_uploads);
	}
	while (w->live > 0 || w->closing > 0) {
		int rc = ring_run_once(w->ring, 10000000ull);
		if (rc < 0 && rc != -EINTR && rc != -ETIME) {
			log_err("store: worker %u detaching: ring: %s; %u uploads left in flight",
				w->id, strerror(-rc), w->live);
			break;
		}
	}
	spool_pool_drain(w);
	upload_spare_buffers_free(w);
	w->dir->attached = false;
	free(w);
}

/* ---- beacond -t: the store checked read-only ---- */

static int check_count_uploads(struct index *ix, uint64_t *n)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return index_error(rc);
	MDB_stat st;
	rc = mdb_stat(txn, ix->uploads, &st);
	mdb_txn_abort(txn);
	if (!rc)
		*n = st.ms_entries;
	return index_error(rc);
}

/* A server owns the directory: its index is read beside it (LMDB's reader
 * table is shared memory, as for beaconctl); recovery is its business. */
static int check_in_use(struct store *s, const char *holder, char *report, size_t reportlen,
			char *err, size_t errlen)
{
	int e = index_open(&s->ix, s->data_dir, 0, INDEX_READ, err, errlen);
	uint64_t n = 0;
	if (!e)
		e = check_count_uploads(&s->ix, &n);
	if (e)
		return e;
	snprintf(report, reportlen,
		 "store %s: in use by %s; index read (%llu uploads), nothing changed; recovery "
		 "is left to that server",
		 s->data_dir, holder, (unsigned long long)n);
	return 0;
}

/* No server: what recovery would do, counted without changing a byte
 * (LMDB opened without its lock file). */
static int check_idle(struct store *s, char *report, size_t reportlen, char *err, size_t errlen)
{
	int e = index_open(&s->ix, s->data_dir, 0, INDEX_READ_NOLOCK, err, errlen);
	if (e == STORE_ERR_NOTFOUND) {
		snprintf(report, reportlen, "store %s: no index yet; beacond will create it",
			 s->data_dir);
		return 0;
	}
	struct recovery_report rep;
	if (!e)
		e = recover_plan(s, &rep);
	if (e) {
		if (!err[0])
			snprintf(err, errlen, "%s: %s", s->data_dir, store_strerror(e));
		return e;
	}
	snprintf(report, reportlen,
		 "store %s: %llu uploads indexed; at the next start recovery would cut %llu "
		 "unindexed bytes from %u segments and remove %u segments with no indexed upload; "
		 "%llu record headers and %u segments do not match the index",
		 s->data_dir, (unsigned long long)rep.uploads, (unsigned long long)rep.cut_bytes,
		 rep.cut_segments, rep.removed_segments, (unsigned long long)rep.bad_headers,
		 rep.short_segments);
	return 0;
}

int store_check(const char *data_dir, char *report, size_t reportlen, char *err, size_t errlen)
{
	report[0] = err[0] = '\0';
	if (!data_dir || !data_dir[0]) {
		snprintf(err, errlen, "store: no data directory");
		return STORE_ERR_INVAL;
	}
	struct store *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "store: out of memory");
		return STORE_ERR_IO;
	}
	int e = 0, lock_fd = -1;
	char path[PATH_MAX];
	if (!realpath(data_dir, s->data_dir)) {
		if (errno == ENOENT)
			snprintf(report, reportlen,
				 "store %s: does not exist yet; beacond will create it", data_dir);
		else
			snprintf(err, errlen, "%s: %s", data_dir, strerror(errno));
		e = errno == ENOENT ? 0 : store_error_from_errno(errno);
		goto leave;
	}
	if ((e = lock_path(path, sizeof path, s->data_dir)))
		goto leave;
	/* Shared, and only while reading: a starting server waits it out. */
	lock_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (lock_fd < 0 && errno != ENOENT) {
		/* Without the lock we cannot tell whether a server writes here,
		 * and reading LMDB without its lock file beside a writer is not
		 * safe. */
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		e = store_error_from_errno(errno);
		goto leave;
	}
	if (lock_fd >= 0 && !lock_try(lock_fd, LOCK_SH, false)) {
		if (errno != EWOULDBLOCK) {
			snprintf(err, errlen, "%s: flock: %s", path, strerror(errno));
			e = store_error_from_errno(errno);
			goto leave;
		}
		char holder[96];
		lock_holder(lock_fd, holder, sizeof holder);
		e = check_in_use(s, holder, report, reportlen, err, errlen);
		goto leave;
	}
	e = check_idle(s, report, reportlen, err, errlen);
leave:
	index_close(&s->ix);
	if (lock_fd >= 0)
		close(lock_fd);
	free(s);
	return e;
}

int store_health(struct store *s, struct store_health *out)
{
	memset(out, 0, sizeof *out);
	out->last_commit = atomic_load(&s->last_commit_status);
	uint64_t began_us = atomic_load(&s->commit_began_us);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	uint64_t now_us = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
	if (began_us && now_us > began_us)
		out->committing_ms = (now_us - began_us) / 1000u;
	out->need_bytes = s->opts.upload_buffer;
	struct statvfs vfs;
	if (statvfs(s->data_dir, &vfs) != 0) {
		log_warn("store %s: statvfs: %s", s->data_dir, strerror(errno));
		return STORE_ERR_IO;
	}
	out->free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	return 0;
}
