/* Unit tests for the status page's rendering: counts far apart in size
 * (the integration test cannot make 50,000 handshakes), shares, and names a
 * client chose. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "status_chart.h"

#define NOW 1800000000u

static struct control_history history;
static struct control_stats stats;

static char *render(const struct tls_refusal *refusals, size_t n)
{
	struct control_buf out = {0};
	const struct drain_status drain = {.state = DRAIN_OFF};
	control_status_page_render(&history, &stats, refusals, n, &drain, NOW, &out);
	assert_false(out.oom);
	control_buf_append(&out, "", 1);
	assert_false(out.oom);
	return out.data;
}

/* The width of the since-start bar drawn after `label`'s name. */
static double bar_width(const char *page, const char *label)
{
	char key[64];
	snprintf(key, sizeof key, ">%s</text><rect ", label);
	const char *at = strstr(page, key);
	assert_non_null(at);
	const char *w = strstr(at, "width=\"");
	assert_non_null(w);
	return strtod(w + 7, NULL);
}

static void test_shares(void **state)
{
	(void)state;
	static const struct {
		uint64_t part, all;
		const char *want;
	} cases[] = {
		{0, 0, "0%"},
		{0, 50000, "0%"},
		{5, 50000, "0.01%"},
		{5, 50005, "<0.01%"},
		{1, 3, "33.3%"},
		{1, 12, "8.33%"},
		{49999, 50000, ">99.99%"},
		{9, 10, "90.0%"},
		{50000, 50000, "100%"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char buf[16];
		status_share(buf, sizeof buf, cases[i].part, cases[i].all);
		assert_string_equal(buf, cases[i].want);
	}
}

/* 5 refusals next to 50,000 successes: a bar one sees (it was 0.01 px on
 * the linear chart) and a share that is not "0.0%". */
static void test_small_counts_visible(void **state)
{
	(void)state;
	memset(&history, 0, sizeof history);
	memset(&stats, 0, sizeof stats);
	control_history_add(&history, &stats, NOW - 20);
	stats.handshakes[AUTH_OK] = 50000;
	stats.handshakes[AUTH_REVOKED] = 5;
	control_history_add(&history, &stats, NOW - 10);
	char *page = render(NULL, 0);
	assert_true(bar_width(page, "revoked") > 40.0);
	assert_true(bar_width(page, "succeeded") > bar_width(page, "revoked"));
	assert_true(bar_width(page, "blocked") == 0.0);
	assert_null(strstr(page, "0.0%"));
	assert_non_null(strstr(page, "<0.01%"));
	/* The hour chart has a line for each result seen, none for the rest. */
	assert_non_null(strstr(page, "<title>revoked</title></path>"));
	assert_null(strstr(page, "<title>blocked</title></path>"));
	free(page);
}

static void test_refusal_names_escaped(void **state)
{
	(void)state;
	memset(&history, 0, sizeof history);
	memset(&stats, 0, sizeof stats);
	struct tls_refusal r = {.unix_s = NOW - 5, .result = AUTH_BLOCKED, .has_cert = true};
	snprintf(r.source, sizeof r.source, "192.0.2.7:4242");
	snprintf(r.reason, sizeof r.reason, "device is blocked");
	snprintf(r.device, sizeof r.device, "<img onerror=x>");
	snprintf(r.cert.subject, sizeof r.cert.subject, "CN=<script>alert(1)</script>");
	snprintf(r.cert.issuer, sizeof r.cert.issuer, "CN=\"a\" & 'b'");
	char *page = render(&r, 1);
	assert_null(strstr(page, "<script"));
	assert_null(strstr(page, "<img"));
	assert_non_null(strstr(page, "<td>CN=&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
	assert_non_null(strstr(page, "<td>&lt;img onerror=x&gt;</td>"));
	assert_non_null(strstr(page, "<td>CN=&quot;a&quot; &amp; &#39;b&#39;</td>"));
	assert_non_null(strstr(page, "<td>192.0.2.7:4242</td>"));
	free(page);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shares),
		cmocka_unit_test(test_small_counts_visible),
		cmocka_unit_test(test_refusal_names_escaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
