/*
 * beaconctl's control side: the control socket client and the commands
 * that talk to a running beacond through it, one JSON object per line each
 * way (include/beacon/control.h):
 *
 *   beaconctl status | stats
 *   beaconctl reload [all|issuers|crl|tickets|blocklist]
 *   beaconctl tickets rotate
 *   beaconctl devices approve|block|unblock DEVICE
 */
#include "beaconctl.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A reload of a million-serial CRL takes seconds; a minute means stuck. */
#define REPLY_TIMEOUT_S 60
#define REPLY_MAX (1u << 20)

static int socket_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path) {
		fprintf(stderr, "beaconctl: cannot connect to %s: path longer than %zu bytes\n",
			path, sizeof sa.sun_path - 1);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
		return fd;
	fprintf(stderr, "beaconctl: cannot connect to %s: %s; is beacond running?\n", path,
		strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads the one reply line into a malloc'd string without its newline. */
static char *read_line(int fd)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		if (len + 1 == cap) {
			char *p = cap < REPLY_MAX ? realloc(buf, cap * 2) : NULL;
			if (!p) {
				errno = EMSGSIZE;
				break;
			}
			buf = p;
			cap *= 2;
		}
		ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			errno = n == 0 ? ECONNRESET : errno;
			break;
		}
		char *nl = memchr(buf + len, '\n', (size_t)n);
		len += (size_t)n;
		if (nl) {
			*nl = '\0';
			return buf;
		}
	}
	free(buf);
	return NULL;
}

/* Sends req, returns the reply line (malloc'd) or NULL with *rc set. */
static char *socket_call(const struct ctl *ctl, const cJSON *req, int *rc)
{
	char *text = cJSON_PrintUnformatted(req);
	if (!text) {
		fprintf(stderr, "beaconctl: out of memory\n");
		*rc = EXIT_FAILED;
		return NULL;
	}
	int fd = socket_connect(ctl->socket_path);
	if (fd < 0) {
		cJSON_free(text);
		*rc = EXIT_NOCONNECT;
		return NULL;
	}
	struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S};
	char *line = NULL;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
	    write_all(fd, text, strlen(text)) == 0 && write_all(fd, "\n", 1) == 0)
		line = read_line(fd);
	if (!line)
		fprintf(stderr, "beaconctl: no answer from beacond on %s: %s\n", ctl->socket_path,
			errno == EAGAIN ? "timed out" : strerror(errno));
	close(fd);
	cJSON_free(text);
	*rc = EXIT_FAILED;
	return line;
}

typedef void (*reply_printer)(const cJSON *reply, const cJSON *req);

/* Sends req (and frees it); on ok:true prints the reply for people, or the
 * server's line itself with --json. */
static int socket_run(struct ctl *ctl, cJSON *req, reply_printer print)
{
	if (!req) {
		fprintf(stderr, "beaconctl: out of memory\n");
		return EXIT_FAILED;
	}
	int rc;
	char *line = socket_call(ctl, req, &rc);
	cJSON *reply = line ? cJSON_Parse(line) : NULL;
	if (line && !reply)
		fprintf(stderr, "beaconctl: beacond answered something that is not JSON\n");
	if (!reply) {
		free(line);
		cJSON_Delete(req);
		return rc;
	}
	bool ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"));
	if (ctl->json)
		printf("%s\n", line);
	const cJSON *warning = cJSON_GetObjectItemCaseSensitive(reply, "warning");
	if (!ok) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
		fprintf(stderr, "beaconctl: %s\n", cJSON_IsString(e) ? e->valuestring : "failed");
	} else if (!ctl->json) {
		print(reply, req);
	}
	if (ok && cJSON_IsString(warning)) {
		char w[512];
		text_safe(w, sizeof w, warning->valuestring);
		fprintf(stderr, "beaconctl: warning: %s\n", w);
	}
	cJSON_Delete(reply);
	cJSON_Delete(req);
	free(line);
	return ok ? 0 : EXIT_FAILED;
}

static cJSON *request_new(const char *cmd)
{
	cJSON *req = cJSON_CreateObject();
	if (req && !cJSON_AddStringToObject(req, "cmd", cmd)) {
		cJSON_Delete(req);
		return NULL;
	}
	return req;
}

static double reply_num(const cJSON *reply, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(reply, name);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *reply_str(const cJSON *reply, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(reply, name);
	return cJSON_IsString(v) ? v->valuestring : "";
}

static void duration_text(char *buf, size_t len, uint64_t s)
{
	if (s >= 86400)
		snprintf(buf, len, "%" PRIu64 "d %02" PRIu64 "h %02" PRIu64 "m", s / 86400,
			 s / 3600 % 24, s / 60 % 60);
	else
		snprintf(buf, len, "%02" PRIu64 "h %02" PRIu64 "m %02" PRIu64 "s", s / 3600,
			 s / 60 % 60, s % 60);
}

/* ---- status, stats ---- */

/* "drain: connected (nats), lag 3 uploads, 12 bytes, oldest 2 s"; a
 * disconnected drain says why. */
static void drain_print(const cJSON *d)
{
	if (!cJSON_IsObject(d))
		return;
	char why[256];
	const char *state = reply_str(d, "state");
	if (!strcmp(state, "off")) {
		printf("drain:               off\n");
		return;
	}
	printf("drain:               %s (%s), lag %.0f uploads, %.0f bytes, oldest %.0f s\n", state,
	       reply_str(d, "sink"), reply_num(d, "lag_uploads"), reply_num(d, "lag_bytes"),
	       reply_num(d, "lag_oldest_s"));
	text_safe(why, sizeof why, reply_str(d, "last_error"));
	if (why[0])
		printf("drain last error:    %s\n", why);
}

/* "upstream: connected, lag 0 uploads, ...": only when [upstream] is on. */
static void upstream_print(const cJSON *d)
{
	if (!cJSON_IsObject(d) || !strcmp(reply_str(d, "state"), "off"))
		return;
	char why[256];
	printf("upstream:            %s, lag %.0f uploads, %.0f bytes, oldest %.0f s, "
	       "%.0f forwarded, %.0f failed\n",
	       reply_str(d, "state"), reply_num(d, "lag_uploads"), reply_num(d, "lag_bytes"),
	       reply_num(d, "lag_oldest_s"), reply_num(d, "uploads_acked"),
	       reply_num(d, "uploads_failed"));
	text_safe(why, sizeof why, reply_str(d, "last_error"));
	if (why[0])
		printf("upstream last error: %s\n", why);
}

/* "upstream sync: ok, 12 files, last good round 3 s ago, ...": only when
 * [upstream] sync is on. */
static void mirror_print(const cJSON *d)
{
	if (!cJSON_IsObject(d) || !strcmp(reply_str(d, "state"), "off"))
		return;
	char why[256], last[64] = "none yet";
	uint64_t at = (uint64_t)reply_num(d, "last_success_unix_s"), now = (uint64_t)time(NULL);
	if (at)
		snprintf(last, sizeof last, "%" PRIu64 " s ago", now > at ? now - at : 0);
	printf("upstream sync:       %s, %.0f files, last good round %s, %.0f fetched "
	       "(%.0f bytes), %.0f removed, %.0f rounds failed\n",
	       reply_str(d, "state"), reply_num(d, "files"), last, reply_num(d, "files_synced"),
	       reply_num(d, "bytes_synced"), reply_num(d, "files_removed"),
	       reply_num(d, "rounds_failed"));
	text_safe(why, sizeof why, reply_str(d, "last_error"));
	if (why[0])
		printf("upstream sync error: %s\n", why);
}

static void status_print(const cJSON *r, const cJSON *req)
{
	char up[48], loaded[32];
	uint64_t up_s = (uint64_t)reply_num(r, "uptime_s");
	uint64_t loaded_s = (uint64_t)reply_num(r, "snapshot_loaded_unix_s");
	duration_text(up, sizeof up, up_s);
	time_text(loaded, sizeof loaded, loaded_s * 1000u);
	uint64_t now = (uint64_t)time(NULL);
	printf("uptime:              %s (%" PRIu64 " s)\n"
	       "workers:             %.0f\n"
	       "connections:         %.0f open\n"
	       "trust snapshot:      generation %.0f, loaded %s (%" PRIu64 " s ago)\n"
	       "issuers:             %.0f\n"
	       "revoked serials:     %.0f\n"
	       "blocked entries:     %.0f\n"
	       "uploads since start: %.0f\n",
	       up, up_s, reply_num(r, "workers"), reply_num(r, "connections_open"),
	       reply_num(r, "snapshot_generation"), loaded,
	       loaded_s && now > loaded_s ? now - loaded_s : 0, reply_num(r, "issuers"),
	       reply_num(r, "revoked_serials"), reply_num(r, "blocked_entries"),
	       reply_num(r, "uploads"));
	/* Absent from a beacond that reports no store totals. */
	if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r, "store_uploads")))
		printf("store:               %.0f uploads, %.0f bytes (in the index)\n",
		       reply_num(r, "store_uploads"), reply_num(r, "store_bytes"));
	drain_print(cJSON_GetObjectItemCaseSensitive(r, "drain"));
	upstream_print(cJSON_GetObjectItemCaseSensitive(r, "upstream"));
	mirror_print(cJSON_GetObjectItemCaseSensitive(r, "mirror"));
}

int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	return socket_run(ctl, request_new("status"), status_print);
}

/* Every field, flattened: "handshakes.ok", "commit_latency_bucket[3]". */
static void stats_print_item(const cJSON *item, const char *name)
{
	char sub[128];
	if (cJSON_IsNumber(item)) {
		printf("%-34s %.0f\n", name, item->valuedouble);
		return;
	}
	int i = 0;
	for (const cJSON *c = item->child; c; c = c->next, i++) {
		if (cJSON_IsArray(item))
			snprintf(sub, sizeof sub, "%s[%d]", name, i);
		else
			snprintf(sub, sizeof sub, "%s.%s", name, c->string);
		stats_print_item(c, sub);
	}
}

static void stats_print(const cJSON *r, const cJSON *req)
{
	for (const cJSON *c = r->child; c; c = c->next)
		if (strcmp(c->string, "ok") != 0)
			stats_print_item(c, c->string);
}

int cmd_stats(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	return socket_run(ctl, request_new("stats"), stats_print);
}

/* ---- reload, tickets ---- */

/* "reload crl: <the server's summary>", "tickets rotate: ..." */
static void message_print(const cJSON *r, const cJSON *req)
{
	const char *msg = reply_str(r, "message");
	if (!strcmp(reply_str(req, "cmd"), "reload"))
		printf("reload %s: ", reply_str(req, "what"));
	else
		printf("tickets rotate: ");
	printf("%s\n", *msg ? msg : "done");
}

int cmd_reload(struct ctl *ctl, int argc, char **argv)
{
	static const char *const targets[] = {"all", "issuers", "crl", "tickets", "blocklist"};
	if (argc > 2)
		return EXIT_USAGE;
	const char *what = argc == 2 ? argv[1] : "all";
	bool known = false;
	for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
		known |= !strcmp(what, targets[i]);
	if (!known)
		return EXIT_USAGE;
	cJSON *req = request_new("reload");
	if (req && !cJSON_AddStringToObject(req, "what", what)) {
		cJSON_Delete(req);
		req = NULL;
	}
	return socket_run(ctl, req, message_print);
}

int cmd_tickets_rotate(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	return socket_run(ctl, request_new("tickets_rotate"), message_print);
}

/* ---- device state ---- */

/* "device D: blocked; <the server's summary>", or "device D: already
 * blocked" when nothing changed. */
static void device_state_print(const cJSON *r, const cJSON *req)
{
	char dev[STORE_DEVICE_MAX];
	const char *cmd = reply_str(req, "cmd");
	const char *msg = reply_str(r, "message");
	text_safe(dev, sizeof dev, reply_str(req, "device"));
	if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r, "changed"))) {
		printf("device %s: %s\n", dev, msg);
		return;
	}
	printf("device %s: %s%s%s\n", dev,
	       !strcmp(cmd, "device_approve") ? "approved"
	       : !strcmp(cmd, "device_block") ? "blocked"
					      : "unblocked",
	       *msg ? "; " : "", msg);
}

static int device_state_run(struct ctl *ctl, int argc, char **argv, const char *cmd)
{
	if (argc != 2)
		return EXIT_USAGE;
	cJSON *req = request_new(cmd);
	if (req && !cJSON_AddStringToObject(req, "device", argv[1])) {
		cJSON_Delete(req);
		req = NULL;
	}
	return socket_run(ctl, req, device_state_print);
}

int cmd_devices_approve(struct ctl *ctl, int argc, char **argv)
{
	return device_state_run(ctl, argc, argv, "device_approve");
}

int cmd_devices_block(struct ctl *ctl, int argc, char **argv)
{
	return device_state_run(ctl, argc, argv, "device_block");
}

int cmd_devices_unblock(struct ctl *ctl, int argc, char **argv)
{
	return device_state_run(ctl, argc, argv, "device_unblock");
}

/* ---- upstream ---- */

int cmd_upstream_sync(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	return socket_run(ctl, request_new("upstream_sync"), message_print);
}

/* ---- drain ---- */

int cmd_drain_pause(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	return socket_run(ctl, request_new("drain_pause"), message_print);
}

int cmd_drain_resume(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	return socket_run(ctl, request_new("drain_resume"), message_print);
}

int cmd_drain_replay(struct ctl *ctl, int argc, char **argv)
{
	char *end = NULL;
	if (argc != 3 || strcmp(argv[1], "--from") != 0 || !isdigit((unsigned char)argv[2][0]))
		return EXIT_USAGE;
	errno = 0;
	unsigned long long from = strtoull(argv[2], &end, 10);
	/* JSON numbers are doubles: ids stay below 2^53. */
	if (errno || *end || from > (1ull << 53))
		return EXIT_USAGE;
	cJSON *req = request_new("drain_replay");
	if (req && !cJSON_AddNumberToObject(req, "from", (double)from)) {
		cJSON_Delete(req);
		req = NULL;
	}
	return socket_run(ctl, req, message_print);
}
