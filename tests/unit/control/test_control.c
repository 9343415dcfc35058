/* Unit tests for the control thread: a real Unix socket client and a real
 * TCP client against control_start with fake handlers. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "beacon/control.h"

static char tmpdir[64];
static char sock_path[100];
static struct control *ctl;
static int http_port;

/* ---- fake beacond ---- */

static char last_device[256];
static enum device_state last_state;
static bool fake_net_stack = true; /* false: the kernel transport */

static void fake_stats(void *arg, struct control_stats *out)
{
	memset(out, 0, sizeof *out);
	out->uptime_s = 3600;
	out->workers = 4;
	out->dates[0] = (struct control_date){CONTROL_DATE_SERVER_CERT, "CN=server", 1800000000};
	/* A name with each character the text format escapes. */
	out->dates[1] =
		(struct control_date){CONTROL_DATE_ISSUER_CERT, "CN=a\"b\\c\nd", 1900000000};
	out->dates[2] = (struct control_date){CONTROL_DATE_CRL, "Agents \"CA\"", 1700000000};
	out->n_dates = 3;
	out->worker_busy_ns[0] = 1500000000;
	out->worker_busy_ns[1] = 250000;
	out->worker_work_ns[0] = 1250000000;
	out->worker_work_ns[1] = 125000;
	out->n_worker_busy = 2;
	out->connections_open = 12;
	out->connections_accepted = 5000;
	out->handshakes[AUTH_OK] = 1000;
	out->handshakes[AUTH_REVOKED] = 7;
	out->handshakes[AUTH_WRONG_USAGE] = 2;
	out->handshakes_tls12 = 100;
	out->handshakes_tls13 = 900;
	out->handshakes_resumed = 250;
	out->uploads = 4321;
	out->upload_bytes = 9007199254740993ull; /* 2^53 + 1: must stay exact */
	out->responses_4xx = 3;
	out->snapshot_generation = 17;
	out->snapshot_loaded_unix_s = 1700000000;
	out->issuers = 3;
	out->revoked_serials = 1000000;
	out->store_commits = 40;
	out->store_fdatasyncs = 80;
	out->store_uploads_committed = 39;
	out->store_uploads_expired = 6;
	out->crls = 2;
	out->blocked_entries = 5;
	out->download_bytes = 9007199254740995ull; /* 2^53 + 3 */
	out->refused_rate = 8;
	for (unsigned i = 0; i < COMMIT_LATENCY_BUCKETS; i++)
		out->commit_latency_bucket[i] = i < 3 ? 10 * i : 30;
	out->commit_latency_sum_us = 1500000;
	out->commit_latency_count = 30;
	out->net_stack = fake_net_stack;
	out->net.syn_cookies_sent = 41;
	out->net.tcp_accepted = 40;
	out->net.tx_nombuf = 9007199254740993ull;
}

static int fake_reload(void *arg, const char *what, char *msg, size_t len)
{
	if (!strcmp(what, "crl")) {
		snprintf(msg, len, "crl/ca1.crl: signature does not verify against ca1");
		return -1;
	}
	snprintf(msg, len, "reloaded %s", what);
	return 0;
}

static int fake_rotate(void *arg, char *msg, size_t len)
{
	snprintf(msg, len, "ticket key 3 in use");
	return 0;
}

static int fake_device(void *arg, const char *device, enum device_state state, char *msg,
		       size_t len)
{
	snprintf(last_device, sizeof last_device, "%s", device);
	last_state = state;
	snprintf(msg, len, "done");
	return 0;
}

static int fake_live(void *arg, char *msg, size_t len)
{
	return 0;
}

static int fake_ready(void *arg, char *msg, size_t len)
{
	snprintf(msg, len, "worker 1: loop stalled for 7 s\nstore: disk full");
	return -1;
}

static const struct control_handlers handlers = {
	.stats = fake_stats,
	.reload = fake_reload,
	.tickets_rotate = fake_rotate,
	.device_set_state = fake_device,
	.live = fake_live,
	.ready = fake_ready,
};

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/beacon-ctl-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(sock_path, sizeof sock_path, "%s/control.sock", tmpdir);
	char err[512];
	if (control_start(sock_path, "127.0.0.1:0", &handlers, &ctl, err, sizeof err)) {
		fprintf(stderr, "control_start: %s\n", err);
		return -1;
	}
	http_port = control_metrics_port(ctl);
	return http_port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
	control_stop(ctl);
	ctl = NULL;
	rmdir(tmpdir);
	return 0;
}

/* ---- clients ---- */

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
		assert_true(w > 0);
		s += w;
		n -= (size_t)w;
	}
}

/* Reads one reply line (without its newline); 0 bytes means EOF. */
static size_t recv_line(int fd, char *buf, size_t len)
{
	size_t n = 0;
	while (n + 1 < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = recv(fd, buf + n, 1, 0);
		assert_true(r >= 0);
		if (r == 0 || buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return n;
}

static cJSON *request_on(int fd, const char *line)
{
	char buf[16384];
	send_all(fd, line, strlen(line));
	assert_true(recv_line(fd, buf, sizeof buf) > 0);
	cJSON *reply = cJSON_Parse(buf);
	assert_non_null(reply);
	return reply;
}

static cJSON *request(const char *line)
{
	int fd = unix_connect(sock_path);
	cJSON *reply = request_on(fd, line);
	close(fd);
	return reply;
}

static bool reply_ok(const cJSON *r)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"));
}

static const char *reply_str(const cJSON *r, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, name);
	return cJSON_IsString(v) ? v->valuestring : "";
}

static double reply_num(const cJSON *r, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, name);
	assert_true(cJSON_IsNumber(v));
	return v->valuedouble;
}

/* One HTTP request on a fresh TCP connection; the whole response. */
static char *http(const char *method, const char *path)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	char req[10000];
	int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: localhost\r\n\r\n", method,
			 path);
	send_all(fd, req, (size_t)n);
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 5000), 1);
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		assert_true(r >= 0);
		if (r == 0)
			break;
		len += (size_t)r;
		assert_true(len < cap - 1);
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

/* ---- the socket ---- */

static void test_socket_mode_0600(void **state)
{
	struct stat st;
	assert_int_equal(lstat(sock_path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_status(void **state)
{
	cJSON *r = request("{\"cmd\":\"status\"}\n");
	assert_true(reply_ok(r));
	assert_true(reply_num(r, "uptime_s") == 3600);
	assert_true(reply_num(r, "workers") == 4);
	assert_true(reply_num(r, "connections_open") == 12);
	assert_true(reply_num(r, "snapshot_generation") == 17);
	assert_true(reply_num(r, "snapshot_loaded_unix_s") == 1700000000);
	assert_true(reply_num(r, "issuers") == 3);
	assert_true(reply_num(r, "revoked_serials") == 1000000);
	assert_true(reply_num(r, "uploads") == 4321);
	cJSON_Delete(r);
}

static void test_stats_every_field(void **state)
{
	int fd = unix_connect(sock_path);
	char line[16384];
	send_all(fd, "{\"cmd\":\"stats\"}\n", 16);
	assert_true(recv_line(fd, line, sizeof line) > 0);
	close(fd);
	/* Exact integers, not doubles in exponent form. */
	assert_non_null(strstr(line, "\"upload_bytes\":9007199254740993"));
	cJSON *r = cJSON_Parse(line);
	assert_non_null(r);
	assert_true(reply_ok(r));
	static const char *const fields[] = {"uptime_s",
					     "workers",
					     "connections_open",
					     "connections_accepted",
					     "connections_refused",
					     "handshakes_tls12",
					     "handshakes_tls13",
					     "handshakes_resumed",
					     "handshake_failures",
					     "requests",
					     "uploads",
					     "upload_bytes",
					     "downloads",
					     "download_bytes",
					     "responses_4xx",
					     "responses_5xx",
					     "timeouts",
					     "snapshot_generation",
					     "snapshot_loaded_unix_s",
					     "issuers",
					     "revoked_serials",
					     "blocked_entries",
					     "store_commits",
					     "store_fdatasyncs",
					     "store_uploads_committed",
					     "commit_latency_sum_us",
					     "commit_latency_count"};
	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
		assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r, fields[i])));
	const cJSON *hs = cJSON_GetObjectItemCaseSensitive(r, "handshakes");
	assert_int_equal(cJSON_GetArraySize(hs), AUTH_RESULT_COUNT);
	assert_true(reply_num(hs, "ok") == 1000);
	assert_true(reply_num(hs, "revoked") == 7);
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "commit_latency_bucket");
	assert_int_equal(cJSON_GetArraySize(b), 12);
	assert_true(cJSON_GetArrayItem(b, 1)->valuedouble == 10);
	cJSON_Delete(r);
}

static void test_reload_ok_and_failure(void **state)
{
	cJSON *r = request("{\"cmd\":\"reload\",\"what\":\"issuers\"}\n");
	assert_true(reply_ok(r));
	assert_string_equal(reply_str(r, "message"), "reloaded issuers");
	cJSON_Delete(r);
	r = request("{\"cmd\":\"reload\"}\n");
	assert_true(reply_ok(r));
	assert_string_equal(reply_str(r, "what"), "all");
	cJSON_Delete(r);
	r = request("{\"cmd\":\"reload\",\"what\":\"crl\"}\n");
	assert_false(reply_ok(r));
	assert_string_equal(reply_str(r, "error"),
			    "crl/ca1.crl: signature does not verify against ca1");
	cJSON_Delete(r);
	r = request("{\"cmd\":\"reload\",\"what\":\"everything\"}\n");
	assert_false(reply_ok(r));
	assert_non_null(strstr(reply_str(r, "error"), "unknown reload target"));
	cJSON_Delete(r);
}

static void test_tickets_and_devices(void **state)
{
	cJSON *r = request("{\"cmd\":\"tickets_rotate\"}\n");
	assert_true(reply_ok(r));
	assert_string_equal(reply_str(r, "message"), "ticket key 3 in use");
	cJSON_Delete(r);
	r = request("{\"cmd\":\"device_block\",\"device\":\"agent1.example\"}\n");
	assert_true(reply_ok(r));
	assert_string_equal(last_device, "agent1.example");
	assert_int_equal(last_state, DEVICE_BLOCKED);
	cJSON_Delete(r);
	r = request("{\"cmd\":\"device_unblock\",\"device\":\"agent1.example\"}\n");
	assert_true(reply_ok(r));
	assert_int_equal(last_state, DEVICE_APPROVED);
	cJSON_Delete(r);
	r = request("{\"cmd\":\"device_approve\"}\n");
	assert_false(reply_ok(r));
	assert_non_null(strstr(reply_str(r, "error"), "\"device\""));
	cJSON_Delete(r);
}

/* Errors leave the connection usable. */
static void test_bad_requests_keep_connection(void **state)
{
	int fd = unix_connect(sock_path);
	cJSON *r = request_on(fd, "{\"cmd\":\"launch\"}\n");
	assert_false(reply_ok(r));
	assert_non_null(strstr(reply_str(r, "error"), "unknown command"));
	cJSON_Delete(r);
	r = request_on(fd, "{\"cmd\": \n");
	assert_false(reply_ok(r));
	assert_non_null(strstr(reply_str(r, "error"), "bad JSON"));
	cJSON_Delete(r);
	r = request_on(fd, "[1,2]\n");
	assert_false(reply_ok(r));
	assert_non_null(strstr(reply_str(r, "error"), "not a JSON object"));
	cJSON_Delete(r);
	r = request_on(fd, "{\"cmd\":\"status\"} trailing\n");
	assert_false(reply_ok(r));
	cJSON_Delete(r);
	r = request_on(fd, "{\"cmd\":\"status\"}\r\n");
	assert_true(reply_ok(r));
	cJSON_Delete(r);
	close(fd);
}

/* Two requests in one write get two replies, in order. */
static void test_pipelined_requests(void **state)
{
	int fd = unix_connect(sock_path);
	const char two[] = "{\"cmd\":\"status\"}\n{\"cmd\":\"nope\"}\n";
	send_all(fd, two, sizeof two - 1);
	char line[16384];
	assert_true(recv_line(fd, line, sizeof line) > 0);
	assert_non_null(strstr(line, "\"ok\":true"));
	assert_true(recv_line(fd, line, sizeof line) > 0);
	assert_non_null(strstr(line, "unknown command"));
	close(fd);
}

static void test_oversized_line_closes(void **state)
{
	int fd = unix_connect(sock_path);
	size_t n = 70 * 1024;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, ' ', n);
	/* The server may close before reading it all: a short send is fine. */
	ssize_t sent = send(fd, big, n, MSG_NOSIGNAL);
	assert_true(sent > 0);
	free(big);
	char line[512];
	assert_true(recv_line(fd, line, sizeof line) > 0);
	assert_non_null(strstr(line, "\"ok\":false"));
	assert_non_null(strstr(line, "over 65536 bytes"));
	/* Closed: EOF, or a reset because the rest of the line went unread. */
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	ssize_t r = recv(fd, line, sizeof line, 0);
	assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
	close(fd);
}

/* Several clients at once: a silent one does not hold up the others. */
static void test_several_clients(void **state)
{
	int idle = unix_connect(sock_path);
	send_all(idle, "{\"cmd\":", 7); /* half a request, never finished */
	int fds[5];
	for (int i = 0; i < 5; i++)
		fds[i] = unix_connect(sock_path);
	for (int i = 4; i >= 0; i--) {
		cJSON *r = request_on(fds[i], "{\"cmd\":\"status\"}\n");
		assert_true(reply_ok(r));
		cJSON_Delete(r);
	}
	for (int i = 0; i < 5; i++)
		close(fds[i]);
	close(idle);
}

/* A last line without its newline is answered at EOF. */
static void test_line_at_eof(void **state)
{
	int fd = unix_connect(sock_path);
	send_all(fd, "{\"cmd\":\"status\"}", 16);
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	char line[16384];
	assert_true(recv_line(fd, line, sizeof line) > 0);
	assert_non_null(strstr(line, "\"ok\":true"));
	close(fd);
}

static void test_live_socket_refused(void **state)
{
	struct control *other;
	char err[512];
	assert_int_equal(control_start(sock_path, "", &handlers, &other, err, sizeof err), -1);
	char want[300];
	snprintf(want, sizeof want, "another beacond is using %s", sock_path);
	assert_string_equal(err, want);
	/* The running one still answers. */
	cJSON *r = request("{\"cmd\":\"status\"}\n");
	assert_true(reply_ok(r));
	cJSON_Delete(r);
}

/* A socket file whose server died is replaced. */
static void test_stale_socket_replaced(void **state)
{
	char path[100];
	snprintf(path, sizeof path, "%s/stale.sock", tmpdir);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	close(fd); /* the file stays, nobody listens */
	struct control *other;
	char err[512];
	assert_int_equal(control_start(path, NULL, &handlers, &other, err, sizeof err), 0);
	int c = unix_connect(path);
	cJSON *r = request_on(c, "{\"cmd\":\"status\"}\n");
	assert_true(reply_ok(r));
	cJSON_Delete(r);
	close(c);
	assert_int_equal(control_metrics_port(other), -1);
	control_stop(other);
	assert_int_equal(access(path, F_OK), -1); /* removed on stop */
}

static void test_not_a_socket_refused(void **state)
{
	char path[100];
	snprintf(path, sizeof path, "%s/plain-file", tmpdir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fclose(f), 0);
	struct control *other;
	char err[512];
	assert_int_equal(control_start(path, NULL, &handlers, &other, err, sizeof err), -1);
	assert_non_null(strstr(err, "is not a socket"));
	assert_int_equal(unlink(path), 0);
}

/* ---- HTTP ---- */

static void test_metrics(void **state)
{
	char *resp = http("GET", "/metrics");
	assert_true(!strncmp(resp, "HTTP/1.0 200 OK\r\n", 17));
	assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
	static const char *const lines[] = {
		"# HELP beacond_handshakes_total ",
		"# TYPE beacond_handshakes_total counter\n",
		"\nbeacond_handshakes_total{result=\"ok\"} 1000\n",
		"\nbeacond_handshakes_total{result=\"no_certificate\"} 0\n",
		"\nbeacond_handshakes_total{result=\"revoked\"} 7\n",
		"\nbeacond_handshakes_total{result=\"wrong_usage\"} 2\n",
		"\nbeacond_handshakes_total{result=\"other\"} 0\n",
		"\nbeacond_handshakes_by_version_total{version=\"1.2\"} 100\n",
		"\nbeacond_handshakes_by_version_total{version=\"1.3\"} 900\n",
		"\nbeacond_handshakes_resumed_total 250\n",
		"# TYPE beacond_resumption_ratio gauge\n",
		"\nbeacond_resumption_ratio 0.250000\n",
		"\nbeacond_handshake_failures_total 0\n",
		"# TYPE beacond_connections_open gauge\n",
		"\nbeacond_connections_open 12\n",
		"\nbeacond_connections_accepted_total 5000\n",
		"\nbeacond_connections_refused_total 0\n",
		"\nbeacond_requests_total 0\n",
		"\nbeacond_uploads_total 4321\n",
		"\nbeacond_upload_bytes_total 9007199254740993\n",
		"\nbeacond_downloads_total 0\n",
		"\nbeacond_download_bytes_total 9007199254740995\n",
		"\nbeacond_limit_refusals_total{limit=\"handshake_rate_per_source\"} 8\n",
		"\nbeacond_workers 4\n",
		"\nbeacond_crls 2\n",
		"\nbeacond_blocked_entries 5\n",
		"\nbeacond_snapshot_loaded_timestamp_seconds 1700000000\n",
		"\nbeacond_store_uploads_committed_total 39\n",
		"\nbeacond_store_uploads_expired_total 6\n",
		"\nbeacond_responses_total{class=\"4xx\"} 3\n",
		"\nbeacond_responses_total{class=\"5xx\"} 0\n",
		"\nbeacond_timeouts_total 0\n",
		"# TYPE beacond_store_commit_latency_seconds histogram\n",
		"\nbeacond_store_commit_latency_seconds_bucket{le=\"0.0001\"} 0\n",
		"\nbeacond_store_commit_latency_seconds_bucket{le=\"0.00025\"} 10\n",
		"\nbeacond_store_commit_latency_seconds_bucket{le=\"0.25\"} 30\n",
		"\nbeacond_store_commit_latency_seconds_bucket{le=\"+Inf\"} 30\n",
		"\nbeacond_store_commit_latency_seconds_sum 1.500000\n",
		"\nbeacond_store_commit_latency_seconds_count 30\n",
		"\nbeacond_store_fdatasyncs_total 80\n",
		"\nbeacond_store_commits_total 40\n",
		"\nbeacond_snapshot_generation 17\n",
		"\nbeacond_snapshot_age_seconds ",
		"\nbeacond_revoked_serials 1000000\n",
		"\nbeacond_issuers 3\n",
		"\nbeacond_uptime_seconds 3600\n",
		("# HELP beacond_net_syn_cookies_sent_total DPDK stack: SYN-ACKs sent, each "
		 "carrying a "
		 "SYN cookie.\n"),
		"# TYPE beacond_net_syn_cookies_sent_total counter\n",
		"\nbeacond_net_syn_cookies_sent_total 41\n",
		"\nbeacond_net_tcp_accepted_total 40\n",
		"\nbeacond_net_tx_nombuf_total 9007199254740993\n",
	};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
		if (!strstr(resp, lines[i]))
			fail_msg("/metrics lacks: %s", lines[i]);
	}
	/* Every stack counter, each with its HELP. */
#define NET_LINES(name, help)                                                                      \
	if (!strstr(resp, "# HELP beacond_net_" #name "_total DPDK stack: " help "\n") ||          \
	    !strstr(resp, "\nbeacond_net_" #name "_total "))                                       \
		fail_msg("/metrics lacks beacond_net_%s_total", #name);
	TRANSPORT_NET_COUNTERS(NET_LINES)
#undef NET_LINES
	free(resp);
}

/* The kernel transport has no stack of ours: /metrics shows no
 * beacond_net_ family rather than a row of false zeros. */
static void test_metrics_kernel_no_net(void **state)
{
	fake_net_stack = false;
	char *resp = http("GET", "/metrics");
	fake_net_stack = true;
	assert_true(!strncmp(resp, "HTTP/1.0 200 OK\r\n", 17));
	assert_non_null(strstr(resp, "\nbeacond_uploads_total 4321\n"));
	assert_null(strstr(resp, "beacond_net_"));
	free(resp);
}

/* The Prometheus type of each row type of beacon/counters.h. */
#define PROM_COUNTER "counter"
#define PROM_GAUGE "gauge"
#define PROM_ALSO_COUNTER "counter"
#define PROM_COUNTER_BY_RESULT "counter"
#define PROM_HISTOGRAM "histogram"

static size_t count_of(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* Every row of the counter table has its family's HELP and TYPE lines,
 * once, and its own series. */
static void test_metrics_every_row(void **state)
{
	char *resp = http("GET", "/metrics");
	char want[512];
#define CHECK_ROW(field, type, metric, labels, help)                                               \
	snprintf(want, sizeof want, "\n# HELP %s %s\n# TYPE %s %s\n", metric, help, metric,        \
		 PROM_##type);                                                                     \
	if (count_of(resp, want) != 1)                                                             \
		fail_msg("/metrics: %s (%s) lacks its HELP and TYPE, or has them twice", metric,   \
			 #field);                                                                  \
	snprintf(want, sizeof want, "\n%s%s%s%s", metric, *labels ? "{" : "", labels,              \
		 *labels ? "} " : "");                                                             \
	if (!strstr(resp, want))                                                                   \
		fail_msg("/metrics lacks the series of %s: %s", #field, want + 1);
	COUNTERS_PROCESS(CHECK_ROW)
	COUNTERS_WORKER(CHECK_ROW)
#undef CHECK_ROW
	free(resp);
}

/* The text format wants a family's samples together, after its TYPE: each
 * sample's name is its family's, or the family's with a histogram's
 * suffix. */
/* Certificate and CRL dates and the workers' busy time: one labelled
 * series each, label values escaped (backslash, quote, newline). */
static void test_metrics_labelled_series(void **state)
{
	char *resp = http("GET", "/metrics");
	static const char *const lines[] = {
		"# TYPE beacond_certificate_not_after_seconds gauge\n",
		"\nbeacond_certificate_not_after_seconds{role=\"server\",subject=\"CN=server\"} "
		"1800000000\n",
		"\nbeacond_certificate_not_after_seconds{role=\"issuer\",subject=\"CN="
		"a\\\"b\\\\c\\nd\"} "
		"1900000000\n",
		"# TYPE beacond_crl_next_update_seconds gauge\n",
		"\nbeacond_crl_next_update_seconds{issuer=\"Agents \\\"CA\\\"\"} 1700000000\n",
		"# TYPE beacond_worker_busy_seconds_total counter\n",
		"\nbeacond_worker_busy_seconds_total{worker=\"0\"} 1.500000\n",
		"\nbeacond_worker_busy_seconds_total{worker=\"1\"} 0.000250\n",
		"# TYPE beacond_worker_work_seconds_total counter\n",
		"\nbeacond_worker_work_seconds_total{worker=\"0\"} 1.250000\n",
		"\nbeacond_worker_work_seconds_total{worker=\"1\"} 0.000125\n",
	};
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
		if (!strstr(resp, lines[i]))
			fail_msg("missing %s in:\n%s", lines[i], resp);
	free(resp);
}

static void test_metrics_families_whole(void **state)
{
	char *resp = http("GET", "/metrics");
	char *body = strstr(resp, "\r\n\r\n");
	assert_non_null(body);
	char family[128] = "";
	unsigned samples = 0;
	for (char *line = strtok(body + 4, "\n"); line; line = strtok(NULL, "\n")) {
		if (!strncmp(line, "# HELP ", 7))
			continue;
		if (!strncmp(line, "# TYPE ", 7)) {
			size_t n = strcspn(line + 7, " ");
			assert_true(n < sizeof family);
			memcpy(family, line + 7, n);
			family[n] = '\0';
			continue;
		}
		size_t n = strcspn(line, "{ ");
		size_t f = strlen(family);
		bool ours = f && n >= f && !strncmp(line, family, f) &&
			    (n == f || (!strncmp(line + f, "_bucket", n - f) && n - f == 7) ||
			     (!strncmp(line + f, "_sum", n - f) && n - f == 4) ||
			     (!strncmp(line + f, "_count", n - f) && n - f == 6));
		if (!ours)
			fail_msg("sample outside its family %s: %s", family, line);
		samples++;
	}
	assert_true(samples > 50);
	free(resp);
}

/* Every row's key in `stats`, exact; the stack's counters under "net" with
 * the DPDK transport, and no "net" without it. */
static void test_stats_every_row(void **state)
{
	cJSON *r = request("{\"cmd\":\"stats\"}\n");
	assert_true(reply_ok(r));
	const cJSON *v;
#define KEY_COUNTER(f)                                                                             \
	v = cJSON_GetObjectItemCaseSensitive(r, #f);                                               \
	if (!cJSON_IsNumber(v))                                                                    \
		fail_msg("stats lacks %s", #f);
#define KEY_GAUGE(f) KEY_COUNTER(f)
#define KEY_ALSO_COUNTER(f) KEY_COUNTER(f)
#define KEY_COUNTER_BY_RESULT(f)                                                                   \
	v = cJSON_GetObjectItemCaseSensitive(r, #f);                                               \
	if (cJSON_GetArraySize(v) != AUTH_RESULT_COUNT)                                            \
		fail_msg("stats lacks %s by result", #f);
#define KEY_HISTOGRAM(f)                                                                           \
	v = cJSON_GetObjectItemCaseSensitive(r, #f "_bucket");                                     \
	assert_int_equal(cJSON_GetArraySize(v), COMMIT_LATENCY_BUCKETS);                           \
	v = cJSON_GetObjectItemCaseSensitive(r, #f "_le_us");                                      \
	assert_int_equal(cJSON_GetArraySize(v), COMMIT_LATENCY_BOUNDS);                            \
	KEY_COUNTER(f##_sum_us)                                                                    \
	KEY_COUNTER(f##_count)
#define KEY_ROW(field, type, metric, labels, help) KEY_##type(field)
	COUNTERS_PROCESS(KEY_ROW)
	COUNTERS_WORKER(KEY_ROW)
#undef KEY_ROW
	const cJSON *net = cJSON_GetObjectItemCaseSensitive(r, "net");
#define KEY_NET(name, help)                                                                        \
	if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(net, #name)))                         \
		fail_msg("stats lacks net.%s", #name);
	TRANSPORT_NET_COUNTERS(KEY_NET)
#undef KEY_NET
	assert_true(reply_num(net, "syn_cookies_sent") == 41);
	assert_true(reply_num(r, "crls") == 2);
	assert_true(reply_num(r, "store_uploads_expired") == 6);
	cJSON_Delete(r);

	int fd = unix_connect(sock_path);
	char line[16384];
	send_all(fd, "{\"cmd\":\"stats\"}\n", 16);
	assert_true(recv_line(fd, line, sizeof line) > 0);
	close(fd);
	assert_non_null(strstr(line, "\"download_bytes\":9007199254740995,"));
	assert_non_null(strstr(line, "\"tx_nombuf\":9007199254740993}"));

	fake_net_stack = false;
	r = request("{\"cmd\":\"stats\"}\n");
	fake_net_stack = true;
	assert_true(reply_ok(r));
	assert_null(cJSON_GetObjectItemCaseSensitive(r, "net"));
	cJSON_Delete(r);
}

static void test_healthz(void **state)
{
	char *resp = http("GET", "/healthz");
	assert_true(!strncmp(resp, "HTTP/1.0 200 OK\r\n", 17));
	const char *body = strstr(resp, "\r\n\r\n");
	assert_non_null(body);
	assert_string_equal(body + 4, "ok\n");
	free(resp);
}

static void test_readyz_names_the_reasons(void **state)
{
	char *resp = http("GET", "/readyz");
	assert_true(!strncmp(resp, "HTTP/1.0 503 Service Unavailable\r\n", 34));
	assert_non_null(strstr(resp, "Cache-Control: no-store\r\n"));
	const char *body = strstr(resp, "\r\n\r\n");
	assert_non_null(body);
	assert_string_equal(body + 4, "worker 1: loop stalled for 7 s\nstore: disk full\n");
	free(resp);
}

static void test_head_is_the_head_alone(void **state)
{
	char *resp = http("HEAD", "/healthz");
	assert_true(!strncmp(resp, "HTTP/1.0 200 OK\r\n", 17));
	assert_non_null(strstr(resp, "Content-Length: 3\r\n"));
	const char *end = strstr(resp, "\r\n\r\n");
	assert_non_null(end);
	assert_string_equal(end + 4, "");
	free(resp);
	resp = http("HEAD", "/readyz");
	assert_true(!strncmp(resp, "HTTP/1.0 503 ", 13));
	end = strstr(resp, "\r\n\r\n");
	assert_non_null(end);
	assert_string_equal(end + 4, "");
	free(resp);
}

static void test_status_page(void **state)
{
	char *resp = http("GET", "/status");
	assert_true(!strncmp(resp, "HTTP/1.0 200 OK\r\n", 17));
	assert_non_null(strstr(resp, "Content-Type: text/html"));
	assert_non_null(strstr(resp, "<svg"));
	assert_non_null(strstr(resp, "</svg>"));
	static const char *const labels[] = {
		"succeeded", "no certificate", "unknown issuer", "expired / not yet valid",
		"revoked",   "blocked",	       "unapproved",	 "wrong key usage"};
	for (size_t i = 0; i < sizeof labels / sizeof *labels; i++)
		assert_non_null(strstr(resp, labels[i]));
	/* No external resources: the admin host may be air-gapped. */
	assert_null(strstr(resp, "<script"));
	assert_null(strstr(resp, "<link"));
	assert_null(strstr(resp, "src="));
	free(resp);
}

static void test_http_errors(void **state)
{
	char *resp = http("GET", "/nothing-here");
	assert_true(!strncmp(resp, "HTTP/1.0 404 ", 13));
	free(resp);
	resp = http("POST", "/metrics");
	assert_true(!strncmp(resp, "HTTP/1.0 405 ", 13));
	assert_non_null(strstr(resp, "Allow: GET, HEAD\r\n"));
	free(resp);
}

static void test_http_oversized_head(void **state)
{
	char path[4096];
	memset(path, 'a', sizeof path - 1);
	path[0] = '/';
	path[sizeof path - 1] = '\0';
	/* Two 4 KiB header lines and no end of head: over the 8 KiB bound. */
	char target[9000];
	snprintf(target, sizeof target, "%s HTTP/1.0\r\nX-A: %s\r\nX-B:", path, path);
	char *resp = http("GET", target);
	assert_true(!strncmp(resp, "HTTP/1.0 431 ", 13));
	free(resp);
}

static void test_ipv6_loopback(void **state)
{
	char path[100];
	snprintf(path, sizeof path, "%s/v6.sock", tmpdir);
	struct control *other;
	char err[512] = "";
	int rc = control_start(path, "[::1]:0", &handlers, &other, err, sizeof err);
	if (rc && strstr(err, "Cannot assign requested address"))
		skip(); /* no IPv6 on this host */
	assert_int_equal(rc, 0);
	assert_true(control_metrics_port(other) > 0);
	control_stop(other);
}

static void test_non_loopback_refused(void **state)
{
	static const char *const addrs[] = {"0.0.0.0:9100", "192.0.2.1:9100", "[::]:9100"};
	char path[100];
	snprintf(path, sizeof path, "%s/other.sock", tmpdir);
	for (size_t i = 0; i < sizeof addrs / sizeof *addrs; i++) {
		struct control *other;
		char err[512] = "";
		assert_int_equal(control_start(path, addrs[i], &handlers, &other, err, sizeof err),
				 -1);
		if (!strstr(err, "loopback only"))
			fail_msg("%s: %s", addrs[i], err);
		assert_int_equal(access(path, F_OK), -1); /* nothing left behind */
	}
	struct control *other;
	char err[512] = "";
	assert_int_equal(control_start(path, "127.0.0.1", &handlers, &other, err, sizeof err), -1);
	assert_non_null(strstr(err, "ADDR:PORT"));
}

/* The metrics listener parses ADDR:PORT with the configuration's parser
 * (config_parse_endpoint): what beacond.conf refuses, it refuses too. It
 * once had its own, which took host names and a signed or blank port. */
static void test_metrics_addr_is_the_configs(void **state)
{
	static const char *const addrs[] = {"localhost:0", "127.0.0.1:+0", "127.0.0.1: 0", "::1:0"};
	char path[100];
	snprintf(path, sizeof path, "%s/addr.sock", tmpdir);
	for (size_t i = 0; i < sizeof addrs / sizeof *addrs; i++) {
		struct control *other = NULL;
		char err[512] = "";
		int rc = control_start(path, addrs[i], &handlers, &other, err, sizeof err);
		if (rc == 0)
			control_stop(other);
		if (rc != -1 || !strstr(err, "expected ADDR:PORT"))
			fail_msg("%s: rc %d, '%s'", addrs[i], rc, err);
		assert_int_equal(access(path, F_OK), -1); /* nothing left behind */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_socket_mode_0600),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_stats_every_field),
		cmocka_unit_test(test_reload_ok_and_failure),
		cmocka_unit_test(test_tickets_and_devices),
		cmocka_unit_test(test_bad_requests_keep_connection),
		cmocka_unit_test(test_pipelined_requests),
		cmocka_unit_test(test_oversized_line_closes),
		cmocka_unit_test(test_several_clients),
		cmocka_unit_test(test_line_at_eof),
		cmocka_unit_test(test_live_socket_refused),
		cmocka_unit_test(test_stale_socket_replaced),
		cmocka_unit_test(test_not_a_socket_refused),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_metrics_kernel_no_net),
		cmocka_unit_test(test_metrics_every_row),
		cmocka_unit_test(test_metrics_families_whole),
		cmocka_unit_test(test_metrics_labelled_series),
		cmocka_unit_test(test_stats_every_row),
		cmocka_unit_test(test_healthz),
		cmocka_unit_test(test_readyz_names_the_reasons),
		cmocka_unit_test(test_head_is_the_head_alone),
		cmocka_unit_test(test_status_page),
		cmocka_unit_test(test_http_errors),
		cmocka_unit_test(test_http_oversized_head),
		cmocka_unit_test(test_ipv6_loopback),
		cmocka_unit_test(test_non_loopback_refused),
		cmocka_unit_test(test_metrics_addr_is_the_configs),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
