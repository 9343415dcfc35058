/*
 * beaconctl: the command line for a beacon. Two sides:
 *
 * The store's read side opens DATA/index with LMDB read transactions only,
 * so it is safe beside a running beacond and never blocks its writer. Every
 * listing is a page: an LMDB range scan from a cursor (--after ID), so a
 * page costs the same at a million uploads as at ten:
 *
 *   beaconctl uploads list [--limit N] [--after ID] [--since T] [--until T]
 *                          [--category C] [--device D]
 *   beaconctl uploads follow [--after ID] [--category C] [--device D]
 *   beaconctl uploads show ID
 *   beaconctl uploads get ID [-o FILE]
 *   beaconctl devices list [--state unapproved|approved|blocked|refused]
 *   beaconctl devices show DEVICE
 *
 * The control side talks to a running beacond over its control socket, one
 * JSON object per line each way (include/beacon/control.h):
 *
 *   beaconctl status | stats
 *   beaconctl reload [all|issuers|crl|tickets|blocklist]
 *   beaconctl tickets rotate
 *   beaconctl devices approve|block|unblock DEVICE
 *
 * Global options (--json, --socket, --data-dir, --debug) go anywhere on the
 * line. main() is a table of subcommands (noun, verb, handler, side); a row
 * with no verb takes the words after its noun as arguments.
 *
 * Exit codes: 0 ok, 1 not found or failed, 2 usage, 3 cannot connect to
 * beacond.
 */
#include "beacon/auth.h"
#include "beacon/store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXIT_NOTFOUND 1
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_NOCONNECT 3
/* A usage refusal that has said why already: exit 2 without the usage line. */
#define EXIT_REFUSED 102
#define DEFAULT_DATA_DIR "/var/lib/beacond"
#define DEFAULT_SOCKET "/run/beacond/control.sock"
/* A reload of a million-serial CRL takes seconds; a minute means stuck. */
#define REPLY_TIMEOUT_S 60
#define REPLY_MAX (1u << 20)
/* A page when --limit is not given: enough for a screen, never a million. */
#define DEFAULT_LIMIT 100
#define FOLLOW_INTERVAL_MS 500
/* follow looks this far back on every poll, so an upload committed in the
 * same millisecond as one already shown, or after a small clock step back,
 * is still shown (once). */
#define FOLLOW_WINDOW_MS 2000

struct ctl {
	const char *data_dir;
	const char *socket_path;
	bool json;
	bool debug; /* on stderr at exit: index entries read */
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

static void upload_print_header(const struct ctl *ctl)
{
	if (!ctl->json)
		printf("%-10s %-20s %12s  %-24s %-12s %s\n", "ID", "RECEIVED", "BYTES", "DEVICE",
		       "CATEGORY", "NAME");
}

static void upload_print(const struct ctl *ctl, const struct upload_record *r)
{
	if (ctl->json) {
		upload_print_json(r);
		return;
	}
	char when[32], dev[STORE_DEVICE_MAX], cat[STORE_CATEGORY_MAX], name[STORE_NAME_MAX];
	time_text(when, sizeof when, r->received_unix_ms);
	text_safe(dev, sizeof dev, r->meta.device);
	text_safe(cat, sizeof cat, r->meta.category);
	text_safe(name, sizeof name, r->meta.name);
	printf("%-10" PRIu64 " %-20s %12" PRIu64 "  %-24s %-12s %s\n", r->id, when, r->length, dev,
	       cat, name);
}

/* s has the shape of pattern: 'd' a digit, any other character itself. */
static bool shaped(const char *s, const char *pattern)
{
	for (; *pattern; s++, pattern++)
		if (*pattern == 'd' ? !(*s >= '0' && *s <= '9') : *s != *pattern)
			return false;
	return !*s;
}

static int digits(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

/* A time on the command line: Unix seconds, or UTC YYYY-MM-DD with an
 * optional THH:MM:SS and Z. As an upper bound (end) it covers its whole
 * second, and a date alone its whole day, so --until 2026-01-31 includes
 * the 31st. Returns false for anything else, or a date that does not exist. */
static bool parse_time(const char *s, bool end, uint64_t *ms)
{
	uint64_t secs;
	if (*s >= '0' && *s <= '9' && !strchr(s, '-')) {
		if (!parse_u64(s, &secs) || secs > UINT64_MAX / 1000 - 1)
			return false;
		*ms = secs * 1000 + (end ? 999 : 0);
		return true;
	}
	bool date_only = shaped(s, "dddd-dd-dd");
	if (!date_only && !shaped(s, "dddd-dd-ddTdd:dd:dd") && !shaped(s, "dddd-dd-ddTdd:dd:ddZ"))
		return false;
	/* The shape is checked: every field is all digits. */
	struct tm tm = {.tm_year = digits(s, 4), .tm_mon = digits(s + 5, 2),
			.tm_mday = digits(s + 8, 2)};
	if (!date_only) {
		tm.tm_hour = digits(s + 11, 2);
		tm.tm_min = digits(s + 14, 2);
		tm.tm_sec = digits(s + 17, 2);
	}
	struct tm want = tm;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	struct tm back;
	/* timegm normalises 02-30 into March: a date that does not round
	 * trip does not exist. */
	if (t < 0 || !gmtime_r(&t, &back) || back.tm_year + 1900 != want.tm_year ||
	    back.tm_mon + 1 != want.tm_mon || back.tm_mday != want.tm_mday ||
	    back.tm_hour != want.tm_hour || back.tm_min != want.tm_min ||
	    back.tm_sec != want.tm_sec)
		return false;
	uint64_t span_s = date_only ? 86400 : 1;
	*ms = (uint64_t)t * 1000 + (end ? span_s * 1000 - 1 : 0);
	return true;
}

static int bad_option(const char *what, const char *value, const char *expect)
{
	char v[64];
	text_safe(v, sizeof v, value);
	fprintf(stderr, "beaconctl: %s '%s': %s\n", what, v, expect);
	return EXIT_USAGE;
}

#define TIME_FORMS "expected Unix seconds or YYYY-MM-DD[THH:MM:SS[Z]] (UTC)"

/* The filters that uploads list and follow share. */
struct upload_filter {
	struct upload_query q;
	uint64_t limit;
	const char *limit_arg, *since_arg, *until_arg;
};

/* One option of uploads list/follow into f; EXIT_USAGE with a reason. */
static int upload_option(int c, const char *arg, struct upload_filter *f)
{
	switch (c) {
	case 'd':
		f->q.device = arg;
		return 0;
	case 'c':
		f->q.category = arg;
		return 0;
	case 'a':
		f->q.has_after = true;
		if (!parse_u64(arg, &f->q.after_id))
			return bad_option("--after", arg, "expected an upload id");
		return 0;
	case 'n':
		f->limit_arg = arg;
		if (!parse_u64(arg, &f->limit))
			return bad_option("--limit", arg, "expected a count (0: no limit)");
		return 0;
	case 's':
		f->since_arg = arg;
		if (!parse_time(arg, false, &f->q.since_unix_ms))
			return bad_option("--since", arg, TIME_FORMS);
		return 0;
	case 'u':
		f->until_arg = arg;
		if (!parse_time(arg, true, &f->q.until_unix_ms))
			return bad_option("--until", arg, TIME_FORMS);
		return 0;
	default:
		return EXIT_USAGE;
	}
}

static const struct option upload_opts[] = {
    {"device", required_argument, NULL, 'd'}, {"category", required_argument, NULL, 'c'},
    {"after", required_argument, NULL, 'a'},  {"limit", required_argument, NULL, 'n'},
    {"since", required_argument, NULL, 's'},  {"until", required_argument, NULL, 'u'},
    {NULL, 0, NULL, 0}};

static int upload_options(int argc, char **argv, struct upload_filter *f, bool follow)
{
	int c, rc;
	f->limit = DEFAULT_LIMIT;
	while ((c = getopt_long(argc, argv, "", upload_opts, NULL)) != -1) {
		if (follow && (c == 'n' || c == 's' || c == 'u')) {
			fprintf(stderr, "beaconctl: uploads follow takes --after, --category and "
					"--device\n");
			return EXIT_USAGE;
		}
		if ((rc = upload_option(c, optarg, f)))
			return rc;
	}
	if (optind != argc)
		return EXIT_USAGE;
	if (f->q.since_unix_ms && f->q.until_unix_ms && f->q.until_unix_ms < f->q.since_unix_ms)
		return bad_option("--until", f->until_arg, "is before --since");
	return 0;
}

/* ---- reading in batches ---- */

/* Rows copied out of one read transaction. */
#define BATCH_ROWS 512

struct batch {
	struct upload_record *rows;
	size_t n, cap;
};

static int batch_row(const struct upload_record *r, void *arg)
{
	struct batch *b = arg;
	b->rows[b->n++] = *r;
	return b->n == b->cap;
}

/* Visits the matches of q, at most `want` of them (0: all), a batch per
 * read transaction: the rows are copied out and the transaction has ended
 * before fn prints any. A reader that waits on its output (a pager, a full
 * pipe) must not hold a transaction open: beacond's writer could not reuse
 * the pages it pins, and the index would grow. The next batch continues
 * after the last row; should retention remove that row in between, it has
 * removed every older one too, and the oldest left is the next. */
static int query_batched(struct store_reader *r, struct upload_query *q, uint64_t want,
			 upload_visit_fn fn, void *arg)
{
	struct batch b = {.rows = malloc(BATCH_ROWS * sizeof *b.rows)};
	if (!b.rows)
		return STORE_ERR_IO;
	struct upload_query next = *q;
	bool limited = want != 0, stop = false;
	int rc;
	for (bool first = true; !stop; first = false) {
		b.n = 0;
		b.cap = limited && want < BATCH_ROWS ? (size_t)want : BATCH_ROWS;
		if ((rc = store_reader_query(r, &next, batch_row, &b)))
			break;
		if (first)
			q->after_gone = next.after_gone;
		for (size_t i = 0; i < b.n && !stop; i++)
			stop = fn(&b.rows[i], arg) != 0;
		if (limited)
			want -= b.n;
		stop |= b.n < b.cap || (limited && want == 0);
		if (b.n) {
			next.has_after = true;
			next.after_id = b.rows[b.n - 1].id;
		}
	}
	free(b.rows);
	return rc;
}

struct page {
	const struct ctl *ctl;
	uint64_t limit, shown, last_id;
	bool more;
};

static int page_row(const struct upload_record *r, void *arg)
{
	struct page *p = arg;
	if (p->limit && p->shown == p->limit) {
		p->more = true; /* one row past the page: there is a next one */
		return 1;
	}
	upload_print(p->ctl, r);
	p->shown++;
	p->last_id = r->id;
	return 0;
}

/* The command for the next page, on stderr so stdout stays rows only. */
static void page_hint(const struct upload_filter *f, const struct page *p)
{
	char v[STORE_DEVICE_MAX];
	fprintf(stderr,
		"beaconctl: more uploads follow; next page: beaconctl uploads list "
		"--after %" PRIu64,
		p->last_id);
	if (f->limit_arg)
		fprintf(stderr, " --limit %" PRIu64, f->limit);
	if (f->since_arg)
		fprintf(stderr, " --since %s", f->since_arg);
	if (f->until_arg)
		fprintf(stderr, " --until %s", f->until_arg);
	if (f->q.category) {
		text_safe(v, sizeof v, f->q.category);
		fprintf(stderr, " --category '%s'", v);
	}
	if (f->q.device) {
		text_safe(v, sizeof v, f->q.device);
		fprintf(stderr, " --device '%s'", v);
	}
	fputc('\n', stderr);
}

static int after_failure(const struct upload_filter *f, int rc)
{
	if (rc == STORE_ERR_NOTFOUND && f->q.has_after) {
		fprintf(stderr, "beaconctl: --after %" PRIu64 ": no such upload in the store yet "
				"(--after takes the id of the last upload of a page)\n",
			f->q.after_id);
		return EXIT_NOTFOUND;
	}
	return store_failure("list uploads", rc);
}

static void after_gone_note(const struct upload_filter *f)
{
	if (f->q.after_gone)
		fprintf(stderr, "beaconctl: upload %" PRIu64 " has been removed by retention: "
				"listing from the oldest upload\n",
			f->q.after_id);
}

static int cmd_uploads_list(struct ctl *ctl, int argc, char **argv)
{
	struct upload_filter f = {0};
	int rc = upload_options(argc, argv, &f, false);
	if (rc)
		return rc;
	upload_print_header(ctl);
	struct page p = {.ctl = ctl, .limit = f.limit};
	/* One row past the page says whether there is a next one. */
	rc = query_batched(ctl->reader, &f.q, f.limit ? f.limit + 1 : 0, page_row, &p);
	if (rc)
		return after_failure(&f, rc);
	after_gone_note(&f);
	if (p.more)
		page_hint(&f, &p);
	return 0;
}

/* ---- uploads follow ---- */

/* Ids shown (or there before follow started) whose received time is still
 * inside the window follow looks back over, sorted by id. */
struct seen {
	struct seen_id {
		uint64_t id, ms;
	} *v;
	size_t n, cap;
};

static bool seen_has(const struct seen *s, uint64_t id, size_t *at)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->v[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	return lo < s->n && s->v[lo].id == id;
}

static bool seen_add(struct seen *s, uint64_t id, uint64_t ms)
{
	size_t at;
	if (seen_has(s, id, &at))
		return true;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		struct seen_id *v = realloc(s->v, cap * sizeof *v);
		if (!v)
			return false;
		s->v = v;
		s->cap = cap;
	}
	memmove(s->v + at + 1, s->v + at, (s->n - at) * sizeof *s->v);
	s->v[at] = (struct seen_id){id, ms};
	s->n++;
	return true;
}

static void seen_prune(struct seen *s, uint64_t floor_ms)
{
	size_t k = 0;
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].ms >= floor_ms)
			s->v[k++] = s->v[i];
	s->n = k;
}

struct follow {
	const struct ctl *ctl;
	const char *device;
	struct seen seen;
	uint64_t newest_ms;
	/* The first scan: rows up to (quiet_ms, quiet_id) were there before
	 * follow started (or up to --after) and are not shown. */
	bool first;
	uint64_t quiet_ms, quiet_id;
	bool shown_any, oom;
};

static int follow_row(const struct upload_record *r, void *arg)
{
	struct follow *f = arg;
	size_t at;
	if (f->device && strcmp(r->meta.device, f->device) != 0)
		return 0;
	if (seen_has(&f->seen, r->id, &at))
		return 0;
	if (!seen_add(&f->seen, r->id, r->received_unix_ms)) {
		f->oom = true;
		return 1;
	}
	if (r->received_unix_ms > f->newest_ms)
		f->newest_ms = r->received_unix_ms;
	bool before = r->received_unix_ms < f->quiet_ms ||
		      (r->received_unix_ms == f->quiet_ms && r->id <= f->quiet_id);
	if (f->first && before)
		return 0;
	upload_print(f->ctl, r);
	f->shown_any = true;
	return 0;
}

static volatile sig_atomic_t follow_stop;

static void follow_on_signal(int sig)
{
	(void)sig;
	follow_stop = 1;
}

/* Where follow starts: after --after's upload, or after what is there now. */
static int follow_start(struct ctl *ctl, const struct upload_filter *uf, struct follow *f)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	f->quiet_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
	f->quiet_id = UINT64_MAX;
	if (uf->q.has_after) {
		struct upload_record r;
		int rc = store_reader_upload(ctl->reader, uf->q.after_id, &r);
		if (rc) {
			fprintf(stderr, "beaconctl: --after %" PRIu64 ": %s\n", uf->q.after_id,
				store_strerror(rc));
			return EXIT_NOTFOUND;
		}
		f->quiet_ms = r.received_unix_ms;
		f->quiet_id = r.id;
	}
	f->newest_ms = f->quiet_ms;
	f->first = true;
	return 0;
}

static int follow_poll(struct ctl *ctl, struct upload_query *q, struct follow *f)
{
	/* since 0 means no bound, and 1 ms after the epoch is as good. */
	q->since_unix_ms = f->newest_ms > FOLLOW_WINDOW_MS ? f->newest_ms - FOLLOW_WINDOW_MS : 1;
	f->shown_any = false;
	int rc = query_batched(ctl->reader, q, 0, follow_row, f);
	if (f->oom) {
		fprintf(stderr, "beaconctl: out of memory\n");
		return EXIT_FAILED;
	}
	if (rc)
		return store_failure("follow uploads", rc);
	f->first = false;
	seen_prune(&f->seen, f->newest_ms > FOLLOW_WINDOW_MS ? f->newest_ms - FOLLOW_WINDOW_MS : 0);
	if (f->shown_any && fflush(stdout) != 0) {
		if (follow_stop)
			return 0; /* the interrupt cut a write short */
		fprintf(stderr, "beaconctl: write output: %s\n", strerror(errno));
		return EXIT_FAILED;
	}
	return 0;
}

static int cmd_uploads_follow(struct ctl *ctl, int argc, char **argv)
{
	struct upload_filter uf = {0};
	int rc = upload_options(argc, argv, &uf, true);
	if (rc)
		return rc;
	/* Scanned in stored order (by_time) for every device: one device's
	 * id order is not the order uploads commit in. */
	struct upload_query q = {.category = uf.q.category};
	struct follow f = {.ctl = ctl, .device = uf.q.device};
	if ((rc = follow_start(ctl, &uf, &f)))
		return rc;
	struct sigaction sa = {.sa_handler = follow_on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	upload_print_header(ctl);
	rc = follow_poll(ctl, &q, &f);
	if (!rc && fflush(stdout) == 0)
		fprintf(stderr, "beaconctl: following new uploads (interrupt to stop)\n");
	while (!rc && !follow_stop) {
		struct timespec tick = {.tv_nsec = FOLLOW_INTERVAL_MS * 1000000L};
		nanosleep(&tick, NULL);
		if (!follow_stop)
			rc = follow_poll(ctl, &q, &f);
	}
	free(f.seen.v);
	return rc;
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

/* ---- uploads get ---- */

static int copy_failure(uint64_t id, int rc)
{
	if (rc == STORE_ERR_CORRUPT)
		fprintf(stderr,
			"beaconctl: upload %" PRIu64 " fails its checksum: nothing written\n", id);
	else
		fprintf(stderr, "beaconctl: upload %" PRIu64 ": %s\n", id, store_strerror(rc));
	return EXIT_NOTFOUND;
}

/* FILE appears whole or not at all: the bytes go to a temporary file beside
 * it, which is synced and renamed over FILE only once the copy (checksum
 * verified first) succeeded. */
static int get_to_file(struct ctl *ctl, uint64_t id, const char *path)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp) {
		fprintf(stderr, "beaconctl: -o %s: path too long\n", path);
		return EXIT_FAILED;
	}
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "beaconctl: -o %s: create a temporary file beside it: %s\n", path,
			strerror(errno));
		return EXIT_FAILED;
	}
	mode_t mask = umask(0);
	umask(mask);
	int rc = store_reader_copy(ctl->reader, id, fd);
	const char *failed = NULL;
	if (!rc && fchmod(fd, 0666 & ~mask) != 0)
		failed = "chmod";
	else if (!rc && fsync(fd) != 0)
		failed = "fsync";
	int saved = errno;
	if (close(fd) != 0 && !rc && !failed) {
		failed = "close";
		saved = errno;
	}
	if (!rc && !failed && rename(tmp, path) != 0) {
		failed = "rename";
		saved = errno;
	}
	if (!rc && !failed)
		return 0;
	unlink(tmp);
	if (rc)
		return copy_failure(id, rc);
	fprintf(stderr, "beaconctl: -o %s: %s: %s\n", path, failed, strerror(saved));
	return EXIT_FAILED;
}

static int cmd_uploads_get(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
					     {NULL, 0, NULL, 0}};
	const char *out = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		if (c != 'o')
			return EXIT_USAGE;
		out = optarg;
	}
	uint64_t id;
	if (argc - optind != 1 || !parse_u64(argv[optind], &id))
		return EXIT_USAGE;
	if (out && strcmp(out, "-") != 0)
		return get_to_file(ctl, id, out);
	/* An upload is binary: on a terminal it is noise at best, escape
	 * sequences that drive the terminal at worst. */
	if (isatty(STDOUT_FILENO)) {
		fprintf(stderr, "beaconctl: not writing upload %" PRIu64 " to a terminal: use -o "
				"FILE, or redirect standard output\n",
			id);
		return EXIT_REFUSED;
	}
	int rc = store_reader_copy(ctl->reader, id, STDOUT_FILENO);
	return rc ? copy_failure(id, rc) : 0;
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

static int cmd_devices_list(struct ctl *ctl, int argc, char **argv)
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
    {"uploads", "list",
     "[--limit N] [--after ID] [--since T] [--until T] [--category C] [--device D]",
     cmd_uploads_list, SIDE_STORE},
    {"uploads", "follow", "[--after ID] [--category C] [--device D]", cmd_uploads_follow,
     SIDE_STORE},
    {"uploads", "show", "ID", cmd_uploads_show, SIDE_STORE},
    {"uploads", "get", "ID [-o FILE]", cmd_uploads_get, SIDE_STORE},
    {"devices", "list", "[--state unapproved|approved|blocked|refused]", cmd_devices_list,
     SIDE_STORE},
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
	fprintf(out, "usage: beaconctl [--data-dir DIR] [--socket PATH] [--json] COMMAND\n"
		     "       beaconctl --help | --version\n\n"
		     "commands:\n");
	for (const struct command *c = commands; c->noun; c++)
		command_usage(out, "  ", c);
	fprintf(out, "\n'beaconctl --help' describes each command.\n");
	return out == stdout ? 0 : EXIT_USAGE;
}

/* The manual: beaconctl --help. */
static const char manual_text[] =
    "NAME\n"
    "    beaconctl - operate a running beacond and read its store\n"
    "\n"
    "SYNOPSIS\n"
    "    beaconctl [OPTIONS] COMMAND [ARGUMENTS]\n"
    "    beaconctl --help | --version\n"
    "\n"
    "STORE COMMANDS (read DIR/index directly: LMDB read transactions, safe\n"
    "beside a running beacond, and they work while it is stopped)\n"
    "    uploads list [--limit N] [--after ID] [--since T] [--until T]\n"
    "                 [--category C] [--device D]\n"
    "        One page of uploads, in the order they were stored (with --device,\n"
    "        in id order). N defaults to 100; 0 lists every match. When more\n"
    "        remain, standard error gives the command for the next page: the same\n"
    "        filters and --after the last id shown. A page is a range scan from\n"
    "        that cursor, as fast at a million uploads as at ten. T is Unix\n"
    "        seconds or YYYY-MM-DD[THH:MM:SS[Z]], in UTC; both bounds are\n"
    "        included, and a date alone covers its whole day.\n"
    "    uploads follow [--after ID] [--category C] [--device D]\n"
    "        Prints each upload once as it is stored, until interrupted (SIGINT\n"
    "        or SIGTERM: exit 0). Starts after the uploads already stored, or\n"
    "        after upload ID. Polls the index twice a second.\n"
    "    uploads show ID\n"
    "        One upload's record: device, category, name, size, time, checksum.\n"
    "    uploads get ID [-o FILE]\n"
    "        The upload's bytes, checksum verified before the first byte is\n"
    "        written. -o FILE writes a temporary file beside FILE and renames it:\n"
    "        FILE appears whole or not at all. Without -o (or with -o -) the\n"
    "        bytes go to standard output, never to a terminal.\n"
    "    devices list [--state unapproved|approved|blocked|refused]\n"
    "        Devices with first/last seen, state, last result and upload count.\n"
    "        refused: the last attempt recorded for the device was refused (see\n"
    "        README: beacond records revoked and blocked certificates).\n"
    "    devices show DEVICE\n"
    "        One device, with its most recent certificate fingerprints.\n"
    "\n"
    "CONTROL COMMANDS (a running beacond, over its control socket)\n"
    "    status\n"
    "        Uptime, connections, the trust snapshot, the uploads since start\n"
    "        and the store's totals (uploads and bytes in the index).\n"
    "    stats\n"
    "        Every counter, one per line.\n"
    "    reload [all|issuers|crl|tickets|blocklist]\n"
    "        Builds a new trust snapshot; a refused reload keeps the old one and\n"
    "        exits 1 with the reason.\n"
    "    tickets rotate\n"
    "        A new session-ticket key; the previous one is still accepted.\n"
    "    devices approve|block|unblock DEVICE\n"
    "        Changes a device's state. A repeated command changes nothing and says\n"
    "        so (\"already blocked\"). Blocking a name that never connected is\n"
    "        recorded, with a warning on standard error (a block planned ahead,\n"
    "        or a mistyped name). unblock leaves an unapproved device unapproved.\n"
    "\n"
    "OPTIONS (anywhere on the line)\n"
    "    --data-dir DIR   beacond's data directory (store commands)\n"
    "    --socket PATH    beacond's control socket (control commands)\n"
    "    --json           one JSON object per line on standard output\n"
    "    --debug          on standard error: how many index entries uploads list\n"
    "                     or follow read (a page costs its rows, not the store's\n"
    "                     size)\n"
    "    -h, --help       this text\n"
    "    -V, --version    beaconctl's version (the beacond release it belongs to)\n"
    "\n"
    "ENVIRONMENT\n"
    "    BEACOND_DATA_DIR  DIR when --data-dir is not given (else " DEFAULT_DATA_DIR ")\n"
    "    BEACOND_SOCKET    PATH when --socket is not given (else " DEFAULT_SOCKET ")\n"
    "\n"
    "EXIT STATUS\n"
    "    0 ok; 1 not found or failed (a refused reload, a damaged upload); 2 usage,\n"
    "    or an upload refused to a terminal; 3 cannot connect to beacond.\n"
    "\n"
    "EXAMPLES\n"
    "    beaconctl uploads list --since 2026-01-31 --category Inventories --limit 20\n"
    "    beaconctl uploads list --json --after 1234 --limit 1000\n"
    "    beaconctl uploads get 1234 -o inventory.ndi\n"
    "    beaconctl devices list --state refused\n"
    "    beaconctl --socket /run/beacond/control.sock devices block laptop-42\n";

static int manual(void)
{
	fputs(manual_text, stdout);
	return 0;
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

enum globals_result { GLOBALS_OK, GLOBALS_HELP, GLOBALS_VERSION, GLOBALS_BAD };

/* A command option that takes a value: its value is never read as a global
 * option (a device may be called "--json"). */
static bool takes_value(const char *a)
{
	static const char *const with_value[] = {"--device", "--category", "--after", "--limit",
						 "--since",  "--until",    "--state", "-o",
						 "--output"};
	for (size_t i = 0; i < sizeof with_value / sizeof *with_value; i++)
		if (!strcmp(a, with_value[i]))
			return true;
	return false;
}

/* "--name VALUE" or "--name=VALUE" (or the short form); NULL when a is not
 * that option. *i moves past a separate value. */
static const char *global_value(int argc, char **argv, int *i, const char *name, const char *shrt,
				bool *missing)
{
	const char *a = argv[*i];
	if (!a)
		return NULL;
	size_t n = strlen(name);
	if (!strncmp(a, name, n) && a[n] == '=')
		return a + n + 1;
	if (strcmp(a, name) != 0 && strcmp(a, shrt) != 0)
		return NULL;
	if (*i + 1 >= argc) {
		fprintf(stderr, "beaconctl: %s needs a value\n", name);
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

/* Takes the global options out of argv wherever they are; the other words
 * go to words[0..*n), in order, for the command. "--" ends the options:
 * every word after it is the command's. */
static enum globals_result parse_globals(struct ctl *ctl, int argc, char **argv, char **words,
					 int *n)
{
	enum globals_result res = GLOBALS_OK;
	*n = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		bool missing = false;
		if (!strcmp(a, "--")) {
			while (++i < argc)
				words[(*n)++] = argv[i];
			break;
		}
		if (!strcmp(a, "--json") || !strcmp(a, "-j"))
			ctl->json = true;
		else if (!strcmp(a, "--debug"))
			ctl->debug = true;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			res = res == GLOBALS_OK ? GLOBALS_HELP : res;
		else if (!strcmp(a, "--version") || !strcmp(a, "-V"))
			res = res == GLOBALS_OK ? GLOBALS_VERSION : res;
		else if ((v = global_value(argc, argv, &i, "--data-dir", "-D", &missing)))
			ctl->data_dir = v;
		else if ((v = global_value(argc, argv, &i, "--socket", "-S", &missing)))
			ctl->socket_path = v;
		else if (missing)
			return GLOBALS_BAD;
		else if (takes_value(a) && i + 1 < argc) {
			words[(*n)++] = argv[i++];
			words[(*n)++] = argv[i];
		} else
			words[(*n)++] = argv[i];
	}
	return res;
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);
	return v && *v ? v : fallback;
}

static int open_store(struct ctl *ctl)
{
	char err[512];
	int rc = store_reader_open(ctl->data_dir, &ctl->reader, err, sizeof err);
	if (rc)
		fprintf(stderr,
			"beaconctl: %s (data directory %s; set --data-dir or BEACOND_DATA_DIR)\n",
			err, ctl->data_dir);
	return rc ? EXIT_NOTFOUND : 0;
}

/* The command sees words from its verb on (from its noun when it has no
 * verb), getopt style. */
static int run_command(struct ctl *ctl, const struct command *cmd, int nwords, char **words)
{
	if (cmd->side == SIDE_STORE) {
		int rc = open_store(ctl);
		if (rc)
			return rc;
	}
	int skip = cmd->verb ? 1 : 0;
	optind = 1;
	int rc = cmd->run(ctl, nwords - skip, words + skip);
	if (ctl->reader && ctl->debug)
		fprintf(stderr, "beaconctl: debug: %" PRIu64 " index entries read\n",
			store_reader_entries_read(ctl->reader));
	if (ctl->reader)
		store_reader_close(ctl->reader);
	if (rc == EXIT_USAGE)
		command_usage(stderr, "usage: beaconctl ", cmd);
	return rc == EXIT_REFUSED ? EXIT_USAGE : rc;
}

int main(int argc, char **argv)
{
	struct ctl ctl = {.data_dir = env_or("BEACOND_DATA_DIR", DEFAULT_DATA_DIR),
			  .socket_path = env_or("BEACOND_SOCKET", DEFAULT_SOCKET)};
	char **words = calloc((size_t)argc + 1, sizeof *words);
	if (!words) {
		fprintf(stderr, "beaconctl: out of memory\n");
		return EXIT_FAILED;
	}
	int nwords;
	enum globals_result g = parse_globals(&ctl, argc, argv, words, &nwords);
	int rc;
	const struct command *cmd = NULL;
	const char *verb = nwords >= 2 ? words[1] : NULL;
	if (g == GLOBALS_HELP)
		rc = manual();
	else if (g == GLOBALS_VERSION)
		rc = printf("beaconctl %s\n", BEACON_VERSION) < 0 ? EXIT_FAILED : 0;
	else if (g == GLOBALS_BAD || nwords < 1)
		rc = usage(stderr);
	else if (!(cmd = command_find(words[0], verb))) {
		fprintf(stderr, "beaconctl: unknown command '%s%s%s'\n", words[0], verb ? " " : "",
			verb ? verb : "");
		rc = usage(stderr);
	} else {
		rc = run_command(&ctl, cmd, nwords, words);
	}
	free(words);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "beaconctl: write output: %s\n", strerror(errno));
		return EXIT_FAILED;
	}
	return rc;
}
