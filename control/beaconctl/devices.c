/*
 * beaconctl's devices list and show, on the store's read side (as
 * uploads.c: LMDB read transactions only, a batch at a time):
 *
 *   beaconctl devices list [--state unapproved|approved|blocked|refused]
 *   beaconctl devices show DEVICE
 *
 * approve, block and unblock go to beacond over the control socket
 * (client.c).
 */
#include "beaconctl.h"

#include "beacon/auth.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	       device_state_name(d->state), auth_result_name(d->last_result), d->first_seen_unix_ms,
	       first, d->last_seen_unix_ms, last, d->uploads);
	for (unsigned i = 0; i < d->n_fingerprints && i < 4; i++) {
		char sha[65];
		hex_text(sha, d->fingerprints[i], 32);
		printf("%s\"%s\"", i ? "," : "", sha);
	}
	printf("]}\n");
}

/* --state: unapproved, approved and blocked are the operator's states;
 * refused is a device whose last recorded attempt was refused (what beacond
 * records: revoked and blocked certificates, see README). */
enum state_filter { STATE_ANY, STATE_UNAPPROVED, STATE_APPROVED, STATE_BLOCKED, STATE_REFUSED };

static bool device_refused(const struct device_record *d)
{
	return d->last_seen_unix_ms != 0 && d->last_result != AUTH_OK;
}

static bool state_matches(enum state_filter f, const struct device_record *d)
{
	switch (f) {
	case STATE_ANY:
		return true;
	case STATE_UNAPPROVED:
		return d->state == DEVICE_UNAPPROVED;
	case STATE_APPROVED:
		return d->state == DEVICE_APPROVED;
	case STATE_BLOCKED:
		return d->state == DEVICE_BLOCKED;
	case STATE_REFUSED:
		return device_refused(d);
	}
	return false;
}

struct device_list {
	struct ctl *ctl;
	enum state_filter state;
};

static int device_print_row(const struct device_record *d, void *arg)
{
	struct device_list *l = arg;
	if (!state_matches(l->state, d))
		return 0;
	if (l->ctl->json) {
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

struct device_batch {
	struct device_record *rows;
	size_t n;
};

static int device_batch_row(const struct device_record *d, void *arg)
{
	struct device_batch *b = arg;
	b->rows[b->n++] = *d;
	return b->n == BATCH_ROWS;
}

/* Every device, a batch per read transaction, printed after it ended (as
 * query_batched, for the same reason). */
static int devices_batched(struct store_reader *r, device_visit_fn fn, void *arg)
{
	struct device_batch b = {.rows = malloc(BATCH_ROWS * sizeof *b.rows)};
	if (!b.rows)
		return STORE_ERR_IO;
	char after[STORE_DEVICE_MAX] = "";
	int rc;
	bool stop = false;
	while (!stop) {
		b.n = 0;
		if ((rc = store_reader_devices_after(r, after, device_batch_row, &b)))
			break;
		for (size_t i = 0; i < b.n && !stop; i++)
			stop = fn(&b.rows[i], arg) != 0;
		stop |= b.n < BATCH_ROWS;
		if (b.n)
			snprintf(after, sizeof after, "%s", b.rows[b.n - 1].device);
	}
	free(b.rows);
	return rc;
}

static bool parse_state(const char *s, enum state_filter *out)
{
	static const char *const names[] = {"unapproved", "approved", "blocked", "refused"};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		if (!strcmp(s, names[i])) {
			*out = (enum state_filter)(i + 1);
			return true;
		}
	}
	return false;
}

int cmd_devices_list(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {{"state", required_argument, NULL, 's'},
					     {NULL, 0, NULL, 0}};
	struct device_list l = {.ctl = ctl};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 's')
			return EXIT_USAGE;
		if (!parse_state(optarg, &l.state))
			return bad_option("--state", optarg,
					  "expected unapproved, approved, blocked or refused");
	}
	if (optind != argc)
		return EXIT_USAGE;
	if (!ctl->json)
		printf("%-32s %-10s %-15s %-20s %-20s %8s\n", "DEVICE", "STATE", "LAST_RESULT",
		       "FIRST_SEEN", "LAST_SEEN", "UPLOADS");
	int rc = devices_batched(ctl->reader, device_print_row, &l);
	return rc ? store_failure("list devices", rc) : 0;
}

int cmd_devices_show(struct ctl *ctl, int argc, char **argv)
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
