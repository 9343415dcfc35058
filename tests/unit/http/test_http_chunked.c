/*
 * Chunked decoder: good bodies whole, one byte at a time, split at every
 * boundary and at random; each framing error; the bounds on lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "beacon/http.h"

struct decoded {
	char out[65536];
	size_t out_n;
	size_t consumed;
	bool done;
	long error; /* 0 or the negative return */
};

/* Feeds in[0..len) as pieces of the sizes next_piece() picks, calling the
 * decoder until each piece is used up, done or refused. */
static void feed(const char *in, size_t len, size_t (*next_piece)(size_t left), struct decoded *d)
{
	struct http_chunked c;
	http_chunked_init(&c);
	memset(d, 0, sizeof *d);
	size_t pos = 0;
	while (pos < len && !d->done) {
		size_t end = pos + next_piece(len - pos);
		while (pos < end && !d->done) {
			const char *data;
			size_t data_len;
			long rc = http_chunked_decode(&c, in + pos, end - pos, &data, &data_len,
						      &d->done);
			if (rc < 0) {
				d->error = rc;
				return;
			}
			if (data_len) {
				/* The run lies inside what was consumed. */
				assert_true(data >= in + pos && data + data_len <= in + pos + rc);
				assert_true(d->out_n + data_len <= sizeof d->out);
				memcpy(d->out + d->out_n, data, data_len);
				d->out_n += data_len;
			}
			assert_true(rc > 0 || d->done);
			pos += (size_t)rc;
		}
		d->consumed = pos;
	}
	d->consumed = pos;
}

static size_t whole(size_t left)
{
	return left;
}

static size_t one_byte(size_t left)
{
	return 1;
}

static size_t random_piece(size_t left)
{
	size_t n = (size_t)rand() % 17 + 1;
	return n < left ? n : left;
}

static size_t split_at;
static size_t split_first;

/* Two pieces: [0, split_at) then the rest. */
static size_t split_once(size_t left)
{
	if (split_first) {
		split_first = 0;
		return split_at < left ? split_at : left;
	}
	return left;
}

static void assert_decodes(const char *in, const char *want, size_t (*next)(size_t))
{
	struct decoded d;
	feed(in, strlen(in), next, &d);
	assert_int_equal(d.error, 0);
	assert_true(d.done);
	assert_int_equal(d.consumed, strlen(in));
	assert_int_equal(d.out_n, strlen(want));
	assert_memory_equal(d.out, want, d.out_n);
}

static void assert_refused(const char *in)
{
	struct decoded d;
	feed(in, strlen(in), whole, &d);
	if (d.error != -400)
		print_error("accepted \"%s\"\n", in);
	assert_int_equal(d.error, -400);
	/* Split into bytes, it is refused just the same. */
	feed(in, strlen(in), one_byte, &d);
	assert_int_equal(d.error, -400);
}

static void test_simple(void **state)
{
	assert_decodes("5\r\nhello\r\n0\r\n\r\n", "hello", whole);
	assert_decodes("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", whole);
	assert_decodes("0\r\n\r\n", "", whole);
	assert_decodes("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij",
		       whole);
	assert_decodes("000000000000003\r\nabc\r\n0\r\n\r\n", "abc", whole); /* 15 digits */
}

static void test_extensions_and_trailers(void **state)
{
	assert_decodes("5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello", whole);
	assert_decodes("5 ;a=\"q;\\\" x\"\t;b\r\nhello\r\n0\r\n\r\n", "hello", whole);
	assert_decodes("3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-B: \t y\r\n\r\n", "abc", whole);
}

/* Bytes after the last chunk belong to the next request: not consumed. */
static void test_stops_at_end(void **state)
{
	static const char in[] = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
	struct http_chunked c;
	const char *data;
	size_t data_len;
	bool done;
	http_chunked_init(&c);
	long rc = http_chunked_decode(&c, in, sizeof in - 1, &data, &data_len, &done);
	assert_int_equal(rc, 3 + 3); /* "3\r\n" and the run, then returns */
	assert_int_equal(data_len, 3);
	assert_memory_equal(data, "abc", 3);
	assert_false(done);
	rc = http_chunked_decode(&c, in + 6, sizeof in - 1 - 6, &data, &data_len, &done);
	assert_int_equal(rc, strlen("\r\n0\r\n\r\n"));
	assert_true(done);
	assert_null(data);
	assert_int_equal(c.total, 3);
	/* Done stays done and takes nothing. */
	rc = http_chunked_decode(&c, "x", 1, &data, &data_len, &done);
	assert_int_equal(rc, 0);
	assert_true(done);
}

static const char complex_body[] = "1\r\na\r\n"
				   "1F;ext=\"quoted value\"\r\n0123456789abcdefghijklmnopqrstu\r\n"
				   "2 ; x\r\n\r\n\r\n" /* data that looks like framing */
				   "10\r\n0\r\n\r\n0\r\n\r\n0\r\n\r\n0\r\n"
				   "0\r\nTrailer-A: x\r\nB: y\r\n\r\n";
static const char complex_data[] =
	"a0123456789abcdefghijklmnopqrstu\r\n0\r\n\r\n0\r\n\r\n0\r\n\r\n0";

static void test_byte_by_byte(void **state)
{
	assert_decodes(complex_body, complex_data, one_byte);
	assert_decodes("5\r\nhello\r\n0\r\n\r\n", "hello", one_byte);
}

static void test_every_split_point(void **state)
{
	for (split_at = 1; split_at < sizeof complex_body - 1; split_at++) {
		split_first = 1;
		assert_decodes(complex_body, complex_data, split_once);
	}
}

static void test_random_splits(void **state)
{
	/* A larger body: many chunks of varied sizes with extensions. */
	static char body[40000], want[20000];
	size_t bn = 0, wn = 0;
	srand(12345);
	while (wn < sizeof want - 600) {
		size_t n = (size_t)rand() % 500 + 1;
		bn += (size_t)snprintf(body + bn, sizeof body - bn, "%zx%s\r\n", n,
				       rand() % 3 ? "" : ";e=1");
		for (size_t i = 0; i < n; i++) {
			char ch = (char)(rand() % 256);
			body[bn++] = ch;
			want[wn++] = ch;
		}
		body[bn++] = '\r';
		body[bn++] = '\n';
	}
	bn += (size_t)snprintf(body + bn, sizeof body - bn, "0\r\nT: v\r\n\r\n");
	for (int round = 0; round < 200; round++) {
		struct decoded d;
		feed(body, bn, round ? random_piece : one_byte, &d);
		assert_int_equal(d.error, 0);
		assert_true(d.done);
		assert_int_equal(d.consumed, bn);
		assert_int_equal(d.out_n, wn);
		assert_memory_equal(d.out, want, wn);
	}
}

static void test_framing_errors(void **state)
{
	assert_refused("\r\n"); /* no size */
	assert_refused(";ext\r\n");
	assert_refused("g\r\n");
	assert_refused("-1\r\n");
	assert_refused(" 5\r\nhello\r\n");
	assert_refused("5\nhello\r\n0\r\n\r\n"); /* bare LF */
	assert_refused("5\rhello");		 /* bare CR */
	assert_refused("5\r\nhelloX\r\n");	 /* no CRLF after data */
	assert_refused("5\r\nhelloX\n0\r\n\r\n");
	assert_refused("5\r\nhello\n0\r\n\r\n");
	assert_refused("5\r\nhello\rX");
	assert_refused("5 \r\nhello\r\n"); /* BWS without extension */
	assert_refused("5 x\r\n");
	assert_refused("5;a\x01\r\n"); /* control byte in extension */
	assert_refused("5;a\n");
	assert_refused("0\r\n X: folded\r\n\r\n"); /* obs-fold in trailers */
	assert_refused("0\r\nX: a\x7f\r\n\r\n");
	assert_refused("0\r\nX: a\n\r\n");
	assert_refused("0\r\n\r\r");
	assert_refused("0\r\n\n");
}

static void test_size_limits(void **state)
{
	/* 16 hex digits are refused even when the value is small: no size
	 * can overflow. */
	assert_refused("0000000000000005\r\nhello\r\n0\r\n\r\n");
	assert_refused("10000000000000000\r\n");

	struct decoded d;
	/* 15 digits is the most: the size line passes. */
	feed("fffffffffffffff\r\nab", strlen("fffffffffffffff\r\nab"), whole, &d);
	assert_int_equal(d.error, 0);
	assert_int_equal(d.out_n, 2);

	static char line[8192];
	/* A size line past 4096 bytes (a long extension) is refused. */
	memset(line, 'x', sizeof line);
	memcpy(line, "5;", 2);
	line[4094] = '\r';
	line[4095] = '\n';
	feed(line, 4096, one_byte, &d);
	assert_int_equal(d.error, 0);
	line[4094] = 'x';
	line[4095] = 'x';
	line[4096] = '\r';
	feed(line, 4097, whole, &d);
	assert_int_equal(d.error, -400);
	/* So is a trailer line past 4096 bytes. */
	memcpy(line, "0\r\nX:", 5);
	memset(line + 5, 'y', 5000);
	feed(line, 5005, whole, &d);
	assert_int_equal(d.error, -400);
}

/* Trailers are dropped, so their total is bounded too. */
static void test_trailer_total_limit(void **state)
{
	static char body[32768];
	size_t n = (size_t)snprintf(body, sizeof body, "0\r\n");
	while (n < 20000)
		n += (size_t)snprintf(body + n, sizeof body - n, "X-Pad: %0100d\r\n", 0);
	n += (size_t)snprintf(body + n, sizeof body - n, "\r\n");
	struct decoded d;
	feed(body, n, whole, &d);
	assert_int_equal(d.error, -400);
}

/* After an error the decoder keeps refusing: framing is lost. */
static void test_error_is_sticky(void **state)
{
	struct http_chunked c;
	const char *data;
	size_t data_len;
	bool done;
	http_chunked_init(&c);
	assert_int_equal(http_chunked_decode(&c, "z", 1, &data, &data_len, &done), -400);
	assert_int_equal(http_chunked_decode(&c, "5\r\n", 3, &data, &data_len, &done), -400);
	assert_false(done);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple),
		cmocka_unit_test(test_extensions_and_trailers),
		cmocka_unit_test(test_stops_at_end),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_every_split_point),
		cmocka_unit_test(test_random_splits),
		cmocka_unit_test(test_framing_errors),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_trailer_total_limit),
		cmocka_unit_test(test_error_is_sticky),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
