/*
 * files: the output directory's side of beacon-consume.
 *
 * Each file is written to an unnamed temporary file (O_TMPFILE) on the
 * output directory's file system, fsynced, given the upload's Received time
 * as its mtime, linked into its directory under a name made from the upload
 * id, renamed over the target and the directory fsynced: a reader sees the
 * old file or the new one, whole, and a crash leaves at most that one
 * temporary name, which the next delivery of the same upload replaces.
 *
 * Paths are walked one component at a time with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) (O_NOFOLLOW where the kernel lacks openat2), each
 * component checked first, so neither a name from an agent nor a symbolic
 * link planted in the output directory can reach outside it. The rename
 * replaces a link at the target's own name; it never follows it.
 */
#include "consume.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#define TEMP_PREFIX ".beacon-consume-"

const char *component_refusal(const char *s)
{
	if (!s || !s[0])
		return "empty";
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return "a dot component";
	if (strlen(s) > 255)
		return "longer than 255 bytes";
	if (strncmp(s, TEMP_PREFIX, strlen(TEMP_PREFIX)) == 0)
		return "the temporary files' prefix";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '/')
			return "contains '/'";
		if (*p < 0x20 || *p == 0x7f)
			return "contains a control byte";
	}
	return NULL;
}

/* One directory below parent, never through a symbolic link. */
static int open_dir_beneath(int parent, const char *name)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
	};
	long fd = syscall(SYS_openat2, parent, name, &how, sizeof how);
	if (fd < 0 && errno == ENOSYS)
		fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return (int)fd;
}

/* parent/name as a directory, made (and its entry made durable) if missing. */
static int open_or_make_dir(int parent, const char *name)
{
	int fd = open_dir_beneath(parent, name);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	if (mkdirat(parent, name, 0755) != 0 && errno != EEXIST)
		return -1;
	if (fsync(parent) != 0)
		return -1;
	return open_dir_beneath(parent, name);
}

int temp_file(int root_fd)
{
	return openat(root_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static bool is_link_refusal(int err)
{
	return err == ELOOP || err == EXDEV || err == ENOTDIR || err == EISDIR;
}

static enum put_result fail(int err, char *why, size_t whylen, const char *what)
{
	if (!is_link_refusal(err)) {
		snprintf(why, whylen, "%s: %s", what, strerror(err));
		return PUT_TRANSIENT;
	}
	snprintf(why, whylen,
		 "%s: %s (a symbolic link or a file in the way; links are never followed)", what,
		 strerror(err));
	return PUT_REFUSED;
}

static int open_category_dir(int root_fd, const char *device, const char *category)
{
	int dev = open_or_make_dir(root_fd, device);
	if (dev < 0)
		return -1;
	int cat = open_or_make_dir(dev, category);
	int err = errno;
	close(dev);
	errno = err;
	return cat;
}

static int64_t ts_cmp(struct timespec a, struct timespec b)
{
	if (a.tv_sec != b.tv_sec)
		return a.tv_sec < b.tv_sec ? -1 : 1;
	return a.tv_nsec < b.tv_nsec ? -1 : a.tv_nsec > b.tv_nsec;
}

/* Links the temporary file in as dir/tmp_name and renames it over name. */
static int link_and_rename(int dir, int tmp_fd, const char *name, uint64_t upload_id)
{
	char proc[64], tmp_name[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", tmp_fd);
	snprintf(tmp_name, sizeof tmp_name, TEMP_PREFIX "%" PRIu64, upload_id);
	/* A name left by a crash between link and rename, for this upload. */
	if (unlinkat(dir, tmp_name, 0) != 0 && errno != ENOENT)
		return -1;
	if (linkat(AT_FDCWD, proc, dir, tmp_name, AT_SYMLINK_FOLLOW) != 0)
		return -1;
	if (renameat(dir, tmp_name, dir, name) != 0) {
		int err = errno;
		unlinkat(dir, tmp_name, 0);
		errno = err;
		return -1;
	}
	return fsync(dir);
}

enum put_result put_file(int root_fd, int tmp_fd, const char *device, const char *category,
			 const char *name, uint64_t upload_id, struct timespec received, char *why,
			 size_t whylen)
{
	const char *parts[3] = {device, category, name};
	for (int i = 0; i < 3; i++) {
		const char *r = component_refusal(parts[i]);
		if (r) {
			snprintf(why, whylen, "%s is %s",
				 i == 0	  ? "Device"
				 : i == 1 ? "Category"
					  : "Name",
				 r);
			return PUT_REFUSED;
		}
	}
	int dir = open_category_dir(root_fd, device, category);
	if (dir < 0)
		return fail(errno, why, whylen, "opening the directory");
	enum put_result res = PUT_WRITTEN;
	struct stat st;
	if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
	    ts_cmp(st.st_mtim, received) > 0) {
		snprintf(why, whylen, "the file there is newer");
		res = PUT_OLDER;
		goto leave;
	}
	struct timespec times[2] = {received, received};
	if (futimens(tmp_fd, times) != 0) {
		res = fail(errno, why, whylen, "setting the mtime");
		goto leave;
	}
	if (fsync(tmp_fd) != 0) {
		res = fail(errno, why, whylen, "fsync");
		goto leave;
	}
	if (link_and_rename(dir, tmp_fd, name, upload_id) != 0)
		res = fail(errno, why, whylen, "putting the file in place");
leave:
	close(dir);
	return res;
}

static bool crc_of_file(int fd, uint64_t length, uint32_t *crc)
{
	unsigned char buf[65536];
	uLong c = crc32(0L, Z_NULL, 0);
	uint64_t seen = 0;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof buf);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return false;
		if (r == 0)
			break;
		c = crc32(c, buf, (uInt)r);
		seen += (uint64_t)r;
	}
	*crc = (uint32_t)c;
	return seen == length;
}

bool already_in_place(int root_fd, const char *device, const char *category, const char *name,
		      struct timespec received, uint64_t length, uint32_t crc)
{
	if (component_refusal(device) || component_refusal(category) || component_refusal(name))
		return false;
	int dev = open_dir_beneath(root_fd, device);
	if (dev < 0)
		return false;
	int dir = open_dir_beneath(dev, category);
	close(dev);
	if (dir < 0)
		return false;
	bool same = false;
	int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	uint32_t c = 0;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    ts_cmp(st.st_mtim, received) == 0 && (uint64_t)st.st_size == length)
		same = crc_of_file(fd, length, &c) && c == crc;
	if (fd >= 0)
		close(fd);
	close(dir);
	return same;
}
