/*
 * libFuzzer target for the block list file (control/trust/blocklist.c):
 * the input is written to a file and loaded with blocklist_load. Checks:
 *   - an error names the file: "PATH:LINE: reason", and leaves bl empty;
 *   - after a load every entry is found by blocklist_has, and every device
 *     identity is what some whole line of the file says ("device:" and the
 *     identity, blanks around it trimmed): nothing is made up from a piece
 *     of a longer line.
 */
#include "fuzz_common.h"

#include "../../control/trust/blocklist.h"

#include <ctype.h>
#include <string.h>

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* True when some line of data is "device:<identity>" up to blanks. */
static bool device_in_input(const uint8_t *data, size_t size, const char *device)
{
	static char line[1 << 16];
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (len < sizeof line) {
			memcpy(line, p, len);
			line[len] = '\0';
			char *t = trim(line);
			if (!strncmp(t, "device:", 7) && !strcmp(trim(t + 7), device))
				return true;
		}
		p += len + 1;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write_file("blocklist", data, size);
	struct blocklist bl;
	char err[512] = "";
	if (blocklist_load(&bl, path, err, sizeof err) != 0) {
		CHECK(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':');
		CHECK(bl.n_devices == 0 && bl.n_fingerprints == 0);
		CHECK(!bl.devices && !bl.fingerprints);
		return 0;
	}
	static const uint8_t zero[32];
	for (size_t i = 0; i < bl.n_fingerprints; i++)
		CHECK(blocklist_has(&bl, bl.fingerprints[i], ""));
	for (size_t i = 0; i < bl.n_devices; i++) {
		CHECK(bl.devices[i][0] != '\0');
		CHECK(blocklist_has(&bl, zero, bl.devices[i]));
		CHECK(device_in_input(data, size, bl.devices[i]));
	}
	blocklist_free(&bl);
	return 0;
}
