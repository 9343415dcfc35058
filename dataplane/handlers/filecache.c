/*
 * The hot-file cache (handlers/filecache.h): a chained hash table of
 * entries keyed by path, an LRU list through them, and a direct-mapped
 * table of recent misses for admission.
 */
#include "handlers/filecache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "worker-internal.h"

#define BUCKETS 4096
#define GHOSTS 4096
#define NS_PER_S 1000000000ll
/* A change younger than this may share its timestamp with the next one. */
#define SETTLE_NS NS_PER_S

struct entry {
	struct filecache_entry pub; /* first: a filecache_entry * is an entry * */
	uint8_t *bytes;
	uint64_t hash;
	size_t cost;   /* counted against the budget */
	unsigned refs; /* the table's while linked, one per response */
	bool linked;
	struct entry *next; /* in its bucket */
	struct entry *newer, *older;
	char path[];
};

struct filecache {
	uint64_t budget, file_max, held;
	unsigned linked;
	_Atomic uint64_t *gauge;
	struct entry *buckets[BUCKETS];
	struct entry *newest, *oldest;
	uint64_t misses[GHOSTS]; /* path hashes seen once, for admission */
};

void file_version_of(const struct stat *st, struct file_version *v)
{
	*v = (struct file_version){
		.dev = (uint64_t)st->st_dev,
		.ino = (uint64_t)st->st_ino,
		.size = (uint64_t)st->st_size,
		.mtime_ns = (int64_t)st->st_mtim.tv_sec * NS_PER_S + st->st_mtim.tv_nsec,
		.ctime_ns = (int64_t)st->st_ctim.tv_sec * NS_PER_S + st->st_ctim.tv_nsec,
	};
}

static bool version_equal(const struct file_version *a, const struct file_version *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

static uint64_t path_hash(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return h | 1; /* 0 marks an empty miss slot */
}

static void held_add(struct filecache *fc, int64_t delta)
{
	fc->held += (uint64_t)delta;
	counter_add(fc->gauge, (uint64_t)delta);
}

struct filecache *filecache_new(uint64_t budget, uint64_t file_max, _Atomic uint64_t *held)
{
	struct filecache *fc = calloc(1, sizeof *fc);
	if (!fc)
		return NULL;
	fc->budget = budget;
	fc->file_max = file_max < budget ? file_max : budget;
	fc->gauge = held;
	return fc;
}

static void entry_release(struct filecache *fc, struct entry *e)
{
	if (--e->refs)
		return;
	held_add(fc, -(int64_t)e->cost);
	free(e->bytes);
	free(e);
}

static void lru_remove(struct filecache *fc, struct entry *e)
{
	if (fc->newest == e)
		fc->newest = e->older;
	if (fc->oldest == e)
		fc->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	if (e->older)
		e->older->newer = e->newer;
	e->newer = e->older = NULL;
}

static void lru_push_newest(struct filecache *fc, struct entry *e)
{
	e->older = fc->newest;
	e->newer = NULL;
	if (fc->newest)
		fc->newest->newer = e;
	fc->newest = e;
	if (!fc->oldest)
		fc->oldest = e;
}

/* Out of the table; freed now, or when its last response ends. */
static void entry_unlink(struct filecache *fc, struct entry *e)
{
	struct entry **at = &fc->buckets[e->hash % BUCKETS];
	while (*at != e)
		at = &(*at)->next;
	*at = e->next;
	lru_remove(fc, e);
	e->linked = false;
	fc->linked--;
	entry_release(fc, e);
}

void filecache_free(struct filecache *fc)
{
	if (!fc)
		return;
	while (fc->oldest)
		entry_unlink(fc, fc->oldest);
	free(fc);
}

static struct entry *lookup(struct filecache *fc, const char *path, uint64_t h)
{
	for (struct entry *e = fc->buckets[h % BUCKETS]; e; e = e->next)
		if (e->hash == h && !strcmp(e->path, path))
			return e;
	return NULL;
}

/* One fstatat, by the kernel's own walk below dirfd. It may follow a
 * symlink out of the tree that was swapped in after the entry was read;
 * then it names another file, the version differs and the entry goes:
 * the file is opened again with openat2, which refuses the escape. */
struct filecache_entry *filecache_get(struct filecache *fc, int dirfd, const char *path)
{
	if (!fc)
		return NULL;
	struct entry *e = lookup(fc, path, path_hash(path));
	if (!e)
		return NULL;
	struct stat st;
	struct file_version now;
	if (fstatat(dirfd, path, &st, 0) != 0 || !S_ISREG(st.st_mode)) {
		entry_unlink(fc, e);
		return NULL;
	}
	file_version_of(&st, &now);
	if (!version_equal(&now, &e->pub.version)) {
		entry_unlink(fc, e);
		return NULL;
	}
	lru_remove(fc, e);
	lru_push_newest(fc, e);
	e->refs++;
	return &e->pub;
}

/* First sight of a path: remembered, not admitted. */
static bool seen_before(struct filecache *fc, uint64_t h)
{
	uint64_t *slot = &fc->misses[h % GHOSTS];
	if (*slot == h)
		return true;
	*slot = h;
	return false;
}

static bool settled(const struct file_version *v)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return false;
	int64_t now = (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
	int64_t changed = v->mtime_ns > v->ctime_ns ? v->mtime_ns : v->ctime_ns;
	return now - changed >= SETTLE_NS;
}

/* Evicts the least recently used until `cost` more fits. */
static bool make_room(struct filecache *fc, size_t cost)
{
	while (fc->oldest && (fc->held + cost > fc->budget || fc->linked >= FILECACHE_MAX_ENTRIES))
		entry_unlink(fc, fc->oldest);
	/* Entries still being sent are out of the table but still held. */
	return fc->held + cost <= fc->budget && fc->linked < FILECACHE_MAX_ENTRIES;
}

static bool read_whole(int fd, uint8_t *buf, uint64_t size)
{
	uint64_t got = 0;
	while (got < size) {
		ssize_t n = pread(fd, buf + got, (size_t)(size - got), (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		got += (uint64_t)n;
	}
	return true;
}

/* The bytes read are of the version stat'ed before, if the file still is
 * that version after: a writer in between changes mtime or ctime. */
static struct entry *entry_read(int fd, const struct file_version *v, const char *path)
{
	size_t plen = strlen(path) + 1;
	struct entry *e = calloc(1, sizeof *e + plen);
	uint8_t *bytes = malloc(v->size ? (size_t)v->size : 1);
	struct stat after;
	struct file_version v_after;
	if (!e || !bytes || !read_whole(fd, bytes, v->size) || fstat(fd, &after) != 0)
		goto fail;
	file_version_of(&after, &v_after);
	if (!version_equal(v, &v_after))
		goto fail;
	memcpy(e->path, path, plen);
	e->bytes = bytes;
	e->pub.data = bytes;
	e->pub.version = *v;
	e->cost = sizeof *e + plen + (size_t)v->size;
	return e;
fail:
	free(bytes);
	free(e);
	return NULL;
}

struct filecache_entry *filecache_offer(struct filecache *fc, const char *path, int fd,
					const struct stat *st)
{
	struct file_version v;
	file_version_of(st, &v);
	if (!fc || v.size > fc->file_max || !settled(&v))
		return NULL;
	uint64_t h = path_hash(path);
	struct entry *old = lookup(fc, path, h);
	if (old)
		entry_unlink(fc, old); /* another version: get() would have dropped it */
	else if (!seen_before(fc, h))
		return NULL;
	size_t cost = sizeof(struct entry) + strlen(path) + 1 + (size_t)v.size;
	if (!make_room(fc, cost))
		return NULL;
	struct entry *e = entry_read(fd, &v, path);
	if (!e)
		return NULL;
	e->hash = h;
	e->refs = 2; /* the table's and the caller's */
	e->linked = true;
	e->next = fc->buckets[h % BUCKETS];
	fc->buckets[h % BUCKETS] = e;
	lru_push_newest(fc, e);
	fc->linked++;
	held_add(fc, (int64_t)e->cost);
	return &e->pub;
}

void filecache_put(struct filecache *fc, struct filecache_entry *pub)
{
	if (pub)
		entry_release(fc, (struct entry *)pub);
}
