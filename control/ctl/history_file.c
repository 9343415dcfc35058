/*
 * The status page's history across restarts: a text file the control
 * thread rewrites after every sample. Columns are named by result in the
 * header line, so a file written by a build with other results still reads
 * (a column this build does not know is dropped, one it lacks reads 0).
 *
 *   beacond-status-history 1 succeeded no_certificate ...
 *   1795000000 12 0 ...
 */
#include "control_internal.h"
#include "beacon/auth.h"
#include "beacon/log.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HISTORY_MAGIC "beacond-status-history"
#define HISTORY_VERSION 1
/* A column for each result, with room for results a later build adds. */
#define HISTORY_COLUMNS_MAX (2u * AUTH_RESULT_COUNT + 8u)
#define HISTORY_LINE_MAX 4096

/* Which result each column of the file holds; -1: one we do not know. */
struct history_columns {
	unsigned n;
	int result[HISTORY_COLUMNS_MAX];
};

static int result_by_name(const char *name)
{
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		if (strcmp(auth_result_name((enum auth_result)r), name) == 0)
			return (int)r;
	return -1;
}

static int header_parse(char *line, struct history_columns *cols)
{
	char *save = NULL;
	const char *magic = strtok_r(line, " \n", &save);
	const char *version = strtok_r(NULL, " \n", &save);
	if (!magic || strcmp(magic, HISTORY_MAGIC) != 0 || !version || strcmp(version, "1") != 0)
		return -1;
	cols->n = 0;
	for (char *name; (name = strtok_r(NULL, " \n", &save));) {
		if (cols->n == HISTORY_COLUMNS_MAX)
			return -1;
		cols->result[cols->n++] = result_by_name(name);
	}
	return cols->n ? 0 : -1;
}

static int number_parse(const char *s, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int sample_parse(char *line, const struct history_columns *cols, struct control_sample *s)
{
	char *save = NULL;
	memset(s, 0, sizeof *s);
	if (number_parse(strtok_r(line, " \n", &save), &s->unix_s))
		return -1;
	for (unsigned i = 0; i < cols->n; i++) {
		uint64_t v;
		if (number_parse(strtok_r(NULL, " \n", &save), &v))
			return -1;
		if (cols->result[i] >= 0)
			s->handshakes[cols->result[i]] = v;
	}
	return strtok_r(NULL, " \n", &save) ? -1 : 0;
}

/* Samples in time order within the window; on error *bad_line is set. */
static int history_read(FILE *f, struct control_history *h, uint64_t oldest, unsigned *bad_line)
{
	char line[HISTORY_LINE_MAX];
	struct history_columns cols = {.n = 0};
	uint64_t last = 0;
	unsigned n = 0;
	while (fgets(line, sizeof line, f)) {
		*bad_line = ++n;
		if (!strchr(line, '\n'))
			return -1; /* too long, or cut short */
		if (n == 1) {
			if (header_parse(line, &cols))
				return -1;
			continue;
		}
		struct control_sample s;
		if (sample_parse(line, &cols, &s) || s.unix_s < last)
			return -1;
		last = s.unix_s;
		if (s.unix_s >= oldest)
			control_history_push(h, &s);
	}
	*bad_line = n + 1;
	return ferror(f) || n == 0 ? -1 : 0;
}

void control_history_load(struct control_history *h, const char *path, uint64_t now_unix_s)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		if (errno != ENOENT)
			log_warn("%s: %s; the status page's history starts empty", path,
				 strerror(errno));
		return;
	}
	uint64_t window = (uint64_t)CONTROL_HISTORY_SAMPLES * CONTROL_SAMPLE_INTERVAL_S;
	uint64_t oldest = now_unix_s > window ? now_unix_s - window : 0;
	unsigned bad_line = 0;
	if (history_read(f, h, oldest, &bad_line)) {
		log_warn("%s:%u: not a status history this beacond can read; the history starts "
			 "empty",
			 path, bad_line);
		memset(h, 0, sizeof *h);
	} else if (h->count) {
		log_info("status page: %u samples of history from %s", h->count, path);
	}
	fclose(f);
}

static void history_write(const struct control_history *h, FILE *f)
{
	fprintf(f, "%s %d", HISTORY_MAGIC, HISTORY_VERSION);
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		fprintf(f, " %s", auth_result_name((enum auth_result)r));
	fputc('\n', f);
	for (unsigned i = 0; i < h->count; i++) {
		const struct control_sample *s = control_history_at(h, i);
		fprintf(f, "%" PRIu64, s->unix_s);
		for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
			fprintf(f, " %" PRIu64, s->handshakes[r]);
		fputc('\n', f);
	}
}

int control_history_save(const struct control_history *h, const char *path, char *err,
			 size_t errlen)
{
	char tmp[PATH_MAX + 8];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	FILE *f = fopen(tmp, "we");
	if (!f) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	history_write(h, f);
	bool failed = ferror(f) != 0;
	if (fclose(f) != 0 || failed) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno ? errno : EIO));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) != 0) {
		snprintf(err, errlen, "rename %s to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}
