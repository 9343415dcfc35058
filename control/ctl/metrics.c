/*
 * The admin HTTP listener: loopback only, one request per connection,
 * GET or HEAD /metrics (Prometheus text format), /healthz, /readyz and
 * /status. It reads the
 * request head and nothing more; a request with a body gets 405 anyway.
 */
#include "control_internal.h"

#include "beacon/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const uint64_t control_commit_latency_le_us[COMMIT_LATENCY_BOUNDS] = COMMIT_LATENCY_BOUNDS_US;

/* ---- listening ---- */

/* "127.0.0.1:9100" or "[::1]:9100": the configuration's parser, so that
 * the two agree on every rule. */
static int parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
			size_t errlen)
{
	struct config_endpoint ep;
	if (config_parse_endpoint(text, &ep) < 0) {
		snprintf(err, errlen,
			 "metrics listen '%s': expected ADDR:PORT (a numeric IPv4 address, or an "
			 "IPv6 one in brackets), e.g. 127.0.0.1:9100",
			 text);
		return -1;
	}
	*ss = ep.sa;
	*sslen = ep.salen;
	return 0;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
		return (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
	}
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
	return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

int control_metrics_listen(const char *addr_port, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	if (parse_listen(addr_port, &ss, &sslen, err, errlen))
		return -1;
	/* The admin side has no authentication: anyone who reaches it may read
	 * the fleet's numbers, so it stays on this host. */
	if (!is_loopback(&ss)) {
		snprintf(err, errlen,
			 "metrics listen '%s' is not a loopback address: the admin "
			 "HTTP side is loopback only (use 127.0.0.1 or [::1])",
			 addr_port);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "metrics socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 16) != 0) {
		snprintf(err, errlen, "metrics listen %s: %s", addr_port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- responses ---- */

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Internal Server Error";
	}
}

static void respond(struct control_buf *out, int status, const char *type, const char *body,
		    size_t len)
{
	control_buf_printf(out,
			   "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			   "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
			   status, status_text(status), type, len,
			   status == 405 ? "Allow: GET, HEAD\r\n" : "");
	control_buf_append(out, body, len);
}

void control_http_error(struct control_buf *out, int status, const char *reason)
{
	char body[256];
	int n = snprintf(body, sizeof body, "%d %s: %s\n", status, status_text(status), reason);
	respond(out, status, "text/plain; charset=utf-8", body,
		n < 0			  ? 0
		: (size_t)n < sizeof body ? (size_t)n
					  : sizeof body - 1);
}

/* Renders a page into a scratch buffer, then frames it. */
static void respond_rendered(struct control_buf *out, const char *type, struct control_buf *page)
{
	if (page->oom)
		control_http_error(out, 500, "out of memory");
	else
		respond(out, 200, type, page->data ? page->data : "", page->len);
	control_buf_free(page);
}

static void stats_now(const struct control_handlers *h, struct control_stats *st)
{
	memset(st, 0, sizeof *st);
	if (h->stats)
		h->stats(h->arg, st);
}

/* /healthz and /readyz: 200 "ok", or 503 with the reasons, one a line. */
static void respond_probe(struct control_buf *out, int (*probe)(void *, char *, size_t), void *arg)
{
	char body[1024] = "";
	if (!probe || probe(arg, body, sizeof body - 1) == 0) {
		respond(out, 200, "text/plain; charset=utf-8", "ok\n", 3);
		return;
	}
	size_t n = strlen(body);
	body[n++] = '\n';
	respond(out, 503, "text/plain; charset=utf-8", body, n);
}

static void route(const struct control_http_view *v, const char *path, struct control_buf *out)
{
	struct control_stats st;
	struct control_buf page = {0};
	uint64_t now = (uint64_t)time(NULL);
	if (!strcmp(path, "/healthz")) {
		respond_probe(out, v->h->live, v->h->arg);
	} else if (!strcmp(path, "/readyz")) {
		respond_probe(out, v->h->ready, v->h->arg);
	} else if (!strcmp(path, "/metrics")) {
		stats_now(v->h, &st);
		control_metrics_render(&st, now, &page);
		respond_rendered(out, "text/plain; version=0.0.4; charset=utf-8", &page);
	} else if (!strcmp(path, "/status") || !strcmp(path, "/")) {
		stats_now(v->h, &st);
		/* On the heap: about 20 KB. */
		struct tls_refusal *refusals = calloc(TLS_REFUSALS_KEPT, sizeof *refusals);
		size_t n = refusals && v->h->refusals
				   ? v->h->refusals(v->h->arg, refusals, TLS_REFUSALS_KEPT)
				   : 0;
		struct drain_status drain = {.state = DRAIN_OFF};
		if (v->h->drain_status)
			v->h->drain_status(v->h->arg, &drain);
		if (!refusals)
			page.oom = true;
		else
			control_status_page_render(v->history, &st, refusals, n, &drain, now,
						   &page);
		free(refusals);
		respond_rendered(out, "text/html; charset=utf-8", &page);
	} else {
		control_http_error(out, 404, "try /metrics, /healthz, /readyz or /status");
	}
}

/* HEAD: the GET response's head alone, Content-Length included (load
 * balancers probe /healthz with HEAD). */
static void strip_body(struct control_buf *out, size_t start)
{
	if (out->oom || !out->data)
		return;
	for (size_t i = start; i + 4 <= out->len; i++) {
		if (!memcmp(out->data + i, "\r\n\r\n", 4)) {
			out->len = i + 4;
			return;
		}
	}
}

void control_http_respond(const struct control_http_view *v, const char *req, size_t len,
			  struct control_buf *out)
{
	/* Request line: METHOD SP TARGET SP VERSION */
	char method[16], target[256];
	const char *eol = memchr(req, '\n', len);
	size_t line_len = eol ? (size_t)(eol - req) : len;
	char line[512];
	if (line_len >= sizeof line) {
		control_http_error(out, 400, "request line too long");
		return;
	}
	memcpy(line, req, line_len);
	line[line_len] = '\0';
	if (sscanf(line, "%15s %255s", method, target) != 2) {
		control_http_error(out, 400, "malformed request line");
		return;
	}
	bool head = !strcmp(method, "HEAD");
	if (strcmp(method, "GET") != 0 && !head) {
		control_http_error(out, 405, "only GET and HEAD are served here");
		return;
	}
	/* The query string selects nothing: Prometheus may add one. */
	target[strcspn(target, "?#")] = '\0';
	size_t start = out->len;
	route(v, target, out);
	if (head)
		strip_body(out, start);
}

/* ---- /metrics ---- */

static void metric_head(struct control_buf *o, const char *name, const char *type, const char *help)
{
	control_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_u64(struct control_buf *o, const char *name, const char *type, const char *help,
		       uint64_t v)
{
	metric_head(o, name, type, help);
	control_buf_printf(o, "%s %" PRIu64 "\n", name, v);
}

/* The samples of one family follow its HELP and TYPE lines, once: rows of
 * the counter table that share a family are adjacent, so a family starts
 * where the metric name changes. */
struct metrics_out {
	struct control_buf *buf;
	const char *family;
};

static void family(struct metrics_out *m, const char *name, const char *type, const char *help)
{
	if (m->family && !strcmp(m->family, name))
		return;
	m->family = name;
	metric_head(m->buf, name, type, help);
}

static void sample(struct metrics_out *m, const char *name, const char *type, const char *labels,
		   const char *help, uint64_t v)
{
	family(m, name, type, help);
	control_buf_printf(m->buf, "%s%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels,
			   *labels ? "}" : "", v);
}

static void sample_by_result(struct metrics_out *m, const char *name, const char *help,
			     const uint64_t *v)
{
	family(m, name, "counter", help);
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		control_buf_printf(m->buf, "%s{result=\"%s\"} %" PRIu64 "\n", name,
				   auth_result_name((enum auth_result)r), v[r]);
}

/* The buckets are cumulative already (see beacon/counters.h). */
static void sample_histogram(struct metrics_out *m, const char *name, const char *help,
			     const uint64_t *bucket, uint64_t sum_us, uint64_t count)
{
	family(m, name, "histogram", help);
	for (unsigned i = 0; i < COMMIT_LATENCY_BOUNDS; i++)
		control_buf_printf(m->buf, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
				   (double)control_commit_latency_le_us[i] / 1e6, bucket[i]);
	control_buf_printf(m->buf, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name,
			   bucket[COMMIT_LATENCY_BOUNDS]);
	control_buf_printf(m->buf, "%s_sum %.6f\n", name, (double)sum_us / 1e6);
	control_buf_printf(m->buf, "%s_count %" PRIu64 "\n", name, count);
}

/* One family or series per row of the counter table, by its type. */
#define METRIC_COUNTER(f, name, labels, help) sample(m, name, "counter", labels, help, st->f);
#define METRIC_GAUGE(f, name, labels, help) sample(m, name, "gauge", labels, help, st->f);
#define METRIC_ALSO_COUNTER(f, name, labels, help) METRIC_COUNTER(f, name, labels, help)
#define METRIC_COUNTER_BY_RESULT(f, name, labels, help) sample_by_result(m, name, help, st->f);
#define METRIC_HISTOGRAM(f, name, labels, help)                                                    \
	sample_histogram(m, name, help, st->f##_bucket, st->f##_sum_us, st->f##_count);

static void render_counters(const struct control_stats *st, struct metrics_out *m)
{
#define METRIC_ROW(field, type, name, labels, help) METRIC_##type(field, name, labels, help)
	COUNTERS_WORKER(METRIC_ROW)
	COUNTERS_PROCESS(METRIC_ROW)
#undef METRIC_ROW
}

/* Figures derived from the table's values at the time of the scrape. */
/* As Prometheus's client libraries report it: the kernel's start time of
 * this process (/proc/self/stat field 22, in clock ticks since boot) plus
 * the boot time, so it is the process's own and not when beacond got to
 * note it. `fallback` when /proc cannot be read. */
static double process_start_time(uint64_t fallback)
{
	static double cached;
	if (cached > 0)
		return cached;
	char stat[1024];
	unsigned long long start_ticks = 0, boot = 0;
	FILE *f = fopen("/proc/self/stat", "r");
	size_t n = f ? fread(stat, 1, sizeof stat - 1, f) : 0;
	if (f)
		fclose(f);
	stat[n] = '\0';
	const char *p = strrchr(stat, ')'); /* the command name may hold spaces */
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	char *end = NULL;
	if (p) {
		errno = 0;
		start_ticks = strtoull(p + 1, &end, 10);
	}
	if (!p || end == p + 1 || errno)
		return (double)fallback;
	f = fopen("/proc/stat", "r");
	char line[256];
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "btime ", 6)) {
			boot = strtoull(line + 6, NULL, 10);
			break;
		}
	if (f)
		fclose(f);
	long hz = sysconf(_SC_CLK_TCK);
	if (!boot || hz <= 0)
		return (double)fallback;
	cached = (double)boot + (double)start_ticks / (double)hz;
	return cached;
}

static void render_derived(const struct control_stats *st, uint64_t now, struct control_buf *o)
{
	uint64_t completed = st->handshakes_tls12 + st->handshakes_tls13;
	metric_head(o, "beacond_resumption_ratio", "gauge",
		    "Resumed handshakes over completed handshakes since start.");
	control_buf_printf(o, "beacond_resumption_ratio %.6f\n",
			   completed ? (double)st->handshakes_resumed / (double)completed : 0.0);
	metric_head(o, "beacond_build_info", "gauge",
		    "Always 1; the labels say which beacond this is.");
	control_buf_printf(o, "beacond_build_info{version=\"%s\"} 1\n", BEACON_VERSION);
	metric_head(o, "process_start_time_seconds", "gauge",
		    "Start time of the process since the Unix epoch, in seconds.");
	control_buf_printf(o, "process_start_time_seconds %.2f\n",
			   process_start_time(now > st->uptime_s ? now - st->uptime_s : 0));
	uint64_t loaded = st->snapshot_loaded_unix_s;
	metric_u64(o, "beacond_snapshot_age_seconds", "gauge",
		   "Seconds since the trust snapshot in force was loaded.",
		   loaded && now > loaded ? now - loaded : 0);
}

/* A label value as the text format wants it: backslash, double quote and
 * newline escaped (names come from certificates, which may hold any). */
static void label_value(struct control_buf *o, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			control_buf_append(o, "\\\\", 2);
		else if (*v == '"')
			control_buf_append(o, "\\\"", 2);
		else if (*v == '\n')
			control_buf_append(o, "\\n", 2);
		else
			control_buf_append(o, v, 1);
	}
}

/* The trust snapshot's dates: a family per kind, a series per name. */
static void render_dates(const struct control_stats *st, struct control_buf *o)
{
	metric_head(o, "beacond_certificate_not_after_seconds", "gauge",
		    "notAfter of the server certificate and of each issuer CA in force, Unix "
		    "seconds.");
	for (unsigned i = 0; i < st->n_dates; i++) {
		const struct control_date *d = &st->dates[i];
		if (d->kind == CONTROL_DATE_CRL)
			continue;
		control_buf_printf(o,
				   "beacond_certificate_not_after_seconds{role=\"%s\",subject=\"",
				   d->kind == CONTROL_DATE_SERVER_CERT ? "server" : "issuer");
		label_value(o, d->name);
		control_buf_printf(o, "\"} %" PRId64 "\n", d->unix_s);
	}
	metric_head(o, "beacond_crl_next_update_seconds", "gauge",
		    "Latest nextUpdate of each issuer's CRLs in force, Unix seconds.");
	for (unsigned i = 0; i < st->n_dates; i++) {
		const struct control_date *d = &st->dates[i];
		if (d->kind != CONTROL_DATE_CRL)
			continue;
		control_buf_printf(o, "beacond_crl_next_update_seconds{issuer=\"");
		label_value(o, d->name);
		control_buf_printf(o, "\"} %" PRId64 "\n", d->unix_s);
	}
}

static void render_workers(const struct control_stats *st, struct control_buf *o)
{
	metric_head(o, "beacond_worker_busy_seconds_total", "counter",
		    "Time each worker's loop spent working rather than waiting for events.");
	for (unsigned i = 0; i < st->n_worker_busy; i++)
		control_buf_printf(o, "beacond_worker_busy_seconds_total{worker=\"%u\"} %.6f\n", i,
				   (double)st->worker_busy_ns[i] / 1e9);
	metric_head(o, "beacond_worker_work_seconds_total", "counter",
		    "Time of each worker's loop turns that did work (a polling worker's "
		    "empty turns left out).");
	for (unsigned i = 0; i < st->n_worker_busy; i++)
		control_buf_printf(o, "beacond_worker_work_seconds_total{worker=\"%u\"} %.6f\n", i,
				   (double)st->worker_work_ns[i] / 1e9);
}

/* The DPDK stack's counters, summed over workers: beacond_net_NAME_total,
 * from the one list in beacon/transport.h. */
static void render_net(const struct control_stats *st, struct control_buf *o)
{
	if (!st->net_stack)
		return;
#define NET_METRIC(name, help)                                                                     \
	metric_u64(o, "beacond_net_" #name "_total", "counter", "DPDK stack: " help, st->net.name);
	TRANSPORT_NET_COUNTERS(NET_METRIC)
#undef NET_METRIC
}

void control_metrics_render(const struct control_stats *st, uint64_t now_unix_s,
			    struct control_buf *out)
{
	struct metrics_out m = {.buf = out};
	render_counters(st, &m);
	render_derived(st, now_unix_s, out);
	render_dates(st, out);
	render_workers(st, out);
	render_net(st, out);
}
