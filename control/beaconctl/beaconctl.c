/*
 * beaconctl: the command line for a beacon. Two sides:
 *
 * The store's read side opens DATA/index with LMDB read transactions only,
 * so it is safe beside a running beacond and never blocks its writer:
 *
 *   beaconctl [--data-dir DIR] [--json] uploads list [--device D] [--since UNIX_SECONDS]
 *   beaconctl [--data-dir DIR] [--json] uploads show ID
 *   beaconctl [--data-dir DIR] uploads get ID > file
 *   beaconctl [--data-dir DIR] [--json] devices list
 *   beaconctl [--data-dir DIR] [--json] devices show DEVICE
 *
 * The control side talks to a running beacond over its control socket, one
 * JSON object per line each way (include/beacon/control.h):
 *
 *   beaconctl [--socket PATH] [--json] status | stats
 *   beaconctl [--socket PATH] [--json] reload [all|issuers|crl|tickets|blocklist]
 *   beaconctl [--socket PATH] [--json] tickets rotate
 *   beaconctl [--socket PATH] [--json] devices approve|block|unblock DEVICE
 *
 * main() is a table of subcommands (noun, verb, handler, side); a row with
 * no verb takes the words after its noun as arguments.
 *
 * Exit codes: 0 ok, 1 not found or failed, 2 usage, 3 cannot connect to
 * beacond.
 */
#include "beacon/auth.h"
#include "beacon/store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXIT_NOTFOUND 1
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_NOCONNECT 3
#define DEFAULT_DATA_DIR "/var/lib/beacond"
#define DEFAULT_SOCKET "/run/beacond/control.sock"
/* A reload of a million-serial CRL takes seconds; a minute means stuck. */
#define REPLY_TIMEOUT_S 60
#define REPLY_MAX (1u << 20)

struct ctl {
	const char *data_dir;
	const char *socket_path;
	bool json;
	struct store_reader *reader;
};

/* Where a command's answers come from. */
enum side { SIDE_STORE, SIDE_SOCKET };

struct command {
	const char *noun;
	const char *verb; /* NULL: the words after the noun are its arguments */
	const char *args;
	int (*run)(struct ctl *ctl, int argc, char **argv);
	enum side side;
};

static const struct command commands[];

/* ---- output helpers ---- */

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* Device names come from certificates: never let one drive the terminal. */
static void text_safe(char *dst, size_t len, const char *src)
{
	size_t i = 0;
	for (; src[i] && i + 1 < len; i++) {
		dst[i] = src[i];
		if ((unsigned char)src[i] < 0x20 || src[i] == 0x7f)
			dst[i] = '?';
	}
	dst[i] = '\0';
}

static void time_text(char *buf, size_t len, uint64_t ms)
{
	if (!ms) {
		snprintf(buf, len, "-");
		return;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void hex_text(char *buf, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(buf + 2 * i, "%02x", b[i]);
	buf[2 * n] = '\0';
}

static const char *device_state_name(enum device_state s)
{
	switch (s) {
	case DEVICE_APPROVED:
		return "approved";
	case DEVICE_UNAPPROVED:
		return "unapproved";
	case DEVICE_BLOCKED:
		return "blocked";
	}
	return "invalid";
}

static int store_failure(const char *what, int rc)
{
	fprintf(stderr, "beaconctl: %s: %s\n", what, store_strerror(rc));
	return EXIT_NOTFOUND;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	if (!s || !*s || *s == '-')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end || errno)
		return false;
	*out = v;
	return true;
}

/* ---- uploads ---- */

static void upload_print_json(const struct upload_record *r)
{
	char when[32], sha[65];
	time_text(when, sizeof when, r->received_unix_ms);
	hex_text(sha, r->meta.cert_sha256, 32);
	printf("{\"id\":%" PRIu64 ",\"device\":", r->id);
	json_string(stdout, r->meta.device);
	printf(",\"category\":");
	json_string(stdout, r->meta.category);
	printf(",\"name\":");
	json_string(stdout, r->meta.name);
	printf(",\"length\":%" PRIu64 ",\"received_unix_ms\":%" PRIu64 ",\"received\":\"%s\""
	       ",\"worker\":%u,\"segment\":%" PRIu64 ",\"offset\":%" PRIu64
	       ",\"crc32\":\"%08x\",\"cert_sha256\":\"%s\"}\n",
	       r->length, r->received_unix_ms, when, r->worker, r->segment, r->offset, r->crc32,
	       sha);
}

static int upload_print_row(const struct upload_record *r, void *arg)
{
	struct ctl *ctl = arg;
	if (ctl->json) {
		upload_print_json(r);
		return 0;
	}
	char when[32], dev[STORE_DEVICE_MAX], cat[STORE_CATEGORY_MAX], name[STORE_NAME_MAX];
	time_text(when, sizeof when, r->received_unix_ms);
	text_safe(dev, sizeof dev, r->meta.device);
	text_safe(cat, sizeof cat, r->meta.category);
	text_safe(name, sizeof name, r->meta.name);
	printf("%-10" PRIu64 " %-20s %12" PRIu64 "  %-24s %-12s %s\n", r->id, when, r->length, dev,
	       cat, name);
	return 0;
}

static int cmd_uploads_list(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {{"device", required_argument, NULL, 'd'},
					     {"since", required_argument, NULL, 's'},
					     {NULL, 0, NULL, 0}};
	const char *device = NULL;
	uint64_t since_s = 0;
	int c;
	while ((c = getopt_long(argc, argv, "+d:s:", opts, NULL)) != -1) {
		if (c == 'd')
			device = optarg;
		else if (c == 's' && parse_u64(optarg, &since_s))
			continue;
		else
			return EXIT_USAGE;
	}
	if (optind != argc)
		return EXIT_USAGE;
	if (!ctl->json)
		printf("%-10s %-20s %12s  %-24s %-12s %s\n", "ID", "RECEIVED", "BYTES", "DEVICE",
		       "CATEGORY", "NAME");
	int rc = store_reader_uploads(ctl->reader, device, since_s * 1000u, upload_print_row, ctl);
	return rc ? store_failure("list uploads", rc) : 0;
}

static int upload_arg(int argc, char **argv, uint64_t *id)
{
	if (argc != 2 || !parse_u64(argv[1], id))
		return EXIT_USAGE;
	return 0;
}

static int cmd_uploads_show(struct ctl *ctl, int argc, char **argv)
{
	uint64_t id;
	if (upload_arg(argc, argv, &id))
		return EXIT_USAGE;
	struct upload_record r;
	int rc = store_reader_upload(ctl->reader, id, &r);
	if (rc) {
		fprintf(stderr, "beaconctl: upload %" PRIu64 ": %s\n", id, store_strerror(rc));
		return EXIT_NOTFOUND;
	}
	if (ctl->json) {
		upload_print_json(&r);
		return 0;
	}
	char when[32], sha[65], dev[STORE_DEVICE_MAX], cat[STORE_CATEGORY_MAX], name[STORE_NAME_MAX];
	time_text(when, sizeof when, r.received_unix_ms);
	hex_text(sha, r.meta.cert_sha256, 32);
	text_safe(dev, sizeof dev, r.meta.device);
	text_safe(cat, sizeof cat, r.meta.category);
	text_safe(name, sizeof name, r.meta.name);
	printf("id:          %" PRIu64 "\n"
	       "device:      %s\n"
	       "category:    %s\n"
	       "name:        %s\n"
	       "bytes:       %" PRIu64 "\n"
	       "received:    %s (%" PRIu64 " ms)\n"
	       "certificate: sha256 %s\n"
	       "crc32:       %08x\n"
	       "spool:       w%u/%016" PRIx64 ".seg at %" PRIu64 "\n",
	       r.id, dev, cat, name, r.length, when, r.received_unix_ms, sha, r.crc32, r.worker,
	       r.segment, r.offset);
	return 0;
}

static int cmd_uploads_get(struct ctl *ctl, int argc, char **argv)
{
	uint64_t id;
	if (upload_arg(argc, argv, &id))
		return EXIT_USAGE;
	int rc = store_reader_copy(ctl->reader, id, STDOUT_FILENO);
	if (rc == STORE_ERR_CORRUPT) {
		fprintf(stderr, "beaconctl: upload %" PRIu64 " fails its checksum: nothing written\n",
			id);
		return EXIT_NOTFOUND;
	}
	if (rc) {
		fprintf(stderr, "beaconctl: upload %" PRIu64 ": %s\n", id, store_strerror(rc));
		return EXIT_NOTFOUND;
	}
	return 0;
}

/* ---- devices ---- */

static void device_print_json(const struct device_record *d)
{
	char first[32], last[32];
	time_text(first, sizeof first, d->first_seen_unix_ms);
	time_text(last, sizeof last, d->last_seen_unix_ms);
	printf("{\"device\":");
	json_string(stdout, d->device);
	printf(",\"state\":\"%s\",\"last_result\":\"%s\",\"first_seen_unix_ms\":%" PRIu64
	       ",\"first_seen\":\"%s\",\"last_seen_unix_ms\":%" PRIu64
	       ",\"last_seen\":\"%s\",\"uploads\":%" PRIu64 ",\"cert_sha256\":[",
	       device_state_name(d->state), auth_result_name(d->last_result),
	       d->first_seen_unix_ms, first, d->last_seen_unix_ms, last, d->uploads);
	for (unsigned i = 0; i < d->n_fingerprints && i < 4; i++) {
		char sha[65];
		hex_text(sha, d->fingerprints[i], 32);
		printf("%s\"%s\"", i ? "," : "", sha);
	}
	printf("]}\n");
}

static int device_print_row(const struct device_record *d, void *arg)
{
	struct ctl *ctl = arg;
	if (ctl->json) {
		device_print_json(d);
		return 0;
	}
	char first[32], last[32], dev[STORE_DEVICE_MAX];
	time_text(first, sizeof first, d->first_seen_unix_ms);
	time_text(last, sizeof last, d->last_seen_unix_ms);
	text_safe(dev, sizeof dev, d->device);
	printf("%-32s %-10s %-15s %-20s %-20s %8" PRIu64 "\n", dev, device_state_name(d->state),
	       auth_result_name(d->last_result), first, last, d->uploads);
	return 0;
}

static int cmd_devices_list(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	if (!ctl->json)
		printf("%-32s %-10s %-15s %-20s %-20s %8s\n", "DEVICE", "STATE", "LAST_RESULT",
		       "FIRST_SEEN", "LAST_SEEN", "UPLOADS");
	int rc = store_reader_devices(ctl->reader, device_print_row, ctl);
	return rc ? store_failure("list devices", rc) : 0;
}

static int cmd_devices_show(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 2)
		return EXIT_USAGE;
	struct device_record d;
	int rc = store_reader_device(ctl->reader, argv[1], &d);
	if (rc) {
		char dev[STORE_DEVICE_MAX];
		text_safe(dev, sizeof dev, argv[1]);
		fprintf(stderr, "beaconctl: device %s: %s\n", dev, store_strerror(rc));
		return EXIT_NOTFOUND;
	}
	if (ctl->json) {
		device_print_json(&d);
		return 0;
	}
	char first[32], last[32], dev[STORE_DEVICE_MAX];
	time_text(first, sizeof first, d.first_seen_unix_ms);
	time_text(last, sizeof last, d.last_seen_unix_ms);
	text_safe(dev, sizeof dev, d.device);
	printf("device:      %s\n"
	       "state:       %s\n"
	       "last result: %s\n"
	       "first seen:  %s\n"
	       "last seen:   %s\n"
	       "uploads:     %" PRIu64 "\n",
	       dev, device_state_name(d.state), auth_result_name(d.last_result), first, last,
	       d.uploads);
	for (unsigned i = 0; i < d.n_fingerprints && i < 4; i++) {
		char sha[65];
		hex_text(sha, d.fingerprints[i], 32);
		printf("certificate: sha256 %s%s\n", sha, i == 0 ? " (most recent)" : "");
	}
	return 0;
}

/* ---- the control socket ---- */

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
	if (!ok) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
		fprintf(stderr, "beaconctl: %s\n", cJSON_IsString(e) ? e->valuestring : "failed");
	} else if (!ctl->json) {
		print(reply, req);
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

static void status_print(const cJSON *r, const cJSON *req)
{
	char up[48], loaded[32];
	uint64_t up_s = (uint64_t)reply_num(r, "uptime_s");
	uint64_t loaded_s = (uint64_t)reply_num(r, "snapshot_loaded_unix_s");
	duration_text(up, sizeof up, up_s);
	time_text(loaded, sizeof loaded, loaded_s * 1000u);
	uint64_t now = (uint64_t)time(NULL);
	printf("uptime:           %s (%" PRIu64 " s)\n"
	       "workers:          %.0f\n"
	       "connections:      %.0f open\n"
	       "trust snapshot:   generation %.0f, loaded %s (%" PRIu64 " s ago)\n"
	       "issuers:          %.0f\n"
	       "revoked serials:  %.0f\n"
	       "blocked entries:  %.0f\n"
	       "uploads:          %.0f\n",
	       up, up_s, reply_num(r, "workers"), reply_num(r, "connections_open"),
	       reply_num(r, "snapshot_generation"), loaded,
	       loaded_s && now > loaded_s ? now - loaded_s : 0, reply_num(r, "issuers"),
	       reply_num(r, "revoked_serials"), reply_num(r, "blocked_entries"),
	       reply_num(r, "uploads"));
}

static int cmd_status(struct ctl *ctl, int argc, char **argv)
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

static int cmd_stats(struct ctl *ctl, int argc, char **argv)
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

static int cmd_reload(struct ctl *ctl, int argc, char **argv)
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

static int cmd_tickets_rotate(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return EXIT_USAGE;
	return socket_run(ctl, request_new("tickets_rotate"), message_print);
}

/* ---- device state ---- */

static void device_state_print(const cJSON *r, const cJSON *req)
{
	char dev[STORE_DEVICE_MAX];
	const char *cmd = reply_str(req, "cmd");
	const char *msg = reply_str(r, "message");
	text_safe(dev, sizeof dev, reply_str(req, "device"));
	printf("device %s: %s%s%s\n", dev,
	       !strcmp(cmd, "device_approve")  ? "approved"
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

static int cmd_devices_approve(struct ctl *ctl, int argc, char **argv)
{
	return device_state_run(ctl, argc, argv, "device_approve");
}

static int cmd_devices_block(struct ctl *ctl, int argc, char **argv)
{
	return device_state_run(ctl, argc, argv, "device_block");
}

static int cmd_devices_unblock(struct ctl *ctl, int argc, char **argv)
{
	return device_state_run(ctl, argc, argv, "device_unblock");
}

/* ---- the table and main ---- */

static const struct command commands[] = {
    {"uploads", "list", "[--device D] [--since UNIX_SECONDS]", cmd_uploads_list, SIDE_STORE},
    {"uploads", "show", "ID", cmd_uploads_show, SIDE_STORE},
    {"uploads", "get", "ID  (bytes to stdout, checksum verified first)", cmd_uploads_get, SIDE_STORE},
    {"devices", "list", "", cmd_devices_list, SIDE_STORE},
    {"devices", "show", "DEVICE", cmd_devices_show, SIDE_STORE},
    {"status", NULL, "", cmd_status, SIDE_SOCKET},
    {"stats", NULL, "", cmd_stats, SIDE_SOCKET},
    {"reload", NULL, "[all|issuers|crl|tickets|blocklist]", cmd_reload, SIDE_SOCKET},
    {"tickets", "rotate", "", cmd_tickets_rotate, SIDE_SOCKET},
    {"devices", "approve", "DEVICE", cmd_devices_approve, SIDE_SOCKET},
    {"devices", "block", "DEVICE", cmd_devices_block, SIDE_SOCKET},
    {"devices", "unblock", "DEVICE", cmd_devices_unblock, SIDE_SOCKET},
    {NULL, NULL, NULL, NULL, SIDE_STORE},
};

static void command_usage(FILE *out, const char *prefix, const struct command *c)
{
	fprintf(out, "%s%s%s%s %s\n", prefix, c->noun, c->verb ? " " : "", c->verb ? c->verb : "",
		c->args);
}

static int usage(FILE *out)
{
	fprintf(out, "usage: beaconctl [--data-dir DIR] [--socket PATH] [--json] COMMAND\n\n"
		     "commands:\n");
	for (const struct command *c = commands; c->noun; c++)
		command_usage(out, "  ", c);
	fprintf(out, "\nDIR defaults to $BEACOND_DATA_DIR, else %s.\n"
		     "PATH (beacond's control socket) defaults to $BEACOND_SOCKET, else %s.\n"
		     "--json prints one JSON object per line.\n"
		     "Exit status: 0 ok, 1 not found or failed, 2 usage, 3 cannot connect to "
		     "beacond.\n",
		DEFAULT_DATA_DIR, DEFAULT_SOCKET);
	return out == stdout ? 0 : EXIT_USAGE;
}

/* "noun verb" first, then a verbless row for the noun. */
static const struct command *command_find(const char *noun, const char *verb)
{
	for (const struct command *c = commands; c->noun; c++)
		if (verb && c->verb && !strcmp(c->noun, noun) && !strcmp(c->verb, verb))
			return c;
	for (const struct command *c = commands; c->noun; c++)
		if (!c->verb && !strcmp(c->noun, noun))
			return c;
	return NULL;
}

static int parse_globals(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {{"data-dir", required_argument, NULL, 'D'},
					     {"socket", required_argument, NULL, 'S'},
					     {"json", no_argument, NULL, 'j'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int c;
	/* "+": stop at the command; its own options are parsed by it. */
	while ((c = getopt_long(argc, argv, "+D:S:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			ctl->data_dir = optarg;
			break;
		case 'S':
			ctl->socket_path = optarg;
			break;
		case 'j':
			ctl->json = true;
			break;
		case 'h':
			return -1;
		default:
			return EXIT_USAGE;
		}
	}
	return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);
	return v && *v ? v : fallback;
}

int main(int argc, char **argv)
{
	struct ctl ctl = {.data_dir = env_or("BEACOND_DATA_DIR", DEFAULT_DATA_DIR),
			  .socket_path = env_or("BEACOND_SOCKET", DEFAULT_SOCKET)};
	int rc = parse_globals(&ctl, argc, argv);
	if (rc < 0)
		return usage(stdout);
	if (rc || argc - optind < 1)
		return usage(stderr);
	const char *verb = argc - optind >= 2 ? argv[optind + 1] : NULL;
	const struct command *cmd = command_find(argv[optind], verb);
	if (!cmd) {
		fprintf(stderr, "beaconctl: unknown command '%s%s%s'\n", argv[optind],
			verb ? " " : "", verb ? verb : "");
		return usage(stderr);
	}
	if (cmd->side == SIDE_STORE) {
		char err[512];
		rc = store_reader_open(ctl.data_dir, &ctl.reader, err, sizeof err);
		if (rc) {
			fprintf(stderr, "beaconctl: %s (data directory %s; set --data-dir or BEACOND_DATA_DIR)\n",
				err, ctl.data_dir);
			return EXIT_NOTFOUND;
		}
	}
	/* The command sees argv from its verb on (from its noun when it has no
	 * verb), getopt style. */
	int skip = cmd->verb ? 1 : 0;
	int cargc = argc - optind - skip;
	char **cargv = argv + optind + skip;
	optind = 1;
	rc = cmd->run(&ctl, cargc, cargv);
	if (ctl.reader)
		store_reader_close(ctl.reader);
	if (rc == EXIT_USAGE) {
		command_usage(stderr, "usage: beaconctl ", cmd);
		return EXIT_USAGE;
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "beaconctl: write output: %s\n", strerror(errno));
		return EXIT_NOTFOUND;
	}
	return rc;
}
