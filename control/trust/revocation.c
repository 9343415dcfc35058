/*
 * revocation: the CRL index (see include/beacon/revocation.h): the hash
 * table of (issuer, serial), its lookups, and the steps of a build. The
 * CRLs themselves are read, parsed and verified in crl.c.
 */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/hash.h>

#include "beacon/certid.h"
#include "beacon/log.h"
#include "revocation-internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ---- names and times, for messages ---------------------------------- */

const char *format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

/* The CN of a DER Name, printable, for messages; "(no CN)" when absent. */
void name_common_name(struct der name, char *buf, size_t len)
{
	static const uint8_t oid_cn[] = {0x55, 0x04, 0x03};
	struct der rdn, atv, oid, val;
	uint8_t tag;
	snprintf(buf, len, "(no CN)");
	while (der_expect(&name, TAG_SET, &rdn, NULL)) {
		while (der_expect(&rdn, TAG_SEQUENCE, &atv, NULL)) {
			if (!der_expect(&atv, TAG_OID, &oid, NULL) ||
			    !der_read(&atv, &tag, &val, NULL))
				return;
			if (!der_equal(oid, oid_cn, sizeof oid_cn))
				continue;
			size_t n = val.n < len - 1 ? val.n : len - 1;
			for (size_t i = 0; i < n; i++)
				buf[i] = (char)(val.p[i] >= 0x20 && val.p[i] < 0x7f ? val.p[i]
										    : '?');
			buf[n] = '\0';
			return;
		}
	}
}

int name_sha256(struct der name, uint8_t out[32])
{
	return wc_Sha256Hash(name.p, (word32)name.n, out) == 0 ? 0 : -1;
}

/* ---- hash table ----------------------------------------------------- */

static inline uint64_t mum(uint64_t a, uint64_t b)
{
	unsigned __int128 r = (unsigned __int128)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* Seeded (per index) so that no fixed set of serials clusters every index. */
static uint64_t serial_hash(uint64_t seed, uint16_t issuer, const uint8_t *s, size_t len)
{
	uint64_t w[3] = {0, 0, 0};
	memcpy(w, s, len);
	/* w[2] uses its low 32 bits at most: issuer and len go above them. */
	uint64_t h = mum(w[0] ^ seed ^ 0xa0761d6478bd642full, w[1] ^ 0xe7037ed1a0b428dbull);
	h = mum(h ^ w[2] ^ (uint64_t)issuer << 32 ^ (uint64_t)len << 48,
		seed ^ 0x8ebc6af09c88c6e3ull);
	return mum(h, 0x589965cc75374cc3ull);
}

/* Maps the hash onto [0, n_slots) without a modulo (Lemire's fastrange). */
static size_t slot_of(const struct revocation_index *idx, uint64_t h)
{
	return (size_t)(((unsigned __int128)h * idx->n_slots) >> 64);
}

static bool slot_matches(const struct rev_slot *s, uint8_t tag, uint16_t issuer,
			 const uint8_t *serial, size_t len)
{
	return s->tag == tag && s->len == len && s->issuer == issuer &&
	       memcmp(s->serial, serial, len) == 0;
}

/* Linear probing; load factor ≤ 2/3 keeps an empty slot to stop at. */
static const struct rev_slot *table_find(const struct revocation_index *idx, uint16_t issuer,
					 const uint8_t *serial, size_t len, uint64_t h)
{
	uint8_t tag = (uint8_t)h;
	for (size_t i = slot_of(idx, h);; i = i + 1 == idx->n_slots ? 0 : i + 1) {
		const struct rev_slot *s = &idx->slots[i];
		if (s->len == SLOT_EMPTY || slot_matches(s, tag, issuer, serial, len))
			return s;
	}
}

/* Returns true when the pair was new. */
bool table_insert(struct revocation_index *idx, uint16_t issuer, const uint8_t *serial, size_t len)
{
	uint64_t h = serial_hash(idx->seed, issuer, serial, len);
	struct rev_slot *s = (struct rev_slot *)table_find(idx, issuer, serial, len, h);
	if (s->len != SLOT_EMPTY)
		return false;
	memcpy(s->serial, serial, len);
	s->len = (uint8_t)len;
	s->tag = (uint8_t)h;
	s->issuer = issuer;
	idx->count++;
	return true;
}

static int table_alloc(struct revocation_index *idx, size_t max_entries)
{
	idx->n_slots = max_entries + max_entries / 2 + 1;
	idx->slots = malloc(idx->n_slots * sizeof *idx->slots);
	if (!idx->slots)
		return -1;
	memset(idx->slots, SLOT_EMPTY, idx->n_slots * sizeof *idx->slots);
	return 0;
}

void strip_leading_zeros(const uint8_t **s, size_t *len)
{
	while (*len > 0 && (*s)[0] == 0) {
		(*s)++;
		(*len)--;
	}
}

/* ---- lookups -------------------------------------------------------- */

static const struct issuer_entry *issuer_find(const struct revocation_index *idx,
					      const uint8_t name_sha256[32], uint16_t *number)
{
	/* A handful of issuers: a scan beats hashing a second time. */
	for (size_t i = 0; i < idx->n_issuers; i++) {
		if (memcmp(idx->issuers[i].name_sha256, name_sha256, 32) == 0) {
			*number = (uint16_t)i;
			return &idx->issuers[i];
		}
	}
	return NULL;
}

static time_t now_coarse(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return ts.tv_sec;
}

enum revocation_status revocation_lookup(const struct revocation_index *idx,
					 const uint8_t issuer_name_sha256[32],
					 const uint8_t *serial, size_t serial_len)
{
	uint16_t number;
	const struct issuer_entry *is = issuer_find(idx, issuer_name_sha256, &number);
	if (!is)
		return REVOCATION_GOOD; /* no CRL can name it; chain checks refuse strangers */
	if (is->stale_from != TIME_NEVER && now_coarse() >= is->stale_from)
		return REVOCATION_STALE;
	strip_leading_zeros(&serial, &serial_len);
	if (serial_len > REVOCATION_SERIAL_MAX || idx->count == 0)
		return REVOCATION_GOOD; /* never stored: a CRL listing it is refused */
	uint64_t h = serial_hash(idx->seed, number, serial, serial_len);
	const struct rev_slot *s = table_find(idx, number, serial, serial_len, h);
	return s->len == SLOT_EMPTY ? REVOCATION_GOOD : REVOCATION_REVOKED;
}

enum revocation_status revocation_lookup_cert(const struct revocation_index *idx,
					      const uint8_t *cert_der, size_t cert_len)
{
	struct cert_names names;
	if (cert_names(cert_der, cert_len, &names) != 0)
		return REVOCATION_REVOKED;
	return revocation_lookup(idx, names.issuer_sha256, names.serial, names.serial_len);
}

size_t revocation_index_count(const struct revocation_index *idx)
{
	return idx->count;
}

void revocation_index_stats(const struct revocation_index *idx, struct revocation_stats *out)
{
	out->crls = idx->crls;
	out->serials = idx->count;
	out->issuers = idx->n_issuers;
	out->slots = idx->n_slots;
	out->bytes = sizeof *idx + idx->n_slots * sizeof *idx->slots +
		     idx->n_issuers * sizeof *idx->issuers;
}

size_t revocation_index_issuer_count(const struct revocation_index *idx)
{
	return idx->n_issuers;
}

void revocation_index_issuer(const struct revocation_index *idx, size_t i,
			     struct revocation_issuer_info *out)
{
	const struct issuer_entry *is = &idx->issuers[i];
	out->name = is->name;
	memcpy(out->name_sha256, is->name_sha256, 32);
	out->crls = is->crls;
	out->serials = is->serials;
	out->this_update = is->this_update;
	out->next_update = is->next_update;
	out->stale = is->crls && !is->never_expires && is->next_update <= time(NULL);
}

void revocation_index_free(struct revocation_index *idx)
{
	if (!idx)
		return;
	free(idx->slots);
	free(idx->issuers);
	free(idx);
}

/* ---- building: errors ----------------------------------------------- */

int build_fail(struct build *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (b->errlen)
		vsnprintf(b->err, b->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- building: trusted issuers -------------------------------------- */

/* Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial,
 * signature, issuer, validity, subject, subjectPublicKeyInfo, ... } ... } */
static bool cert_subject_and_key(struct der cert, struct der *subject, struct der *spki)
{
	struct der c, tbs, v;
	if (!der_expect(&cert, TAG_SEQUENCE, &c, NULL) || !der_expect(&c, TAG_SEQUENCE, &tbs, NULL))
		return false;
	if (der_peek(&tbs, TAG_CTX0))
		der_expect(&tbs, TAG_CTX0, &v, NULL);
	return der_expect(&tbs, TAG_INTEGER, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, subject) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, spki);
}

/* Issuer number for a subject name hash, adding the issuer if it is new:
 * two certificates with one subject (a re-keyed CA) share a number. */
static int issuer_number(struct build *b, const uint8_t hash[32], struct der subject)
{
	struct revocation_index *idx = b->idx;
	uint16_t number;
	if (issuer_find(idx, hash, &number))
		return number;
	if (idx->n_issuers == MAX_ISSUERS)
		return build_fail(b, "more than %d trusted issuers", MAX_ISSUERS);
	struct issuer_entry *is = &idx->issuers[idx->n_issuers];
	memset(is, 0, sizeof *is);
	memcpy(is->name_sha256, hash, 32);
	struct der name;
	struct der s = subject;
	if (der_expect(&s, TAG_SEQUENCE, &name, NULL))
		name_common_name(name, is->name, sizeof is->name);
	is->stale_from = TIME_NEVER;
	return (int)idx->n_issuers++;
}

static int trusted_load(struct build *b, const struct revocation_issuer *issuers, size_t n)
{
	b->trusted = calloc(n ? n : 1, sizeof *b->trusted);
	b->idx->issuers = calloc(n ? n : 1, sizeof *b->idx->issuers);
	if (!b->trusted || !b->idx->issuers)
		return build_fail(b, "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct der subject, spki;
		uint8_t hash[32];
		if (!cert_subject_and_key((struct der){issuers[i].der, issuers[i].der_len},
					  &subject, &spki))
			return build_fail(b, "trusted issuer certificate %zu does not parse",
					  i + 1);
		if (name_sha256(subject, hash) < 0)
			return build_fail(b, "SHA-256 failed");
		int number = issuer_number(b, hash, subject);
		if (number < 0)
			return -1;
		b->trusted[i] = (struct trusted){(uint16_t)number, spki};
	}
	b->n_trusted = n;
	return 0;
}

/* Stale means its newest nextUpdate has passed; under `refuse` lookups start
 * answering STALE then, even in an index built before. */
static void issuer_settle(struct build *b, struct issuer_entry *is)
{
	char t[40];
	if (!is->crls || is->never_expires)
		return;
	if (b->policy == CRL_STALE_REFUSE)
		is->stale_from = is->next_update;
	if (is->next_update <= b->now)
		log_warn("issuer '%s': newest CRL expired at %s; %s", is->name,
			 format_time(is->next_update, t, sizeof t),
			 b->policy == CRL_STALE_REFUSE ? "refusing its clients (policy refuse)"
						       : "still using it (policy warn)");
}

static void crl_insert(struct build *b, const struct crl *c)
{
	struct der it = c->revoked;
	const uint8_t *serial;
	size_t len;
	struct issuer_entry *is = &b->idx->issuers[c->number];
	while (it.n) {
		/* Validated by crl_count_entries; stop rather than insert junk. */
		if (crl_next_entry(&it, &serial, &len))
			break;
		if (table_insert(b->idx, c->number, serial, len))
			is->serials++;
	}
}

/* ---- building: the whole index -------------------------------------- */

static uint64_t random_seed(void)
{
	uint64_t seed;
	if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
		seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&seed;
	return seed;
}

static int build_all(struct build *b, const char *crl_dir, const struct revocation_blob *blobs,
		     size_t n_blobs, const struct revocation_issuer *issuers, size_t n_issuers)
{
	if (trusted_load(b, issuers, n_issuers) < 0)
		return -1;
	if (crl_dir && crl_load_dir(b, crl_dir) < 0)
		return -1;
	for (size_t i = 0; i < n_blobs; i++)
		if (crl_load_blob(b, blobs[i].label, blobs[i].data, blobs[i].len) < 0)
			return -1;
	size_t total = 0;
	for (size_t i = 0; i < b->n_crls; i++) {
		if (crl_check(b, &b->crls[i]) < 0)
			return -1;
		total += b->crls[i].n_revoked;
	}
	if (table_alloc(b->idx, total) < 0)
		return build_fail(b, "out of memory for %zu revoked serials", total);
	for (size_t i = 0; i < b->n_crls; i++)
		crl_insert(b, &b->crls[i]);
	for (size_t i = 0; i < b->idx->n_issuers; i++)
		issuer_settle(b, &b->idx->issuers[i]);
	b->idx->crls = b->n_crls;
	return 0;
}

int revocation_index_build(const char *crl_dir, const struct revocation_issuer *issuers,
			   size_t n_issuers, enum crl_stale_policy policy,
			   struct revocation_index **out, char *err, size_t errlen)
{
	return revocation_index_build_with(crl_dir, NULL, 0, issuers, n_issuers, policy, out, err,
					   errlen);
}

int revocation_index_build_with(const char *crl_dir, const struct revocation_blob *blobs,
				size_t n_blobs, const struct revocation_issuer *issuers,
				size_t n_issuers, enum crl_stale_policy policy,
				struct revocation_index **out, char *err, size_t errlen)
{
	struct build b = {.policy = policy, .now = time(NULL), .err = err, .errlen = errlen};
	if (errlen)
		err[0] = '\0';
	b.idx = calloc(1, sizeof *b.idx);
	if (!b.idx)
		return build_fail(&b, "out of memory");
	b.idx->seed = random_seed();
	int rc = build_all(&b, crl_dir, blobs, n_blobs, issuers, n_issuers);
	for (size_t i = 0; i < b.n_crls; i++)
		free(b.crls[i].der);
	free(b.crls);
	free(b.trusted);
	if (rc < 0) {
		revocation_index_free(b.idx);
		return -1;
	}
	*out = b.idx;
	return 0;
}
