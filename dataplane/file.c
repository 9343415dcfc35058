#include "beacon/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Grows as it reads rather than trusting st_size: a file being rewritten
 * (a CRL fetch) may change size between the two. */
static int read_all(int fd, uint8_t **buf, size_t *len)
{
	size_t cap = 0, n = 0;
	for (;;) {
		if (n + 1 >= cap) {
			size_t grown_cap = cap ? 2 * cap : 8192;
			uint8_t *grown = realloc(*buf, grown_cap);
			if (!grown)
				return ENOMEM;
			*buf = grown;
			cap = grown_cap;
		}
		ssize_t r = read(fd, *buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	(*buf)[n] = '\0';
	*len = n;
	return 0;
}

int file_read(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen)
{
	*buf = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int e = fd < 0 ? errno : read_all(fd, buf, len);
	if (fd >= 0)
		close(fd);
	if (e == 0)
		return 0;
	free(*buf);
	*buf = NULL;
	*len = 0;
	snprintf(err, errlen, "%s: %s", path, strerror(e));
	return -1;
}
