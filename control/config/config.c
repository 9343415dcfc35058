/*
 * config: beacond.conf through libinih. One table lists every key with its
 * section, kind, field and range; the inih handler looks a key up there and
 * parses its value by kind. Lines are read through our own reader so that
 * each error carries the physical line number and over-long lines (libinih
 * silently splits lines past INI_MAX_LINE) are an error, not a surprise.
 */
#include "beacon/config.h"

#include "config-internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

_Static_assert(sizeof(unsigned) == 4, "numeric fields are stored as 32 or 64 bits");

/* ---- the key table ---- */

enum kind {
	K_COUNT,   /* a plain integer */
	K_SIZE,	   /* bytes, with k/M/G/T */
	K_MS,	   /* a duration stored in milliseconds */
	K_US,	   /* a duration stored in microseconds */
	K_SECONDS, /* a duration stored in whole seconds */
	K_ENUM,	   /* a word from a table (booleans too) */
	K_PATH,
	K_OPTPATH, /* a path, or "" for none */
	K_ADDR,	   /* "ADDR:PORT" kept as text, or "" for none */
	K_WORD,	   /* a plain word kept as text, or "" for none */
	K_LISTEN,
	K_ADVERTISE,
	K_TEXT,	     /* free text, blanks included */
	K_CIDR,	     /* an IPv4 "ADDR/PREFIX" (dpdk_addr and dpdk_prefix) */
	K_CIDR_LIST, /* "ADDR/PREFIX, ..." of either family (proxy_from and its count) */
};

struct word {
	const char *name;
	int value;
};

struct key {
	const char *section;
	const char *name;
	enum kind kind;
	size_t offset;
	size_t width;
	uint64_t min, max;
	const struct word *words; /* K_ENUM */
};

static const struct word backends[] = {
	{"kernel", BACKEND_KERNEL},
	{"dpdk", BACKEND_DPDK},
	{NULL, 0},
};

static const struct word identities[] = {
	{"cn", IDENTITY_CN},
	{"san-dns", IDENTITY_SAN_DNS},
	{"san-email", IDENTITY_SAN_EMAIL},
	{"san-uri", IDENTITY_SAN_URI},
	{NULL, 0},
};

static const struct word approvals[] = {
	{"auto", APPROVAL_AUTO},
	{"require", APPROVAL_REQUIRE},
	{NULL, 0},
};

static const struct word stale_modes[] = {
	{"warn", CRL_STALE_WARN},
	{"refuse", CRL_STALE_REFUSE},
	{NULL, 0},
};

static const struct word log_formats[] = {
	{"text", LOG_FORMAT_TEXT},
	{"json", LOG_FORMAT_JSON},
	{NULL, 0},
};

static const struct word log_levels[] = {
	{"error", LOG_ERR}, {"warn", LOG_WARN}, {"info", LOG_INFO}, {"debug", LOG_DEBUG}, {NULL, 0},
};

/* [server] proxy_protocol: PROXY_ACCEPT_* bits of beacon/proxy.h. */
static const struct word proxy_versions[] = {
	{"no", 0}, {"v1", 1}, {"v2", 2}, {"any", 3}, {NULL, 0},
};

static const struct word booleans[] = {
	{"yes", 1}, {"no", 0}, {"true", 1}, {"false", 0}, {"on", 1},
	{"off", 0}, {"1", 1},  {"0", 0},    {NULL, 0},
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)
#define NUM(sec, name, kind, f, min, max)                                                          \
	{                                                                                          \
		sec, name, kind, FIELD(f), min, max, NULL                                          \
	}
#define STR(sec, name, kind, f)                                                                    \
	{                                                                                          \
		sec, name, kind, FIELD(f), 0, 0, NULL                                              \
	}
#define ENUM(sec, name, f, words)                                                                  \
	{                                                                                          \
		sec, name, K_ENUM, FIELD(f), 0, 0, words                                           \
	}

#define KiB 1024ull
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

static const struct key keys[] = {
	STR("server", "listen", K_LISTEN, listen_addr),
	NUM("server", "workers", K_COUNT, workers, 0, 256),
	ENUM("server", "backend", backend, backends), STR("server", "data_dir", K_PATH, data_dir),
	STR("server", "download_dir", K_PATH, download_dir),
	STR("server", "control_socket", K_PATH, control_socket),
	STR("server", "metrics", K_ADDR, metrics_listen), STR("server", "user", K_WORD, user),
	ENUM("server", "approval", approval, approvals), ENUM("server", "watch", watch, booleans),
	NUM("server", "health_stall", K_MS, health_stall_ms, 1000, 3600000),
	ENUM("server", "proxy_protocol", proxy_protocol, proxy_versions),
	STR("server", "proxy_from", K_CIDR_LIST, proxy_from),

	STR("tls", "cert", K_PATH, cert), STR("tls", "key", K_PATH, key),
	STR("tls", "issuers", K_PATH, issuers),
	STR("tls", "advertise", K_ADVERTISE, advertise_list),
	ENUM("tls", "require_client_auth_eku", require_client_auth_eku, booleans),
	ENUM("tls", "require_digital_signature", require_digital_signature, booleans),
	ENUM("tls", "identity", identity, identities),
	/* TLS 1.3 caps a ticket's lifetime at 7 days (RFC 8446 4.6.1). */
	NUM("tls", "ticket_lifetime", K_SECONDS, ticket_lifetime_s, 1, 7 * 86400),
	NUM("tls", "max_session_age", K_SECONDS, max_session_age_s, 1, 365 * 86400),
	STR("tls", "crl_dir", K_OPTPATH, crl_dir), ENUM("tls", "crl_stale", crl_stale, stale_modes),
	STR("tls", "blocklist", K_OPTPATH, blocklist),
	STR("tls", "ticket_key_file", K_OPTPATH, ticket_key_file),
	NUM("tls", "ticket_rotate", K_SECONDS, ticket_rotate_s, 0, 30 * 86400),

	NUM("limits", "max_header_bytes", K_SIZE, max_header_bytes, 1 * KiB, 1 * MiB),
	NUM("limits", "max_headers", K_COUNT, max_headers, 1, 4096),
	NUM("limits", "max_target", K_SIZE, max_target, 16, 1 * MiB),
	NUM("limits", "max_body", K_SIZE, max_body_bytes, 1, UINT64_MAX),
	NUM("limits", "header_timeout", K_MS, header_timeout_ms, 1, UINT_MAX),
	NUM("limits", "body_timeout", K_MS, body_timeout_ms, 1, UINT_MAX),
	NUM("limits", "idle_timeout", K_MS, idle_timeout_ms, 1, UINT_MAX),
	NUM("limits", "handshake_timeout", K_MS, handshake_timeout_ms, 1, UINT_MAX),
	NUM("limits", "max_connections", K_COUNT, max_connections, 1, 1000000),
	NUM("limits", "max_connections_per_source", K_COUNT, max_connections_per_source, 0,
	    1000000),
	NUM("limits", "handshake_rate_per_source", K_COUNT, handshake_rate_per_source, 0, 1000000),
	NUM("limits", "max_handshakes_in_progress", K_COUNT, max_handshakes_in_progress, 1,
	    1000000),

	STR("dpdk", "eal_args", K_TEXT, dpdk_eal_args),
	NUM("dpdk", "port", K_COUNT, dpdk_port, 0, 1023), STR("dpdk", "address", K_CIDR, dpdk_addr),
	NUM("dpdk", "mbufs", K_COUNT, dpdk_mbufs, 4095, 1048575),
	NUM("dpdk", "keepalive_idle", K_MS, dpdk_keepalive_idle_ms, 0, UINT_MAX),
	NUM("dpdk", "keepalive_interval", K_MS, dpdk_keepalive_interval_ms, 1, UINT_MAX),
	NUM("dpdk", "keepalive_probes", K_COUNT, dpdk_keepalive_probes, 1, 100),
	ENUM("dpdk", "checksum_offload", dpdk_checksum_offload, booleans),

	STR("drain", "nats", K_TEXT, drain_nats), STR("drain", "user", K_WORD, drain_user),
	STR("drain", "password", K_TEXT, drain_password),
	STR("drain", "creds", K_OPTPATH, drain_creds),
	STR("drain", "tls_ca", K_OPTPATH, drain_tls_ca),
	STR("drain", "tls_cert", K_OPTPATH, drain_tls_cert),
	STR("drain", "tls_key", K_OPTPATH, drain_tls_key),
	STR("drain", "stream", K_WORD, drain_stream),
	STR("drain", "subject", K_WORD, drain_subject),
	STR("drain", "beacon_id", K_WORD, drain_beacon_id),
	ENUM("drain", "create_stream", drain_create_stream, booleans),
	NUM("drain", "replicas", K_COUNT, drain_replicas, 1, 5),
	NUM("drain", "duplicate_window", K_SECONDS, drain_duplicate_window_s, 1, 7 * 86400),
	NUM("drain", "window", K_COUNT, drain_window, 1, 65536),
	NUM("drain", "max_chunk", K_SIZE, drain_max_chunk, 0, 64 * MiB),

	STR("upstream", "url", K_TEXT, upstream_url),
	STR("upstream", "cert", K_OPTPATH, upstream_cert),
	STR("upstream", "key", K_OPTPATH, upstream_key),
	STR("upstream", "ca", K_OPTPATH, upstream_ca),
	STR("upstream", "beacon_id", K_WORD, upstream_beacon_id),
	STR("upstream", "children", K_TEXT, upstream_children),
	ENUM("upstream", "sync", upstream_sync, booleans),
	NUM("upstream", "sync_interval", K_SECONDS, upstream_sync_interval_s, 0, 7 * 86400),

	STR("download", "cache_control", K_TEXT, download_cache_control),
	NUM("download", "cache_size", K_SIZE, download_cache_bytes, 0, 64 * GiB),
	NUM("download", "cache_file_max", K_SIZE, download_cache_file_max, 1, 1 * GiB),

	STR("trust", "kv_bucket", K_WORD, trust_kv_bucket),
	STR("trust", "kv_nats", K_TEXT, trust_kv_nats),
	NUM("trust", "kv_wait", K_MS, trust_kv_wait_ms, 0, 3600000),

	ENUM("log", "format", log_format, log_formats), ENUM("log", "level", log_level, log_levels),
	ENUM("log", "access", access_log, booleans),

/* [store]: keys, forms and ranges from the store's one table */
#define STORE_KEY_(type, field, key, form, def, min, max)                                          \
	NUM("store", key, K_##form, store.field, min, max),
	STORE_OPTIONS(STORE_KEY_)
#undef STORE_KEY_
};

#define NKEYS (sizeof keys / sizeof *keys)

static const struct key *key_find(const char *section, const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

static bool section_known(const char *section)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].section, section))
			return true;
	return false;
}

/* "did you mean": the nearest key of the section, or NULL when none is a
 * near miss. */
static const char *nearest_key(const char *section, const char *name)
{
	const char *best = NULL;
	unsigned best_d = UINT_MAX;
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].section, section) != 0)
			continue;
		unsigned d = config_name_distance(name, keys[i].name);
		if (d < best_d && config_near_miss(name, keys[i].name)) {
			best = keys[i].name;
			best_d = d;
		}
	}
	return best;
}

/* The section a key of that exact name lives in, for one put in the wrong
 * section. */
static const char *key_section_of(const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].name, name))
			return keys[i].section;
	return NULL;
}

static const char *nearest_section(const char *section)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (config_near_miss(section, keys[i].section))
			return keys[i].section;
	return NULL;
}

/* ---- defaults ---- */

static void set_path(char *dst, const char *src)
{
	snprintf(dst, CONFIG_PATH_MAX, "%s", src);
}

/* Fields that follow from others, set again after every load. */
static void derive(struct config *cfg)
{
	cfg->store.require_approval = cfg->approval == APPROVAL_REQUIRE;
	/* The drain's sink keeps what it has not taken from retention. */
	cfg->store.n_drain_sinks = 0;
	if (cfg->drain_nats[0])
		snprintf(cfg->store.drain_sinks[cfg->store.n_drain_sinks++],
			 sizeof cfg->store.drain_sinks[0], "nats");
	if (cfg->upstream_url[0])
		snprintf(cfg->store.drain_sinks[cfg->store.n_drain_sinks++],
			 sizeof cfg->store.drain_sinks[0], "upstream");
}

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	snprintf(cfg->listen_addr, sizeof cfg->listen_addr, "127.0.0.1");
	cfg->listen_port = 8443;
	cfg->workers = 1;
	cfg->backend = BACKEND_KERNEL;
	set_path(cfg->data_dir, ".demo/data");
	set_path(cfg->download_dir, ".demo/download");
	set_path(cfg->control_socket, ".demo/control.sock");

	set_path(cfg->cert, ".demo/pki/server.pem");
	set_path(cfg->key, ".demo/pki/server.key");
	set_path(cfg->issuers, ".demo/pki/issuers");
	cfg->advertise = ADVERTISE_ALL;
	cfg->require_client_auth_eku = true;
	cfg->require_digital_signature = true;
	cfg->identity = IDENTITY_CN;
	cfg->ticket_lifetime_s = 3600;
	cfg->max_session_age_s = 24 * 3600;
	cfg->ticket_rotate_s = 12 * 3600;
	cfg->crl_stale = CRL_STALE_WARN;
	cfg->approval = APPROVAL_AUTO;
	cfg->watch = true;
	cfg->health_stall_ms = 5000;
	cfg->trust_kv_wait_ms = 30000;

	cfg->max_header_bytes = 16 * KiB;
	cfg->max_headers = 64;
	cfg->max_target = 2 * KiB;
	cfg->max_body_bytes = 1 * GiB;
	cfg->header_timeout_ms = 10000;
	cfg->body_timeout_ms = 30000;
	cfg->idle_timeout_ms = 60000;
	cfg->handshake_timeout_ms = 10000;
	cfg->max_connections = 15000;
	cfg->max_handshakes_in_progress = 1024;

	snprintf(cfg->dpdk_eal_args, sizeof cfg->dpdk_eal_args, "-l 0");
	cfg->dpdk_port = 0;
	cfg->dpdk_addr = htonl(0xc6120001); /* 198.18.0.1/15 */
	cfg->dpdk_prefix = 15;
	cfg->dpdk_mbufs = 16383;
	/* Past the layer above's own timeouts (idle 60 s): a safety net for
	 * a peer that vanished while it waits longer, freed in 3 minutes. */
	cfg->dpdk_keepalive_idle_ms = 120000;
	cfg->dpdk_keepalive_interval_ms = 15000;
	cfg->dpdk_keepalive_probes = 4;
	cfg->dpdk_checksum_offload = true;

	/* What every other answer says: an agent keeps its file anyway and
	 * asks again with If-Modified-Since; a proxy keeps nothing. */
	snprintf(cfg->download_cache_control, sizeof cfg->download_cache_control, "no-store");
	cfg->download_cache_bytes = 64 * MiB;
	cfg->download_cache_file_max = 1 * MiB;

	cfg->log_format = LOG_FORMAT_TEXT;
	cfg->log_level = LOG_INFO;
	cfg->access_log = true;

	snprintf(cfg->drain_stream, sizeof cfg->drain_stream, "BEACON_UPLOADS");
	snprintf(cfg->drain_subject, sizeof cfg->drain_subject, "beacon.uploads");
	cfg->drain_create_stream = true;
	cfg->drain_replicas = 1;
	cfg->drain_duplicate_window_s = 3600;
	cfg->drain_window = 256;
	cfg->upstream_sync_interval_s = 300;

	cfg->store = (struct store_options)STORE_OPTIONS_DEFAULT;
	derive(cfg);
}

/* ---- reload: which keys apply now, which at the next start ---- */

/* The trust snapshot's inputs: a reload builds a new snapshot from them.
 * Nothing else is rebuilt at run time (workers, listeners, limits and the
 * store keep what they started with), so every other key waits for a
 * restart. */
static const char *const reloadable_tls_keys[] = {
	"cert",
	"key",
	"issuers",
	"advertise",
	"require_client_auth_eku",
	"require_digital_signature",
	"identity",
	"crl_dir",
	"crl_stale",
	"blocklist",
	/* Lowering these must cut resumptions off without a restart. */
	"ticket_lifetime",
	"max_session_age",
};

static bool key_reloadable(const struct key *k)
{
	if (strcmp(k->section, "tls") != 0)
		return false;
	for (size_t i = 0; i < sizeof reloadable_tls_keys / sizeof *reloadable_tls_keys; i++)
		if (!strcmp(k->name, reloadable_tls_keys[i]))
			return true;
	return false;
}

/* A few keys set a second field besides the one the table names. */
static void key_second_field(const struct key *k, size_t *offset, size_t *width)
{
	*offset = *width = 0;
	if (k->kind == K_LISTEN) {
		*offset = offsetof(struct config, listen_port);
		*width = sizeof(((struct config *)0)->listen_port);
	} else if (k->kind == K_ADVERTISE) {
		*offset = offsetof(struct config, advertise);
		*width = sizeof(((struct config *)0)->advertise);
	} else if (k->kind == K_CIDR) {
		*offset = offsetof(struct config, dpdk_prefix);
		*width = sizeof(((struct config *)0)->dpdk_prefix);
	} else if (k->kind == K_CIDR_LIST) {
		*offset = offsetof(struct config, proxy_from_count);
		*width = sizeof(((struct config *)0)->proxy_from_count);
	}
}

static bool key_is_text(const struct key *k)
{
	switch (k->kind) {
	case K_PATH:
	case K_OPTPATH:
	case K_ADDR:
	case K_WORD:
	case K_LISTEN:
	case K_ADVERTISE:
	case K_TEXT:
		return true;
	default:
		return false;
	}
}

static bool key_equal(const struct key *k, const struct config *a, const struct config *b)
{
	const char *pa = (const char *)a + k->offset, *pb = (const char *)b + k->offset;
	/* Text fields: bytes past the terminator are whatever was there. */
	bool same = key_is_text(k) ? strncmp(pa, pb, k->width) == 0 : memcmp(pa, pb, k->width) == 0;
	size_t off, width;
	key_second_field(k, &off, &width);
	return same && (!width || memcmp((const char *)a + off, (const char *)b + off, width) == 0);
}

static void key_copy(const struct key *k, struct config *dst, const struct config *src)
{
	memcpy((char *)dst + k->offset, (const char *)src + k->offset, k->width);
	size_t off, width;
	key_second_field(k, &off, &width);
	if (width)
		memcpy((char *)dst + off, (const char *)src + off, width);
}

void config_take_reloadable(struct config *running, const struct config *fresh)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (key_reloadable(&keys[i]))
			key_copy(&keys[i], running, fresh);
}

unsigned config_restart_keys(const struct config *running, const struct config *fresh, char *out,
			     size_t len)
{
	unsigned n = 0;
	size_t used = 0;
	bool cut = false;
	if (len)
		out[0] = '\0';
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		if (key_reloadable(k) || key_equal(k, running, fresh))
			continue;
		char item[96];
		int ilen = snprintf(item, sizeof item, "%s[%s] %s", n ? ", " : "", k->section,
				    k->name);
		n++;
		if (cut || ilen < 0)
			continue;
		/* Room is kept for a closing "..." should a later key not fit. */
		if (used + (size_t)ilen + 4 <= len) {
			memcpy(out + used, item, (size_t)ilen + 1);
			used += (size_t)ilen;
		} else if (used + 4 <= len) {
			memcpy(out + used, "...", 4);
			cut = true;
		}
	}
	return n;
}

/* ---- loading ---- */

struct load {
	struct config cfg;
	const char *path;
	char dir[CONFIG_PATH_MAX]; /* the file's directory with a '/', or "" */
	FILE *f;
	unsigned line;	   /* line number of the text last read */
	unsigned err_line; /* 0: no error yet */
	char reason[512];
	unsigned key_line[NKEYS]; /* where each key was last set */
};

static int fail(struct load *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records the first error (at the current line) and returns 0, inih's
 * "error" for a handler. */
static int fail(struct load *ld, const char *fmt, ...)
{
	if (ld->err_line)
		return 0;
	ld->err_line = ld->line ? ld->line : 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ld->reason, sizeof ld->reason, fmt, ap);
	va_end(ap);
	return 0;
}

/* libinih takes an indented line as a continuation of the previous value
 * (so an indented "key = x" or "[section]" would silently become part of
 * the value above it): refuse indentation except on comments. */
static int check_indent(struct load *ld, const char *buf)
{
	const char *p = buf + strspn(buf, " \t");
	if (p == buf || strchr(";#\r\n", *p))
		return 0;
	fail(ld, "indented line (multi-line values are not supported; remove the indentation)");
	return -1;
}

/* inih's reader: fgets that counts lines, rejects lines longer than inih's
 * buffer, and stops at the first error. */
static char *read_line(char *buf, int size, void *stream)
{
	struct load *ld = stream;
	if (ld->err_line || !fgets(buf, size, ld->f))
		return NULL;
	ld->line++;
	if (!strchr(buf, '\n')) {
		/* Full buffer: fine if the line (or the file) ends right here. */
		int c = getc(ld->f);
		if (c != EOF && c != '\n') {
			fail(ld, "line longer than %d characters", size - 1);
			return NULL;
		}
	}
	return check_indent(ld, buf) < 0 ? NULL : buf;
}

static void store_number(void *field, size_t width, uint64_t v)
{
	if (width == sizeof(uint64_t)) {
		memcpy(field, &v, sizeof v);
	} else {
		uint32_t v32 = (uint32_t)v;
		memcpy(field, &v32, sizeof v32);
	}
}

static void format_size(char *buf, size_t len, uint64_t v)
{
	static const char units[] = "kMGT";
	int u = -1;
	while (u < 3 && v && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%llu", (unsigned long long)v);
	else
		snprintf(buf, len, "%llu%c", (unsigned long long)v, units[u]);
}

static void format_bound(char *buf, size_t len, const struct key *k, uint64_t v)
{
	if (k->kind == K_SIZE)
		format_size(buf, len, v);
	else if (k->kind == K_MS)
		snprintf(buf, len, "%llums", (unsigned long long)v);
	else if (k->kind == K_US)
		snprintf(buf, len, "%lluus", (unsigned long long)v);
	else if (k->kind == K_SECONDS)
		snprintf(buf, len, "%llus", (unsigned long long)v);
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
}

static const char *number_form(enum kind kind)
{
	switch (kind) {
	case K_SIZE:
		return "a size: a number of bytes with an optional k, M, G or T suffix";
	case K_US:
		return "a duration: a number with us, ms, s, m, h or d (bare: seconds)";
	case K_MS:
	case K_SECONDS:
		return "a duration: a number with ms, s, m, h or d (bare: seconds)";
	default:
		return "a non-negative integer";
	}
}

static int parse_number(const struct key *k, const char *value, uint64_t *v)
{
	const char *end;
	uint64_t us;
	switch (k->kind) {
	case K_SIZE:
		return config_parse_size(value, v);
	case K_MS:
		if (config_parse_duration_us(value, false, &us) < 0)
			return -1;
		*v = us / 1000;
		return 0;
	case K_US:
		return config_parse_duration_us(value, true, v);
	case K_SECONDS:
		if (config_parse_duration_us(value, false, &us) < 0 || us % 1000000)
			return -1;
		*v = us / 1000000;
		return 0;
	default:
		return config_parse_digits(value, v, &end) < 0 || *end ? -1 : 0;
	}
}

static int set_number(struct load *ld, const struct key *k, const char *value)
{
	uint64_t v;
	uint64_t max =
		k->width == sizeof(uint64_t) ? k->max : (k->max < UINT32_MAX ? k->max : UINT32_MAX);
	if (parse_number(k, value, &v) < 0)
		return fail(ld, "[%s] %s: '%s' is not %s", k->section, k->name, value,
			    number_form(k->kind));
	if (v < k->min || v > max) {
		char lo[32], hi[32];
		format_bound(lo, sizeof lo, k, k->min);
		format_bound(hi, sizeof hi, k, max);
		return fail(ld, "[%s] %s: '%s' is out of range (%s to %s)", k->section, k->name,
			    value, lo, hi);
	}
	store_number((char *)&ld->cfg + k->offset, k->width, v);
	return 1;
}

static int set_word(struct load *ld, const struct key *k, const char *value)
{
	char accepted[128] = "";
	size_t n = 0;
	for (const struct word *w = k->words; w->name; w++) {
		if (!strcasecmp(w->name, value)) {
			char *field = (char *)&ld->cfg + k->offset;
			if (k->width == sizeof(bool))
				*(bool *)field = w->value;
			else
				memcpy(field, &w->value, sizeof w->value);
			return 1;
		}
		n += (size_t)snprintf(accepted + n, sizeof accepted - n, "%s%s", n ? ", " : "",
				      w->name);
	}
	return fail(ld, "[%s] %s: '%s' is not one of %s", k->section, k->name, value, accepted);
}

static int set_path_value(struct load *ld, const struct key *k, const char *value)
{
	char *field = (char *)&ld->cfg + k->offset;
	const char *dir = value[0] == '/' ? "" : ld->dir;
	if (!value[0])
		return fail(ld, "[%s] %s: empty path", k->section, k->name);
	int n = snprintf(field, CONFIG_PATH_MAX, "%s%s", dir, value);
	if (n < 0 || n >= CONFIG_PATH_MAX)
		return fail(ld, "[%s] %s: path longer than %d bytes", k->section, k->name,
			    CONFIG_PATH_MAX - 1);
	return 1;
}

/* The configuration's ADDR:PORT keys: port 0 (any) is no use to a client. */
static int parse_key_endpoint(const char *value, struct config_endpoint *ep)
{
	return config_parse_endpoint(value, ep) < 0 || ep->port == 0 ? -1 : 0;
}

static int set_listen(struct load *ld, const struct key *k, const char *value)
{
	struct config *c = &ld->cfg;
	struct config_endpoint ep;
	_Static_assert(sizeof ep.addr <= sizeof c->listen_addr, "listen_addr holds any address");
	if (parse_key_endpoint(value, &ep) < 0)
		return fail(ld,
			    "[%s] %s: '%s' is not ADDR:PORT (a numeric IPv4 address, or "
			    "an IPv6 one in brackets as [::1]:8443; port 1 to 65535)",
			    k->section, k->name, value);
	memcpy(c->listen_addr, ep.addr, sizeof ep.addr);
	c->listen_port = ep.port;
	return 1;
}

static int set_addr_text(struct load *ld, const struct key *k, const char *value)
{
	struct config_endpoint ep;
	char *field = (char *)&ld->cfg + k->offset;
	if (value[0] && parse_key_endpoint(value, &ep) < 0)
		return fail(ld, "[%s] %s: '%s' is not ADDR:PORT (or empty for none)", k->section,
			    k->name, value);
	if (strlen(value) >= k->width)
		return fail(ld, "[%s] %s: too long", k->section, k->name);
	snprintf(field, k->width, "%s", value);
	return 1;
}

/* all, none, or a comma-separated list of subject CNs, stored without the
 * blanks around commas. */
static int set_advertise(struct load *ld, const struct key *k, const char *value)
{
	struct config *c = &ld->cfg;
	if (!strcasecmp(value, "all") || !strcasecmp(value, "none")) {
		c->advertise = strcasecmp(value, "all") ? ADVERTISE_NONE : ADVERTISE_ALL;
		c->advertise_list[0] = '\0';
		return 1;
	}
	size_t n = 0;
	for (const char *p = value;;) {
		const char *comma = strchr(p, ',');
		const char *end = comma ? comma : p + strlen(p);
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (end == p)
			return fail(ld,
				    "[%s] %s: empty name in '%s' (all, none, or a "
				    "comma-separated list of issuer CNs)",
				    k->section, k->name, value);
		size_t len = (size_t)(end - p);
		if (n + len + 2 > sizeof c->advertise_list)
			return fail(ld, "[%s] %s: list longer than %zu bytes", k->section, k->name,
				    sizeof c->advertise_list - 1);
		if (n)
			c->advertise_list[n++] = ',';
		memcpy(c->advertise_list + n, p, len);
		n += len;
		c->advertise_list[n] = '\0';
		if (!comma)
			break;
		p = comma + 1;
	}
	c->advertise = ADVERTISE_LIST;
	return 1;
}

/* Splits "ADDR/PREFIX" into the address text and the prefix length
 * (digits only, at most `max`); false when it is not that shape. */
static bool split_cidr(const char *value, size_t value_len, char *host, size_t host_cap,
		       uint64_t max, unsigned *prefix)
{
	const char *slash = memchr(value, '/', value_len);
	uint64_t bits = 0;
	const char *end;
	char digits[8];
	size_t len = slash ? (size_t)(slash - value) : 0;
	size_t dlen = slash ? value_len - len - 1 : 0;
	if (!slash || len == 0 || len >= host_cap || dlen == 0 || dlen >= sizeof digits)
		return false;
	memcpy(digits, slash + 1, dlen);
	digits[dlen] = '\0';
	if (config_parse_digits(digits, &bits, &end) < 0 || *end || bits < 1 || bits > max)
		return false;
	memcpy(host, value, len);
	host[len] = '\0';
	*prefix = (unsigned)bits;
	return true;
}

/* "198.18.0.1/15": an IPv4 address and its prefix length (1 to 32). */
static int set_cidr(struct load *ld, const struct key *k, const char *value)
{
	char host[INET_ADDRSTRLEN];
	unsigned prefix;
	struct in_addr a;
	if (!split_cidr(value, strlen(value), host, sizeof host, 32, &prefix) ||
	    inet_pton(AF_INET, host, &a) != 1)
		goto bad;
	ld->cfg.dpdk_addr = a.s_addr;
	ld->cfg.dpdk_prefix = prefix;
	return 1;
bad:
	return fail(ld,
		    "[%s] %s: '%s' is not ADDR/PREFIX (a numeric IPv4 address and a "
		    "prefix length 1 to 32, as 198.18.0.1/15)",
		    k->section, k->name, value);
}

/* One "ADDR/PREFIX" of either family into a prefix of the IPv6 space. */
static bool parse_prefix(const char *text, size_t len, struct config_prefix *out)
{
	char host[INET6_ADDRSTRLEN];
	unsigned bits;
	memset(out, 0, sizeof *out);
	if (split_cidr(text, len, host, sizeof host, 32, &bits) &&
	    inet_pton(AF_INET, host, out->addr + 12) == 1) {
		out->addr[10] = out->addr[11] = 0xff;
		out->bits = 96 + bits;
	} else if (split_cidr(text, len, host, sizeof host, 128, &bits) &&
		   inet_pton(AF_INET6, host, out->addr) == 1) {
		out->bits = bits;
	} else {
		return false;
	}
	/* Host bits set are a typo more often than not: refuse them. */
	for (unsigned i = out->bits; i < 128; i++)
		if (out->addr[i / 8] & (0x80 >> (i % 8)))
			return false;
	return true;
}

/* "10.0.0.0/8, fd00::/8": the peers allowed to send a PROXY header. */
static int set_cidr_list(struct load *ld, const struct key *k, const char *value)
{
	struct config *c = &ld->cfg;
	c->proxy_from_count = 0;
	memset(c->proxy_from, 0, sizeof c->proxy_from);
	const char *p = value;
	while (*p) {
		p += strspn(p, " \t");
		size_t len = strcspn(p, ",");
		size_t item = len;
		while (item && (p[item - 1] == ' ' || p[item - 1] == '\t'))
			item--;
		if (c->proxy_from_count == CONFIG_PROXY_FROM_MAX)
			return fail(ld, "[%s] %s: more than %d prefixes", k->section, k->name,
				    CONFIG_PROXY_FROM_MAX);
		if (!parse_prefix(p, item, &c->proxy_from[c->proxy_from_count]))
			return fail(ld,
				    "[%s] %s: '%.*s' is not ADDR/PREFIX (a numeric IPv4 or "
				    "IPv6 network with no host bits set, as 10.0.0.0/8)",
				    k->section, k->name, (int)item, p);
		c->proxy_from_count++;
		p += len;
		if (*p == ',') {
			p++;
			if (!p[strspn(p, " \t")])
				return fail(ld, "[%s] %s: empty item after ','", k->section,
					    k->name);
		}
	}
	return 1;
}

static bool text_has_control(const char *s)
{
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return true;
	return false;
}

static int set_value(struct load *ld, const struct key *k, const char *value)
{
	switch (k->kind) {
	case K_ENUM:
		return set_word(ld, k, value);
	case K_PATH:
		return set_path_value(ld, k, value);
	case K_OPTPATH:
		if (!value[0]) {
			((char *)&ld->cfg + k->offset)[0] = '\0';
			return 1;
		}
		return set_path_value(ld, k, value);
	case K_ADDR:
		return set_addr_text(ld, k, value);
	case K_WORD:
		if (strlen(value) >= k->width || strpbrk(value, " \t/"))
			return fail(ld, "[%s] %s: '%s' is not a plain name", k->section, k->name,
				    value);
		snprintf((char *)&ld->cfg + k->offset, k->width, "%s", value);
		return 1;
	case K_LISTEN:
		return set_listen(ld, k, value);
	case K_ADVERTISE:
		return set_advertise(ld, k, value);
	case K_TEXT:
		if (strlen(value) >= k->width)
			return fail(ld, "[%s] %s: longer than %zu characters", k->section, k->name,
				    k->width - 1);
		/* A text may end up in a header line (cache_control): a stray
		 * CR would split it into two. */
		if (text_has_control(value))
			return fail(ld, "[%s] %s: control character in the value", k->section,
				    k->name);
		snprintf((char *)&ld->cfg + k->offset, k->width, "%s", value);
		return 1;
	case K_CIDR:
		return set_cidr(ld, k, value);
	case K_CIDR_LIST:
		return set_cidr_list(ld, k, value);
	default:
		return set_number(ld, k, value);
	}
}

static int handle(void *user, const char *section, const char *name, const char *value)
{
	struct load *ld = user;
	if (ld->err_line)
		return 0;
	const struct key *k = key_find(section, name);
	if (!k) {
		if (!section[0])
			return fail(ld, "key '%s' outside any [section]", name);
		if (!section_known(section)) {
			const char *near = nearest_section(section);
			if (near)
				return fail(ld, "unknown section [%s] (did you mean [%s]?)",
					    section, near);
			return fail(ld, "unknown section [%s]", section);
		}
		const char *near = nearest_key(section, name);
		if (near)
			return fail(ld, "[%s] unknown key '%s' (did you mean '%s'?)", section, name,
				    near);
		const char *home = key_section_of(name);
		if (home)
			return fail(ld, "[%s] unknown key '%s' (it belongs in [%s])", section, name,
				    home);
		return fail(ld, "[%s] unknown key '%s'", section, name);
	}
	ld->key_line[k - keys] = ld->line;
	return set_value(ld, k, value);
}

static unsigned line_of(const struct load *ld, const char *section, const char *name)
{
	const struct key *k = key_find(section, name);
	return k ? ld->key_line[k - keys] : 0;
}

/* A NATS subject token (or dot-separated tokens when `dots`): no
 * wildcard, no empty token. */
static bool nats_name_ok(const char *v, bool dots)
{
	if (!v[0] || v[0] == '.' || v[strlen(v) - 1] == '.' || strstr(v, ".."))
		return false;
	for (const char *p = v; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || (dots && *p == '.')))
			return false;
	return true;
}

static bool nats_urls_ok(const char *v)
{
	char copy[sizeof((struct config *)0)->drain_nats];
	snprintf(copy, sizeof copy, "%s", v);
	char *save = NULL;
	unsigned n = 0;
	for (char *u = strtok_r(copy, ", ", &save); u; u = strtok_r(NULL, ", ", &save), n++)
		if (strncmp(u, "nats://", 7) != 0 && strncmp(u, "tls://", 6) != 0)
			return false;
	return n > 0;
}

/* A [drain] key's error, at the line that set it. */
#define fail_at(ld, key, ...) ((ld)->line = line_of((ld), "drain", (key)), fail((ld), __VA_ARGS__))

static int validate_drain(struct load *ld)
{
	const struct config *c = &ld->cfg;
	if (c->drain_nats[0] && !nats_urls_ok(c->drain_nats))
		return fail_at(ld, "nats",
			       "[drain] nats: '%s' is not a comma-separated list of "
			       "nats:// or tls:// URLs",
			       c->drain_nats);
	if (!nats_name_ok(c->drain_stream, false))
		return fail_at(ld, "stream",
			       "[drain] stream: '%s' is not a stream name (letters, "
			       "digits, '-' and '_')",
			       c->drain_stream);
	if (!nats_name_ok(c->drain_subject, true))
		return fail_at(ld, "subject",
			       "[drain] subject: '%s' is not a subject prefix "
			       "(dot-separated tokens, no wildcards)",
			       c->drain_subject);
	if (c->drain_beacon_id[0] && !nats_name_ok(c->drain_beacon_id, false))
		return fail_at(ld, "beacon_id",
			       "[drain] beacon_id: '%s' is not one subject token "
			       "(letters, digits, '-' and '_')",
			       c->drain_beacon_id);
	if (!c->drain_tls_cert[0] != !c->drain_tls_key[0])
		return fail_at(ld, c->drain_tls_cert[0] ? "tls_cert" : "tls_key",
			       "[drain] tls_cert and tls_key go together");
	if (c->drain_creds[0] && c->drain_user[0])
		return fail_at(ld, "creds",
			       "[drain] creds and user are two ways to log in: "
			       "give one");
	if (c->drain_max_chunk && c->drain_max_chunk < 1024)
		return fail_at(ld, "max_chunk",
			       "[drain] max_chunk: at least 1k (or 0 for the "
			       "server's max_payload)");
	return 1;
}

/* [trust] kv_bucket needs a server to reach, and names a bucket. */
static int validate_trust_kv(struct load *ld)
{
	const struct config *c = &ld->cfg;
	if (c->trust_kv_nats[0] && !nats_urls_ok(c->trust_kv_nats)) {
		ld->line = line_of(ld, "trust", "kv_nats");
		return fail(ld,
			    "[trust] kv_nats: '%s' is not a comma-separated list of nats:// or "
			    "tls:// URLs",
			    c->trust_kv_nats);
	}
	if (!c->trust_kv_bucket[0])
		return 1;
	ld->line = line_of(ld, "trust", "kv_bucket");
	if (!nats_name_ok(c->trust_kv_bucket, false))
		return fail(ld,
			    "[trust] kv_bucket: '%s' is not a bucket name (letters, digits, "
			    "'-' and '_')",
			    c->trust_kv_bucket);
	if (!c->trust_kv_nats[0] && !c->drain_nats[0])
		return fail(ld, "[trust] kv_bucket is set but neither [trust] kv_nats nor [drain] "
				"nats names a NATS server");
	return 1;
}

#undef fail_at
#define fail_at(ld, key, ...)                                                                      \
	((ld)->line = line_of((ld), "upstream", (key)), fail((ld), __VA_ARGS__))

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = (char)tolower((unsigned char)ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* One fingerprint: 64 hex digits, ':' between bytes allowed (openssl's
 * -fingerprint form). */
static bool parse_sha256(const char *v, uint8_t out[32])
{
	size_t n = 0;
	for (const char *p = v; *p; p++) {
		if (*p == ':')
			continue;
		int d = hex_digit(*p);
		if (d < 0 || n >= 64)
			return false;
		out[n / 2] = (uint8_t)(n % 2 ? (out[n / 2] | d) : d << 4);
		n++;
	}
	return n == 64;
}

static int parse_children(struct load *ld)
{
	struct config *c = &ld->cfg;
	char copy[sizeof c->upstream_children];
	snprintf(copy, sizeof copy, "%s", c->upstream_children);
	c->upstream_n_children = 0;
	char *save = NULL;
	for (char *f = strtok_r(copy, ", ", &save); f; f = strtok_r(NULL, ", ", &save)) {
		if (c->upstream_n_children == CONFIG_CHILDREN_MAX)
			return fail_at(ld, "children", "[upstream] children: at most %d",
				       CONFIG_CHILDREN_MAX);
		if (!parse_sha256(f, c->upstream_child_sha256[c->upstream_n_children++]))
			return fail_at(ld, "children",
				       "[upstream] children: '%s' is not a SHA-256 certificate "
				       "fingerprint (64 hex digits)",
				       f);
	}
	return 1;
}

static int validate_upstream(struct load *ld)
{
	const struct config *c = &ld->cfg;
	if (parse_children(ld) != 1)
		return 0;
	/* A child's re-forward is one upload only through the store's retry
	 * de-duplication. */
	if (c->upstream_n_children && !c->store.dedupe_window_s)
		return fail_at(ld, "children",
			       "[upstream] children needs [store] dedupe_window on: a child's "
			       "re-forward is recognised by it");
	if (c->upstream_beacon_id[0] && !nats_name_ok(c->upstream_beacon_id, false))
		return fail_at(ld, "beacon_id",
			       "[upstream] beacon_id: '%s' is not a beacon id (letters, digits, "
			       "'-' and '_')",
			       c->upstream_beacon_id);
	if (c->upstream_sync && (!c->upstream_url[0] || !c->download_dir[0]))
		return fail_at(ld, "sync",
			       "[upstream] sync needs url (the parent) and [server] download_dir "
			       "(the tree it mirrors into)");
	if (!c->upstream_url[0])
		return 1;
	if (strncmp(c->upstream_url, "https://", 8) != 0 || !c->upstream_url[8] ||
	    strpbrk(c->upstream_url + 8, "/?# @"))
		return fail_at(ld, "url", "[upstream] url: '%s' is not https://host[:port]",
			       c->upstream_url);
	if (!c->upstream_cert[0] || !c->upstream_key[0])
		return fail_at(ld, "url",
			       "[upstream] url needs cert and key (this beacon's client "
			       "certificate for the parent)");
	if (!c->upstream_ca[0])
		return fail_at(ld, "url",
			       "[upstream] url needs ca (the parent's certificate must chain "
			       "to it)");
	return 1;
}

static int validate(struct load *ld)
{
	const struct config *c = &ld->cfg;
	if (validate_drain(ld) != 1 || validate_trust_kv(ld) != 1 || validate_upstream(ld) != 1)
		return 0;
	if (c->proxy_protocol && !c->proxy_from_count) {
		ld->line = line_of(ld, "server", "proxy_protocol");
		/* Without it anyone could claim any address. */
		return fail(ld, "[server] proxy_protocol is on but proxy_from names no peer "
				"allowed to send the header");
	}
	if (c->max_target > c->max_header_bytes) {
		unsigned a = line_of(ld, "limits", "max_target");
		unsigned b = line_of(ld, "limits", "max_header_bytes");
		ld->line = a > b ? a : b;
		return fail(ld, "[limits] max_target (%zu) exceeds max_header_bytes (%zu)",
			    c->max_target, c->max_header_bytes);
	}
	if (c->store.upload_buffer > c->store.segment_bytes) {
		unsigned a = line_of(ld, "store", "upload_buffer");
		unsigned b = line_of(ld, "store", "segment_size");
		ld->line = a > b ? a : b;
		/* The store asserts this rule (beacon/store-t.h). */
		return fail(ld, "[store] upload_buffer (%zu) exceeds segment_size (%llu)",
			    c->store.upload_buffer, (unsigned long long)c->store.segment_bytes);
	}
	return 1;
}

static void set_dir(struct load *ld, const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash ? (size_t)(slash - path) + 1 : 0;
	if (len >= sizeof ld->dir)
		len = 0; /* the file could not have been opened anyway */
	memcpy(ld->dir, path, len);
	ld->dir[len] = '\0';
}

static int parse_file(struct load *ld, char *err, size_t errlen)
{
	int rc = ini_parse_stream(read_line, ld, handle, ld);
	if (rc > 0 && (!ld->err_line || (unsigned)rc < ld->err_line)) {
		ld->err_line = (unsigned)rc;
		snprintf(ld->reason, sizeof ld->reason,
			 "syntax error: expected [section], key = value, or a comment");
	}
	if (!ld->err_line && ferror(ld->f)) {
		snprintf(err, errlen, "%s: %s", ld->path, strerror(errno));
		return -1;
	}
	if (!ld->err_line)
		validate(ld);
	derive(&ld->cfg);
	if (ld->err_line) {
		snprintf(err, errlen, "%s:%u: %s", ld->path, ld->err_line, ld->reason);
		return -1;
	}
	return 0;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
	struct load *ld = calloc(1, sizeof *ld);
	if (!ld) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	ld->f = fopen(path, "r");
	if (!ld->f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		free(ld);
		return -1;
	}
	ld->path = path;
	set_dir(ld, path);
	config_defaults(&ld->cfg);
	int rc = parse_file(ld, err, errlen);
	fclose(ld->f);
	if (rc == 0)
		*cfg = ld->cfg;
	free(ld);
	return rc;
}
