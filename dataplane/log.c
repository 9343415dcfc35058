#include "beacon/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static enum log_level max_level = LOG_INFO;
static enum log_format line_format = LOG_FORMAT_TEXT;
static const char *const level_tag[] = {"error", "warn", "info", "debug"};
/* RFC 5424 severities: err 3, warning 4, info 6, debug 7. */
static const int level_priority[] = {3, 4, 6, 7};

void log_set_level(enum log_level level)
{
	max_level = level;
}

void log_set_format(enum log_format format)
{
	line_format = format;
}

/* 2026-12-04T03:10:11.123Z */
static size_t timestamp(char *out, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	int m = snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
	return m < 0 ? n : n + (size_t)m;
}

/* JSON string body: quotes, backslashes and control bytes escaped; bytes
 * of 0x80 and up pass as they are (messages are ASCII or UTF-8). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0;
	for (; *s && n + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	return n;
}

static size_t format_line(char *line, enum log_level level, const char *msg)
{
	char ts[40];
	timestamp(ts, sizeof ts);
	size_t cap = LOG_LINE_MAX - 2;
	int n;
	if (line_format == LOG_FORMAT_JSON) {
		n = snprintf(line, cap,
			     "{\"time\":\"%s\",\"priority\":%d,\"level\":\"%s\",\"msg\":\"", ts,
			     level_priority[level], level_tag[level]);
		size_t len = (size_t)n + json_escape(line + n, cap - (size_t)n - 2, msg);
		line[len++] = '"';
		line[len++] = '}';
		return len;
	}
	n = snprintf(line, cap, "<%d>%s beacond[%s]: %s", level_priority[level], ts,
		     level_tag[level], msg);
	return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level > max_level)
		return;
	char msg[LOG_LINE_MAX / 2];
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	char line[LOG_LINE_MAX];
	size_t len = format_line(line, level, msg);
	line[len++] = '\n';
	/* One write per line so concurrent workers never interleave. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}
