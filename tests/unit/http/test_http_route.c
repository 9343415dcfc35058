/*
 * Router, name check and reason phrases. The refusals here are the ways a
 * client could try to leave the upload or download tree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "beacon/http.h"

static int route(const char *target, struct http_route *r)
{
	struct http_slice t = {target, strlen(target)};
	return http_route_parse(&t, r);
}

struct case_ {
	const char *target;
	int want;
};

static void check_cases(const struct case_ *cases, size_t n)
{
	int failed = 0;
	for (size_t i = 0; i < n; i++) {
		struct http_route r;
		int rc = route(cases[i].target, &r);
		if (rc != cases[i].want) {
			print_error("got %d, want %d for \"%s\"\n", rc, cases[i].want,
				    cases[i].target);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

#define CHECK_CASES(t) check_cases((t), sizeof(t) / sizeof((t)[0]))

static void assert_upload(const char *target, const char *category, const char *name)
{
	struct http_route r;
	assert_int_equal(route(target, &r), 0);
	assert_int_equal(r.kind, ROUTE_UPLOAD);
	assert_string_equal(r.category, category);
	assert_string_equal(r.name, name);
}

static void assert_download(const char *target, const char *path)
{
	struct http_route r;
	assert_int_equal(route(target, &r), 0);
	assert_int_equal(r.kind, ROUTE_DOWNLOAD);
	assert_string_equal(r.path, path);
}

/* Exactly /ManageSoftDL-index (any case, a query ignored); nothing below
 * it or beside it. */
static void test_manifest_route(void **state)
{
	static const char *const exact[] = {"/ManageSoftDL-index", "/managesoftdl-INDEX",
					    "/ManageSoftDL-index?x=1"};
	for (size_t i = 0; i < sizeof exact / sizeof *exact; i++) {
		struct http_route r;
		assert_int_equal(route(exact[i], &r), 0);
		assert_int_equal(r.kind, ROUTE_MANIFEST);
	}
	static const struct case_ not_it[] = {
		{"/ManageSoftDL-index/x", -404},
		{"/ManageSoftDL-indexx", -404},
		{"/ManageSoftDL-inde", -404},
	};
	CHECK_CASES(not_it);
	/* A file of that name in the download tree is a download. */
	assert_download("/ManageSoftDL/ManageSoftDL-index", "ManageSoftDL-index");
}

static void test_upload_routes(void **state)
{
	assert_upload("/ManageSoftRL/Inventories/host1.ndi", "Inventories", "host1.ndi");
	/* Windows agents vary the case of the tree name. */
	assert_upload("/managesoftrl/inventories/x.ndi", "inventories", "x.ndi");
	assert_upload("/MANAGESOFTRL/Usage/x.mmi", "Usage", "x.mmi");
	assert_upload("/ManageSoftRL/Logs/my%20file%2elog", "Logs", "my file.log");
	assert_upload("/ManageSoftRL/Logs/caf%C3%A9.log", "Logs", "caf\xc3\xa9.log");
	assert_upload("/ManageSoftRL/a_b-c.1/x", "a_b-c.1", "x");
	assert_upload("/ManageSoftRL/In%76/x", "Inv", "x");
	/* Query ignored. */
	assert_upload("/ManageSoftRL/Inv/x.ndi?size=12&a=/../..", "Inv", "x.ndi");
	/* Absolute form: scheme and authority dropped. */
	assert_upload("http://beacon.example:8443/ManageSoftRL/Inv/x.ndi", "Inv", "x.ndi");
	assert_upload("HTTPS://beacon/ManageSoftRL/Inv/x.ndi", "Inv", "x.ndi");
}

static void test_download_routes(void **state)
{
	assert_download("/ManageSoftDL/policy.npl", "policy.npl");
	assert_download("/managesoftdl/Policies/Machine/a%20b.npl", "Policies/Machine/a b.npl");
	assert_download("/ManageSoftDL/a/b/c?x=1", "a/b/c");
	assert_download("https://h:1/ManageSoftDL/p", "p");
}

static void test_not_found(void **state)
{
	static const struct case_ cases[] = {
		{"/", -404},
		{"*", -404},
		{"", -404},
		{"beacon:443", -404},
		{"/index.html", -404},
		{"/ManageSoftRL", -404},
		{"/ManageSoftRL/", -404},
		{"/ManageSoftRL/Inv", -404},
		{"/ManageSoftRL/Inv/", -404},
		{"/ManageSoftRL//x.ndi", -404},
		{"/ManageSoftRL/Inv/a/b", -404},
		{"/ManageSoftRL/Inv/x.ndi/", -404},
		{"/ManageSoftRLx/Inv/x", -404},
		{"//ManageSoftRL/Inv/x", -404},
		{"/ManageSoftDL", -404},
		{"/ManageSoftDL/", -404},
		{"/ManageSoftDL/?a", -404},
		{"http://beacon", -404},
		{"http://beacon?/ManageSoftRL/a/b", -404},
		{"ftp://beacon/ManageSoftRL/a/b", -404},
	};
	CHECK_CASES(cases);
}

/* Every way out of the tree, and every name Windows or C would misread. */
static void test_refused_upload_names(void **state)
{
	static const struct case_ cases[] = {
		{"/ManageSoftRL/Inv/..", -400},
		{"/ManageSoftRL/Inv/.", -400},
		{"/ManageSoftRL/../x", -400},
		{"/ManageSoftRL/./x", -400},
		{"/ManageSoftRL/Inv/%2e%2e", -400},
		{"/ManageSoftRL/Inv/%2E%2e", -400},
		{"/ManageSoftRL/%2e%2e/x", -400},
		{"/ManageSoftRL/Inv/a..b", -400},
		{"/ManageSoftRL/Inv/..%2Fetc%2Fpasswd", -400},
		{"/ManageSoftRL/Inv/a%2Fb", -400},
		{"/ManageSoftRL/Inv/a%2fb", -400},
		{"/ManageSoftRL/Inv%2Fx/y", -400},
		{"/ManageSoftRL/Inv/a%00.ndi", -400},
		{"/ManageSoftRL/Inv/a%0a", -400},
		{"/ManageSoftRL/Inv/a%0D%0AX", -400},
		{"/ManageSoftRL/Inv/a%1fb", -400},
		{"/ManageSoftRL/Inv/a%7fb", -400},
		{"/ManageSoftRL/Inv/a\\b", -400},
		{"/ManageSoftRL/Inv/a%5Cb", -400},
		{"/ManageSoftRL/Inv/..%5C..%5Cwin.ini", -400},
		{"/ManageSoftRL/Inv/x.ndi.", -400}, /* Windows alias of x.ndi */
		{"/ManageSoftRL/Inv/x.ndi%20", -400},
		{"/ManageSoftRL/Inv/%", -400},
		{"/ManageSoftRL/Inv/a%4", -400},
		{"/ManageSoftRL/Inv/a%zz", -400},
		{"/ManageSoftRL/Inv/a%4g", -400},
		{"/ManageSoftRL/Inv/a%%41", -400},
		{"/ManageSoftRL/In%20v/x", -400}, /* category charset */
		{"/ManageSoftRL/In+v/x", -400},
		{"/ManageSoftRL/In%C3%A9/x", -400},
		{"/ManageSoftRL/../x", -400},
		{"/ManageSoftRL/Inv./x", -400},
		{"/ManageSoftRL/Inv/x#frag", -400}, /* a fragment is never sent */
		{"/ManageSoftRL/Inv/x?q#frag", -400},
	};
	CHECK_CASES(cases);
}

static void test_refused_download_paths(void **state)
{
	static const struct case_ cases[] = {
		{"/ManageSoftDL/../etc/passwd", -400},
		{"/ManageSoftDL/a/../../b", -400},
		{"/ManageSoftDL/a/%2e%2e/b", -400},
		{"/ManageSoftDL/%2E%2E%2Fetc", -400},
		{"/ManageSoftDL/a%2Fb", -400},
		{"/ManageSoftDL/a//b", -400}, /* empty component */
		{"/ManageSoftDL//a", -400},
		{"/ManageSoftDL/a/", -400},
		{"/ManageSoftDL/a/./b", -400},
		{"/ManageSoftDL/a%00", -400},
		{"/ManageSoftDL/a\\..\\b", -400},
		{"/ManageSoftDL/a%5C..", -400},
		{"/ManageSoftDL/a%09b", -400},
		{"/ManageSoftDL/a./b", -400},
		{"/ManageSoftDL/a%zz", -400},
	};
	CHECK_CASES(cases);
}

/* Category at most 63 bytes, name at most 255, download path at most 1023. */
static void test_length_limits(void **state)
{
	char cat[64], name[257], target[2048];
	struct http_route r;
	memset(cat, 'c', 63);
	cat[63] = '\0';
	memset(name, 'n', 255);
	name[255] = '\0';
	snprintf(target, sizeof target, "/ManageSoftRL/%s/%s", cat, name);
	assert_int_equal(route(target, &r), 0);
	assert_int_equal(strlen(r.category), 63);
	assert_int_equal(strlen(r.name), 255);
	snprintf(target, sizeof target, "/ManageSoftRL/%sc/%s", cat, name);
	assert_int_equal(route(target, &r), -400);
	snprintf(target, sizeof target, "/ManageSoftRL/%s/%sn", cat, name);
	assert_int_equal(route(target, &r), -400);
	/* The limit is on the decoded name: 255 escapes are fine. */
	size_t n = (size_t)snprintf(target, sizeof target, "/ManageSoftRL/c/");
	for (int i = 0; i < 255; i++)
		n += (size_t)snprintf(target + n, sizeof target - n, "%%41");
	assert_int_equal(route(target, &r), 0);
	assert_int_equal(strlen(r.name), 255);

	/* Four 255-byte components joined are 1023 bytes, the most a path holds. */
	snprintf(target, sizeof target, "/ManageSoftDL/%s/%s/%s/%s", name, name, name, name);
	assert_int_equal(route(target, &r), 0);
	assert_int_equal(strlen(r.path), 1023);
	snprintf(target, sizeof target, "/ManageSoftDL/%s/%s/%s/%s/a", name, name, name, name);
	assert_int_equal(route(target, &r), -400);
	/* 1022 bytes fit; one more component making 1024 does not (no room
	 * for the NUL). */
	snprintf(target, sizeof target, "/ManageSoftDL/%s/%s/%s/%.254s", name, name, name, name);
	assert_int_equal(route(target, &r), 0);
	assert_int_equal(strlen(r.path), 1022);
	snprintf(target, sizeof target, "/ManageSoftDL/%s/%s/%s/%.254s/a", name, name, name, name);
	assert_int_equal(route(target, &r), -400);
}

/* A refused target leaves no half-filled route for a careless caller. */
static void test_failure_clears_route(void **state)
{
	struct http_route r;
	assert_int_equal(route("/ManageSoftRL/Inv/a%00", &r), -400);
	assert_string_equal(r.category, "");
	assert_string_equal(r.name, "");
	assert_int_equal(route("/ManageSoftDL/a/b/..", &r), -400);
	assert_string_equal(r.path, "");
}

static void test_name_valid(void **state)
{
	char long_name[257];
	memset(long_name, 'a', sizeof long_name);
	assert_true(http_name_valid("a", 1));
	assert_true(http_name_valid("host.ndi", 8));
	assert_true(http_name_valid(".hidden", 7));
	assert_true(http_name_valid("a b", 3));
	assert_true(http_name_valid("caf\xc3\xa9", 5));
	assert_true(http_name_valid(long_name, 255));
	assert_false(http_name_valid(long_name, 256));
	assert_false(http_name_valid("", 0));
	assert_false(http_name_valid(NULL, 0));
	assert_false(http_name_valid(".", 1));
	assert_false(http_name_valid("..", 2));
	assert_false(http_name_valid("a..b", 4));
	assert_false(http_name_valid("..a", 3));
	assert_false(http_name_valid("a/b", 3));
	assert_false(http_name_valid("a\\b", 3));
	assert_false(http_name_valid("a\0b", 3));
	assert_false(http_name_valid("a\nb", 3));
	assert_false(http_name_valid("\x1f", 1));
	assert_false(http_name_valid("a\x7f", 2));
	assert_false(http_name_valid("a.", 2));
	assert_false(http_name_valid("a ", 2));
	/* n is the length: a longer C string is cut where n says. */
	assert_true(http_name_valid("ab/", 2));
}

static void test_reasons(void **state)
{
	static const struct {
		int status;
		const char *reason;
	} cases[] = {
		{100, "Continue"},
		{101, "Switching Protocols"},
		{200, "OK"},
		{201, "Created"},
		{204, "No Content"},
		{206, "Partial Content"},
		{400, "Bad Request"},
		{403, "Forbidden"},
		{404, "Not Found"},
		{405, "Method Not Allowed"},
		{408, "Request Timeout"},
		{411, "Length Required"},
		{413, "Content Too Large"},
		{414, "URI Too Long"},
		{417, "Expectation Failed"},
		{429, "Too Many Requests"},
		{431, "Request Header Fields Too Large"},
		{500, "Internal Server Error"},
		{501, "Not Implemented"},
		{503, "Service Unavailable"},
		{505, "HTTP Version Not Supported"},
		{507, "Insufficient Storage"},
		{0, "Unknown"},
		{-400, "Unknown"},
		{299, "Unknown"},
		{999, "Unknown"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		assert_string_equal(http_reason(cases[i].status), cases[i].reason);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manifest_route),
		cmocka_unit_test(test_upload_routes),
		cmocka_unit_test(test_download_routes),
		cmocka_unit_test(test_not_found),
		cmocka_unit_test(test_refused_upload_names),
		cmocka_unit_test(test_refused_download_paths),
		cmocka_unit_test(test_length_limits),
		cmocka_unit_test(test_failure_clears_route),
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_reasons),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
