/*
 * control_internal: what the control thread's files share. control.c owns
 * the thread, the poll loop and the clients; socket.c answers JSON lines;
 * metrics.c answers HTTP; status_page.c draws the chart. Everything here runs
 * on the control thread only.
 */
#ifndef BEACON_CONTROL_INTERNAL_H
#define BEACON_CONTROL_INTERNAL_H

#include "beacon/auth.h"
#include "beacon/control.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request line longer than this is refused and its connection closed. */
#define CONTROL_LINE_MAX (64u * 1024u)
/* HTTP request head (request line and headers); we never read a body. */
#define CONTROL_HTTP_REQUEST_MAX 8192u
/* The status page's history: one sample every 10 s, the last hour. */
#define CONTROL_SAMPLE_INTERVAL_S 10u
#define CONTROL_HISTORY_SAMPLES 360u

/* A growable output buffer. Out of memory is sticky: the caller checks
 * oom once at the end instead of after every append. */
struct control_buf {
	char *data;
	size_t len;
	size_t cap;
	bool oom;
};

void control_buf_append(struct control_buf *b, const char *s, size_t n);
void control_buf_printf(struct control_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void control_buf_reset(struct control_buf *b);
void control_buf_free(struct control_buf *b);

/* One sample: the handshakes of each result in the interval that ends at
 * unix_s (since the sample before it). Deltas, not the cumulative counters,
 * so a history read back after a restart joins the new process's counts. */
struct control_sample {
	uint64_t unix_s;
	uint64_t handshakes[AUTH_RESULT_COUNT];
};

/* Ring of the last CONTROL_HISTORY_SAMPLES samples, oldest first from
 * (head - count). counted: the cumulative counters at the newest sample,
 * so the interval so far is (now - counted). */
struct control_history {
	struct control_sample samples[CONTROL_HISTORY_SAMPLES];
	unsigned head;
	unsigned count;
	uint64_t counted[AUTH_RESULT_COUNT];
};

/* Takes the cumulative counters st at unix_s. */
void control_history_add(struct control_history *h, const struct control_stats *st,
			 uint64_t unix_s);
/* Appends one interval's counts as they are (a sample read back). */
void control_history_push(struct control_history *h, const struct control_sample *s);
/* i-th sample counted from the oldest; i < h->count. */
const struct control_sample *control_history_at(const struct control_history *h, unsigned i);

/* history_file.c: the history kept across restarts in a text file (written
 * whole to a temporary file and renamed over it, so a crash leaves the old
 * or the new one; not fsynced: a lost sample is a chart's 10 s). Load
 * drops samples older than the history window and warns, with file:line,
 * about a file it cannot read; the history then starts empty. */
void control_history_load(struct control_history *h, const char *path, uint64_t now_unix_s);
int control_history_save(const struct control_history *h, const char *path, char *err,
			 size_t errlen);

/* socket.c: the Unix socket. Binds path with mode 0600; returns the
 * listening fd or -1 with err. */
int control_socket_listen(const char *path, char *err, size_t errlen);
/* Who sent a request: the peer's credentials as the kernel gave them
 * (SO_PEERCRED), for the audit line of a command that changes something.
 * known = false when the kernel could not tell. */
struct control_peer {
	bool known;
	unsigned uid;
	int pid;
};

/* Answers one request line (NUL-terminated, without its newline) with one
 * reply line, newline included, appended to reply. A command that changes
 * something (reload, tickets_rotate, device_*) logs an audit line: who,
 * the command and its argument, and what came of it. */
void control_request(const struct control_handlers *h, const struct control_peer *who,
		     const char *line, size_t len, struct control_buf *reply);
/* The reply for a line over CONTROL_LINE_MAX. */
void control_reply_error(struct control_buf *reply, const char *error);

/* metrics.c: the loopback HTTP listener. Returns the listening fd or -1
 * with err (a non-loopback address is refused). */
int control_metrics_listen(const char *addr_port, char *err, size_t errlen);
/* What the HTTP side needs to answer. */
struct control_http_view {
	const struct control_handlers *h;
	const struct control_history *history;
};
/* A complete request head has arrived in req[0..len): appends the whole
 * response (status line, headers, body) to out. */
void control_http_respond(const struct control_http_view *v, const char *req, size_t len,
			  struct control_buf *out);
/* The response for a request head over CONTROL_HTTP_REQUEST_MAX. */
void control_http_error(struct control_buf *out, int status, const char *reason);
void control_metrics_render(const struct control_stats *st, uint64_t now_unix_s,
			    struct control_buf *out);

/* status_page.c; refusals[0..n_refusals): the latest refused handshakes,
 * newest first; drain: the drain's state (DRAIN_OFF when there is none). */
void control_status_page_render(const struct control_history *h, const struct control_stats *st,
				const struct tls_refusal *refusals, size_t n_refusals,
				const struct drain_status *drain, uint64_t now_unix_s,
				struct control_buf *out);

#endif
