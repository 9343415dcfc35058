/*
 * config: beacond.conf, an INI file (parsed with Debian's libinih). Every
 * error names the file and line: "beacond.conf:14: [tls] issuers: ...".
 * Without a file, config_defaults() alone gives the embedded demo
 * configuration (127.0.0.1:8443, demo PKI under .demo/pki).
 *
 * Loaded on the main thread at start-up and by the control thread on reload;
 * a loaded config is immutable and may be read from any thread. It holds
 * plain values only (no pointer into itself), so a struct copy is complete.
 *
 * A part's options come whole from here: [store] is a struct store_options
 * (beacon/store-t.h), whose table gives the keys, the defaults and the
 * ranges checked here, each refusal with the file and line; the store
 * trusts what it is given. config_parse_endpoint is the one "ADDR:PORT"
 * parser: the control plane's metrics listener uses it too.
 */
#ifndef BEACON_CONFIG_H
#define BEACON_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "beacon/log.h"
#include "beacon/store-t.h"

#define CONFIG_PATH_MAX 1024
#define CONFIG_CHILDREN_MAX 16 /* [upstream] children */

enum identity_source { IDENTITY_CN, IDENTITY_SAN_DNS, IDENTITY_SAN_EMAIL, IDENTITY_SAN_URI };
enum advertise_mode { ADVERTISE_ALL, ADVERTISE_NONE, ADVERTISE_LIST };
enum backend_kind { BACKEND_KERNEL, BACKEND_DPDK };
enum approval_policy { APPROVAL_AUTO, APPROVAL_REQUIRE };
/* What to do with a CRL whose nextUpdate has passed ([tls] crl_stale). */
enum crl_stale_policy {
	CRL_STALE_WARN,	  /* log a warning, keep using the CRL */
	CRL_STALE_REFUSE, /* every lookup for that issuer answers STALE */
};

/* An address prefix: IPv6, or IPv4 mapped (::ffff:a.b.c.d), with its
 * length counted in those 128 bits (an IPv4 /8 is 104). */
struct config_prefix {
	uint8_t addr[16];
	unsigned bits;
};
#define CONFIG_PROXY_FROM_MAX 16

struct config {
	/* [server] */
	char listen_addr[64]; /* numeric IPv4 or IPv6 */
	uint16_t listen_port;
	unsigned workers; /* 0: one per online core */
	enum backend_kind backend;
	char data_dir[CONFIG_PATH_MAX];
	char download_dir[CONFIG_PATH_MAX];
	char control_socket[CONFIG_PATH_MAX];
	char user[64];		 /* drop to this user after binding; "" = stay */
	char metrics_listen[80]; /* loopback "ADDR:PORT" for /metrics; "" = off */
	enum approval_policy approval;
	bool watch;		  /* reload when a trust file changes */
	unsigned health_stall_ms; /* a worker loop or commit stuck longer: /healthz 503 */
	unsigned proxy_protocol;  /* PROXY_ACCEPT_* bits (beacon/proxy.h); 0: no header */
	struct config_prefix proxy_from[CONFIG_PROXY_FROM_MAX]; /* who may send it */
	unsigned proxy_from_count;

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
	unsigned max_session_age_s; /* a ticket chain resumes this long after its full handshake */
	char crl_dir[CONFIG_PATH_MAX]; /* "" = no revocation data */
	enum crl_stale_policy crl_stale;
	char blocklist[CONFIG_PATH_MAX];       /* "" = none */
	char ticket_key_file[CONFIG_PATH_MAX]; /* "" = keys made at start-up */
	unsigned ticket_rotate_s;	       /* 0 = never (a key file's keys) */

	/* [limits] */
	size_t max_header_bytes;
	unsigned max_headers;
	size_t max_target;
	uint64_t max_body_bytes;
	unsigned header_timeout_ms;
	unsigned body_timeout_ms; /* longest gap between body bytes */
	unsigned idle_timeout_ms; /* keep-alive between requests */
	unsigned handshake_timeout_ms;
	unsigned max_connections;	     /* per worker */
	unsigned max_connections_per_source; /* 0: no limit */
	unsigned handshake_rate_per_source;  /* new connections a second; 0: no limit */
	unsigned max_handshakes_in_progress; /* per worker */

	/* [dpdk]: only read with backend = dpdk */
	char dpdk_eal_args[200]; /* EAL command line, split on blanks */
	unsigned dpdk_port;	 /* DPDK port index */
	uint32_t dpdk_addr;	 /* our IPv4 address, network byte order */
	unsigned dpdk_prefix;	 /* its prefix length: the on-link subnet */
	unsigned dpdk_mbufs;	 /* mbufs in each queue's mempool */
	/* TCP keepalive: an established connection silent this long gets a
	 * probe every interval; after `probes` unanswered ones it is reset
	 * and the layer above hears it closed. idle 0: no keepalive. */
	unsigned dpdk_keepalive_idle_ms;
	unsigned dpdk_keepalive_interval_ms;
	unsigned dpdk_keepalive_probes;
	/* IPv4 and TCP checksums checked and filled in by the NIC where the
	 * port offers it; false: always in software. */
	bool dpdk_checksum_offload;

	/* [download] */
	char download_cache_control[128]; /* Cache-Control of download answers */
	uint64_t download_cache_bytes;	  /* hot-file cache, all workers together; 0: off */
	uint64_t download_cache_file_max; /* larger files are read from disk each time */

	/* [log] */
	enum log_format log_format;
	enum log_level log_level;
	bool access_log; /* one line per HTTP request */

	/* [drain]: hand every committed upload on to NATS JetStream
	 * (beacon/drain.h). drain_nats "" = off. */
	char drain_nats[512]; /* comma-separated nats:// or tls:// URLs */
	char drain_user[128];
	char drain_password[128];
	char drain_creds[CONFIG_PATH_MAX]; /* a .creds file (JWT and nkey seed); "" = none */
	char drain_tls_ca[CONFIG_PATH_MAX];
	char drain_tls_cert[CONFIG_PATH_MAX];
	char drain_tls_key[CONFIG_PATH_MAX];
	char drain_stream[64];
	char drain_subject[128];  /* the subject prefix */
	char drain_beacon_id[64]; /* "" = the host name */
	bool drain_create_stream;
	unsigned drain_replicas;
	unsigned drain_duplicate_window_s;
	unsigned drain_window;	  /* messages published and not yet acknowledged */
	uint64_t drain_max_chunk; /* body bytes a message carries; 0 = the server's max_payload */

	/* [trust]: CRLs and a block list from a JetStream key-value bucket
	 * (control/trust/kv.c), over [drain]'s login and TLS keys. */
	char trust_kv_bucket[64];  /* "" = off */
	char trust_kv_nats[512];   /* URLs; "" = [drain] nats */
	unsigned trust_kv_wait_ms; /* start-up waits this long for the bucket; 0 = serve at once */

	/* [upstream]: forward every committed upload to a parent beacon over
	 * mutual TLS (the drain's "upstream" sink). upstream_url "" = off. */
	char upstream_url[512]; /* https://host[:port] */
	char upstream_cert[CONFIG_PATH_MAX];
	char upstream_key[CONFIG_PATH_MAX];
	char upstream_ca[CONFIG_PATH_MAX];
	char upstream_beacon_id[64]; /* "" = [drain] beacon_id, else the host name */
	/* As a parent: the SHA-256 fingerprints (hex, comma-separated) of the
	 * child beacons' client certificates whose Beacon-* headers count. */
	char upstream_children[1024];
	uint8_t upstream_child_sha256[CONFIG_CHILDREN_MAX][32];
	unsigned upstream_n_children;
	/* Content down (control/mirror): the download directory mirrored
	 * from the parent's, every sync_interval and on `beaconctl upstream
	 * sync`; needs url and [server] download_dir. */
	bool upstream_sync;
	unsigned upstream_sync_interval_s; /* 0 = only on demand */

	/* [store], and [server] approval as store.require_approval: the
	 * store's own options (beacon/store-t.h), given to store_open with
	 * data_dir. Plain values, so a struct copy is a whole config. */
	struct store_options store;
};

/* The embedded defaults: a demo server on 127.0.0.1:8443. */
void config_defaults(struct config *cfg);

/* Loads `path` over the defaults. Returns 0, or -1 with a message of the
 * form "path:line: reason" in err. Relative paths in the file are taken
 * relative to the file's directory; the defaults' paths stay relative to the
 * current directory. On failure *cfg is left untouched (a failed reload
 * keeps the running configuration). An unknown section or key is an error;
 * whether cert, key and issuers exist is checked when TLS loads them. */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);

/*
 * What a reload applies. A reload reads the file again into `fresh`;
 * config_take_reloadable copies into `running` the keys a reload applies:
 * the trust snapshot's inputs in [tls] (cert, key, issuers, advertise, the
 * usage checks, identity, crl_dir, crl_stale, blocklist). Every other key
 * takes effect only at the next start. config_restart_keys writes into out
 * "[section] key" for each of those others whose value differs between
 * `running` and `fresh`, comma-separated (cut short with "..." when out is
 * too small), and returns how many there are: 0 when nothing waits for a
 * restart.
 */
void config_take_reloadable(struct config *running, const struct config *fresh);
unsigned config_restart_keys(const struct config *running, const struct config *fresh, char *out,
			     size_t len);

/* Parses sizes like "16k", "10M", "1G" (powers of 1024; suffixes k, m, g, t
 * in either case) and durations like "500ms", "10s", "2m", "1h", "30d" (a
 * bare number is seconds). Reject signs, blanks, junk and overflow (past
 * UINT64_MAX bytes, past UINT_MAX ms). Return 0 or -1. Exposed for tests. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration_ms(const char *s, unsigned *out);

/*
 * "ADDR:PORT", the one parser of it (the [server] listen and metrics keys,
 * the control plane's metrics listener): a numeric IPv4 address
 * ("127.0.0.1:9100") or a numeric IPv6 one in brackets ("[::1]:9100"), a
 * colon, and a decimal port 0 to 65535 (0: the kernel picks one; the
 * configuration's keys want 1 to 65535). No host names, blanks, signs or
 * anything after the port. Returns 0 and fills *out, or -1.
 */
struct config_endpoint {
	char addr[INET6_ADDRSTRLEN]; /* the address as written, without brackets */
	uint16_t port;
	struct sockaddr_storage sa; /* the same, ready for bind(2) */
	socklen_t salen;
};
int config_parse_endpoint(const char *text, struct config_endpoint *out);

#endif
