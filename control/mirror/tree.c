/*
 * The mirror's side of the download directory: which paths from the
 * parent may be written, opening their directories without following a
 * symlink, and removing what the parent no longer has.
 */
#include "mirror-internal.h"

#include "beacon/http.h"
#include "beacon/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REMOVE_DEPTH_MAX 32

static bool component_ok(const char *c, size_t n)
{
	return http_name_valid(c, n) &&
	       !(n >= sizeof MIRROR_TEMP_PREFIX - 1 &&
		 !memcmp(c, MIRROR_TEMP_PREFIX, sizeof MIRROR_TEMP_PREFIX - 1));
}

bool mirror_path_ok(const char *path)
{
	size_t len = strlen(path);
	if (len == 0 || len >= MIRROR_PATH_MAX)
		return false;
	for (const char *p = path;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (!component_ok(p, n)) /* also an empty one: "/x", "a//b", "a/" */
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

/* Beneath dirfd, and no symlink anywhere on the way. */
static int open_beneath(int dirfd, const char *name, int flags)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
					  RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
	return fd < 0 ? -errno : fd;
}

/* Each component in turn, made where missing. */
static int make_dirs(int root, char *dir)
{
	int cur = open_beneath(root, ".", O_RDONLY | O_DIRECTORY);
	for (char *c = dir, *slash; cur >= 0 && c; c = slash ? slash + 1 : NULL) {
		slash = strchr(c, '/');
		if (slash)
			*slash = '\0';
		if (mkdirat(cur, c, 0755) != 0 && errno != EEXIST) {
			int e = -errno;
			close(cur);
			return e;
		}
		int next = open_beneath(cur, c, O_RDONLY | O_DIRECTORY);
		close(cur);
		cur = next;
	}
	return cur;
}

int mirror_open_dir(int root, const char *path, const char **leaf)
{
	const char *slash = strrchr(path, '/');
	*leaf = slash ? slash + 1 : path;
	if (!slash)
		return open_beneath(root, ".", O_RDONLY | O_DIRECTORY);
	char dir[MIRROR_PATH_MAX];
	size_t n = (size_t)(slash - path);
	memcpy(dir, path, n);
	dir[n] = '\0';
	int fd = open_beneath(root, dir, O_RDONLY | O_DIRECTORY);
	return fd == -ENOENT ? make_dirs(root, dir) : fd;
}

static int by_path(const void *key, const void *elem)
{
	return strcmp(key, ((const struct mirror_entry *)elem)->path);
}

static bool named(const struct mirror_manifest *m, const char *path)
{
	return bsearch(path, m->e, m->n, sizeof *m->e, by_path) != NULL;
}

struct sweep {
	struct mirror_round *r;
	const struct mirror_manifest *m;
	char path[MIRROR_PATH_MAX];
};

static void sweep_dir(struct sweep *s, int fd, size_t plen, unsigned depth);

static void sweep_entry(struct sweep *s, int dirfd, const char *name, size_t plen, unsigned depth)
{
	size_t n = strlen(name), at = plen ? plen + 1 : 0;
	struct stat st;
	if (at + n >= sizeof s->path || fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return;
	if (plen)
		s->path[plen] = '/';
	memcpy(s->path + at, name, n + 1);
	if (S_ISDIR(st.st_mode)) {
		int sub = depth < REMOVE_DEPTH_MAX
				  ? openat(dirfd, name,
					   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
				  : -1;
		if (sub >= 0)
			sweep_dir(s, sub, at + n, depth + 1);
		unlinkat(dirfd, name, AT_REMOVEDIR); /* only when left empty */
	} else if (!named(s->m, s->path)) {
		if (unlinkat(dirfd, name, 0) == 0) {
			s->r->removed++;
			log_info("mirror: removed %s (gone from the parent)", s->path);
		} else {
			log_warn("mirror: cannot remove %s: %s", s->path, strerror(errno));
		}
	}
	s->path[plen] = '\0';
}

/* Takes fd. */
static void sweep_dir(struct sweep *s, int fd, size_t plen, unsigned depth)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	for (struct dirent *e; (e = readdir(d));)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			sweep_entry(s, dirfd(d), e->d_name, plen, depth);
	closedir(d);
}

void mirror_remove_stale(struct mirror_round *r, const struct mirror_manifest *m)
{
	struct sweep *s = calloc(1, sizeof *s);
	int fd = open_beneath(r->root, ".", O_RDONLY | O_DIRECTORY);
	if (s && fd >= 0) {
		s->r = r;
		s->m = m;
		sweep_dir(s, fd, 0, 0);
	} else if (fd >= 0) {
		close(fd);
	}
	free(s);
}
