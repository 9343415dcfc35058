/*
 * The download handler's field parsers (http/conditional.c): HTTP-dates in
 * their three forms, entity-tag lists, If-Range, and byte ranges. Bad
 * syntax must come out as "no": the field is ignored, never misread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "beacon/http.h"

static struct http_slice S(const char *s) {
	return (struct http_slice){s, strlen(s)};
}

static void
test_dates(void **state)
{
	int64_t t;
	/* RFC 9110 5.6.7's example, in each form */
	assert_int_equal(http_date_parse(S("Sun, 06 Nov 1994 08:49:37 GMT"), &t), 0);
	assert_int_equal(t, 784111777);
	assert_int_equal(http_date_parse(S("Sunday, 06-Nov-94 08:49:37 GMT"), &t), 0);
	assert_int_equal(t, 784111777);
	assert_int_equal(http_date_parse(S("Sun Nov  6 08:49:37 1994"), &t), 0);
	assert_int_equal(t, 784111777);
	const char *bad[] = {"",
			     "Sun, 06 Nov 1994 08:49:37 UTC",
			     "Sun, 6 Nov 1994 08:49:37 GMT",
			     "Sun, 06 Nov 1994 08:49:37 GMT ",
			     "Sun, 32 Nov 1994 08:49:37 GMT",
			     "Sun, 06 Foo 1994 08:49:37 GMT",
			     "Sun, 06 Nov 1994 24:49:37 GMT",
			     "784111777",
			     "Sun, 06 Nov 1994 08:49"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(http_date_parse(S(bad[i]), &t), -1);
	assert_int_equal(http_date_parse((struct http_slice){NULL, 0}, &t), -1);
	char out[HTTP_DATE_LEN + 1];
	http_date_format(784111777, out);
	assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
	(void)state;
}

static void test_etag_lists(void **state)
{
	const char *ours = "\"1a-2b-3c\"";
	assert_true(http_etag_list_match(S("\"1a-2b-3c\""), ours));
	assert_true(http_etag_list_match(S("W/\"1a-2b-3c\""), ours)); /* weak comparison */
	assert_true(http_etag_list_match(S("\"x\", \"y,z\" ,\"1a-2b-3c\""), ours));
	assert_true(http_etag_list_match(S("*"), ours));
	assert_true(http_etag_list_match(S("*"), "")); /* a version without a tag yet */
	assert_false(http_etag_list_match(S("\"\""), ""));
	assert_true(http_etag_list_match(S("\"1a-2b-3c\""), "W/\"1a-2b-3c\""));
	assert_false(http_etag_list_match(S("\"1a-2b-3\""), ours));
	assert_false(http_etag_list_match(S("1a-2b-3c"), ours));	  /* unquoted */
	assert_false(http_etag_list_match(S("\"x\"\"1a-2b-3c\""), ours)); /* no comma */
	assert_false(http_etag_list_match(S("\"x\", junk, \"1a-2b-3c\""), ours));
	assert_false(http_etag_list_match(S("*, \"x\""), ours));
	assert_false(http_etag_list_match(S(""), ours));
	(void)state;
}

static void test_etag_lists_strong(void **state)
{
	const char *ours = "\"1a-2b-3c\"";
	assert_true(http_etag_list_match_strong(S("\"1a-2b-3c\""), ours));
	assert_true(http_etag_list_match_strong(S("\"x\", \"1a-2b-3c\""), ours));
	assert_true(http_etag_list_match_strong(S("*"), ours));
	assert_true(http_etag_list_match_strong(S("*"), "")); /* exists, no tag yet */
	assert_false(http_etag_list_match_strong(S("W/\"1a-2b-3c\""), ours)); /* theirs weak */
	assert_false(http_etag_list_match_strong(S("\"1a-2b-3c\""), "W/\"1a-2b-3c\"")); /* ours */
	assert_false(http_etag_list_match_strong(S("\"1a-2b-3c\""), "")); /* no tag to match */
	assert_false(http_etag_list_match_strong(S("\"x\""), ours));
	(void)state;
}

static void test_if_range(void **state)
{
	const char *strong = "\"v1\"", *weak = "W/\"v1\"";
	assert_true(http_if_range_match(S("\"v1\""), strong, 0, true));
	assert_false(http_if_range_match(S("W/\"v1\""), strong, 0, true));
	assert_false(http_if_range_match(S("\"v1\""), weak, 0, true));
	assert_false(http_if_range_match(S("\"v2\""), strong, 0, true));
	assert_true(
		http_if_range_match(S("Sun, 06 Nov 1994 08:49:37 GMT"), strong, 784111777, true));
	assert_false(
		http_if_range_match(S("Sun, 06 Nov 1994 08:49:37 GMT"), strong, 784111777, false));
	assert_false(
		http_if_range_match(S("Sun, 06 Nov 1994 08:49:38 GMT"), strong, 784111777, true));
	assert_false(http_if_range_match(S(""), strong, 0, true));
	(void)state;
}

struct range_case {
	const char *v;
	uint64_t len;
	enum http_range_result want;
	uint64_t first, last;
};

static void test_ranges(void **state)
{
	const struct range_case cases[] = {
		{"bytes=0-9", 100, HTTP_RANGE_PART, 0, 9},
		{"bytes=90-", 100, HTTP_RANGE_PART, 90, 99},
		{"bytes=-10", 100, HTTP_RANGE_PART, 90, 99},
		{"bytes=-1000", 100, HTTP_RANGE_PART, 0, 99},
		{"bytes=50-5000", 100, HTTP_RANGE_PART, 50, 99},
		{"Bytes=0-0", 100, HTTP_RANGE_PART, 0, 0},
		{"bytes=99999999999999999999999-", 100, HTTP_RANGE_UNSATISFIABLE, 0, 0},
		{"bytes=0-99999999999999999999999", 100, HTTP_RANGE_PART, 0, 99},
		{"bytes=100-", 100, HTTP_RANGE_UNSATISFIABLE, 0, 0},
		{"bytes=-0", 100, HTTP_RANGE_UNSATISFIABLE, 0, 0},
		{"bytes=0-", 0, HTTP_RANGE_UNSATISFIABLE, 0, 0},
		{"bytes=-5", 0, HTTP_RANGE_NONE, 0, 0},
		{"bytes=0-1,5-6", 100, HTTP_RANGE_NONE, 0, 0},
		{"bytes=9-1", 100, HTTP_RANGE_NONE, 0, 0},
		{"bytes=a-", 100, HTTP_RANGE_NONE, 0, 0},
		{"bytes=-", 100, HTTP_RANGE_NONE, 0, 0},
		{"bytes=", 100, HTTP_RANGE_NONE, 0, 0},
		{"bytes=1-2x", 100, HTTP_RANGE_NONE, 0, 0},
		{"bytes=+1-2", 100, HTTP_RANGE_NONE, 0, 0},
		{"items=0-9", 100, HTTP_RANGE_NONE, 0, 0},
	};
	int failed = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t first = 0, last = 0;
		enum http_range_result got =
			http_range_parse(S(cases[i].v), cases[i].len, &first, &last);
		bool ok = got == cases[i].want &&
			  (got != HTTP_RANGE_PART ||
			   (first == cases[i].first && last == cases[i].last));
		if (!ok) {
			print_error("\"%s\" of %llu: got %d %llu-%llu\n", cases[i].v,
				    (unsigned long long)cases[i].len, got,
				    (unsigned long long)first, (unsigned long long)last);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
	(void)state;
}

/* The parser keeps the fields, voiding a singleton sent twice. */
static void test_request_fields(void **state)
{
	const char head[] = "GET /ManageSoftDL/a HTTP/1.1\r\nHost: x\r\n"
			    "If-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n"
			    "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
			    "Range: bytes=0-1\r\nRange: bytes=2-3\r\nRange: bytes=4-5\r\n"
			    "If-Range: \"a\"\r\nIf-Range: \"a\"\r\n"
			    "If-Match: \"m\", \"n\"\r\nIf-Match: *\r\n"
			    "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
			    "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:38 GMT\r\n\r\n";
	struct http_request req;
	assert_true(http_request_parse(head, sizeof head - 1, NULL, &req) > 0);
	assert_int_equal(req.cond.if_none_match_lines, 2);
	assert_int_equal(req.cond.if_none_match[1].n, 3);
	assert_int_equal(req.cond.if_modified_since.n, 29);
	assert_null(req.cond.range.p); /* twice: ignored, and a third does not revive it */
	assert_non_null(req.cond.if_range.p);
	assert_int_equal(req.cond.if_range.n, 0); /* present, matches nothing */
	assert_int_equal(req.cond.if_match_lines, 2);
	assert_int_equal(req.cond.if_match[0].n, 8);
	assert_null(req.cond.if_unmodified_since.p); /* twice: ignored */
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dates),	       cmocka_unit_test(test_etag_lists),
		cmocka_unit_test(test_if_range),       cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_request_fields), cmocka_unit_test(test_etag_lists_strong),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
