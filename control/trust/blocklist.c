#include "blocklist.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fingerprint_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static int device_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* qsort must not see a NULL array, even an empty one. */
static void blocklist_sort(struct blocklist *bl)
{
	if (bl->n_fingerprints)
		qsort(bl->fingerprints, bl->n_fingerprints, 32, fingerprint_cmp);
	if (bl->n_devices)
		qsort(bl->devices, bl->n_devices, sizeof *bl->devices, device_cmp);
}

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int parse_fingerprint(const char *s, uint8_t out[32])
{
	size_t n = 0;
	while (*s && n < 64) {
		if (*s == ':') {
			s++;
			continue;
		}
		int v = hex_value((unsigned char)*s++);
		if (v < 0)
			return -1;
		out[n / 2] = (uint8_t)(n % 2 ? out[n / 2] | v : v << 4);
		n++;
	}
	return n == 64 && !*s ? 0 : -1;
}

static int add_fingerprint(struct blocklist *bl, const uint8_t fp[32])
{
	uint8_t(*grown)[32] = realloc(bl->fingerprints, (bl->n_fingerprints + 1) * 32);
	if (!grown)
		return -1;
	bl->fingerprints = grown;
	memcpy(bl->fingerprints[bl->n_fingerprints++], fp, 32);
	return 0;
}

static int add_device(struct blocklist *bl, const char *device)
{
	char **grown = realloc(bl->devices, (bl->n_devices + 1) * sizeof *grown);
	if (!grown)
		return -1;
	bl->devices = grown;
	bl->devices[bl->n_devices] = strdup(device);
	return bl->devices[bl->n_devices++] ? 0 : -1;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int parse_line(struct blocklist *bl, char *line, const char **why)
{
	uint8_t fp[32];
	if (!strncmp(line, "sha256:", 7)) {
		if (parse_fingerprint(trim(line + 7), fp) != 0) {
			*why = "a fingerprint is 64 hex digits";
			return -1;
		}
		return add_fingerprint(bl, fp);
	}
	if (!strncmp(line, "device:", 7)) {
		char *d = trim(line + 7);
		if (!*d) {
			*why = "empty device identity";
			return -1;
		}
		return add_device(bl, d);
	}
	*why = "expected \"sha256:<hex>\" or \"device:<identity>\"";
	return -1;
}

/* Adds the entries of `f` to bl; errors name `label` and the line. */
static int parse_stream(struct blocklist *bl, FILE *f, const char *label, char *err, size_t errlen)
{
	char buf[1024];
	unsigned lineno = 0;
	while (fgets(buf, sizeof buf, f)) {
		lineno++;
		if (!strchr(buf, '\n') && !feof(f)) {
			/* Never parse the tail of a long line as an entry of
			 * its own (a long comment could hide "device:x"). */
			snprintf(err, errlen, "%s:%u: line longer than %zu characters", label,
				 lineno, sizeof buf - 2);
			return -1;
		}
		char *line = trim(buf);
		if (!*line || *line == '#')
			continue;
		const char *why = "out of memory";
		if (parse_line(bl, line, &why) != 0) {
			snprintf(err, errlen, "%s:%u: %s", label, lineno, why);
			return -1;
		}
	}
	blocklist_sort(bl);
	return 0;
}

int blocklist_load(struct blocklist *bl, const char *path, char *err, size_t errlen)
{
	memset(bl, 0, sizeof *bl);
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "blocklist %s: %s", path, strerror(errno));
		return -1;
	}
	int rc = parse_stream(bl, f, path, err, errlen);
	fclose(f);
	if (rc != 0)
		blocklist_free(bl);
	return rc;
}

int blocklist_add_text(struct blocklist *bl, const char *label, const char *text, size_t len,
		       char *err, size_t errlen)
{
	if (len == 0)
		return 0;
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "%s: NUL byte: not a block list", label);
		return -1;
	}
	FILE *f = fmemopen((void *)text, len, "r");
	if (!f) {
		snprintf(err, errlen, "%s: %s", label, strerror(errno));
		return -1;
	}
	int rc = parse_stream(bl, f, label, err, errlen);
	fclose(f);
	return rc;
}

int blocklist_add_devices(struct blocklist *bl, const char *const *devices, size_t n, char *err,
			  size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		if (add_device(bl, devices[i]) != 0) {
			snprintf(err, errlen, "blocklist: out of memory");
			return -1;
		}
	}
	blocklist_sort(bl);
	return 0;
}

bool blocklist_has(const struct blocklist *bl, const uint8_t sha256[32], const char *device)
{
	if (bl->n_fingerprints &&
	    bsearch(sha256, bl->fingerprints, bl->n_fingerprints, 32, fingerprint_cmp))
		return true;
	return bl->n_devices &&
	       bsearch(&device, bl->devices, bl->n_devices, sizeof *bl->devices, device_cmp);
}

void blocklist_free(struct blocklist *bl)
{
	for (size_t i = 0; i < bl->n_devices; i++)
		free(bl->devices[i]);
	free(bl->devices);
	free(bl->fingerprints);
	memset(bl, 0, sizeof *bl);
}
