/*
 * Validators and ranges of conditional and partial GET (RFC 9110 sections
 * 5.6.7, 8.8, 13.1 and 14): pure functions over the field values the
 * request parser kept, so the unit tests and the fuzz target reach them
 * without a connection.
 *
 * Every function here answers bad syntax with "no" (no date, no match, no
 * range), which is what the RFC asks of a recipient: a bad conditional is
 * ignored and the whole file is sent, never a wrong part or a wrong 304.
 */
#include "beacon/http.h"

#include "http_chars.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- HTTP-date ---- */

static const char day_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

struct scan {
	const char *p;
	size_t n, i;
};

static bool scan_lit(struct scan *s, const char *lit)
{
	size_t n = strlen(lit);
	if (s->n - s->i < n || memcmp(s->p + s->i, lit, n) != 0)
		return false;
	s->i += n;
	return true;
}

/* Exactly `digits` digits (asctime's day may lead with a space instead). */
static bool scan_num(struct scan *s, unsigned digits, bool space_pad, int *out)
{
	if (s->n - s->i < digits)
		return false;
	int v = 0;
	for (unsigned k = 0; k < digits; k++) {
		char ch = s->p[s->i + k];
		if (k == 0 && space_pad && ch == ' ' && digits > 1)
			continue;
		if (ch < '0' || ch > '9')
			return false;
		v = v * 10 + (ch - '0');
	}
	s->i += digits;
	*out = v;
	return true;
}

static bool scan_month(struct scan *s, int *mon)
{
	for (int m = 0; m < 12; m++)
		if (scan_lit(s, month_names[m])) {
			*mon = m;
			return true;
		}
	return false;
}

/* "HH:MM:SS" */
static bool scan_time(struct scan *s, struct tm *tm)
{
	return scan_num(s, 2, false, &tm->tm_hour) && scan_lit(s, ":") &&
	       scan_num(s, 2, false, &tm->tm_min) && scan_lit(s, ":") &&
	       scan_num(s, 2, false, &tm->tm_sec);
}

/* The day name up to its comma or space: Sun..Sat, or Sunday..Saturday
 * for RFC 850. Its value is not checked against the date (RFC 9110 5.6.7
 * lets a recipient ignore it). */
static bool scan_day_name(struct scan *s, bool long_form)
{
	static const char *const long_names[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
						  "Thursday", "Friday", "Saturday"};
	for (int d = 0; d < 7; d++)
		if (scan_lit(s, long_form ? long_names[d] : day_names[d]))
			return true;
	return false;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
static bool parse_imf(struct scan s, struct tm *tm)
{
	return scan_day_name(&s, false) && scan_lit(&s, ", ") &&
	       scan_num(&s, 2, false, &tm->tm_mday) && scan_lit(&s, " ") &&
	       scan_month(&s, &tm->tm_mon) && scan_lit(&s, " ") &&
	       scan_num(&s, 4, false, &tm->tm_year) && scan_lit(&s, " ") && scan_time(&s, tm) &&
	       scan_lit(&s, " GMT") && s.i == s.n;
}

/* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; a two-digit year more than
 * 50 years ahead is taken as the past century (RFC 9110 5.6.7). */
static bool parse_rfc850(struct scan s, struct tm *tm)
{
	if (!(scan_day_name(&s, true) && scan_lit(&s, ", ") &&
	      scan_num(&s, 2, false, &tm->tm_mday) && scan_lit(&s, "-") &&
	      scan_month(&s, &tm->tm_mon) && scan_lit(&s, "-") &&
	      scan_num(&s, 2, false, &tm->tm_year) && scan_lit(&s, " ") && scan_time(&s, tm) &&
	      scan_lit(&s, " GMT") && s.i == s.n))
		return false;
	time_t now = time(NULL);
	struct tm now_tm;
	gmtime_r(&now, &now_tm);
	int year = 1900 + now_tm.tm_year;
	int full = year - year % 100 + tm->tm_year;
	if (full > year + 50)
		full -= 100;
	tm->tm_year = full;
	return true;
}

/* asctime: "Sun Nov  6 08:49:37 1994" */
static bool parse_asctime(struct scan s, struct tm *tm)
{
	return scan_day_name(&s, false) && scan_lit(&s, " ") && scan_month(&s, &tm->tm_mon) &&
	       scan_lit(&s, " ") && scan_num(&s, 2, true, &tm->tm_mday) && scan_lit(&s, " ") &&
	       scan_time(&s, tm) && scan_lit(&s, " ") && scan_num(&s, 4, false, &tm->tm_year) &&
	       s.i == s.n;
}

static bool tm_in_range(const struct tm *tm)
{
	static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	/* 60: a leap second, which timegm folds into the next minute */
	return tm->tm_year >= 1900 && tm->tm_mday >= 1 && tm->tm_mday <= mdays[tm->tm_mon] &&
	       tm->tm_hour <= 23 && tm->tm_min <= 59 && tm->tm_sec <= 60;
}

int http_date_parse(struct http_slice v, int64_t *out)
{
	struct tm tm = {0};
	struct scan s = {v.p, v.p ? v.n : 0, 0};
	if (!v.p || !(parse_imf(s, &tm) || parse_rfc850(s, &tm) || parse_asctime(s, &tm)))
		return -1;
	if (!tm_in_range(&tm))
		return -1;
	tm.tm_year -= 1900;
	*out = (int64_t)timegm(&tm);
	return 0;
}

void http_date_format(int64_t t, char out[HTTP_DATE_LEN + 1])
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
		tt = 0; /* no four-digit year: the epoch rather than a bad field */
		gmtime_r(&tt, &tm);
	}
	char wide[64]; /* the compiler cannot see the fields' bounds */
	snprintf(wide, sizeof wide, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[tm.tm_wday],
		 tm.tm_mday, month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
	memcpy(out, wide, HTTP_DATE_LEN);
	out[HTTP_DATE_LEN] = '\0';
}

/* ---- entity-tags ---- */

struct etag {
	bool weak;
	struct http_slice opaque; /* between the quotes */
};

/* entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E /
 * obs-text. A comma may sit inside the quotes, so a list is scanned, never
 * split on commas. */
static bool scan_etag(struct scan *s, struct etag *e)
{
	e->weak = scan_lit(s, "W/");
	if (!scan_lit(s, "\""))
		return false;
	size_t start = s->i;
	for (; s->i < s->n && s->p[s->i] != '"'; s->i++) {
		unsigned char ch = (unsigned char)s->p[s->i];
		if (ch < 0x21 || ch == 0x7f)
			return false;
	}
	if (s->i == s->n)
		return false;
	e->opaque = (struct http_slice){s->p + start, s->i - start};
	s->i++;
	return true;
}

static bool etag_from_text(const char *text, struct etag *e)
{
	struct scan s = {text, strlen(text), 0};
	return scan_etag(&s, e) && s.i == s.n;
}

static bool opaque_equal(struct etag a, struct etag b)
{
	return a.opaque.n == b.opaque.n && memcmp(a.opaque.p, b.opaque.p, a.opaque.n) == 0;
}

static void skip_list_separators(struct scan *s)
{
	while (s->i < s->n && (s->p[s->i] == ' ' || s->p[s->i] == '\t' || s->p[s->i] == ','))
		s->i++;
}

static bool etag_list_match(struct http_slice list, const char *etag, bool strong)
{
	if (!list.p)
		return false;
	struct scan s = {list.p, list.n, 0};
	skip_list_separators(&s);
	if (scan_lit(&s, "*")) {
		skip_list_separators(&s);
		return s.i == s.n; /* "*" stands alone: any version, even one without a tag */
	}
	struct etag ours;
	if (!etag_from_text(etag, &ours))
		return false;
	while (s.i < s.n) {
		struct etag theirs;
		if (!scan_etag(&s, &theirs))
			return false;
		if (opaque_equal(theirs, ours) && (!strong || (!theirs.weak && !ours.weak)))
			return true;
		size_t before = s.i;
		skip_list_separators(&s);
		if (s.i == before && s.i < s.n)
			return false; /* two tags with no comma between */
	}
	return false;
}

bool http_etag_list_match(struct http_slice list, const char *etag)
{
	return etag_list_match(list, etag, false);
}

bool http_etag_list_match_strong(struct http_slice list, const char *etag)
{
	return etag_list_match(list, etag, true);
}

bool http_if_range_match(struct http_slice v, const char *etag, int64_t last_modified,
			 bool date_strong)
{
	if (!v.p || v.n == 0)
		return false;
	if (v.p[0] == '"' || (v.n >= 2 && v.p[0] == 'W' && v.p[1] == '/')) {
		struct etag ours, theirs;
		struct scan s = {v.p, v.n, 0};
		return etag_from_text(etag, &ours) && scan_etag(&s, &theirs) && s.i == s.n &&
		       !ours.weak && !theirs.weak && opaque_equal(theirs, ours);
	}
	int64_t t;
	return date_strong && http_date_parse(v, &t) == 0 && t == last_modified;
}

/* ---- Range ---- */

/* 1*DIGIT, saturating: a position past any file is still a position (past
 * the end: unsatisfiable, or clipped), not a syntax error. */
static bool scan_pos(struct scan *s, uint64_t *out)
{
	size_t start = s->i;
	uint64_t v = 0;
	for (; s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9'; s->i++) {
		unsigned d = (unsigned)(s->p[s->i] - '0');
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*out = v;
	return s->i > start;
}

enum http_range_result http_range_parse(struct http_slice v, uint64_t len, uint64_t *first,
					uint64_t *last)
{
	if (!v.p || v.n < 6 || !http_ieq_n(v.p, "bytes=", 6))
		return HTTP_RANGE_NONE;
	struct scan s = {v.p, v.n, 6};
	while (s.i < s.n && (s.p[s.i] == ' ' || s.p[s.i] == '\t'))
		s.i++;
	if (memchr(s.p + s.i, ',', s.n - s.i))
		return HTTP_RANGE_NONE; /* several ranges: the whole file, 200 */
	uint64_t a = 0, b = 0;
	bool suffix = scan_lit(&s, "-");
	if (suffix) {
		if (!scan_pos(&s, &b))
			return HTTP_RANGE_NONE;
	} else if (!scan_pos(&s, &a) || !scan_lit(&s, "-")) {
		return HTTP_RANGE_NONE;
	}
	bool has_last = !suffix && scan_pos(&s, &b);
	while (s.i < s.n && (s.p[s.i] == ' ' || s.p[s.i] == '\t'))
		s.i++;
	if (s.i != s.n || (has_last && b < a))
		return HTTP_RANGE_NONE; /* last before first: invalid, ignored */
	if (suffix) {
		if (b == 0)
			return HTTP_RANGE_UNSATISFIABLE;
		if (len == 0)
			return HTTP_RANGE_NONE; /* no byte to name: the (empty) whole */
		*first = b >= len ? 0 : len - b;
		*last = len - 1;
		return HTTP_RANGE_PART;
	}
	if (a >= len)
		return HTTP_RANGE_UNSATISFIABLE;
	*first = a;
	*last = has_last && b < len ? b : len - 1;
	return HTTP_RANGE_PART;
}
