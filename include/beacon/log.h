/*
 * log: one line per event on stderr, each with an RFC 5424 priority and a
 * UTC timestamp, as text or as one JSON object a line (`[log] format`).
 * Under systemd the "<N>" that starts a text line is the priority
 * journald reads (so `journalctl -p err` finds errors); syslog-style
 * collectors read the same field. Safe from any thread: each line is
 * written with one write(2), so lines from workers never interleave. Never
 * log key material.
 */
#ifndef BEACON_LOG_H
#define BEACON_LOG_H

#include <stdbool.h>

/* In RFC 5424 order: the priority written is LOG_PRIORITY_BASE + level. */
enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Lines above this level are dropped; set once at start-up. */
void log_set_level(enum log_level level);

/* Text (the default) or JSON lines; set once at start-up, before workers. */
void log_set_format(enum log_format format);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
