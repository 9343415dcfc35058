/*
 * beaconctl: the command line for a beacon. This file holds the store's
 * read side: it opens DATA/index with LMDB read transactions only, so it is
 * safe beside a running beacond and never blocks its writer.
 *
 *   beaconctl [--data-dir DIR] [--json] uploads list [--device D] [--since UNIX_SECONDS]
 *   beaconctl [--data-dir DIR] [--json] uploads show ID
 *   beaconctl [--data-dir DIR] uploads get ID > file
 *   beaconctl [--data-dir DIR] [--json] devices list
 *   beaconctl [--data-dir DIR] [--json] devices show DEVICE
 *
 * main() is a table of subcommands (noun, verb, handler): commands that
 * talk to the control socket are added as more rows.
 *
 * Exit codes: 0 ok, 1 not found or failed, 2 usage.
 */
#include "beacon/store.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_NOTFOUND 1
#define EXIT_USAGE 2
#define DEFAULT_DATA_DIR "/var/lib/beacond"

struct ctl {
	const char *data_dir;
	bool json;
	struct store_reader *reader;
};

struct command {
	const char *noun;
	const char *verb;
	const char *args;
	int (*run)(struct ctl *ctl, int argc, char **argv);
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
	for (; src[i] && i + 1 < len; i++)
		dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
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

/* ---- the table and main ---- */

static const struct command commands[] = {
    {"uploads", "list", "[--device D] [--since UNIX_SECONDS]", cmd_uploads_list},
    {"uploads", "show", "ID", cmd_uploads_show},
    {"uploads", "get", "ID  (bytes to stdout, checksum verified first)", cmd_uploads_get},
    {"devices", "list", "", cmd_devices_list},
    {"devices", "show", "DEVICE", cmd_devices_show},
    {NULL, NULL, NULL, NULL},
};

static int usage(FILE *out)
{
	fprintf(out, "usage: beaconctl [--data-dir DIR] [--json] COMMAND\n\ncommands:\n");
	for (const struct command *c = commands; c->noun; c++)
		fprintf(out, "  %s %s %s\n", c->noun, c->verb, c->args);
	fprintf(out, "\nDIR defaults to $BEACOND_DATA_DIR, else %s.\n"
		     "--json prints one JSON object per line.\n"
		     "Exit status: 0 ok, 1 not found or failed, 2 usage.\n",
		DEFAULT_DATA_DIR);
	return out == stdout ? 0 : EXIT_USAGE;
}

static const struct command *command_find(const char *noun, const char *verb)
{
	for (const struct command *c = commands; c->noun; c++)
		if (!strcmp(c->noun, noun) && !strcmp(c->verb, verb))
			return c;
	return NULL;
}

static int parse_globals(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {{"data-dir", required_argument, NULL, 'D'},
					     {"json", no_argument, NULL, 'j'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int c;
	/* "+": stop at the command; its own options are parsed by it. */
	while ((c = getopt_long(argc, argv, "+D:jh", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			ctl->data_dir = optarg;
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

int main(int argc, char **argv)
{
	struct ctl ctl = {.data_dir = getenv("BEACOND_DATA_DIR")};
	if (!ctl.data_dir || !*ctl.data_dir)
		ctl.data_dir = DEFAULT_DATA_DIR;
	int rc = parse_globals(&ctl, argc, argv);
	if (rc < 0)
		return usage(stdout);
	if (rc || argc - optind < 2)
		return usage(stderr);
	const struct command *cmd = command_find(argv[optind], argv[optind + 1]);
	if (!cmd) {
		fprintf(stderr, "beaconctl: unknown command '%s %s'\n", argv[optind], argv[optind + 1]);
		return usage(stderr);
	}
	char err[512];
	rc = store_reader_open(ctl.data_dir, &ctl.reader, err, sizeof err);
	if (rc) {
		fprintf(stderr, "beaconctl: %s (data directory %s; set --data-dir or BEACOND_DATA_DIR)\n",
			err, ctl.data_dir);
		return EXIT_NOTFOUND;
	}
	/* The command sees argv from its verb on, getopt style. */
	int cargc = argc - optind - 1;
	char **cargv = argv + optind + 1;
	optind = 1;
	rc = cmd->run(&ctl, cargc, cargv);
	store_reader_close(ctl.reader);
	if (rc == EXIT_USAGE) {
		fprintf(stderr, "usage: beaconctl %s %s %s\n", cmd->noun, cmd->verb, cmd->args);
		return EXIT_USAGE;
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "beaconctl: write output: %s\n", strerror(errno));
		return EXIT_NOTFOUND;
	}
	return rc;
}
