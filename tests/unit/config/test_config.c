/* Unit tests for config: defaults, a full file, every error kind with its
 * line, size and duration edge cases, path resolution, IPv6 listen. */
#include <arpa/inet.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "beacon/config.h"

static char tmpdir[256];
static char conf_path[300];
static char err[1024];

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/beacon-config-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(conf_path, sizeof conf_path, "%s/beacond.conf", tmpdir);
	return 0;
}

static int teardown(void **state)
{
	unlink(conf_path);
	rmdir(tmpdir);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Loads `text` as beacond.conf; returns config_load's result. */
static int load(const char *text, struct config *cfg)
{
	write_file(conf_path, text);
	err[0] = '\0';
	return config_load(conf_path, cfg, err, sizeof err);
}

/* Expects `text` to fail with "CONF:line: reason". */
static void expect_error(const char *text, unsigned line, const char *reason)
{
	struct config cfg;
	config_defaults(&cfg);
	assert_int_equal(load(text, &cfg), -1);
	char want[2048];
	snprintf(want, sizeof want, "%s:%u: %s", conf_path, line, reason);
	assert_string_equal(err, want);
}

static void test_defaults(void **state)
{
	struct config c;
	config_defaults(&c);
	assert_string_equal(c.listen_addr, "127.0.0.1");
	assert_int_equal(c.listen_port, 8443);
	assert_int_equal(c.workers, 1);
	assert_int_equal(c.backend, BACKEND_KERNEL);
	assert_string_equal(c.data_dir, ".demo/data");
	assert_string_equal(c.download_dir, ".demo/download");
	assert_string_equal(c.control_socket, ".demo/control.sock");
	assert_string_equal(c.cert, ".demo/pki/server.pem");
	assert_string_equal(c.key, ".demo/pki/server.key");
	assert_string_equal(c.issuers, ".demo/pki/issuers");
	assert_int_equal(c.advertise, ADVERTISE_ALL);
	assert_true(c.require_client_auth_eku);
	assert_true(c.require_digital_signature);
	assert_int_equal(c.identity, IDENTITY_CN);
	assert_int_equal(c.ticket_lifetime_s, 3600);
	assert_int_equal(c.max_session_age_s, 86400);
	assert_int_equal(c.max_header_bytes, 16384);
	assert_int_equal(c.max_headers, 64);
	assert_int_equal(c.max_target, 2048);
	assert_int_equal(c.max_body_bytes, 1ull << 30);
	assert_int_equal(c.header_timeout_ms, 10000);
	assert_int_equal(c.body_timeout_ms, 30000);
	assert_int_equal(c.idle_timeout_ms, 60000);
	assert_int_equal(c.handshake_timeout_ms, 10000);
	assert_int_equal(c.max_connections, 15000);
	assert_int_equal(c.dpdk_keepalive_idle_ms, 120000);
	assert_int_equal(c.dpdk_keepalive_interval_ms, 15000);
	assert_int_equal(c.dpdk_keepalive_probes, 4);
	assert_true(c.dpdk_checksum_offload);
	assert_false(c.store.require_approval);
	assert_int_equal(c.store.group_max, 256);
	assert_int_equal(c.store.group_wait_us, 1000);
	assert_int_equal(c.store.segment_bytes, 256ull << 20);
	assert_int_equal(c.store.max_open_uploads, 256);
	assert_int_equal(c.store.upload_buffer, 256 * 1024);
	assert_int_equal(c.store.map_bytes, 16ull << 30);
	assert_int_equal(c.store.retain_seconds, 0);
	assert_int_equal(c.store.retain_bytes, 0);
}

static const char full_file[] = "; every key, none at its default\n"
				"[server]\n"
				"listen = 0.0.0.0:443\n"
				"workers = 8\n"
				"backend = dpdk\n"
				"data_dir = /var/lib/beacond\n"
				"download_dir = /srv/beacond/download\n"
				"control_socket = /run/beacond/control.sock\n"
				"\n"
				"[tls]\n"
				"cert = /etc/beacond/pki/server.pem\n"
				"key = /etc/beacond/pki/server.key\n"
				"issuers = /etc/beacond/pki/issuers\n"
				"advertise = Acme Issuing CA 1 , Acme Issuing CA 2\n"
				"require_client_auth_eku = no\n"
				"require_digital_signature = Off\n"
				"identity = san-dns\n"
				"ticket_lifetime = 2h\n"
				"max_session_age = 8h\n"
				"\n"
				"[limits]\n"
				"max_header_bytes = 32k\n"
				"max_headers = 100\n"
				"max_target = 4K\n"
				"max_body = 2G\n"
				"header_timeout = 5s\n"
				"body_timeout = 1m\n"
				"idle_timeout = 90\n"
				"handshake_timeout = 2500ms\n"
				"max_connections = 20000\n"
				"\n"
				"[dpdk]\n"
				"keepalive_idle = 10m\n"
				"keepalive_interval = 500ms\n"
				"keepalive_probes = 9\n"
				"checksum_offload = no\n"
				"\n"
				"[store]\n"
				"group_max = 128\n"
				"group_wait = 500us\n"
				"segment_size = 1G\n"
				"max_open_uploads = 512\n"
				"upload_buffer = 1M\n"
				"map_size = 1T\n"
				"retain_age = 30d\n"
				"retain_bytes = 500G\n";

static void test_full_file(void **state)
{
	struct config c;
	config_defaults(&c);
	assert_int_equal(load(full_file, &c), 0);
	assert_string_equal(c.listen_addr, "0.0.0.0");
	assert_int_equal(c.listen_port, 443);
	assert_int_equal(c.workers, 8);
	assert_int_equal(c.backend, BACKEND_DPDK);
	assert_string_equal(c.data_dir, "/var/lib/beacond");
	assert_string_equal(c.download_dir, "/srv/beacond/download");
	assert_string_equal(c.control_socket, "/run/beacond/control.sock");
	assert_string_equal(c.cert, "/etc/beacond/pki/server.pem");
	assert_string_equal(c.key, "/etc/beacond/pki/server.key");
	assert_string_equal(c.issuers, "/etc/beacond/pki/issuers");
	assert_int_equal(c.advertise, ADVERTISE_LIST);
	assert_string_equal(c.advertise_list, "Acme Issuing CA 1,Acme Issuing CA 2");
	assert_false(c.require_client_auth_eku);
	assert_false(c.require_digital_signature);
	assert_int_equal(c.identity, IDENTITY_SAN_DNS);
	assert_int_equal(c.ticket_lifetime_s, 7200);
	assert_int_equal(c.max_session_age_s, 8 * 3600);
	assert_int_equal(c.max_header_bytes, 32768);
	assert_int_equal(c.max_headers, 100);
	assert_int_equal(c.max_target, 4096);
	assert_int_equal(c.max_body_bytes, 2ull << 30);
	assert_int_equal(c.header_timeout_ms, 5000);
	assert_int_equal(c.body_timeout_ms, 60000);
	assert_int_equal(c.idle_timeout_ms, 90000);
	assert_int_equal(c.handshake_timeout_ms, 2500);
	assert_int_equal(c.max_connections, 20000);
	assert_int_equal(c.dpdk_keepalive_idle_ms, 600000);
	assert_int_equal(c.dpdk_keepalive_interval_ms, 500);
	assert_int_equal(c.dpdk_keepalive_probes, 9);
	assert_false(c.dpdk_checksum_offload);
	assert_int_equal(c.store.group_max, 128);
	assert_int_equal(c.store.group_wait_us, 500);
	assert_int_equal(c.store.segment_bytes, 1ull << 30);
	assert_int_equal(c.store.max_open_uploads, 512);
	assert_int_equal(c.store.upload_buffer, 1 << 20);
	assert_int_equal(c.store.map_bytes, 1ull << 40);
	assert_int_equal(c.store.retain_seconds, 30ull * 86400);
	assert_int_equal(c.store.retain_bytes, 500ull << 30);
}

static void test_words(void **state)
{
	struct config c;
	assert_int_equal(load("[tls]\nadvertise = none\nidentity = SAN-URI\n"
			      "require_client_auth_eku = 0\n",
			      &c),
			 0);
	assert_int_equal(c.advertise, ADVERTISE_NONE);
	assert_int_equal(c.identity, IDENTITY_SAN_URI);
	assert_false(c.require_client_auth_eku);
	assert_int_equal(load("[tls]\nadvertise = ALL\nidentity = san-email\n", &c), 0);
	assert_int_equal(c.advertise, ADVERTISE_ALL);
	assert_int_equal(c.identity, IDENTITY_SAN_EMAIL);
	assert_int_equal(load("[tls]\nadvertise = Single CA\n", &c), 0);
	assert_int_equal(c.advertise, ADVERTISE_LIST);
	assert_string_equal(c.advertise_list, "Single CA");
	assert_int_equal(load("[server]\nworkers = 3 ; inline comment\n   ; indented comment\n"
			      "  \n\t# another\n",
			      &c),
			 0);
	assert_int_equal(c.workers, 3);
	assert_int_equal(load("[server]\nworkers = 0\n", &c), 0);
	assert_int_equal(c.workers, 0);
}

static void test_errors_unknown(void **state)
{
	expect_error("; comment\n[server]\nworkers = 2\n\n[tls]\ncert = a.pem\ncerts = b.pem\n", 7,
		     "[tls] unknown key 'certs' (did you mean 'cert'?)");
	expect_error("[server]\nworkers = 2\n[tsl]\ncert = x\n", 4,
		     "unknown section [tsl] (did you mean [tls]?)");
	expect_error("[nonsense]\ncert = x\n", 2, "unknown section [nonsense]");
	expect_error("[store]\nupload_bufer = 1M\n", 2,
		     "[store] unknown key 'upload_bufer' (did you mean 'upload_buffer'?)");
	expect_error("[limits]\nMax_Body = 1M\n", 2,
		     "[limits] unknown key 'Max_Body' (did you mean 'max_body'?)");
	expect_error("[server]\ncrl_dir = /crl\n", 2,
		     "[server] unknown key 'crl_dir' (it belongs in [tls])");
	expect_error("[tls]\nzzz = 1\n", 2, "[tls] unknown key 'zzz'");
	expect_error("workers = 2\n", 1, "key 'workers' outside any [section]");
	expect_error("[server]\nworkers = 2\nthis line has no equals sign\n", 3,
		     "syntax error: expected [section], key = value, or a comment");
	expect_error("[server]\nlisten = 1.2.3.4:80\n  workers = 2\n", 3,
		     "indented line (multi-line values are not supported; remove the "
		     "indentation)");
	expect_error("[server]\ndata_dir = /a\n\t[tls]\n", 3,
		     "indented line (multi-line values are not supported; remove the "
		     "indentation)");
	expect_error("[server\nworkers = 2\n", 1,
		     "syntax error: expected [section], key = value, or a comment");
}

static void test_errors_values(void **state)
{
	expect_error("[tls]\nrequire_client_auth_eku = maybe\n", 2,
		     "[tls] require_client_auth_eku: 'maybe' is not one of yes, no, true, "
		     "false, on, off, 1, 0");
	expect_error("[server]\n\nbackend = xdp\n", 3,
		     "[server] backend: 'xdp' is not one of kernel, dpdk");
	expect_error("[tls]\nidentity = serial\n", 2,
		     "[tls] identity: 'serial' is not one of cn, san-dns, san-email, san-uri");
	expect_error("[server]\nworkers = 300\n", 2,
		     "[server] workers: '300' is out of range (0 to 256)");
	expect_error("[server]\nworkers = -1\n", 2,
		     "[server] workers: '-1' is not a non-negative integer");
	expect_error("[limits]\nmax_body = 1X\n", 2,
		     "[limits] max_body: '1X' is not a size: a number of bytes with an "
		     "optional k, M, G or T suffix");
	expect_error("[limits]\nmax_header_bytes = 100\n", 2,
		     "[limits] max_header_bytes: '100' is out of range (1k to 1M)");
	expect_error("[limits]\nidle_timeout = soon\n", 2,
		     "[limits] idle_timeout: 'soon' is not a duration: a number with ms, s, "
		     "m, h or d (bare: seconds)");
	expect_error("[limits]\nidle_timeout = 0\n", 2,
		     "[limits] idle_timeout: '0' is out of range (1ms to 4294967295ms)");
	expect_error("[tls]\nticket_lifetime = 8d\n", 2,
		     "[tls] ticket_lifetime: '8d' is out of range (1s to 604800s)");
	expect_error("[tls]\nmax_session_age = 0\n", 2,
		     "[tls] max_session_age: '0' is out of range (1s to 31536000s)");
	expect_error("[tls]\nticket_lifetime = 1500ms\n", 2,
		     "[tls] ticket_lifetime: '1500ms' is not a duration: a number with ms, s, "
		     "m, h or d (bare: seconds)");
	expect_error("[tls]\nadvertise = CA 1,,CA 2\n", 2,
		     "[tls] advertise: empty name in 'CA 1,,CA 2' (all, none, or a "
		     "comma-separated list of issuer CNs)");
	expect_error("[server]\nlisten = localhost:8443\n", 2,
		     "[server] listen: 'localhost:8443' is not ADDR:PORT (a numeric IPv4 "
		     "address, or an IPv6 one in brackets as [::1]:8443; port 1 to 65535)");
}

/* The store's limits are its table's (beacon/store-t.h): checked here with
 * the file and line, so that store_open, which only asserts them, never
 * meets a value out of range. */
static void test_store_limits(void **state)
{
	expect_error("[store]\nupload_buffer = 6k\n", 2,
		     "[store] upload_buffer: '6k' is out of range (8k to 1G)");
	expect_error("[store]\n\nupload_buffer = 2G\n", 3,
		     "[store] upload_buffer: '2G' is out of range (8k to 1G)");
	expect_error("[store]\nsegment_size = 512k\n", 2,
		     "[store] segment_size: '512k' is out of range (1M to 18446744073709551615)");
	expect_error("[store]\ngroup_max = 0\n", 2,
		     "[store] group_max: '0' is out of range (1 to 65536)");
	expect_error("[store]\nmax_open_uploads = 65537\n", 2,
		     "[store] max_open_uploads: '65537' is out of range (1 to 65536)");
	expect_error("[store]\ngroup_wait = 2s\n", 2,
		     "[store] group_wait: '2s' is out of range (0us to 1000000us)");
	expect_error("[store]\nmap_size = 4k\n", 2,
		     "[store] map_size: '4k' is out of range (1M to 18446744073709551615)");
	/* The bounds themselves are taken, and the defaults are the table's. */
	struct config c;
	assert_int_equal(load("[store]\nupload_buffer = 8k\nsegment_size = 1M\n"
			      "group_max = 65536\ngroup_wait = 0\nmap_size = 1M\n",
			      &c),
			 0);
	assert_int_equal(c.store.upload_buffer, 8192);
	assert_int_equal(c.store.segment_bytes, 1u << 20);
	assert_int_equal(c.store.group_max, 65536);
	assert_int_equal(c.store.group_wait_us, 0);
	assert_int_equal(c.store.map_bytes, 1u << 20);
	const struct store_options defaults = STORE_OPTIONS_DEFAULT;
	config_defaults(&c);
#define SAME_AS_DEFAULT_(type, field, key, form, def, min, max)                                    \
	assert_int_equal(c.store.field, defaults.field);
	STORE_OPTIONS(SAME_AS_DEFAULT_)
#undef SAME_AS_DEFAULT_
}

/* [server] approval reaches the store's options as they are loaded: no
 * fix-up after the fact, and a copy of a config is complete. */
static void test_approval_reaches_store(void **state)
{
	struct config c;
	assert_int_equal(load("[server]\napproval = require\n", &c), 0);
	assert_int_equal(c.approval, APPROVAL_REQUIRE);
	struct config copy = c;
	assert_true(copy.store.require_approval);
	assert_int_equal(load("[server]\napproval = auto\n", &c), 0);
	assert_false(c.store.require_approval);
	/* A failed load leaves the previous one whole. */
	assert_int_equal(load("[server]\napproval = require\nworkers = x\n", &c), -1);
	assert_false(c.store.require_approval);
}

static void test_errors_cross(void **state)
{
	expect_error("[limits]\nmax_target = 64k\n", 2,
		     "[limits] max_target (65536) exceeds max_header_bytes (16384)");
	expect_error("[limits]\nmax_target = 8k\n\nmax_header_bytes = 4k\n", 4,
		     "[limits] max_target (8192) exceeds max_header_bytes (4096)");
	expect_error("[store]\nsegment_size = 1M\nupload_buffer = 2M\n", 3,
		     "[store] upload_buffer (2097152) exceeds segment_size (1048576)");
}

/* [server] proxy_protocol and proxy_from: the list's forms and errors. */
static void test_proxy_keys(void **state)
{
	struct config cfg;
	config_defaults(&cfg);
	assert_int_equal(cfg.proxy_protocol, 0);
	assert_int_equal(cfg.proxy_from_count, 0);
	assert_int_equal(load("[server]\nproxy_protocol = any\n"
			      "proxy_from = 10.0.0.0/8 , 192.168.1.128/25,fd00::/8\n",
			      &cfg),
			 0);
	assert_int_equal(cfg.proxy_protocol, 3);
	assert_int_equal(cfg.proxy_from_count, 3);
	assert_int_equal(cfg.proxy_from[0].bits, 96 + 8);
	assert_int_equal(cfg.proxy_from[0].addr[10], 0xff);
	assert_int_equal(cfg.proxy_from[0].addr[12], 10);
	assert_int_equal(cfg.proxy_from[1].bits, 96 + 25);
	assert_int_equal(cfg.proxy_from[1].addr[15], 128);
	assert_int_equal(cfg.proxy_from[2].bits, 8);
	assert_int_equal(cfg.proxy_from[2].addr[0], 0xfd);

	expect_error("[server]\nproxy_protocol = v3\n", 2,
		     "[server] proxy_protocol: 'v3' is not one of no, v1, v2, any");
	expect_error("[server]\n\nproxy_protocol = v2\n", 3,
		     "[server] proxy_protocol is on but proxy_from names no peer allowed "
		     "to send the header");
	const char *why = "is not ADDR/PREFIX (a numeric IPv4 or IPv6 network with no host "
			  "bits set, as 10.0.0.0/8)";
	char want[256];
	static const char *bad[] = {"10.0.0.1/8", "10.0.0.0",	"10.0.0.0/33", "10.0.0.0/0",
				    "fd00::1/8",  "fd00::/129", "host/8",      "10.0.0.0/8x"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char text[128];
		snprintf(text, sizeof text, "[server]\nproxy_from = 127.0.0.0/8, %s\n", bad[i]);
		snprintf(want, sizeof want, "[server] proxy_from: '%s' %s", bad[i], why);
		expect_error(text, 2, want);
	}
	expect_error("[server]\nproxy_from = 10.0.0.0/8,\n", 2,
		     "[server] proxy_from: empty item after ','");
	char many[512] = "[server]\nproxy_from = ";
	for (int i = 0; i < CONFIG_PROXY_FROM_MAX + 1; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), "%s%d.0.0.0/8",
			 i ? "," : "", i + 1);
	strcat(many, "\n");
	snprintf(want, sizeof want, "[server] proxy_from: more than %d prefixes",
		 CONFIG_PROXY_FROM_MAX);
	expect_error(many, 2, want);
}

static void test_error_long_line(void **state)
{
	char text[600];
	int n = snprintf(text, sizeof text, "[server]\nworkers = 1\ndata_dir = /");
	memset(text + n, 'x', 400);
	strcpy(text + n + 400, "\n");
	struct config c;
	assert_int_equal(load(text, &c), -1);
	char want[512];
	snprintf(want, sizeof want, "%s:3: line longer than", conf_path);
	assert_memory_equal(err, want, strlen(want));

	/* 199 characters fit, with or without a final newline. */
	n = snprintf(text, sizeof text, "[server]\ndata_dir = /");
	memset(text + n, 'x', 199 - 12);
	strcpy(text + n + 199 - 12, "\n");
	assert_int_equal(load(text, &c), 0);
	assert_int_equal(strlen(c.data_dir), 199 - 11);
	text[strlen(text) - 1] = '\0';
	assert_int_equal(load(text, &c), 0);
	assert_int_equal(strlen(c.data_dir), 199 - 11);
	strcat(text, "y\n");
	assert_int_equal(load(text, &c), -1);
	assert_non_null(strstr(err, ":2: line longer than 199 characters"));
}

static void test_error_not_found(void **state)
{
	struct config c;
	char path[400];
	snprintf(path, sizeof path, "%s/missing.conf", tmpdir);
	assert_int_equal(config_load(path, &c, err, sizeof err), -1);
	char want[512];
	snprintf(want, sizeof want, "%s: No such file or directory", path);
	assert_string_equal(err, want);
}

static void test_failure_keeps_config(void **state)
{
	struct config c;
	assert_int_equal(load("[server]\nworkers = 4\n", &c), 0);
	assert_int_equal(load("[server]\nworkers = 2\nbogus = 1\n", &c), -1);
	assert_int_equal(c.workers, 4);
}

static void test_parse_size(void **state)
{
	uint64_t v;
	assert_int_equal(config_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_parse_size("123", &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(config_parse_size("16k", &v), 0);
	assert_int_equal(v, 16384);
	assert_int_equal(config_parse_size("16K", &v), 0);
	assert_int_equal(v, 16384);
	assert_int_equal(config_parse_size("10m", &v), 0);
	assert_int_equal(v, 10ull << 20);
	assert_int_equal(config_parse_size("1G", &v), 0);
	assert_int_equal(v, 1ull << 30);
	assert_int_equal(config_parse_size("3t", &v), 0);
	assert_int_equal(v, 3ull << 40);
	assert_int_equal(config_parse_size("18446744073709551615", &v), 0);
	assert_int_equal(v, UINT64_MAX);
	assert_int_equal(config_parse_size("16777215T", &v), 0);
	assert_int_equal(v, 16777215ull << 40);

	const char *bad[] = {"",
			     "-1",
			     "+1",
			     " 1",
			     "1 ",
			     "k",
			     "1kb",
			     "1KiB",
			     "1x",
			     "1.5k",
			     "0x10",
			     "16777216T",
			     "18446744073709551616",
			     "99999999999999999999999"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		assert_int_equal(config_parse_size(bad[i], &v), -1);
}

static void test_parse_duration(void **state)
{
	unsigned v;
	assert_int_equal(config_parse_duration_ms("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_parse_duration_ms("500ms", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(config_parse_duration_ms("10", &v), 0);
	assert_int_equal(v, 10000);
	assert_int_equal(config_parse_duration_ms("10s", &v), 0);
	assert_int_equal(v, 10000);
	assert_int_equal(config_parse_duration_ms("2m", &v), 0);
	assert_int_equal(v, 120000);
	assert_int_equal(config_parse_duration_ms("1h", &v), 0);
	assert_int_equal(v, 3600000);
	assert_int_equal(config_parse_duration_ms("49d", &v), 0);
	assert_int_equal(v, 49u * 86400000u);
	assert_int_equal(config_parse_duration_ms("4294967295ms", &v), 0);
	assert_int_equal(v, UINT_MAX);

	const char *bad[] = {
		"",   "ms",  "-1s", "+1s",	    "1 s",	"1.5s", "10x",
		"1S", "1us", "50d", "4294967296ms", "4294968s", "1sec", "99999999999999999999d"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		assert_int_equal(config_parse_duration_ms(bad[i], &v), -1);
}

static void test_relative_paths(void **state)
{
	char sub[300], path[400], want[512];
	snprintf(sub, sizeof sub, "%s/etc", tmpdir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(path, sizeof path, "%s/beacond.conf", sub);
	write_file(path, "[server]\ndata_dir = data\n[tls]\ncert = pki/server.pem\n"
			 "key = /abs/server.key\n");
	struct config c;
	assert_int_equal(config_load(path, &c, err, sizeof err), 0);
	snprintf(want, sizeof want, "%s/pki/server.pem", sub);
	assert_string_equal(c.cert, want);
	snprintf(want, sizeof want, "%s/data", sub);
	assert_string_equal(c.data_dir, want);
	assert_string_equal(c.key, "/abs/server.key");
	/* Unset paths keep the defaults, relative to the current directory. */
	assert_string_equal(c.issuers, ".demo/pki/issuers");
	unlink(path);
	rmdir(sub);
}

static void test_relative_to_cwd(void **state)
{
	char cwd[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir(tmpdir), 0);
	write_file("beacond.conf", "[tls]\ncert = pki/server.pem\n");
	struct config c;
	int rc = config_load("beacond.conf", &c, err, sizeof err);
	unlink("beacond.conf");
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rc, 0);
	assert_string_equal(c.cert, "pki/server.pem");
}

static void test_listen(void **state)
{
	struct config c;
	assert_int_equal(load("[server]\nlisten = [::1]:8443\n", &c), 0);
	assert_string_equal(c.listen_addr, "::1");
	assert_int_equal(c.listen_port, 8443);
	assert_int_equal(load("[server]\nlisten = [2001:db8::17]:1\n", &c), 0);
	assert_string_equal(c.listen_addr, "2001:db8::17");
	assert_int_equal(c.listen_port, 1);
	assert_int_equal(load("[server]\nlisten = [::]:65535\n", &c), 0);
	assert_string_equal(c.listen_addr, "::");
	assert_int_equal(c.listen_port, 65535);
	assert_int_equal(load("[server]\nlisten = 10.1.2.3:80\n", &c), 0);
	assert_string_equal(c.listen_addr, "10.1.2.3");
	assert_int_equal(c.listen_port, 80);

	const char *bad[] = {"::1:8443",     "[::1]8443",   "[::1]:",	     "[::1]",
			     "127.0.0.1",    "127.0.0.1:0", "1.2.3.4:65536", "1.2.3.4:-1",
			     "1.2.3.256:80", ":8443",	    "[]:8443",	     "[1.2.3.4]:80",
			     "1.2.3.4:80x",  "[::1]:8443x"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char text[128];
		snprintf(text, sizeof text, "[server]\nlisten = %s\n", bad[i]);
		assert_int_equal(load(text, &c), -1);
		assert_non_null(strstr(err, ":2: [server] listen: '"));
	}
}

/* The one ADDR:PORT parser (listen, metrics, the control plane's metrics
 * listener): its rules, and the socket address it builds. */
static void test_parse_endpoint(void **state)
{
	struct config_endpoint ep;
	assert_int_equal(config_parse_endpoint("127.0.0.1:9100", &ep), 0);
	assert_string_equal(ep.addr, "127.0.0.1");
	assert_int_equal(ep.port, 9100);
	const struct sockaddr_in *in4 = (const struct sockaddr_in *)&ep.sa;
	assert_int_equal(in4->sin_family, AF_INET);
	assert_int_equal(ntohs(in4->sin_port), 9100);
	assert_int_equal(ntohl(in4->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(ep.salen, sizeof *in4);

	assert_int_equal(config_parse_endpoint("[2001:db8::17]:65535", &ep), 0);
	assert_string_equal(ep.addr, "2001:db8::17");
	assert_int_equal(ep.port, 65535);
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ep.sa;
	assert_int_equal(in6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(in6->sin6_port), 65535);
	assert_int_equal(in6->sin6_addr.s6_addr[0], 0x20);
	assert_int_equal(in6->sin6_addr.s6_addr[15], 0x17);
	assert_int_equal(ep.salen, sizeof *in6);

	/* Port 0 (the kernel picks) is a port; the config keys refuse it. */
	assert_int_equal(config_parse_endpoint("[::1]:0", &ep), 0);
	assert_int_equal(ep.port, 0);
	assert_int_equal(config_parse_endpoint("0.0.0.0:00080", &ep), 0);
	assert_int_equal(ep.port, 80);

	const char *bad[] = {
		"",
		":",
		"127.0.0.1",
		"127.0.0.1:",
		":9100",
		"127.0.0.1:65536",
		"127.0.0.1:99999999999999999999",
		"127.0.0.1:-1",
		"127.0.0.1:+80",
		"127.0.0.1: 80",
		"127.0.0.1:80 ",
		" 127.0.0.1:80",
		"127.0.0.1:80x",
		"127.0.0.1:0x50",
		"localhost:9100",
		"host.example:443",
		"1.2.3.256:80",
		"1.2.3:80",
		"::1:9100",
		"[::1]9100",
		"[::1]:",
		"[::1]",
		"[]:80",
		"[1.2.3.4]:80",
		"[::1]:80:81",
		"[::1]]:80",
		"[[::1]:80",
		"[fe80::1%lo]:80",
		"[::1]:80x",
		"1.2.3.4:80:81",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		if (config_parse_endpoint(bad[i], &ep) != -1)
			fail_msg("'%s' parsed as an ADDR:PORT", bad[i]);
	/* Longer than any address: refused, never cut short. */
	char lng[128];
	memset(lng, '1', sizeof lng);
	lng[sizeof lng - 4] = ':';
	lng[sizeof lng - 3] = '8';
	lng[sizeof lng - 2] = '0';
	lng[sizeof lng - 1] = '\0';
	assert_int_equal(config_parse_endpoint(lng, &ep), -1);
	(void)state;
}

/* Every field but the paths. */
static void assert_same_values(const struct config *a, const struct config *b)
{
	assert_string_equal(a->listen_addr, b->listen_addr);
	assert_int_equal(a->listen_port, b->listen_port);
	assert_int_equal(a->workers, b->workers);
	assert_int_equal(a->backend, b->backend);
	assert_int_equal(a->advertise, b->advertise);
	assert_string_equal(a->advertise_list, b->advertise_list);
	assert_int_equal(a->require_client_auth_eku, b->require_client_auth_eku);
	assert_int_equal(a->require_digital_signature, b->require_digital_signature);
	assert_int_equal(a->identity, b->identity);
	assert_int_equal(a->ticket_lifetime_s, b->ticket_lifetime_s);
	assert_int_equal(a->max_session_age_s, b->max_session_age_s);
	assert_int_equal(a->max_header_bytes, b->max_header_bytes);
	assert_int_equal(a->max_headers, b->max_headers);
	assert_int_equal(a->max_target, b->max_target);
	assert_int_equal(a->max_body_bytes, b->max_body_bytes);
	assert_int_equal(a->header_timeout_ms, b->header_timeout_ms);
	assert_int_equal(a->body_timeout_ms, b->body_timeout_ms);
	assert_int_equal(a->idle_timeout_ms, b->idle_timeout_ms);
	assert_int_equal(a->handshake_timeout_ms, b->handshake_timeout_ms);
	assert_int_equal(a->max_connections, b->max_connections);
	assert_int_equal(a->store.group_max, b->store.group_max);
	assert_int_equal(a->store.group_wait_us, b->store.group_wait_us);
	assert_int_equal(a->store.segment_bytes, b->store.segment_bytes);
	assert_int_equal(a->store.max_open_uploads, b->store.max_open_uploads);
	assert_int_equal(a->store.upload_buffer, b->store.upload_buffer);
	assert_int_equal(a->store.map_bytes, b->store.map_bytes);
	assert_int_equal(a->store.retain_seconds, b->store.retain_seconds);
	assert_int_equal(a->store.retain_bytes, b->store.retain_bytes);
	assert_string_equal(a->download_cache_control, b->download_cache_control);
	assert_int_equal(a->download_cache_bytes, b->download_cache_bytes);
	assert_int_equal(a->download_cache_file_max, b->download_cache_file_max);
}

/* config/beacond.conf sets every key; all but the paths at their defaults,
 * so the documentation there stays true. */
static void test_example_config(void **state)
{
	const char *path = getenv("BEACON_EXAMPLE_CONF");
	if (!path)
		skip();
	struct config c, d;
	assert_int_equal(config_load(path, &c, err, sizeof err), 0);
	config_defaults(&d);
	assert_same_values(&c, &d);
	assert_string_equal(c.data_dir, "/var/lib/beacond");
	assert_string_equal(c.control_socket, "/run/beacond/control.sock");
	assert_false(c.store.require_approval);
	const char *tail = "config/pki/server.pem";
	assert_true(strlen(c.cert) >= strlen(tail));
	assert_string_equal(c.cert + strlen(c.cert) - strlen(tail), tail);
}

/* A reload takes the [tls] trust keys and names every other changed key,
 * including those whose value sits in two fields (listen's port,
 * advertise's mode). */
static void test_reload_split(void **state)
{
	struct config running, fresh;
	assert_int_equal(load("[limits]\nmax_body = 1G\n[tls]\nadvertise = all\n", &running), 0);
	char out[256];

	/* Trust keys only: applied, nothing waits for a restart. */
	assert_int_equal(load("[limits]\nmax_body = 1G\n[tls]\nadvertise = none\n"
			      "crl_dir = /x/crl\nrequire_client_auth_eku = no\n",
			      &fresh),
			 0);
	assert_int_equal(config_restart_keys(&running, &fresh, out, sizeof out), 0);
	assert_string_equal(out, "");
	struct config applied = running;
	config_take_reloadable(&applied, &fresh);
	assert_int_equal(applied.advertise, ADVERTISE_NONE);
	assert_string_equal(applied.crl_dir, "/x/crl");
	assert_false(applied.require_client_auth_eku);
	assert_int_equal(applied.max_body_bytes, running.max_body_bytes);

	/* Keys only a restart applies: named, and not taken. */
	assert_int_equal(load("[server]\nlisten = 127.0.0.1:9443\n[limits]\nmax_body = 4k\n"
			      "[tls]\nadvertise = all\nticket_rotate = 2h\nticket_lifetime = 2h\n",
			      &fresh),
			 0);
	assert_int_equal(config_restart_keys(&running, &fresh, out, sizeof out), 3);
	assert_string_equal(out, "[server] listen, [tls] ticket_rotate, [limits] max_body");
	applied = running;
	config_take_reloadable(&applied, &fresh);
	assert_int_equal(applied.max_body_bytes, 1024ull * 1024 * 1024);
	assert_int_equal(applied.listen_port, running.listen_port);
	assert_int_equal(applied.ticket_lifetime_s, 2 * 3600); /* lowering it cuts resumptions */

	/* Cut short, never past the buffer. */
	char tiny[24];
	assert_int_equal(config_restart_keys(&running, &fresh, tiny, sizeof tiny), 3);
	assert_string_equal(tiny, "[server] listen...");
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_errors_unknown),
		cmocka_unit_test(test_errors_values),
		cmocka_unit_test(test_store_limits),
		cmocka_unit_test(test_approval_reaches_store),
		cmocka_unit_test(test_errors_cross),
		cmocka_unit_test(test_proxy_keys),
		cmocka_unit_test(test_error_long_line),
		cmocka_unit_test(test_error_not_found),
		cmocka_unit_test(test_failure_keeps_config),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_relative_paths),
		cmocka_unit_test(test_relative_to_cwd),
		cmocka_unit_test(test_listen),
		cmocka_unit_test(test_parse_endpoint),
		cmocka_unit_test(test_example_config),
		cmocka_unit_test(test_reload_split),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
