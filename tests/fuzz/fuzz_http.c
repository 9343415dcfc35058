/*
 * libFuzzer target for the HTTP request side. One input exercises all three
 * parsers, and checks what must always hold, not only that nothing crashes:
 *   - a parsed head lies inside the input and its slices inside the head;
 *   - the chunked decoder gives the same bytes and the same verdict whether
 *     the input comes whole or in pieces of sizes drawn from the input;
 *   - a route, when accepted, holds only names http_name_valid accepts.
 *
 * Build: clang -fsanitize=fuzzer,address -Iinclude tests/fuzz/fuzz_http.c \
 *        dataplane/http/\*.c -o fuzz_http
 */
#include "beacon/http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			abort();                                                                   \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool slice_inside(struct http_slice s, const char *buf, size_t len)
{
	return s.p >= buf && s.n <= len && (size_t)(s.p - buf) <= len - s.n;
}

static void check_route(const struct http_slice *target)
{
	struct http_route r;
	int rc = http_route_parse(target, &r);
	CHECK(rc == 0 || rc == -400 || rc == -404);
	if (rc != 0)
		return;
	if (r.kind == ROUTE_UPLOAD) {
		CHECK(memchr(r.category, '\0', sizeof r.category));
		CHECK(http_name_valid(r.category, strlen(r.category)));
		CHECK(http_name_valid(r.name, strlen(r.name)));
		return;
	}
	if (r.kind == ROUTE_MANIFEST)
		return; /* one exact path, nothing decoded */
	/* Every component of a download path is a valid name. */
	CHECK(r.kind == ROUTE_DOWNLOAD);
	const char *p = r.path;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		CHECK(http_name_valid(p, n));
		if (!slash)
			break;
		p = slash + 1;
	}
}

/* The conditional fields of a parsed head, through the download
 * handler's parsers: slices inside the head, a range inside the file, and
 * a date that formats back to itself. */
static void check_conditional(const struct http_conditional *cond, const char *buf, size_t len,
			      unsigned knobs)
{
	const struct http_slice *fields[] = {&cond->if_modified_since, &cond->range,
					     &cond->if_range};
	for (size_t i = 0; i < 3; i++)
		CHECK(!fields[i]->p || slice_inside(*fields[i], buf, len));
	for (unsigned i = 0; i < cond->if_none_match_lines && i < HTTP_INM_LINES; i++) {
		CHECK(slice_inside(cond->if_none_match[i], buf, len));
		http_etag_list_match(cond->if_none_match[i], "\"abc\"");
	}
	uint64_t file_len = knobs * 37u, first = 0, last = 0;
	enum http_range_result rr = http_range_parse(cond->range, file_len, &first, &last);
	if (rr == HTTP_RANGE_PART)
		CHECK(first <= last && last < file_len);
	int64_t t;
	if (http_date_parse(cond->if_modified_since, &t) == 0 && t >= 0 && t < 253402300800) {
		char text[HTTP_DATE_LEN + 1];
		int64_t back;
		http_date_format(t, text);
		struct http_slice s = {text, HTTP_DATE_LEN};
		CHECK(http_date_parse(s, &back) == 0 && back == t);
	}
	http_if_range_match(cond->if_range, "\"abc\"", 0, true);
}

/* Fewer bytes never change a verdict already reached: a prefix that is
 * refused is refused the same way in full, and a prefix of a good head is
 * only "read more". Three prefixes per input keep this cheap. */
static void check_prefixes(const char *buf, size_t len, const struct http_limits *lim, int full,
			   unsigned knobs)
{
	size_t cuts[3] = {len / 2, len ? len - 1 : 0, len ? (knobs * 7u) % len : 0};
	for (int i = 0; i < 3; i++) {
		struct http_request req;
		int rc = http_request_parse(buf, cuts[i], lim, &req);
		if (rc != 0)
			CHECK(rc == full);
		if (full > 0 && cuts[i] < (size_t)full)
			CHECK(rc == 0);
	}
}

static void fuzz_head(const char *buf, size_t len, unsigned knobs)
{
	struct http_limits lim = {.max_target = 16 + knobs % 200, .max_headers = knobs % 20};
	struct http_request req;
	int rc = http_request_parse(buf, len, &lim, &req);
	CHECK(rc >= 0 || rc == -400 || rc == -414 || rc == -417 || rc == -431 || rc == -501 ||
	      rc == -505);
	CHECK(rc <= 0 || (size_t)rc <= len);
	check_prefixes(buf, len, &lim, rc, knobs);
	if (rc <= 0)
		return;
	CHECK(slice_inside(req.method_name, buf, (size_t)rc));
	CHECK(slice_inside(req.target, buf, (size_t)rc));
	CHECK(req.target.n <= lim.max_target);
	CHECK(req.header_count <= lim.max_headers);
	CHECK(!(req.chunked && req.content_length >= 0));
	/* A whole head is whole in any longer buffer, and the same length. */
	struct http_request again;
	CHECK(http_request_parse(buf, (size_t)rc, &lim, &again) == rc);
	check_route(&req.target);
	check_conditional(&req.cond, buf, (size_t)rc, knobs);
}

struct chunk_result {
	long verdict; /* -400, or 1 when done, or 0 when more is needed */
	size_t consumed;
	size_t out_n;
	uint64_t total;
};

/* Decodes buf in pieces whose sizes come from `splits` (0: all at once),
 * appending the data to out. */
static struct chunk_result decode(const char *buf, size_t len, const uint8_t *splits,
				  size_t nsplits, char *out)
{
	struct http_chunked c;
	struct chunk_result res = {0};
	size_t pos = 0, k = 0;
	bool done = false;
	http_chunked_init(&c);
	while (pos < len && !done) {
		size_t piece = nsplits ? (size_t)splits[k++ % nsplits] % 9 + 1 : len;
		size_t end = pos + piece < len ? pos + piece : len;
		while (pos < end && !done) {
			const char *d;
			size_t dn;
			long rc = http_chunked_decode(&c, buf + pos, end - pos, &d, &dn, &done);
			if (rc < 0) {
				res.verdict = rc;
				res.consumed = pos;
				return res;
			}
			CHECK((size_t)rc <= end - pos && (rc > 0 || done));
			CHECK(dn == 0 || (d >= buf + pos && d + dn <= buf + pos + rc));
			if (dn) /* d is NULL when there is no run */
				memcpy(out + res.out_n, d, dn);
			res.out_n += dn;
			pos += (size_t)rc;
		}
	}
	res.verdict = done ? 1 : 0;
	res.consumed = pos;
	res.total = c.total;
	return res;
}

static char out_whole[1 << 20], out_split[1 << 20];

static void fuzz_chunked(const char *buf, size_t len, const uint8_t *splits, size_t nsplits)
{
	if (len > sizeof out_whole)
		return;
	struct chunk_result a = decode(buf, len, NULL, 0, out_whole);
	struct chunk_result b = decode(buf, len, splits, nsplits, out_split);
	CHECK(a.verdict == b.verdict);
	CHECK(a.out_n == b.out_n && memcmp(out_whole, out_split, a.out_n) == 0);
	if (a.verdict >= 0) {
		CHECK(a.consumed == b.consumed);
		CHECK(a.total == a.out_n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The first bytes steer limits and split sizes; the whole input is
	 * still parsed, so the corpus files stay plain requests. */
	unsigned knobs = size ? data[0] : 0;
	const char *buf = (const char *)data;
	fuzz_head(buf, size, knobs);

	/* The head's body, if any, is a chunked body candidate; so is the
	 * whole input. */
	struct http_request req;
	struct http_limits lim = {.max_target = 4096, .max_headers = 100};
	int rc = http_request_parse(buf, size, &lim, &req);
	size_t body = rc > 0 ? (size_t)rc : 0;
	size_t nsplits = size < 8 ? size : 8;
	fuzz_chunked(buf + body, size - body, data, nsplits);
	if (body)
		fuzz_chunked(buf, size, data, nsplits);

	struct http_slice target = {buf, size};
	check_route(&target);
	return 0;
}
