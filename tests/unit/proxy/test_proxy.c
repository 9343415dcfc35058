/*
 * The PROXY protocol header parser (dataplane/net/proxy.c): valid v1 and
 * v2 headers, every prefix of them (incomplete, never done nor malformed
 * early), and hostile ones (bad signature, version, command, family,
 * lengths, TLVs, over-long lines).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "beacon/proxy.h"

#define ANY (PROXY_ACCEPT_V1 | PROXY_ACCEPT_V2)

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* A v2 header: signature, ver_cmd, fam, then `payload` bytes. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *payload, size_t n)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(n >> 8);
	out[15] = (uint8_t)n;
	if (n)
		memcpy(out + 16, payload, n);
	return 16 + n;
}

static const uint8_t v4_payload[12] = {198, 18, 5, 5, 10, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb};

static void check_v4_source(const struct proxy_header *h, const char *addr, uint16_t port)
{
	const struct sockaddr_in *a = (const struct sockaddr_in *)&h->source;
	char text[INET_ADDRSTRLEN];
	assert_false(h->local);
	assert_int_equal(a->sin_family, AF_INET);
	assert_non_null(inet_ntop(AF_INET, &a->sin_addr, text, sizeof text));
	assert_string_equal(text, addr);
	assert_int_equal(ntohs(a->sin_port), port);
}

/* Every strict prefix of a valid header is incomplete. */
static void check_prefixes(const uint8_t *h, size_t len, unsigned accept)
{
	struct proxy_header out;
	for (size_t i = 0; i < len; i++)
		assert_int_equal(proxy_parse(h, i, accept, &out), PROXY_INCOMPLETE);
}

static void v2_tcp4(void **state)
{
	(void)state;
	uint8_t h[64], buf[80];
	size_t n = v2(h, 0x21, 0x11, v4_payload, sizeof v4_payload);
	memcpy(buf, h, n);
	memcpy(buf + n, "\x16\x03\x01", 3); /* a ClientHello follows */
	struct proxy_header out;
	assert_int_equal(proxy_parse(buf, n + 3, PROXY_ACCEPT_V2, &out), PROXY_DONE);
	assert_int_equal(out.len, 28);
	assert_int_equal(out.version, 2);
	check_v4_source(&out, "198.18.5.5", 12345);
	check_prefixes(h, n, PROXY_ACCEPT_V2);
	check_prefixes(h, n, ANY);
}

static void v2_tcp6_with_tlvs(void **state)
{
	(void)state;
	uint8_t p[36 + 4 + 7] = {0};
	p[0] = 0x20, p[1] = 0x01, p[2] = 0x0d, p[3] = 0xb8, p[15] = 0x07;
	p[32] = 0x01, p[33] = 0x02;
	/* NOOP TLV of 1 byte, then an AUTHORITY TLV of 4 */
	memcpy(p + 36, "\x04\x00\x01\x00\x02\x00\x04host", 11);
	uint8_t h[128];
	size_t n = v2(h, 0x21, 0x21, p, sizeof p);
	struct proxy_header out;
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_DONE);
	assert_int_equal(out.len, n);
	const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&out.source;
	char text[INET6_ADDRSTRLEN];
	assert_int_equal(a->sin6_family, AF_INET6);
	inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
	assert_string_equal(text, "2001:db8::7");
	assert_int_equal(ntohs(a->sin6_port), 0x0102);
	check_prefixes(h, n, PROXY_ACCEPT_V2);
}

static void v2_local_keeps_own_address(void **state)
{
	(void)state;
	uint8_t h[64];
	size_t n = v2(h, 0x20, 0x00, NULL, 0);
	struct proxy_header out;
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_DONE);
	assert_true(out.local);
	assert_int_equal(out.len, 16);
	/* LOCAL with addresses: skipped, still local */
	n = v2(h, 0x20, 0x11, v4_payload, sizeof v4_payload);
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_DONE);
	assert_true(out.local);
	assert_int_equal(out.len, 28);
}

static void v2_hostile(void **state)
{
	(void)state;
	uint8_t h[2048];
	struct proxy_header out;
	size_t n = v2(h, 0x11, 0x11, v4_payload, sizeof v4_payload); /* version 1 */
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	assert_non_null(out.reason);
	n = v2(h, 0x22, 0x11, v4_payload, sizeof v4_payload); /* command 2 */
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	n = v2(h, 0x21, 0x12, v4_payload, sizeof v4_payload); /* DGRAM */
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	n = v2(h, 0x21, 0x31, v4_payload, sizeof v4_payload); /* AF_UNIX */
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	n = v2(h, 0x21, 0x11, v4_payload, 8); /* shorter than its addresses */
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	n = v2(h, 0x21, 0x21, v4_payload, sizeof v4_payload); /* IPv6 needs 36 */
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	uint8_t p[16] = {0};
	memcpy(p, v4_payload, 12);
	memcpy(p + 12, "\x04\x00\x09\x00", 4); /* a TLV past the length */
	n = v2(h, 0x21, 0x11, p, sizeof p);
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	/* A length over the bound is refused at once, not waited for. */
	n = v2(h, 0x21, 0x11, v4_payload, sizeof v4_payload);
	h[14] = 0xff, h[15] = 0xff;
	assert_int_equal(proxy_parse(h, 16, PROXY_ACCEPT_V2, &out), PROXY_MALFORMED);
	/* A broken signature, and a plain TLS ClientHello */
	n = v2(h, 0x21, 0x11, v4_payload, sizeof v4_payload);
	h[7] = 'X';
	assert_int_equal(proxy_parse(h, n, ANY, &out), PROXY_MALFORMED);
	assert_int_equal(proxy_parse((const uint8_t *)"\x16\x03\x01\x02\x00", 5, ANY, &out),
			 PROXY_MALFORMED);
	/* v2 where only v1 is taken */
	n = v2(h, 0x21, 0x11, v4_payload, sizeof v4_payload);
	assert_int_equal(proxy_parse(h, n, PROXY_ACCEPT_V1, &out), PROXY_MALFORMED);
}

static enum proxy_status v1(const char *line, unsigned accept, struct proxy_header *out)
{
	return proxy_parse((const uint8_t *)line, strlen(line), accept, out);
}

static void v1_valid(void **state)
{
	(void)state;
	struct proxy_header out;
	const char *l = "PROXY TCP4 198.18.5.5 10.0.0.1 56324 443\r\n";
	assert_int_equal(v1(l, PROXY_ACCEPT_V1, &out), PROXY_DONE);
	assert_int_equal(out.len, strlen(l));
	assert_int_equal(out.version, 1);
	check_v4_source(&out, "198.18.5.5", 56324);
	check_prefixes((const uint8_t *)l, strlen(l), PROXY_ACCEPT_V1);
	check_prefixes((const uint8_t *)l, strlen(l), ANY);

	char buf[128];
	snprintf(buf, sizeof buf, "%s\x16\x03\x01", l); /* TLS follows */
	assert_int_equal(v1(buf, ANY, &out), PROXY_DONE);
	assert_int_equal(out.len, strlen(l));

	assert_int_equal(v1("PROXY TCP6 2001:db8::7 ::1 65535 443\r\n", ANY, &out), PROXY_DONE);
	assert_int_equal(((struct sockaddr_in6 *)&out.source)->sin6_family, AF_INET6);
	assert_int_equal(v1("PROXY UNKNOWN\r\n", PROXY_ACCEPT_V1, &out), PROXY_DONE);
	assert_true(out.local);
	assert_int_equal(v1("PROXY UNKNOWN ffff::1 ::1 1 2\r\n", PROXY_ACCEPT_V1, &out),
			 PROXY_DONE);
	assert_true(out.local);
	/* The longest line the spec allows: 107 bytes */
	const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(strlen(longest), 104);
	assert_int_equal(v1(longest, PROXY_ACCEPT_V1, &out), PROXY_DONE);
}

static void v1_hostile(void **state)
{
	(void)state;
	struct proxy_header out;
	static const char *bad[] = {
		"PROXY TCP4 198.18.5.5 10.0.0.1 56324 443\n",	  /* no CR */
		"PROXY TCP4 198.18.5.5 10.0.0.1 56324\r\n",	  /* a field short */
		"PROXY TCP4 198.18.5.5 10.0.0.1 56324 443 1\r\n", /* a field long */
		"PROXY TCP4  198.18.5.5 10.0.0.1 56324 443\r\n",  /* two spaces */
		"PROXY TCP4 198.18.5.5 10.0.0.1 65536 443\r\n",	  /* port range */
		"PROXY TCP4 198.18.5.5 10.0.0.1 0443 443\r\n",	  /* leading zero */
		"PROXY TCP4 198.18.5.5 10.0.0.1 -1 443\r\n",
		"PROXY TCP4 ::1 10.0.0.1 1 443\r\n", /* family mismatch */
		"PROXY TCP6 198.18.5.5 ::1 1 443\r\n",
		"PROXY TCP4 198.18.5.256 10.0.0.1 1 443\r\n",
		"PROXY UDP4 198.18.5.5 10.0.0.1 1 443\r\n",
		"PROXY \r\n",
		"PROXY TCP4 198.18.5.5 10.0.0.1 1 443 \r\n",
		"proxy TCP4 198.18.5.5 10.0.0.1 1 443\r\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(v1(bad[i], PROXY_ACCEPT_V1, &out), PROXY_MALFORMED);
		assert_non_null(out.reason);
	}
	/* No CRLF within 107 bytes: refused once 107 arrived, not waited on. */
	char line[300];
	memset(line, 'A', sizeof line);
	memcpy(line, "PROXY TCP4 ", 11);
	assert_int_equal(proxy_parse((uint8_t *)line, 106, PROXY_ACCEPT_V1, &out),
			 PROXY_INCOMPLETE);
	assert_int_equal(proxy_parse((uint8_t *)line, 107, PROXY_ACCEPT_V1, &out), PROXY_MALFORMED);
	assert_int_equal(proxy_parse((uint8_t *)line, sizeof line, PROXY_ACCEPT_V1, &out),
			 PROXY_MALFORMED);
	/* v1 where only v2 is taken */
	assert_int_equal(v1("PROXY TCP4 198.18.5.5 10.0.0.1 1 443\r\n", PROXY_ACCEPT_V2, &out),
			 PROXY_MALFORMED);
	assert_int_equal(proxy_parse((const uint8_t *)"", 0, ANY, &out), PROXY_INCOMPLETE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(v2_tcp4),
		cmocka_unit_test(v2_tcp6_with_tlvs),
		cmocka_unit_test(v2_local_keeps_own_address),
		cmocka_unit_test(v2_hostile),
		cmocka_unit_test(v1_valid),
		cmocka_unit_test(v1_hostile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
