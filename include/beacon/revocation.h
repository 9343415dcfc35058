/*
 * revocation: the revoked serials of every CRL in a directory, as one hash
 * index keyed by (issuer, serial).
 *
 * Model: the control thread builds an index off the data path from a CRL
 * directory and the trusted issuer certificates; each CRL is parsed here
 * and its signature is verified by wolfCrypt against the issuer it names.
 * Any bad CRL (does not parse, unknown issuer, bad signature, lastUpdate in
 * the future) fails the whole build with a message naming the file, so the
 * caller keeps its old index: never fail open. Once built the index is
 * immutable: any thread may look up concurrently without locks, and it is
 * freed only when no reader holds it (the trust snapshot's RCU decides).
 * Part of the trust part (control/trust): revocation.c holds the index and
 * its build, crl.c reads, parses and verifies the CRLs. The data plane asks
 * the index only through its snapshot (trust_snapshot_revocation).
 *
 * wolfSSL's own CRL store walks a linked list of revoked entries on every
 * check; this index is open addressing, 24 bytes a slot at a load factor of
 * at most 2/3 (36 bytes per serial, about 36 MB per million), constant time.
 */
#ifndef BEACON_REVOCATION_H
#define BEACON_REVOCATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "beacon/snapshot.h" /* enum revocation_status; config.h: enum crl_stale_policy */

/* Serials longer than this (after leading zero bytes) are refused in a CRL:
 * RFC 5280 caps serials at 20 octets. */
#define REVOCATION_SERIAL_MAX 20

/* A trusted CA certificate, DER. Only borrowed during the build. */
struct revocation_issuer {
	const uint8_t *der;
	size_t der_len;
};

struct revocation_index;

/* Loads every non-hidden regular file of `crl_dir` (PEM, possibly several
 * CRLs a file, or DER) and checks each CRL against `issuers`. `crl_dir` NULL
 * gives an empty index. On error returns -1 with a message in `err` naming
 * the file, and *out is untouched. */
int revocation_index_build(const char *crl_dir, const struct revocation_issuer *issuers,
			   size_t n_issuers, enum crl_stale_policy policy,
			   struct revocation_index **out, char *err, size_t errlen);

/* CRL bytes from elsewhere than a file (a key-value store), read as a
 * file of crl_dir is (PEM, possibly several CRLs, or DER) and named in
 * errors by `label`. Only borrowed during the build. */
struct revocation_blob {
	const char *label;
	const uint8_t *data;
	size_t len;
};

/* revocation_index_build over crl_dir's files and then `blobs`: every CRL
 * of either is checked the same way, and any bad one fails the build. */
int revocation_index_build_with(const char *crl_dir, const struct revocation_blob *blobs,
				size_t n_blobs, const struct revocation_issuer *issuers,
				size_t n_issuers, enum crl_stale_policy policy,
				struct revocation_index **out, char *err, size_t errlen);

/* `issuer_name_sha256`: SHA-256 of the DER subject name of the certificate's
 * issuer (= the issuer name in the certificate). `serial`: the DER INTEGER
 * content bytes of the certificate's serial; leading zero bytes are ignored,
 * so 00 8F equals 8F. Thread-safe; no allocation; constant time in the size
 * of the index. Under `refuse`, an issuer whose newest CRL is past its
 * nextUpdate answers STALE for every serial, judged against the clock at
 * lookup time, so an index that outlives its CRL's nextUpdate goes stale. */
enum revocation_status revocation_lookup(const struct revocation_index *idx,
					 const uint8_t issuer_name_sha256[32],
					 const uint8_t *serial, size_t serial_len);

/* The same for a certificate (DER): takes its issuer name and serial with
 * the exact bytes a CRL names them by (cert_names, beacon/certid.h). A certificate that does not parse
 * answers REVOKED: never fail open. */
enum revocation_status revocation_lookup_cert(const struct revocation_index *idx,
					      const uint8_t *cert_der, size_t cert_len);

void revocation_index_free(struct revocation_index *idx);

/* Distinct (issuer, serial) pairs in the index. */
size_t revocation_index_count(const struct revocation_index *idx);

struct revocation_stats {
	size_t crls;	/* CRLs loaded */
	size_t serials; /* distinct revoked (issuer, serial) pairs */
	size_t issuers; /* trusted issuers (distinct subject names) */
	size_t slots;	/* hash table slots */
	size_t bytes;	/* memory held by the index */
};

void revocation_index_stats(const struct revocation_index *idx, struct revocation_stats *out);

/* One trusted issuer, for metrics. Strings live as long as the index. */
struct revocation_issuer_info {
	const char *name; /* subject CN, or the whole name when no CN */
	uint8_t name_sha256[32];
	size_t crls;	    /* CRLs loaded for it; 0: no revocation data */
	size_t serials;	    /* revoked serials listed (duplicates counted once) */
	time_t this_update; /* newest lastUpdate of its CRLs, 0 if none */
	time_t next_update; /* latest nextUpdate of its CRLs, 0 if none or absent */
	bool stale;	    /* nextUpdate has passed (refused under `refuse`) */
};

size_t revocation_index_issuer_count(const struct revocation_index *idx);

/* Fills `out` for issuer `i` < revocation_index_issuer_count(). */
void revocation_index_issuer(const struct revocation_index *idx, size_t i,
			     struct revocation_issuer_info *out);

#endif
