/*
 * config: beacond.conf, an INI file (parsed with Debian's libinih). Every
 * error names the file and line: "beacond.conf:14: [tls] issuers: ...".
 * Without a file, config_defaults() alone gives the embedded demo
 * configuration (127.0.0.1:8443, demo PKI under .demo/pki).
 *
 * Loaded on the main thread at start-up and by the control thread on reload;
 * a loaded config is immutable and may be read from any thread.
 */
#ifndef BEACON_CONFIG_H
#define BEACON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "beacon/store.h"

#define CONFIG_PATH_MAX 1024

enum identity_source { IDENTITY_CN, IDENTITY_SAN_DNS, IDENTITY_SAN_EMAIL, IDENTITY_SAN_URI };
enum advertise_mode { ADVERTISE_ALL, ADVERTISE_NONE, ADVERTISE_LIST };
enum backend_kind { BACKEND_KERNEL, BACKEND_DPDK };

struct config {
	/* [server] */
	char listen_addr[64]; /* numeric IPv4 or IPv6 */
	uint16_t listen_port;
	unsigned workers; /* 0: one per online core */
	enum backend_kind backend;
	char data_dir[CONFIG_PATH_MAX];
	char download_dir[CONFIG_PATH_MAX];
	char control_socket[CONFIG_PATH_MAX];

	/* [tls] */
	char cert[CONFIG_PATH_MAX];
	char key[CONFIG_PATH_MAX];
	char issuers[CONFIG_PATH_MAX]; /* a PEM bundle or a directory of them */
	enum advertise_mode advertise;
	char advertise_list[1024]; /* comma-separated subject CNs, ADVERTISE_LIST */
	bool require_client_auth_eku;
	bool require_digital_signature;
	enum identity_source identity;
	unsigned ticket_lifetime_s;

	/* [limits] */
	size_t max_header_bytes;
	unsigned max_headers;
	size_t max_target;
	uint64_t max_body_bytes;
	unsigned header_timeout_ms;
	unsigned body_timeout_ms; /* longest gap between body bytes */
	unsigned idle_timeout_ms; /* keep-alive between requests */
	unsigned handshake_timeout_ms;
	unsigned max_connections; /* per worker */

	/* [store] */
	struct store_config store;
	/* string storage for store.data_dir lives in data_dir above */
};

/* The embedded defaults: a demo server on 127.0.0.1:8443. */
void config_defaults(struct config *cfg);

/* Loads `path` over the defaults. Returns 0, or -1 with a message of the
 * form "path:line: reason" in err. Relative paths in the file are taken
 * relative to the file's directory. */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);

/* Parses sizes like "16k", "10M", "1G" (powers of 1024) and durations like
 * "500ms", "10s", "2m". Return 0 or -1. Exposed for tests. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration_ms(const char *s, unsigned *out);

#endif
