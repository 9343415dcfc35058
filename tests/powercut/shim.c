/*
 * beacon-powercut: an LD_PRELOAD library that keeps, beside a data
 * directory, what a power cut would leave of it: bytes and names that were
 * made durable, and nothing else (the LazyFS approach).
 *
 *   BEACON_POWERCUT_DATA=DIR      the data directory (its files are tracked)
 *   BEACON_POWERCUT_SHADOW=DIR    where the durable image is kept:
 *       content/REL               a file's bytes as of its last sync
 *       names/REL/@entries        a directory's entries as of its last
 *                                 fsync, one "d NAME" or "f NAME" a line
 *
 * A file's bytes become durable when fsync/fdatasync of it returns 0, or
 * as they are written on an O_DSYNC/O_SYNC descriptor (LMDB's meta pages);
 * a name when its directory's fsync returns 0. LMDB writes its pages with
 * pwrite/write/writev on data.mdb and fdatasyncs it through libc (no
 * MDB_WRITEMAP: its mmap is read-only), which this library interposes. The
 * spool goes through io_uring, which no LD_PRELOAD can see: its syncs reach
 * this library through the store's I/O probe (store_io_probe, see
 * dataplane/store/store-probe.h), which it defines.
 *
 * The power cut is SIGKILL followed by tests/integration/test_powercut.py
 * rebuilding DIR from the shadow alone. A kill in the middle of a shadow
 * update leaves part of a sync's bytes: what a real disk may also hold
 * when power fails during a sync. Bytes written after a sync began may be
 * copied with it: legal too, as writeback may persist them at any time.
 * What never reaches the shadow is what no sync covered, and that is what
 * a server that acknowledges too early loses.
 */
/* The interposed names must be libc's own: with _FILE_OFFSET_BITS=64 (meson's
 * default) the headers would rename open and pwrite to open64 and pwrite64. */
#undef _FILE_OFFSET_BITS

#include "store-probe.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536
#define CHUNK (64 * 1024)

static char data_dir[PATH_MAX];
static size_t data_len;
static char shadow_dir[PATH_MAX];
static bool active;
static pthread_mutex_t shadow_lock = PTHREAD_MUTEX_INITIALIZER;

/* What open() told us about a descriptor of a tracked file. */
struct tracked_fd {
	char *rel; /* path under the data directory; NULL: not tracked */
	bool dsync;
};
static struct tracked_fd fds[MAX_FDS];

/* Byte ranges written since the last sync, per tracked file written
 * through libc (LMDB's data.mdb). */
struct range {
	off_t off;
	size_t len;
};
struct dirty_file {
	char *rel;
	struct range *ranges;
	size_t n, cap;
};
static struct dirty_file dirty[16];
static size_t n_dirty;

static int (*real_open)(const char *, int, ...);
static int (*real_close)(int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);

static void die(const char *what, const char *path)
{
	fprintf(stderr, "beacon-powercut: %s %s: %s\n", what, path, strerror(errno));
	_exit(99);
}

/* Other libraries' constructors may call open or write before ours. */
static void resolve(void)
{
	if (real_writev)
		return;
	real_open = dlsym(RTLD_NEXT, "open");
	real_close = dlsym(RTLD_NEXT, "close");
	real_fsync = dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
	real_pwrite = dlsym(RTLD_NEXT, "pwrite");
	real_write = dlsym(RTLD_NEXT, "write");
	real_writev = dlsym(RTLD_NEXT, "writev");
}

__attribute__((constructor)) static void powercut_init(void)
{
	resolve();
	const char *d = getenv("BEACON_POWERCUT_DATA"), *s = getenv("BEACON_POWERCUT_SHADOW");
	if (!d || !s)
		return;
	if (!realpath(d, data_dir))
		die("realpath", d);
	if (!realpath(s, shadow_dir))
		die("realpath", s);
	data_len = strlen(data_dir);
	active = true;
}

/* The path under the data directory, or NULL. */
static const char *relative(const char *abs)
{
	if (strncmp(abs, data_dir, data_len) != 0)
		return NULL;
	if (abs[data_len] == '\0')
		return ".";
	return abs[data_len] == '/' ? abs + data_len + 1 : NULL;
}

static void mkdirs(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			die("mkdir", path);
		*p = '/';
	}
}

static int shadow_open(const char *kind, const char *rel, const char *leaf, int flags)
{
	char path[PATH_MAX * 2];
	snprintf(path, sizeof path, "%s/%s/%s%s", shadow_dir, kind, rel, leaf);
	mkdirs(path);
	int fd = real_open(path, flags | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open", path);
	return fd;
}

static void copy_range(int from, int to, off_t off, size_t len, bool only_changed)
{
	static char a[CHUNK], b[CHUNK];
	while (len > 0) {
		size_t want = len < CHUNK ? len : CHUNK;
		ssize_t n = pread(from, a, want, off);
		if (n <= 0)
			return; /* past the end: nothing more was written */
		if (!only_changed || pread(to, b, (size_t)n, off) != n || memcmp(a, b, (size_t)n))
			if (real_pwrite(to, a, (size_t)n, off) != n)
				die("write", "shadow content");
		off += n;
		len -= (size_t)n;
	}
}

/* The file's bytes (all, or the ranges written since its last sync) are
 * durable now. Called with shadow_lock held. */
static void content_synced(int fd, const char *rel, const struct dirty_file *df)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("fstat", rel);
	int to = shadow_open("content", rel, "", O_RDWR | O_CREAT);
	if (df) {
		for (size_t i = 0; i < df->n; i++)
			copy_range(fd, to, df->ranges[i].off, df->ranges[i].len, false);
	} else {
		copy_range(fd, to, 0, (size_t)st.st_size, true);
	}
	if (ftruncate(to, st.st_size) < 0)
		die("truncate", rel);
	real_close(to);
}

/* The directory's entries are durable now. Called with shadow_lock held. */
static void names_synced(const char *abs, const char *rel)
{
	DIR *d = opendir(abs);
	if (!d)
		die("opendir", abs);
	char final[PATH_MAX * 2], tmp[PATH_MAX * 2 + 8];
	snprintf(final, sizeof final, "%s/names/%s/@entries", shadow_dir, rel);
	snprintf(tmp, sizeof tmp, "%s.tmp", final);
	mkdirs(tmp);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("fopen", tmp);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		fprintf(f, "%c %s\n", e->d_type == DT_DIR ? 'd' : 'f', e->d_name);
	}
	closedir(d);
	if (fclose(f) != 0 || rename(tmp, final) != 0)
		die("write", final);
}

static struct dirty_file *dirty_find(const char *rel, bool create)
{
	for (size_t i = 0; i < n_dirty; i++)
		if (!strcmp(dirty[i].rel, rel))
			return &dirty[i];
	if (!create || n_dirty == sizeof dirty / sizeof dirty[0])
		return NULL;
	dirty[n_dirty].rel = strdup(rel);
	return &dirty[n_dirty++];
}

static void dirty_add(const char *rel, off_t off, size_t len)
{
	struct dirty_file *df = dirty_find(rel, true);
	if (!df) {
		fprintf(stderr, "beacon-powercut: too many files written through libc\n");
		_exit(99);
	}
	if (df->n == df->cap) {
		df->cap = df->cap ? df->cap * 2 : 64;
		df->ranges = realloc(df->ranges, df->cap * sizeof *df->ranges);
		if (!df->ranges)
			_exit(99);
	}
	df->ranges[df->n++] = (struct range){off, len};
}

/* A write of n bytes at off on a tracked descriptor has completed. */
static void written(int fd, const void *buf, off_t off, size_t n)
{
	if (!active || fd < 0 || fd >= MAX_FDS || !fds[fd].rel || n == 0)
		return;
	pthread_mutex_lock(&shadow_lock);
	if (fds[fd].dsync) {
		int to = shadow_open("content", fds[fd].rel, "", O_RDWR | O_CREAT);
		if (buf) {
			if (real_pwrite(to, buf, n, off) != (ssize_t)n)
				die("write", fds[fd].rel);
		} else {
			copy_range(fd, to, off, n, false);
		}
		real_close(to);
	} else {
		dirty_add(fds[fd].rel, off, n);
	}
	pthread_mutex_unlock(&shadow_lock);
}

static void fd_synced(int fd)
{
	if (!active)
		return;
	char link[64], abs[PATH_MAX];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, abs, sizeof abs - 1);
	if (n <= 0)
		return;
	abs[n] = '\0';
	const char *rel = relative(abs);
	if (!rel)
		return;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return;
	pthread_mutex_lock(&shadow_lock);
	if (S_ISDIR(st.st_mode)) {
		names_synced(abs, rel);
	} else if (S_ISREG(st.st_mode)) {
		struct dirty_file *df = dirty_find(rel, false);
		content_synced(fd, rel, df);
		if (df)
			df->n = 0;
	}
	pthread_mutex_unlock(&shadow_lock);
}

/* ---- the store's syncs (io_uring: only the probe sees them) ---- */

int store_io_probe(struct store_sync_event *ev)
{
	if (ev->phase == STORE_PROBE_DONE && ev->res == 0)
		fd_synced(ev->fd);
	return ev->res;
}

/* ---- libc ---- */

int open(const char *path, int flags, ...)
{
	resolve();
	mode_t mode = 0;
	if (flags & O_CREAT) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	int fd = real_open(path, flags, mode);
	if (!active || fd < 0 || fd >= MAX_FDS)
		return fd;
	char abs[PATH_MAX];
	const char *rel = realpath(path, abs) ? relative(abs) : NULL;
	pthread_mutex_lock(&shadow_lock);
	free(fds[fd].rel);
	fds[fd].rel = rel ? strdup(rel) : NULL;
	fds[fd].dsync = (flags & (O_DSYNC | O_SYNC)) != 0;
	pthread_mutex_unlock(&shadow_lock);
	return fd;
}

int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & O_CREAT) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	return open(path, flags, mode);
}

int close(int fd)
{
	resolve();
	if (active && fd >= 0 && fd < MAX_FDS && fds[fd].rel) {
		pthread_mutex_lock(&shadow_lock);
		free(fds[fd].rel);
		fds[fd].rel = NULL;
		pthread_mutex_unlock(&shadow_lock);
	}
	return real_close(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	resolve();
	ssize_t r = real_pwrite(fd, buf, n, off);
	if (r > 0)
		written(fd, buf, off, (size_t)r);
	return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	return pwrite(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	resolve();
	ssize_t r = real_write(fd, buf, n);
	if (r > 0 && active && fd >= 0 && fd < MAX_FDS && fds[fd].rel)
		written(fd, buf, lseek(fd, 0, SEEK_CUR) - r, (size_t)r);
	return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	resolve();
	ssize_t r = real_writev(fd, iov, cnt);
	if (r > 0 && active && fd >= 0 && fd < MAX_FDS && fds[fd].rel)
		written(fd, NULL, lseek(fd, 0, SEEK_CUR) - r, (size_t)r);
	return r;
}

int fsync(int fd)
{
	resolve();
	int rc = real_fsync(fd);
	if (rc == 0)
		fd_synced(fd);
	return rc;
}

int fdatasync(int fd)
{
	resolve();
	int rc = real_fdatasync(fd);
	if (rc == 0)
		fd_synced(fd);
	return rc;
}
