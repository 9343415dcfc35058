/*
 * The control thread: one poll loop over the Unix socket, the metrics
 * listener, their clients and a stop eventfd, plus a 10 s timer that samples
 * the counters for the status page. Every socket is non-blocking; a client
 * that sends faster than it reads stops being read (one reply in flight per
 * client), so each client costs at most one request line and one reply.
 */
#include "control_internal.h"
#include "beacon/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CLIENTS_MAX 64
/* An HTTP client gets this long for its request and our response; a
 * control client may stay as long as it likes (scripts keep one open). */
#define HTTP_DEADLINE_MS 10000
/* After EMFILE, stop accepting for a moment instead of spinning. */
#define ACCEPT_PAUSE_MS 1000
/* A client we are closing gets this long, and this many bytes, to stop
 * sending; see client_drain. */
#define DRAIN_MS 2000
#define DRAIN_MAX (1u << 20)

enum { POLL_STOP, POLL_UNIX, POLL_HTTP, POLL_FIXED };

struct client {
	int fd;
	bool http;
	struct control_peer who; /* control socket clients */
	bool closing;		 /* close once out is sent */
	bool draining;		 /* out sent, our side shut down, discarding input */
	size_t drained;
	uint64_t deadline_ms; /* 0: none */
	struct control_buf in;
	struct control_buf out;
	size_t out_sent;
};

struct control {
	pthread_t thread;
	int stop_fd;
	int unix_fd;
	int http_fd;
	char socket_path[256];
	struct stat socket_st; /* to remove only our own socket file */
	struct control_handlers h;
	struct client clients[CLIENTS_MAX];
	unsigned n_clients;
	uint64_t accept_paused_until_ms;
	uint64_t next_sample_ms;
	struct control_history history;
	char history_path[4096];
	bool history_failing; /* the last save failed, and said so */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- clients ---- */

static void client_close(struct control *c, unsigned i)
{
	struct client *cl = &c->clients[i];
	close(cl->fd);
	control_buf_free(&cl->in);
	control_buf_free(&cl->out);
	c->clients[i] = c->clients[--c->n_clients];
}

/* Sends what it can; false when the client is gone. */
static bool client_flush(struct client *cl)
{
	while (cl->out_sent < cl->out.len) {
		ssize_t n = send(cl->fd, cl->out.data + cl->out_sent, cl->out.len - cl->out_sent,
				 MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK;
		cl->out_sent += (size_t)n;
	}
	control_buf_reset(&cl->out);
	cl->out_sent = 0;
	return true;
}

static bool client_has_reply(const struct client *cl)
{
	return cl->out.len > cl->out_sent;
}

/* Answers the first complete line in cl->in, if any; true if it did. */
static bool control_client_answer(struct control *c, struct client *cl)
{
	char *nl = cl->in.len ? memchr(cl->in.data, '\n', cl->in.len) : NULL;
	if (!nl)
		return false;
	size_t len = (size_t)(nl - cl->in.data);
	*nl = '\0';
	if (len && cl->in.data[len - 1] == '\r')
		cl->in.data[--len] = '\0';
	control_request(&c->h, &cl->who, cl->in.data, len, &cl->out);
	size_t used = (size_t)(nl - cl->in.data) + 1;
	memmove(cl->in.data, nl + 1, cl->in.len - used);
	cl->in.len -= used;
	return true;
}

static bool http_head_complete(const struct client *cl)
{
	return cl->in.len && (memmem(cl->in.data, cl->in.len, "\r\n\r\n", 4) ||
			      memmem(cl->in.data, cl->in.len, "\n\n", 2));
}

static void http_client_answer(struct control *c, struct client *cl)
{
	struct control_http_view v = {.h = &c->h, .history = &c->history};
	control_http_respond(&v, cl->in.data, cl->in.len, &cl->out);
	cl->closing = true;
}

/* Reads what is there, bounded by the client's request limit. Returns
 * false on EOF or error. */
static bool client_read(struct client *cl)
{
	size_t limit = cl->http ? CONTROL_HTTP_REQUEST_MAX : CONTROL_LINE_MAX + 1;
	while (cl->in.len < limit) {
		char chunk[4096];
		size_t want = limit - cl->in.len < sizeof chunk ? limit - cl->in.len : sizeof chunk;
		ssize_t n = recv(cl->fd, chunk, want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK;
		if (n == 0)
			return false;
		control_buf_append(&cl->in, chunk, (size_t)n);
		if (cl->in.oom)
			return false;
		/* Stop at the first complete request: the rest waits its turn. */
		if (memchr(chunk, '\n', (size_t)n))
			break;
	}
	return true;
}

/* What a full buffer without a complete request means. */
static void client_over_limit(struct client *cl)
{
	char why[96];
	if (cl->http) {
		control_http_error(&cl->out, 431, "request head over 8192 bytes");
	} else {
		snprintf(why, sizeof why, "request line over %u bytes", CONTROL_LINE_MAX);
		control_reply_error(&cl->out, why);
	}
	cl->closing = true;
}

/* Closing a socket with unread input makes the kernel send a reset, which
 * can destroy the reply before the client reads it (an oversized line or
 * request head is exactly that case). So: shut down our side, discard what
 * still comes for a moment, then close. */
static void client_drain_start(struct client *cl)
{
	if (shutdown(cl->fd, SHUT_WR) != 0)
		log_debug("control: shutdown: %s", strerror(errno));
	cl->draining = true;
	cl->deadline_ms = now_ms() + DRAIN_MS;
}

/* False once the client has stopped sending (or sent too much). */
static bool client_drain(struct client *cl)
{
	char chunk[4096];
	for (;;) {
		ssize_t n = recv(cl->fd, chunk, sizeof chunk, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK;
		if (n == 0)
			return false;
		cl->drained += (size_t)n;
		if (cl->drained > DRAIN_MAX)
			return false;
	}
}

/* Moves one client forward: answer buffered requests one at a time while
 * replies go out without blocking. Returns false to close it. */
static bool client_progress(struct control *c, struct client *cl, bool eof)
{
	for (;;) {
		if (!client_flush(cl))
			return false;
		if (client_has_reply(cl))
			return true;
		if (cl->closing) {
			client_drain_start(cl);
			return true;
		}
		if (cl->http && http_head_complete(cl)) {
			http_client_answer(c, cl);
			continue;
		}
		if (!cl->http && control_client_answer(c, cl))
			continue;
		size_t limit = cl->http ? CONTROL_HTTP_REQUEST_MAX : CONTROL_LINE_MAX + 1;
		if (cl->in.len >= limit) {
			client_over_limit(cl);
			continue;
		}
		if (!eof)
			return true;
		/* EOF: a last line without its newline still gets its answer. */
		if (!cl->http && cl->in.len) {
			control_buf_append(&cl->in, "\n", 1);
			continue;
		}
		return false;
	}
}

static void client_event(struct control *c, unsigned i, short revents)
{
	struct client *cl = &c->clients[i];
	bool eof = false;
	if (revents & (POLLERR | POLLNVAL) || (cl->draining && !client_drain(cl))) {
		client_close(c, i);
		return;
	}
	if (cl->draining)
		return;
	if (revents & (POLLIN | POLLHUP))
		eof = !client_read(cl);
	if (cl->in.oom || !client_progress(c, cl, eof))
		client_close(c, i);
}

/* ---- accepting ---- */

static void refuse(int fd, bool http)
{
	static const char line[] = "{\"ok\":false,\"error\":\"too many control clients; try "
				   "again\"}\n";
	static const char resp[] = "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
				   "Connection: close\r\n\r\n";
	/* Best effort: the socket buffer of a fresh connection has room. */
	if (send(fd, http ? resp : line, (http ? sizeof resp : sizeof line) - 1,
		 MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("control: refusing a client: %s", strerror(errno));
	close(fd);
}

static struct control_peer peer_of(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred)
		return (struct control_peer){.known = false};
	return (struct control_peer){.known = true, .uid = (unsigned)cred.uid, .pid = cred.pid};
}

static void accept_all(struct control *c, int lfd, bool http)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_warn("control: accept: %s; not accepting for %d ms",
					 strerror(errno), ACCEPT_PAUSE_MS);
				c->accept_paused_until_ms = now_ms() + ACCEPT_PAUSE_MS;
			}
			return; /* EAGAIN, or a client that left before we got to it */
		}
		if (c->n_clients == CLIENTS_MAX) {
			refuse(fd, http);
			continue;
		}
		struct client *cl = &c->clients[c->n_clients++];
		*cl = (struct client){.fd = fd, .http = http};
		if (http)
			cl->deadline_ms = now_ms() + HTTP_DEADLINE_MS;
		else
			cl->who = peer_of(fd);
	}
}

/* ---- the loop ---- */

/* Rewrites the history file; says once when that starts failing and once
 * when it works again, not every 10 s. */
static void history_keep(struct control *c)
{
	if (!c->history_path[0])
		return;
	char err[512];
	if (control_history_save(&c->history, c->history_path, err, sizeof err) != 0) {
		if (!c->history_failing)
			log_warn("status page: cannot keep the history: %s", err);
		c->history_failing = true;
	} else if (c->history_failing) {
		log_info("status page: history kept in %s again", c->history_path);
		c->history_failing = false;
	}
}

static void sample(struct control *c)
{
	struct control_stats st;
	memset(&st, 0, sizeof st);
	if (c->h.stats)
		c->h.stats(c->h.arg, &st);
	control_history_add(&c->history, &st, (uint64_t)time(NULL));
	c->next_sample_ms += CONTROL_SAMPLE_INTERVAL_S * 1000u;
	history_keep(c);
}

static short client_events(const struct client *cl)
{
	return client_has_reply(cl) ? POLLOUT : POLLIN;
}

static unsigned poll_fill(struct control *c, struct pollfd *p, uint64_t now)
{
	bool accepting = now >= c->accept_paused_until_ms;
	p[POLL_STOP] = (struct pollfd){.fd = c->stop_fd, .events = POLLIN};
	p[POLL_UNIX] = (struct pollfd){.fd = accepting ? c->unix_fd : -1, .events = POLLIN};
	p[POLL_HTTP] = (struct pollfd){.fd = accepting ? c->http_fd : -1, .events = POLLIN};
	for (unsigned i = 0; i < c->n_clients; i++)
		p[POLL_FIXED + i] = (struct pollfd){.fd = c->clients[i].fd,
						    .events = client_events(&c->clients[i])};
	return POLL_FIXED + c->n_clients;
}

static int poll_timeout(const struct control *c, uint64_t now)
{
	uint64_t next = c->next_sample_ms;
	for (unsigned i = 0; i < c->n_clients; i++)
		if (c->clients[i].deadline_ms && c->clients[i].deadline_ms < next)
			next = c->clients[i].deadline_ms;
	if (c->accept_paused_until_ms > now && c->accept_paused_until_ms < next)
		next = c->accept_paused_until_ms;
	return next > now ? (int)(next - now) : 0;
}

static void expire_clients(struct control *c, uint64_t now)
{
	for (unsigned i = c->n_clients; i-- > 0;)
		if (c->clients[i].deadline_ms && c->clients[i].deadline_ms <= now)
			client_close(c, i);
}

/* Clients are handled from the last: client_close moves the last client
 * into the closed one's slot, which this order has already visited. */
static void dispatch(struct control *c, const struct pollfd *p, unsigned n)
{
	for (unsigned i = n; i-- > POLL_FIXED;)
		if (p[i].revents)
			client_event(c, i - POLL_FIXED, p[i].revents);
	if (p[POLL_UNIX].revents & POLLIN)
		accept_all(c, c->unix_fd, false);
	if (p[POLL_HTTP].revents & POLLIN)
		accept_all(c, c->http_fd, true);
}

static void *control_thread(void *arg)
{
	struct control *c = arg;
	struct pollfd p[POLL_FIXED + CLIENTS_MAX];
	c->next_sample_ms = now_ms();
	sample(c);
	for (;;) {
		uint64_t now = now_ms();
		if (now >= c->next_sample_ms)
			sample(c);
		expire_clients(c, now);
		unsigned n = poll_fill(c, p, now);
		int rc = poll(p, n, poll_timeout(c, now));
		if (rc < 0 && errno != EINTR) {
			log_err("control: poll: %s; the control socket stops answering",
				strerror(errno));
			break;
		}
		if (rc <= 0)
			continue;
		if (p[POLL_STOP].revents)
			break;
		dispatch(c, p, n);
	}
	sample(c); /* what came since the last sample, for the next start */
	while (c->n_clients)
		client_close(c, c->n_clients - 1);
	return NULL;
}

/* ---- start and stop ---- */

static void control_free(struct control *c)
{
	if (c->http_fd >= 0)
		close(c->http_fd);
	if (c->unix_fd >= 0) {
		close(c->unix_fd);
		/* Only if the file is still ours: a later beacond may own it. */
		struct stat st;
		if (lstat(c->socket_path, &st) == 0 && st.st_ino == c->socket_st.st_ino &&
		    st.st_dev == c->socket_st.st_dev)
			unlink(c->socket_path);
	}
	if (c->stop_fd >= 0)
		close(c->stop_fd);
	free(c);
}

static int listeners_open(struct control *c, const char *socket_path, const char *metrics_listen,
			  char *err, size_t errlen)
{
	if (strlen(socket_path) >= sizeof c->socket_path) {
		snprintf(err, errlen, "control socket path too long: %s", socket_path);
		return -1;
	}
	snprintf(c->socket_path, sizeof c->socket_path, "%s", socket_path);
	c->unix_fd = control_socket_listen(socket_path, err, errlen);
	if (c->unix_fd < 0)
		return -1;
	if (lstat(socket_path, &c->socket_st) != 0) {
		snprintf(err, errlen, "control socket %s: %s", socket_path, strerror(errno));
		return -1;
	}
	if (metrics_listen && *metrics_listen) {
		c->http_fd = control_metrics_listen(metrics_listen, err, errlen);
		if (c->http_fd < 0)
			return -1;
	}
	return 0;
}

/* The control thread takes no signals: SIGHUP and SIGTERM belong to main. */
static int thread_start(struct control *c, char *err, size_t errlen)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&c->thread, NULL, control_thread, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "start the control thread: %s", strerror(rc));
		return -1;
	}
	return 0;
}

int control_start(const char *socket_path, const char *metrics_listen,
		  const struct control_handlers *h, struct control **out, char *err, size_t errlen)
{
	struct control *c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "control: out of memory");
		return -1;
	}
	c->h = *h;
	c->unix_fd = c->http_fd = -1;
	if (h->history_path && h->history_path[0]) {
		if (strlen(h->history_path) >= sizeof c->history_path) {
			snprintf(err, errlen, "control: history path too long: %s",
				 h->history_path);
			free(c);
			return -1;
		}
		snprintf(c->history_path, sizeof c->history_path, "%s", h->history_path);
		control_history_load(&c->history, c->history_path, (uint64_t)time(NULL));
	}
	c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->stop_fd < 0) {
		snprintf(err, errlen, "control: eventfd: %s", strerror(errno));
		control_free(c);
		return -1;
	}
	if (listeners_open(c, socket_path, metrics_listen, err, errlen) ||
	    thread_start(c, err, errlen)) {
		control_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

int control_metrics_port(const struct control *c)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	memset(&ss, 0, sizeof ss);
	if (c->http_fd < 0 || getsockname(c->http_fd, (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void control_stop(struct control *c)
{
	if (!c)
		return;
	uint64_t one = 1;
	if (write(c->stop_fd, &one, sizeof one) != sizeof one) {
		/* Freeing what a running thread uses would be worse than a leak. */
		log_err("control: cannot signal the control thread to stop: %s", strerror(errno));
		return;
	}
	pthread_join(c->thread, NULL);
	control_free(c);
}
