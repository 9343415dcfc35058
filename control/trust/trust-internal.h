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
