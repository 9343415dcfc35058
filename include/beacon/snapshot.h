/*
 * snapshot: a trust snapshot as the data plane sees it. The trust part
 * (control/trust, include/beacon/trust.h) builds snapshots from the trust
 * files and publishes them; the TLS layer and the workers only read them,
 * through this header. It is the one seam between the two: the data plane
 * includes nothing of control/.
 *
 * A snapshot is immutable once built: the server's policy (usage checks,
 * which name is the device, ticket ages), the configured issuer CAs (raw
 * names, serials and key identifiers, their DER, whether each is
 * advertised), the revocation index and the block list. Every function
 * here only reads it and may be called from any thread, without a lock.
 *
 * A snapshot reaches a worker inside a tls_server (include/beacon/tls.h:
 * the wolfSSL context built over it). The publication below is
 * quiescent-state-based reclamation: a worker calls trust_quiescent once
 * per loop turn, where it holds no bare snapshot pointer; between two such
 * calls it may trust_acquire (a counted reference, kept by a connection for
 * its whole life, dropped with tls_server_unref). When the control thread
 * publishes a newer snapshot, handshakes in flight finish on the one they
 * began with; new connections get the new one; an open connection is
 * checked against the newest before each request (trust_generation,
 * tls_session_recheck). Worker functions from worker `id`'s own thread
 * only; trust_generation from any thread; trust_current_info (the facts
 * the stats report) under the publication lock.
 */
#ifndef BEACON_SNAPSHOT_H
#define BEACON_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "beacon/config.h"

/* What the revocation index says of a certificate (issuer + serial). */
enum revocation_status {
	REVOCATION_GOOD,    /* not on its issuer's CRL (or the issuer has none) */
	REVOCATION_REVOKED, /* on its issuer's CRL */
	REVOCATION_STALE,   /* issuer's CRL past nextUpdate under crl_stale = refuse */
};

/* The handshake policy of a snapshot: the [tls] keys a reload applies. */
struct trust_policy {
	bool require_eku;		/* clientAuth extended key usage */
	bool require_digital_signature; /* digitalSignature key usage */
	enum identity_source identity;	/* which name is the device */
	unsigned ticket_lifetime_s;
	unsigned max_session_age_s;
};

/* A configured issuer CA as the chain above a client's certificate sees
 * it: its own name, and its issuer's name, its serial and key identifiers,
 * so that an intermediate CA configured as an issuer is checked against its
 * issuer's CRL too. Names hashed by cert_names (include/beacon/certid.h),
 * as the CRL index hashes them. */
struct trust_ca {
	uint8_t subject_sha256[32];
	uint8_t issuer_sha256[32];
	uint8_t serial[32];
	uint8_t serial_len;
	uint8_t skid_len, akid_len;
	uint8_t skid[32], akid[32];
	bool self_issued;   /* a root: nothing above it to ask */
	bool advertised;    /* named in the CertificateRequest's CA list */
	char name[64];	    /* for refusal reasons */
	int64_t not_after;  /* Unix seconds; 0 when unreadable */
	const uint8_t *der; /* the certificate, for the TLS context */
	size_t der_len;
};

struct trust_snapshot;

const struct trust_policy *trust_snapshot_policy(const struct trust_snapshot *t);

/* The configured issuers, in the order they were loaded (files sorted by
 * name, certificates in file order). */
size_t trust_snapshot_ca_count(const struct trust_snapshot *t);
const struct trust_ca *trust_snapshot_ca(const struct trust_snapshot *t, size_t i);

/* The revocation index's answer for (issuer name hash, serial); see
 * revocation_lookup. Constant time, no allocation. */
enum revocation_status trust_snapshot_revocation(const struct trust_snapshot *t,
						 const uint8_t issuer_sha256[32],
						 const uint8_t *serial, size_t serial_len);

/* Whether the certificate (SHA-256 of its DER) or the device is blocked. */
bool trust_snapshot_blocked(const struct trust_snapshot *t, const uint8_t cert_sha256[32],
			    const char *device);

/* Frees a snapshot: by the tls_server that holds it, with its last
 * reference. NULL is ignored. */
void trust_snapshot_free(struct trust_snapshot *t);

/* Facts about a snapshot, for status and metrics. */
struct tls_server_info {
	uint64_t generation;
	uint64_t loaded_unix_s;
	unsigned issuers;
	uint64_t revoked_serials;
	uint64_t crls;
	unsigned blocked_entries;
};

/* Facts about the current snapshot, for status and metrics. The caller
 * holds the lock that serialises publication (trust_options.lock): the
 * current snapshot is read without a reference. */
void trust_current_info(struct tls_server_info *out);

/* A date of the snapshot in force that an operator must act before: the
 * server certificate's and each issuer CA's notAfter, each CRL issuer's
 * latest nextUpdate (an issuer whose CRLs have none is left out). */
enum trust_date_kind { TRUST_DATE_SERVER_CERT, TRUST_DATE_ISSUER_CERT, TRUST_DATE_CRL };
struct trust_date {
	enum trust_date_kind kind;
	const char *name; /* subject, or the CRL's issuer; valid during the call */
	int64_t unix_s;
};

/* Calls fn for each date; under the same lock as trust_current_info. */
void trust_current_dates(void (*fn)(const struct trust_date *d, void *arg), void *arg);

/* ---- the workers' side of publication ---- */

struct tls_server;

/* The current snapshot's tls_server, with a reference the caller must
 * drop (tls_server_unref). */
struct tls_server *trust_acquire(void);

/* A number that changes whenever a snapshot is published. A connection
 * notes it when it starts and compares it before each request: a plain
 * atomic load, so the request path learns of a newer snapshot without
 * taking a reference. Seen before the trust_acquire that follows it, it
 * never hides a newer snapshot (at worst one check too many). */
uint64_t trust_generation(void);

/* Worker `worker` holds no bare snapshot pointer now. */
void trust_quiescent(unsigned worker);
/* A stopping worker: never waited for again. */
void trust_offline(unsigned worker);

#endif
