/*
 * beaconctl's uploads commands, on the store's read side. It opens
 * DATA/index with LMDB read transactions only, so it is safe beside a
 * running beacond and never blocks its writer. Every listing is a page: an
 * LMDB range scan from a cursor (--after ID), so a page costs the same at a
 * million uploads as at ten:
 *
 *   beaconctl uploads list [--limit N] [--after ID] [--since T] [--until T]
 *                          [--category C] [--device D]
 *   beaconctl uploads follow [--after ID] [--category C] [--device D]
 *   beaconctl uploads show ID
 *   beaconctl uploads get ID [-o FILE]
 */
#include "beaconctl.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A page when --limit is not given: enough for a screen, never a million. */
#define DEFAULT_LIMIT 100
#define FOLLOW_INTERVAL_MS 500
/* follow looks this far back on every poll, so an upload committed in the
 * same millisecond as one already shown, or after a small clock step back,
 * is still shown (once). */
#define FOLLOW_WINDOW_MS 2000

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
	       ",\"crc32\":\"%08x\",\"cert_sha256\":\"%s\"",
	       r->length, r->received_unix_ms, when, r->worker, r->segment, r->offset, r->crc32,
	       sha);
	/* null: stored while dedupe_window was off, so never hashed */
	hex_text(sha, r->sha256, 32);
	printf(",\"sha256\":%s%s%s}\n", r->has_sha256 ? "\"" : "", r->has_sha256 ? sha : "null",
	       r->has_sha256 ? "\"" : "");
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
	struct tm tm = {
		.tm_year = digits(s, 4), .tm_mon = digits(s + 5, 2), .tm_mday = digits(s + 8, 2)};
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

static const struct option upload_opts[] = {{"device", required_argument, NULL, 'd'},
					    {"category", required_argument, NULL, 'c'},
					    {"after", required_argument, NULL, 'a'},
					    {"limit", required_argument, NULL, 'n'},
					    {"since", required_argument, NULL, 's'},
					    {"until", required_argument, NULL, 'u'},
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
		fprintf(stderr,
			"beaconctl: --after %" PRIu64 ": no such upload in the store yet "
			"(--after takes the id of the last upload of a page)\n",
			f->q.after_id);
		return EXIT_NOTFOUND;
	}
	return store_failure("list uploads", rc);
}

static void after_gone_note(const struct upload_filter *f)
{
	if (f->q.after_gone)
		fprintf(stderr,
			"beaconctl: upload %" PRIu64 " has been removed by retention: "
			"listing from the oldest upload\n",
			f->q.after_id);
}

int cmd_uploads_list(struct ctl *ctl, int argc, char **argv)
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
	} * v;
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

int cmd_uploads_follow(struct ctl *ctl, int argc, char **argv)
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

int cmd_uploads_show(struct ctl *ctl, int argc, char **argv)
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
	char when[32], sha[65], dev[STORE_DEVICE_MAX], cat[STORE_CATEGORY_MAX],
		name[STORE_NAME_MAX];
	time_text(when, sizeof when, r.received_unix_ms);
	hex_text(sha, r.meta.cert_sha256, 32);
	text_safe(dev, sizeof dev, r.meta.device);
	text_safe(cat, sizeof cat, r.meta.category);
	text_safe(name, sizeof name, r.meta.name);
	char body_sha[65] = "(not hashed: stored with dedupe_window = 0)";
	if (r.has_sha256)
		hex_text(body_sha, r.sha256, 32);
	printf("id:          %" PRIu64 "\n"
	       "device:      %s\n"
	       "category:    %s\n"
	       "name:        %s\n"
	       "bytes:       %" PRIu64 "\n"
	       "received:    %s (%" PRIu64 " ms)\n"
	       "certificate: sha256 %s\n"
	       "crc32:       %08x\n"
	       "sha256:      %s\n"
	       "spool:       w%u/%016" PRIx64 ".seg at %" PRIu64 "\n",
	       r.id, dev, cat, name, r.length, when, r.received_unix_ms, sha, r.crc32, body_sha,
	       r.worker, r.segment, r.offset);
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

int cmd_uploads_get(struct ctl *ctl, int argc, char **argv)
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
		fprintf(stderr,
			"beaconctl: not writing upload %" PRIu64 " to a terminal: use -o "
			"FILE, or redirect standard output\n",
			id);
		return EXIT_REFUSED;
	}
	int rc = store_reader_copy(ctl->reader, id, STDOUT_FILENO);
	return rc ? copy_failure(id, rc) : 0;
}
