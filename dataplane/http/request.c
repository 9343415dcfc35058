/*
 * Request head parser (RFC 9112 sections 2 to 6).
 *
 * The parser is stateless: each call scans buf from the start. A head is a
 * few hundred bytes and the connection bounds it, so rescanning costs less
 * than carrying state, and it keeps the function pure. Every byte is checked
 * as it is scanned, so a head that is already wrong is refused at once,
 * before its blank line arrives: a garbage client does not hold a buffer.
 *
 * Strictness is a defence: lines end in CRLF only, no obs-fold, no space
 * before a field's colon, Content-Length and Transfer-Encoding never
 * together. Those are the ambiguities request smuggling lives on.
 */
#include "beacon/http.h"

#include "http_chars.h"

#include <limits.h>
#include <string.h>

/* Steps of the scan: a part was taken, or the buffer ended inside it. Errors
 * are minus the status. */
enum { NEED_MORE = 0, TOOK = 1 };

/* Longer than any registered method: past it the client is not speaking
 * HTTP, and it is answered now rather than at the head limit. */
#define METHOD_MAX 32

/* Used when the caller gives no limits. */
#define DEFAULT_MAX_TARGET 8192
#define DEFAULT_MAX_HEADERS 100

struct cursor {
	const char *p;
	size_t len;
	size_t pos;
};

struct field {
	struct http_slice name;
	struct http_slice value; /* without leading and trailing OWS */
};

/* What the fields said so far; checked together once the head is whole. */
struct head_seen {
	bool content_length;
	bool transfer_encoding;
	unsigned chunked; /* times "chunked" was listed */
	unsigned host;
	bool conn_close;
	bool conn_keep_alive;
};

static bool at_end(const struct cursor *c)
{
	return c->pos == c->len;
}

static unsigned char peek(const struct cursor *c)
{
	return (unsigned char)c->p[c->pos];
}

/* A line ends in CRLF and nothing else: a lone CR or LF is refused so that
 * this parser and any proxy before it cannot disagree on where a line ends. */
static int expect_crlf(struct cursor *c)
{
	if (at_end(c))
		return NEED_MORE;
	if (peek(c) != '\r')
		return -400;
	if (c->pos + 1 == c->len)
		return NEED_MORE;
	if (c->p[c->pos + 1] != '\n')
		return -400;
	c->pos += 2;
	return TOOK;
}

static enum http_method method_from_name(struct http_slice m)
{
	/* Methods are case-sensitive (RFC 9110 section 9.1). */
	static const struct {
		const char *name;
		enum http_method method;
	} known[] = {
		{"GET", HTTP_GET},
		{"HEAD", HTTP_HEAD},
		{"PUT", HTTP_PUT},
		{"POST", HTTP_POST},
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (m.n == strlen(known[i].name) && memcmp(m.p, known[i].name, m.n) == 0)
			return known[i].method;
	return HTTP_OTHER;
}

static int parse_method(struct cursor *c, struct http_request *req)
{
	size_t start = c->pos;
	for (; !at_end(c) && peek(c) != ' '; c->pos++)
		if (!http_is_tchar(peek(c)) || c->pos - start >= METHOD_MAX)
			return -400;
	if (at_end(c))
		return NEED_MORE;
	if (c->pos == start)
		return -400;
	req->method_name = (struct http_slice){c->p + start, c->pos - start};
	req->method = method_from_name(req->method_name);
	c->pos++; /* the single SP */
	return TOOK;
}

/* The target is any run of visible ASCII; its shape is the router's business.
 * Its length is checked byte by byte so an endless target gets 414 at once. */
static int parse_target(struct cursor *c, size_t max_target, struct http_request *req)
{
	size_t start = c->pos;
	for (; !at_end(c) && peek(c) != ' '; c->pos++) {
		unsigned char ch = peek(c);
		if (ch <= 0x20 || ch >= 0x7f)
			return -400;
		if (c->pos - start >= max_target)
			return -414;
	}
	if (at_end(c))
		return NEED_MORE;
	if (c->pos == start)
		return -400;
	req->target = (struct http_slice){c->p + start, c->pos - start};
	c->pos++;
	return TOOK;
}

/* "HTTP/" DIGIT "." DIGIT: anything of another shape is malformed (400);
 * the right shape but a version other than 1.0 or 1.1 is 505. */
static int parse_version(struct cursor *c, struct http_request *req)
{
	static const char shape[] = "HTTP/9.9";
	size_t avail = c->len - c->pos;
	const char *v = c->p + c->pos;
	for (size_t i = 0; i < 8 && i < avail; i++) {
		bool ok = shape[i] == '9' ? (v[i] >= '0' && v[i] <= '9') : v[i] == shape[i];
		if (!ok)
			return -400;
	}
	if (avail < 8)
		return NEED_MORE;
	c->pos += 8;
	int rc = expect_crlf(c);
	if (rc != TOOK)
		return rc;
	if (v[5] != '1' || v[7] > '1')
		return -505;
	req->version_minor = v[7] - '0';
	return TOOK;
}

static int parse_request_line(struct cursor *c, const struct http_limits *lim,
			      struct http_request *req)
{
	int rc = parse_method(c, req);
	if (rc != TOOK)
		return rc;
	rc = parse_target(c, lim->max_target, req);
	if (rc != TOOK)
		return rc;
	return parse_version(c, req);
}

static struct http_slice trim_ows(const char *p, size_t n)
{
	while (n && (p[0] == ' ' || p[0] == '\t')) {
		p++;
		n--;
	}
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	return (struct http_slice){p, n};
}

/* field-line = field-name ":" OWS field-value OWS. A line that starts with
 * whitespace (obs-fold) or has whitespace before the colon fails the token
 * check on the name, which is what RFC 9112 section 5 asks for. */
static int parse_field_line(struct cursor *c, struct field *f)
{
	size_t start = c->pos;
	for (; !at_end(c) && peek(c) != ':'; c->pos++)
		if (!http_is_tchar(peek(c)))
			return -400;
	if (at_end(c))
		return NEED_MORE;
	if (c->pos == start)
		return -400;
	f->name = (struct http_slice){c->p + start, c->pos - start};
	c->pos++;
	size_t vstart = c->pos;
	for (; !at_end(c) && peek(c) != '\r'; c->pos++)
		if (!http_is_value_char(peek(c)))
			return -400;
	if (at_end(c))
		return NEED_MORE;
	f->value = trim_ows(c->p + vstart, c->pos - vstart);
	return expect_crlf(c);
}

/* Takes the next element of a comma-separated list (RFC 9110 section 5.6.1),
 * trimmed. Empty elements are returned too; callers skip them. */
static bool next_list_item(struct http_slice *rest, struct http_slice *item)
{
	if (!rest->p)
		return false;
	const char *comma = memchr(rest->p, ',', rest->n);
	size_t n = comma ? (size_t)(comma - rest->p) : rest->n;
	*item = trim_ows(rest->p, n);
	if (comma) {
		rest->n -= n + 1;
		rest->p = comma + 1;
	} else {
		rest->p = NULL;
		rest->n = 0;
	}
	return true;
}

/* Digits only: no sign, no list ("5, 5"), no spaces inside. */
static int apply_content_length(struct http_slice v, struct http_request *req,
				struct head_seen *seen)
{
	if (v.n == 0)
		return -400;
	int64_t n = 0;
	for (size_t i = 0; i < v.n; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return -400;
		int d = v.p[i] - '0';
		if (n > (INT64_MAX - d) / 10)
			return -400;
		n = n * 10 + d;
	}
	/* Repeats are tolerated only when they agree: two different lengths
	 * mean two parsers could frame the body differently. */
	if (seen->content_length && req->content_length != n)
		return -400;
	seen->content_length = true;
	req->content_length = n;
	return 0;
}

/* Only chunked is supported; any other coding is 501 (RFC 9112 6.1). An
 * empty list leaves chunked uncounted, which finish_head refuses. */
static int apply_transfer_encoding(struct http_slice v, struct head_seen *seen)
{
	struct http_slice item;
	seen->transfer_encoding = true;
	while (next_list_item(&v, &item)) {
		if (item.n == 0)
			continue;
		if (!HTTP_SLICE_IEQ(item, "chunked"))
			return -501;
		seen->chunked++;
	}
	return 0;
}

static int apply_expect(struct http_slice v, struct http_request *req)
{
	if (!HTTP_SLICE_IEQ(v, "100-continue"))
		return -417;
	/* An HTTP/1.0 client cannot understand a 100 response: ignore it
	 * (RFC 9110 section 10.1.1). */
	if (req->version_minor == 1)
		req->expect_continue = true;
	return 0;
}

static void apply_connection(struct http_slice v, struct head_seen *seen)
{
	struct http_slice item;
	while (next_list_item(&v, &item)) {
		if (HTTP_SLICE_IEQ(item, "close"))
			seen->conn_close = true;
		else if (HTTP_SLICE_IEQ(item, "keep-alive"))
			seen->conn_keep_alive = true;
	}
}

/* uri-host [ ":" port ]: reg-name, IPv4 or IP-literal characters. A Host with
 * '/', '@' or spaces in it is not a host (RFC 9112 section 3.2: answer 400). */
static bool host_value_valid(struct http_slice v)
{
	static const char extra[] = "-._~!$&'()*+,;=:[]%";
	for (size_t i = 0; i < v.n; i++) {
		unsigned char ch = (unsigned char)v.p[i];
		bool alnum = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
			     (ch >= 'A' && ch <= 'Z');
		if (!alnum && (ch == 0 || !strchr(extra, ch)))
			return false;
	}
	return true;
}

/* A field that allows one value: the first copy is kept, a second voids
 * it for good (a third must not bring it back). */
enum { SEEN_IMS = 1, SEEN_RANGE = 2, SEEN_IF_RANGE = 4, SEEN_IUS = 8 };

static void keep_single(struct http_conditional *cond, unsigned bit, struct http_slice *slot,
			struct http_slice v, bool void_empty)
{
	if (!(cond->seen & bit)) {
		cond->seen |= bit;
		*slot = v;
		return;
	}
	/* If-Range voided is empty but present: it matches nothing, so a
	 * Range beside it gets the whole file rather than a guessed part. */
	*slot = void_empty ? (struct http_slice){v.p, 0} : (struct http_slice){NULL, 0};
}

/* The fields the download handler weighs; true when f was one of them. */
static bool apply_conditional(const struct field *f, struct http_conditional *cond)
{
	if (HTTP_SLICE_IEQ(f->name, "if-match")) {
		if (cond->if_match_lines < HTTP_INM_LINES)
			cond->if_match[cond->if_match_lines] = f->value;
		cond->if_match_lines++;
	} else if (HTTP_SLICE_IEQ(f->name, "if-unmodified-since"))
		keep_single(cond, SEEN_IUS, &cond->if_unmodified_since, f->value, false);
	else if (HTTP_SLICE_IEQ(f->name, "if-none-match")) {
		if (cond->if_none_match_lines < HTTP_INM_LINES)
			cond->if_none_match[cond->if_none_match_lines] = f->value;
		cond->if_none_match_lines++;
	} else if (HTTP_SLICE_IEQ(f->name, "if-modified-since"))
		keep_single(cond, SEEN_IMS, &cond->if_modified_since, f->value, false);
	else if (HTTP_SLICE_IEQ(f->name, "range"))
		keep_single(cond, SEEN_RANGE, &cond->range, f->value, false);
	else if (HTTP_SLICE_IEQ(f->name, "if-range"))
		keep_single(cond, SEEN_IF_RANGE, &cond->if_range, f->value, true);
	else
		return false;
	return true;
}

static void keep_forwarded(struct http_forwarded *fwd, struct http_slice *slot, struct http_slice v)
{
	if (slot->p)
		fwd->repeated = true;
	else
		*slot = v;
}

/* The fields a child beacon forwards with; true when f was one of them. */
static bool apply_forwarded(const struct field *f, struct http_forwarded *fwd)
{
	if (HTTP_SLICE_IEQ(f->name, "beacon-origin"))
		keep_forwarded(fwd, &fwd->origin, f->value);
	else if (HTTP_SLICE_IEQ(f->name, "beacon-upload-id"))
		keep_forwarded(fwd, &fwd->upload_id, f->value);
	else if (HTTP_SLICE_IEQ(f->name, "beacon-device"))
		keep_forwarded(fwd, &fwd->device, f->value);
	else if (HTTP_SLICE_IEQ(f->name, "beacon-cert-sha256"))
		keep_forwarded(fwd, &fwd->cert_sha256, f->value);
	else
		return false;
	return true;
}

static int apply_field(const struct field *f, struct http_request *req, struct head_seen *seen)
{
	if (apply_conditional(f, &req->cond) || apply_forwarded(f, &req->fwd))
		return 0;
	if (HTTP_SLICE_IEQ(f->name, "content-length"))
		return apply_content_length(f->value, req, seen);
	if (HTTP_SLICE_IEQ(f->name, "transfer-encoding"))
		return apply_transfer_encoding(f->value, seen);
	if (HTTP_SLICE_IEQ(f->name, "expect"))
		return apply_expect(f->value, req);
	if (HTTP_SLICE_IEQ(f->name, "connection")) {
		apply_connection(f->value, seen);
		return 0;
	}
	if (HTTP_SLICE_IEQ(f->name, "host")) {
		if (++seen->host > 1 || !host_value_valid(f->value))
			return -400;
	}
	return 0;
}

/* The checks that need the whole head. */
static int finish_head(struct http_request *req, const struct head_seen *seen)
{
	if (req->version_minor == 1 && seen->host == 0)
		return -400;
	if (seen->transfer_encoding) {
		/* Both framings at once is the classic smuggling request; an
		 * HTTP/1.0 peer cannot send chunked (RFC 9112 section 6.1);
		 * "chunked, chunked" would decode twice; an empty
		 * Transfer-Encoding names no framing at all. */
		if (seen->content_length || req->version_minor == 0 || seen->chunked != 1)
			return -400;
		req->chunked = true;
	}
	if (seen->conn_close)
		req->keep_alive = false;
	else
		req->keep_alive = req->version_minor == 1 || seen->conn_keep_alive;
	return 0;
}

static int parse_fields(struct cursor *c, const struct http_limits *lim, struct http_request *req,
			struct head_seen *seen)
{
	for (;;) {
		if (at_end(c))
			return NEED_MORE;
		if (peek(c) == '\r')
			return expect_crlf(c); /* the blank line */
		if (req->header_count >= lim->max_headers)
			return -431;
		struct field f;
		int rc = parse_field_line(c, &f);
		if (rc != TOOK)
			return rc;
		req->header_count++;
		rc = apply_field(&f, req, seen);
		if (rc < 0)
			return rc;
	}
}

int http_request_parse(const char *buf, size_t len, const struct http_limits *lim,
		       struct http_request *req)
{
	static const struct http_limits defaults = {DEFAULT_MAX_TARGET, DEFAULT_MAX_HEADERS};
	struct cursor c = {buf, len, 0};
	struct head_seen seen = {0};
	if (!lim)
		lim = &defaults;
	memset(req, 0, sizeof *req);
	req->content_length = -1;

	/* A client may send a stray CRLF after a body; one is skipped
	 * (RFC 9112 section 2.2). */
	if (len && buf[0] == '\r') {
		int rc = expect_crlf(&c);
		if (rc != TOOK)
			return rc;
	}
	int rc = parse_request_line(&c, lim, req);
	if (rc != TOOK)
		return rc;
	rc = parse_fields(&c, lim, req, &seen);
	if (rc != TOOK)
		return rc;
	rc = finish_head(req, &seen);
	if (rc < 0)
		return rc;
	/* The return type is int: a head that long is past any sane limit. */
	if (c.pos > INT_MAX)
		return -431;
	return (int)c.pos;
}
