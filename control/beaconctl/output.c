/*
 * beaconctl's output helpers, shared by the store and control sides: JSON
 * strings, text safe for a terminal, times and hex, and the messages for a
 * store failure and a bad option value.
 */
#include "beaconctl.h"

#include <time.h>

void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* Device names come from certificates: never let one drive the terminal. */
void text_safe(char *dst, size_t len, const char *src)
{
	size_t i = 0;
	for (; src[i] && i + 1 < len; i++) {
		dst[i] = src[i];
		if ((unsigned char)src[i] < 0x20 || src[i] == 0x7f)
			dst[i] = '?';
	}
	dst[i] = '\0';
}

void time_text(char *buf, size_t len, uint64_t ms)
{
	if (!ms) {
		snprintf(buf, len, "-");
		return;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void hex_text(char *buf, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(buf + 2 * i, "%02x", b[i]);
	buf[2 * n] = '\0';
}

int store_failure(const char *what, int rc)
{
	fprintf(stderr, "beaconctl: %s: %s\n", what, store_strerror(rc));
	return EXIT_NOTFOUND;
}

int bad_option(const char *what, const char *value, const char *expect)
{
	char v[64];
	text_safe(v, sizeof v, value);
	fprintf(stderr, "beaconctl: %s '%s': %s\n", what, v, expect);
	return EXIT_USAGE;
}
