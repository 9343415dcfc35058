/*
 * log: one line per event on stderr (journald adds the timestamp under
 * systemd). Safe from any thread: each line is written with one write(2), so
 * lines from workers never interleave. Never log key material.
 */
#ifndef BEACON_LOG_H
#define BEACON_LOG_H

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Lines above this level are dropped; set once at start-up. */
void log_set_level(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
