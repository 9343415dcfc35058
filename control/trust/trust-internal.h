/*
 * Private to control/trust: the layout of a trust snapshot, shared by the
 * files that build it (snapshot.c, issuers.c) and answer for it.
 */
#ifndef BEACON_TRUST_INTERNAL_H
#define BEACON_TRUST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "beacon/snapshot.h"
#include "blocklist.h"

struct config;
struct store_reader;
struct tls_server;

/* Issuer certificates a snapshot holds at most. */
#define TRUST_MAX_ISSUERS 1024

/* The server certificate's subject (cert_name_text) and notAfter (Unix
 * seconds, 0 unreadable), for metrics; name "" when it did not parse. */
struct trust_snapshot_server {
	char name[256];
	int64_t not_after;
};

struct trust_snapshot {
	uint64_t generation;
	time_t loaded;
	struct trust_policy policy;
	size_t n_ca;
	struct trust_ca ca[TRUST_MAX_ISSUERS]; /* each ca[i].der an owned copy */
	struct revocation_index *revocation;
	struct blocklist blocked;
	struct trust_snapshot_server server;
};

/* The trust data a JetStream key-value bucket holds ([trust] kv_bucket,
 * kv.c): CRLs by key (crl.<name>) and one block list, each the last value
 * that passed a build. Owned by the reload lock's holder. */
#define TRUST_KV_KEY_MAX 256

struct trust_kv_value {
	char key[TRUST_KV_KEY_MAX]; /* "kv:<key>" */
	uint8_t *data;
	size_t len;
};

#define TRUST_KV_MAX_CRLS 256

struct trust_kv_set {
	struct trust_kv_value crls[TRUST_KV_MAX_CRLS];
	size_t n_crls;
	bool has_blocklist;
	struct trust_kv_value blocklist;
};

/* snapshot.c: trust_snapshot_build with the key-value bucket's CRLs and
 * block list beside the files' (kv NULL: none). */
int trust_snapshot_build_with(const struct config *cfg, const struct trust_kv_set *kv,
			      const char *const *devices, size_t n_devices,
			      struct trust_snapshot **out, char *err, size_t errlen);

/* server.c: trust_server_build with the bucket's trust data. */
int trust_server_build_with(const struct config *cfg, const struct trust_kv_set *kv,
			    struct store_reader *reader, struct tls_server **out, char *err,
			    size_t errlen);

struct trust_control;
struct trust_kv;

/* reload.c: one change of the bucket (a put of `value`, or the key deleted
 * or purged) built into a new snapshot exactly as a file reload builds one:
 * published whole, or refused with the trust in force kept (the bucket's
 * last good value for that key with it). Counted and logged as a reload
 * named "kv:<key>". 0 or -1. */
int trust_kv_change(struct trust_control *tc, const char *key, const uint8_t *value, size_t len,
		    bool deleted);

/* reload.c: takes out the bucket's values in force whose keys (without
 * "kv:") are not among `present`: a watch that read the bucket anew after
 * a failure learns this way of keys gone while it was away. The kv
 * thread only. */
void trust_kv_sweep(struct trust_control *tc, const char (*present)[TRUST_KV_KEY_MAX], size_t n);

/* kv.c: the thread that watches [trust] kv_bucket and hands each change of
 * a trust key to trust_kv_change. NATS out of reach is not an error: it
 * retries. -1 with err only when the thread cannot start. */
int trust_kv_start(struct trust_control *tc, const struct config *cfg, struct trust_kv **out,
		   char *err, size_t errlen);
/* Stops and joins the thread; NULL is fine. */
void trust_kv_stop(struct trust_kv *k);
/* kv.c: whether a watch of the bucket is up now. Any thread. */
bool trust_kv_connected(void);

/* issuers.c: every certificate of cfg->issuers (a PEM bundle or a
 * directory of *.pem / *.crt) into t->ca, each marked advertised or not
 * by [tls] advertise. 0, or -1 with a reason naming the file in err (no
 * certificates at all is an error). */
int issuers_load(struct trust_snapshot *t, const struct config *cfg, char *err, size_t errlen);

/* issuers.c: the subject (cert_name_text) and notAfter of the first
 * certificate of a PEM buffer. 0, or -1 when none parses. */
int cert_pem_dates(const uint8_t *pem, size_t len, char *name, size_t name_len, int64_t *not_after);

/* watch.c: a fingerprint of the trust files as they stand (each path's
 * and, for a directory, each entry's mtime, size and inode): it changes
 * when any of them is written, replaced, added or removed. */
uint64_t trust_files_signature(const struct config *cfg);

#endif
