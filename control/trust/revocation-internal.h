/*
 * Private to the CRL index (control/trust/revocation.c, crl.c): the index's
 * layout and the state of one build. revocation.c owns the index (hash
 * table, lookups, the build's steps); crl.c reads CRL files, parses them and
 * verifies their signatures.
 */
#ifndef BEACON_REVOCATION_INTERNAL_H
#define BEACON_REVOCATION_INTERNAL_H

#include "beacon/der.h"
#include "beacon/revocation.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* A CRL issued by a clock slightly ahead of ours is not "from the future". */
#define CLOCK_SKEW_S 300
#define TIME_NEVER ((time_t)INT64_MAX)
#define SLOT_EMPTY 0xff
#define MAX_ISSUERS 65535

enum {
	TAG_INTEGER = 0x02,
	TAG_BIT_STRING = 0x03,
	TAG_OID = 0x06,
	TAG_UTC_TIME = 0x17,
	TAG_GENERALIZED_TIME = 0x18,
	TAG_SEQUENCE = 0x30,
	TAG_SET = 0x31,
	TAG_CTX0 = 0xa0, /* [0] constructed */
};

/* 24 bytes: the serial inline (RFC 5280: at most 20 octets), an 8-bit tag
 * from the hash to skip most memcmps, and the issuer's number. */
struct rev_slot {
	uint8_t serial[REVOCATION_SERIAL_MAX];
	uint8_t len; /* SLOT_EMPTY: free */
	uint8_t tag;
	uint16_t issuer;
};
_Static_assert(sizeof(struct rev_slot) == 24, "a slot is 24 bytes");

struct issuer_entry {
	uint8_t name_sha256[32];
	char name[128];
	size_t crls, serials;
	time_t this_update, next_update;
	bool never_expires; /* one of its CRLs has no nextUpdate */
	time_t stale_from;  /* lookups answer STALE from then on */
};

struct revocation_index {
	struct rev_slot *slots;
	size_t n_slots, count, crls;
	uint64_t seed;
	struct issuer_entry *issuers;
	size_t n_issuers;
};

struct trusted;
struct crl;

struct build {
	struct revocation_index *idx;
	enum crl_stale_policy policy;
	time_t now;
	char *err;
	size_t errlen;
	struct trusted *trusted; /* one per issuer certificate */
	size_t n_trusted;
	struct crl *crls;
	size_t n_crls, cap_crls;
};

/* An issuer certificate: its subject (→ issuer number) and its key. */
struct trusted {
	uint16_t number;
	struct der spki; /* borrowed from the caller's DER */
};

struct crl {
	char label[512]; /* file name, with the block number for multi-CRL PEM */
	uint8_t *der;	 /* owned */
	size_t der_len;
	struct der tbs;			 /* whole TBSCertList: what the signature covers */
	struct der sig_alg;		 /* AlgorithmIdentifier content */
	struct der sig;			 /* signature bits */
	struct der issuer;		 /* whole Name */
	struct der revoked;		 /* content of revokedCertificates (may be empty) */
	time_t this_update, next_update; /* next_update 0: absent */
	size_t n_revoked;
	uint16_t number; /* issuer number */
};

/* Sets the build's error ("FILE: reason"); returns -1. */
__attribute__((format(printf, 2, 3))) int build_fail(struct build *b, const char *fmt, ...);

/* The CN of a DER Name, printable, for messages; "(no CN)" when absent. */
void name_common_name(struct der name, char *buf, size_t len);
const char *format_time(time_t t, char *buf, size_t len);
int name_sha256(struct der name, uint8_t out[32]);
void strip_leading_zeros(const uint8_t **s, size_t *len);

/* Returns true when the (issuer, serial) pair was new. */
bool table_insert(struct revocation_index *idx, uint16_t issuer, const uint8_t *serial, size_t len);

/* crl.c: every non-hidden regular file of `dir`, sorted by name, becomes
 * one CRL (or several: a PEM file may hold many) in b->crls. 0 or -1. */
int crl_load_dir(struct build *b, const char *dir);
/* One CRL source held in memory (copied), read as a file is. 0 or -1. */
int crl_load_blob(struct build *b, const char *label, const uint8_t *data, size_t len);
/* Parses c, verifies its signature against b's trusted issuers, checks its
 * dates and entries, and accounts it to its issuer. 0 or -1. */
int crl_check(struct build *b, struct crl *c);
/* The next revokedCertificates entry's serial, leading zeros stripped: NULL,
 * or why the entry is malformed. */
const char *crl_next_entry(struct der *it, const uint8_t **serial, size_t *len);

#endif
