/*
 * Request-head parser: every method, every status it can answer, the limits,
 * keep-alive defaults, and a head fed one byte at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "beacon/http.h"

static const struct http_limits limits = {.max_target = 64, .max_headers = 8};

static int parse(const char *s, struct http_request *req)
{
	return http_request_parse(s, strlen(s), &limits, req);
}

static void assert_slice(struct http_slice s, const char *want)
{
	assert_int_equal(s.n, strlen(want));
	assert_memory_equal(s.p, want, s.n);
}

/* Table-driven checks print the request that failed, not just the numbers. */
struct case_ {
	const char *req;
	int want;
};

static void check_cases(const struct case_ *cases, size_t n)
{
	int failed = 0;
	for (size_t i = 0; i < n; i++) {
		struct http_request req;
		int rc = parse(cases[i].req, &req);
		if (rc != cases[i].want) {
			print_error("case %zu: got %d, want %d for \"%s\"\n", i, rc, cases[i].want,
				    cases[i].req);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

#define CHECK_CASES(t) check_cases((t), sizeof(t) / sizeof((t)[0]))

static void test_get(void **state)
{
	const char *s = "GET /ManageSoftDL/policy.npl HTTP/1.1\r\nHost: beacon\r\n\r\n";
	struct http_request req;
	assert_int_equal(parse(s, &req), (int)strlen(s));
	assert_int_equal(req.method, HTTP_GET);
	assert_slice(req.method_name, "GET");
	assert_slice(req.target, "/ManageSoftDL/policy.npl");
	assert_int_equal(req.version_minor, 1);
	assert_int_equal(req.content_length, -1);
	assert_false(req.chunked);
	assert_false(req.expect_continue);
	assert_true(req.keep_alive);
	assert_int_equal(req.header_count, 1);
}

static void test_head(void **state)
{
	const char *s = "HEAD /ManageSoftDL/a HTTP/1.0\r\n\r\n";
	struct http_request req;
	assert_int_equal(parse(s, &req), (int)strlen(s));
	assert_int_equal(req.method, HTTP_HEAD);
	assert_int_equal(req.version_minor, 0);
	assert_int_equal(req.header_count, 0);
}

/* The body after the head is not the parser's: the return stops at the
 * blank line. */
static void test_put_with_body(void **state)
{
	const char *head = "PUT /ManageSoftRL/Inventories/a.ndi HTTP/1.1\r\n"
			   "Host: b\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
	char s[256];
	snprintf(s, sizeof s, "%shello", head);
	struct http_request req;
	assert_int_equal(parse(s, &req), (int)strlen(head));
	assert_int_equal(req.method, HTTP_PUT);
	assert_int_equal(req.content_length, 5);
	assert_true(req.expect_continue);
	assert_int_equal(req.header_count, 3);
}

static void test_post_chunked(void **state)
{
	const char *s = "POST /ManageSoftRL/Logs/x.log HTTP/1.1\r\nHost: b\r\n"
			"Transfer-Encoding:  Chunked \r\n\r\n";
	struct http_request req;
	assert_int_equal(parse(s, &req), (int)strlen(s));
	assert_int_equal(req.method, HTTP_POST);
	assert_true(req.chunked);
	assert_int_equal(req.content_length, -1);
}

/* Unknown but well-formed methods parse so the caller can answer 405;
 * methods are case-sensitive, so "get" is one of them. */
static void test_other_methods(void **state)
{
	struct http_request req;
	assert_true(parse("DELETE /x HTTP/1.1\r\nHost: b\r\n\r\n", &req) > 0);
	assert_int_equal(req.method, HTTP_OTHER);
	assert_slice(req.method_name, "DELETE");
	assert_true(parse("get /x HTTP/1.1\r\nHost: b\r\n\r\n", &req) > 0);
	assert_int_equal(req.method, HTTP_OTHER);
	assert_true(parse("OPTIONS * HTTP/1.1\r\nHost: b\r\n\r\n", &req) > 0);
	assert_int_equal(req.method, HTTP_OTHER);
}

static void test_request_line_errors(void **state)
{
	static const struct case_ cases[] = {
		{"GET  /x HTTP/1.1\r\nHost: b\r\n\r\n", -400}, /* two spaces */
		{"GET /x  HTTP/1.1\r\nHost: b\r\n\r\n", -400},
		{" GET /x HTTP/1.1\r\nHost: b\r\n\r\n", -400}, /* no method */
		{"G(T /x HTTP/1.1\r\nHost: b\r\n\r\n", -400},  /* not a token */
		{"GET /x\r\nHost: b\r\n\r\n", -400},	       /* HTTP/0.9 */
		{"GET /x HTTP/1.1 \r\nHost: b\r\n\r\n", -400},
		{"GET /x http/1.1\r\nHost: b\r\n\r\n", -400},
		{"GET /x HTTP/1.10\r\nHost: b\r\n\r\n", -400},
		{"GET /x HTTP/11\r\nHost: b\r\n\r\n", -400},
		{"GET /\x80 HTTP/1.1\r\nHost: b\r\n\r\n", -400}, /* non-ASCII target */
		{"GET /\x01 HTTP/1.1\r\nHost: b\r\n\r\n", -400},
		{"GET /x HTTP/2.0\r\nHost: b\r\n\r\n", -505},
		{"GET /x HTTP/1.2\r\nHost: b\r\n\r\n", -505},
		{"GET /x HTTP/0.9\r\nHost: b\r\n\r\n", -505},
		{"GET /x HTTP/1.1\nHost: b\r\n\r\n", -400}, /* bare LF */
		{"GET /x HTTP/1.1\rHost: b\r\n\r\n", -400}, /* bare CR */
		{"\n\nGET /x HTTP/1.1\r\nHost: b\r\n\r\n", -400},
		{"\r\n\r\nGET /x HTTP/1.1\r\nHost: b\r\n\r\n", -400}, /* one CRLF only */
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA /x HTTP/1.1\r\n\r\n", -400},
	};
	CHECK_CASES(cases);
}

static void test_field_errors(void **state)
{
	static const struct case_ cases[] = {
		{"GET /x HTTP/1.1\r\nHost : b\r\n\r\n", -400},		    /* space before colon */
		{"GET /x HTTP/1.1\r\nHost: b\r\n X: folded\r\n\r\n", -400}, /* obs-fold */
		{"GET /x HTTP/1.1\r\n\tHost: b\r\n\r\n", -400},
		{"GET /x HTTP/1.1\r\n: b\r\nHost: b\r\n\r\n", -400}, /* empty name */
		{"GET /x HTTP/1.1\r\nHost b\r\n\r\n", -400},	     /* no colon */
		{"GET /x HTTP/1.1\r\nHost: b\nX: y\r\n\r\n", -400},  /* bare LF */
		{"GET /x HTTP/1.1\r\nHost: b\rX: y\r\n\r\n", -400},  /* bare CR */
		{"GET /x HTTP/1.1\r\nHost: b\r\nX: a\x01z\r\n\r\n", -400},
		{"GET /x HTTP/1.1\r\nHost: b\r\nX: a\x7fz\r\n\r\n", -400},
		{"GET /x HTTP/1.1\r\nHost: b\r\n\r\r\n", -400},
		{"GET /x HTTP/1.1\r\n\r\n", -400}, /* 1.1 needs Host */
		{"GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -400},
		{"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", -400},
		{"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n", -400},
		{"GET /x HTTP/1.1\r\nHost: u@a\r\n\r\n", -400},
	};
	CHECK_CASES(cases);
}

/* Heads that must parse whole: the return is the full length. */
static void test_field_values_accepted(void **state)
{
	static const char *const heads[] = {
		"GET /x HTTP/1.0\r\n\r\n",	    /* 1.0: Host optional */
		"GET /x HTTP/1.1\r\nHost:\r\n\r\n", /* empty authority */
		"GET /x HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n",
		"GET /x HTTP/1.1\r\nHOST: b\r\nX-A: a\tb \xc3\xa9\r\n\r\n", /* HTAB, obs-text */
		"\r\nGET /x HTTP/1.0\r\n\r\n",				    /* one stray CRLF */
		"GET http://b/x?q=1#f HTTP/1.1\r\nHost: b\r\n\r\n", /* the router judges it */
	};
	for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
		struct http_request req;
		int rc = parse(heads[i], &req);
		if (rc != (int)strlen(heads[i]))
			print_error("case %zu: got %d for \"%s\"\n", i, rc, heads[i]);
		assert_int_equal(rc, (int)strlen(heads[i]));
	}
}

static void test_content_length(void **state)
{
	static const struct case_ cases[] = {
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: +5\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: -1\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 5 5\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 5,5\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 0x5\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length:\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		 -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 9223372036854775808\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 99999999999999999999999\r\n\r\n",
		 -400},
	};
	CHECK_CASES(cases);

	struct http_request req;
	assert_true(
		parse("PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 9223372036854775807\r\n\r\n",
		      &req) > 0);
	assert_int_equal(req.content_length, INT64_MAX);
	/* Repeats that agree are one length. */
	assert_true(parse("PUT /x HTTP/1.1\r\nHost: b\r\ncontent-length: 7\r\nContent-Length: "
			  "007\r\n\r\n",
			  &req) > 0);
	assert_int_equal(req.content_length, 7);
	assert_true(parse("PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n", &req) > 0);
	assert_int_equal(req.content_length, 0);
}

static void test_transfer_encoding(void **state)
{
	static const struct case_ cases[] = {
		{"PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: gzip\r\n\r\n", -501},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -501},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", -501},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n"
		 "Transfer-Encoding: chunked\r\n\r\n",
		 -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding:\r\n\r\n", -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n"
		 "Content-Length: 5\r\n\r\n",
		 -400},
		{"PUT /x HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n"
		 "Transfer-Encoding: chunked\r\n\r\n",
		 -400},
		{"PUT /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -400},
	};
	CHECK_CASES(cases);
	struct http_request req;
	assert_true(parse("PUT /x HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
			  &req) > 0);
	assert_true(req.chunked);
}

static void test_expect(void **state)
{
	struct http_request req;
	assert_int_equal(
		parse("PUT /x HTTP/1.1\r\nHost: b\r\nExpect: 100-continue-x\r\n\r\n", &req), -417);
	assert_int_equal(parse("PUT /x HTTP/1.1\r\nHost: b\r\nExpect: 200-ok\r\n\r\n", &req), -417);
	assert_true(parse("PUT /x HTTP/1.1\r\nHost: b\r\nExpect:  100-Continue\r\n\r\n", &req) > 0);
	assert_true(req.expect_continue);
	/* An HTTP/1.0 client cannot read a 100: the field is ignored. */
	assert_true(parse("PUT /x HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &req) > 0);
	assert_false(req.expect_continue);
}

static bool keep_alive_of(const char *s)
{
	struct http_request req;
	assert_true(parse(s, &req) > 0);
	return req.keep_alive;
}

static void test_keep_alive(void **state)
{
	assert_true(keep_alive_of("GET /x HTTP/1.1\r\nHost: b\r\n\r\n"));
	assert_false(keep_alive_of("GET /x HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"));
	assert_false(
		keep_alive_of("GET /x HTTP/1.1\r\nHost: b\r\nConnection: Upgrade, CLOSE\r\n\r\n"));
	assert_false(keep_alive_of("GET /x HTTP/1.0\r\n\r\n"));
	assert_true(keep_alive_of("GET /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
	assert_true(keep_alive_of("GET /x HTTP/1.0\r\nConnection: te,keep-alive\r\n\r\n"));
	/* close wins over keep-alive. */
	assert_false(keep_alive_of("GET /x HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
	assert_true(keep_alive_of("GET /x HTTP/1.1\r\nHost: b\r\nConnection: closed\r\n\r\n"));
}

static void test_target_too_long(void **state)
{
	char s[256];
	struct http_request req;
	/* 64 bytes exactly is allowed. */
	snprintf(s, sizeof s, "GET /%063d HTTP/1.1\r\nHost: b\r\n\r\n", 0);
	assert_true(parse(s, &req) > 0);
	assert_int_equal(req.target.n, 64);
	snprintf(s, sizeof s, "GET /%064d HTTP/1.1\r\nHost: b\r\n\r\n", 0);
	assert_int_equal(parse(s, &req), -414);
	/* Refused as soon as the target is too long, head or not. */
	snprintf(s, sizeof s, "GET /%064d", 0);
	assert_int_equal(parse(s, &req), -414);
}

static void test_too_many_headers(void **state)
{
	char s[512] = "GET /x HTTP/1.1\r\nHost: b\r\n";
	struct http_request req;
	for (int i = 1; i < 8; i++) {
		char line[32];
		snprintf(line, sizeof line, "X-%d: v\r\n", i);
		strcat(s, line);
	}
	char full[600];
	snprintf(full, sizeof full, "%s\r\n", s);
	assert_true(parse(full, &req) > 0);
	assert_int_equal(req.header_count, 8);
	strcat(s, "X-9: v\r\n\r\n");
	assert_int_equal(parse(s, &req), -431);
}

/* Each prefix of a good head needs more bytes; the whole head parses. */
static void assert_prefixes_incomplete(const char *s)
{
	struct http_request req;
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++) {
		int rc = http_request_parse(s, i, &limits, &req);
		if (rc != 0)
			print_error("prefix %zu of \"%s\": %d\n", i, s, rc);
		assert_int_equal(rc, 0);
	}
	assert_int_equal(http_request_parse(s, n, &limits, &req), (int)n);
}

static void test_byte_by_byte(void **state)
{
	assert_prefixes_incomplete("GET /ManageSoftDL/a HTTP/1.1\r\nHost: b\r\n\r\n");
	assert_prefixes_incomplete("\r\nPUT /ManageSoftRL/Inv/x.ndi HTTP/1.1\r\nHost: b:1\r\n"
				   "Content-Length: 12\r\nExpect: 100-continue\r\n"
				   "Connection: keep-alive\r\nX-Empty:\r\n\r\n");
	assert_prefixes_incomplete("POST /ManageSoftRL/Logs/l HTTP/1.1\r\nHost: b\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n");
}

/* Bytes that cannot start a good head are refused before the blank line. */
static void test_early_errors(void **state)
{
	static const struct case_ cases[] = {
		{"\x16\x03\x01\x02", -400}, /* a TLS ClientHello on the plain port */
		{"G\x01", -400},
		{"GET /x HTTX", -400},
		{"GET /x HTTP/1.1\r\nHo st", -400},
		{"GET /x HTTP/1.1\r\n Host", -400},
		{"GET /x HTTP/1.1\n", -400},
		{"GET /x HTTP/3.0\r\n", -505},
		{"PUT /x HTTP/1.1\r\nContent-Length: x\r\n", -400},
	};
	CHECK_CASES(cases);
	/* A NUL inside a field value, before the line ends. */
	static const char nul[] = "GET /x HTTP/1.1\r\nHost: b\0";
	struct http_request req;
	assert_int_equal(http_request_parse(nul, sizeof nul - 1, &limits, &req), -400);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get),
		cmocka_unit_test(test_head),
		cmocka_unit_test(test_put_with_body),
		cmocka_unit_test(test_post_chunked),
		cmocka_unit_test(test_other_methods),
		cmocka_unit_test(test_request_line_errors),
		cmocka_unit_test(test_field_errors),
		cmocka_unit_test(test_field_values_accepted),
		cmocka_unit_test(test_content_length),
		cmocka_unit_test(test_transfer_encoding),
		cmocka_unit_test(test_expect),
		cmocka_unit_test(test_keep_alive),
		cmocka_unit_test(test_target_too_long),
		cmocka_unit_test(test_too_many_headers),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_early_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
