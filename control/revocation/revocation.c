/*
 * revocation: CRLs → one open-addressing index of (issuer, serial).
 *
 * wolfSSL 5.7.2 can parse a CRL (wolfSSL_d2i_X509_CRL) but offers no way to
 * enumerate its revoked entries (X509_CRL_get_REVOKED and
 * X509_CRL_verify are stubs) and builds a linked list of ~1M nodes we would
 * throw away. So the CRL's DER is walked here (it is a short, fixed
 * structure) and wolfCrypt verifies the signature over the exact TBS bytes
 * with the issuer's public key (wc_SignatureVerify).
 */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/rsa.h>
#include <wolfssl/wolfcrypt/signature.h>

#include "beacon/log.h"
#include "beacon/revocation.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* A CRL issued by a clock slightly ahead of ours is not "from the future". */
#define CLOCK_SKEW_S 300
#define TIME_NEVER ((time_t)INT64_MAX)
#define SLOT_EMPTY 0xff
#define MAX_ISSUERS 65535

/* ---- DER reading ---------------------------------------------------- */

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

/* A window on DER bytes; reading advances p. */
struct der {
	const uint8_t *p;
	size_t n;
};

/* Reads one TLV: `val` gets the content, `whole` (may be NULL) tag to end.
 * Definite lengths only, as DER requires. */
static bool der_read(struct der *in, uint8_t *tag, struct der *val, struct der *whole)
{
	if (in->n < 2 || (in->p[0] & 0x1f) == 0x1f)
		return false;
	size_t len = in->p[1], hdr = 2;
	if (len & 0x80) {
		size_t k = len & 0x7f;
		if (k == 0 || k > 4 || in->n < 2 + k)
			return false;
		len = 0;
		for (size_t i = 0; i < k; i++)
			len = len << 8 | in->p[2 + i];
		hdr += k;
	}
	if (len > in->n - hdr)
		return false;
	*tag = in->p[0];
	*val = (struct der){in->p + hdr, len};
	if (whole)
		*whole = (struct der){in->p, hdr + len};
	in->p += hdr + len;
	in->n -= hdr + len;
	return true;
}

static bool der_expect(struct der *in, uint8_t want, struct der *val, struct der *whole)
{
	uint8_t tag;
	struct der save = *in;
	if (der_read(in, &tag, val, whole) && tag == want)
		return true;
	*in = save;
	return false;
}

static bool der_peek(const struct der *in, uint8_t tag)
{
	return in->n > 0 && in->p[0] == tag;
}

static bool der_equal(struct der a, const uint8_t *b, size_t n)
{
	return a.n == n && memcmp(a.p, b, n) == 0;
}

static int two_digits(const uint8_t *s)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return -1;
	return (s[0] - '0') * 10 + (s[1] - '0');
}

/* UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ (RFC 5280 forms). */
static bool der_time(uint8_t tag, struct der v, time_t *out)
{
	const uint8_t *s = v.p;
	int year;
	if (tag == TAG_UTC_TIME && v.n == 13) {
		int yy = two_digits(s);
		year = yy < 0 ? -1 : (yy < 50 ? 2000 + yy : 1900 + yy);
		s += 2;
	} else if (tag == TAG_GENERALIZED_TIME && v.n == 15) {
		int hi = two_digits(s), lo = two_digits(s + 2);
		year = hi < 0 || lo < 0 ? -1 : hi * 100 + lo;
		s += 4;
	} else {
		return false;
	}
	struct tm tm = {0};
	tm.tm_year = year - 1900;
	tm.tm_mon = two_digits(s) - 1;
	tm.tm_mday = two_digits(s + 2);
	tm.tm_hour = two_digits(s + 4);
	tm.tm_min = two_digits(s + 6);
	tm.tm_sec = two_digits(s + 8);
	if (year < 0 || s[10] != 'Z' || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 ||
	    tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60)
		return false;
	*out = timegm(&tm);
	return true;
}

static bool der_read_time(struct der *in, time_t *out)
{
	uint8_t tag;
	struct der v;
	return der_read(in, &tag, &v, NULL) && der_time(tag, v, out);
}

static const char *format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

/* The CN of a DER Name, printable, for messages; "(no CN)" when absent. */
static void name_common_name(struct der name, char *buf, size_t len)
{
	static const uint8_t oid_cn[] = {0x55, 0x04, 0x03};
	struct der rdn, atv, oid, val;
	uint8_t tag;
	snprintf(buf, len, "(no CN)");
	while (der_expect(&name, TAG_SET, &rdn, NULL)) {
		while (der_expect(&rdn, TAG_SEQUENCE, &atv, NULL)) {
			if (!der_expect(&atv, TAG_OID, &oid, NULL) || !der_read(&atv, &tag, &val, NULL))
				return;
			if (!der_equal(oid, oid_cn, sizeof oid_cn))
				continue;
			size_t n = val.n < len - 1 ? val.n : len - 1;
			for (size_t i = 0; i < n; i++)
				buf[i] = (char)(val.p[i] >= 0x20 && val.p[i] < 0x7f ? val.p[i] : '?');
			buf[n] = '\0';
			return;
		}
	}
}

/* ---- hash table ----------------------------------------------------- */

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
	h = mum(h ^ w[2] ^ (uint64_t)issuer << 32 ^ (uint64_t)len << 48, seed ^ 0x8ebc6af09c88c6e3ull);
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
static bool table_insert(struct revocation_index *idx, uint16_t issuer, const uint8_t *serial,
			 size_t len)
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

static void strip_leading_zeros(const uint8_t **s, size_t *len)
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

/* Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial,
 * signature, issuer, validity, subject, ... } ... }. The names are whole
 * TLVs (tag and length included), as the CRL's issuer is hashed. */
static bool cert_issuer_serial_subject(struct der cert, struct der *issuer, struct der *serial,
				       struct der *subject)
{
	struct der c, tbs, v;
	if (!der_expect(&cert, TAG_SEQUENCE, &c, NULL) || !der_expect(&c, TAG_SEQUENCE, &tbs, NULL))
		return false;
	if (der_peek(&tbs, TAG_CTX0))
		der_expect(&tbs, TAG_CTX0, &v, NULL);
	return der_expect(&tbs, TAG_INTEGER, serial, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, issuer) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, subject);
}

int revocation_cert_names(const uint8_t *cert_der, size_t cert_len,
			  struct revocation_cert_names *out)
{
	struct der issuer, serial, subject;
	if (!cert_issuer_serial_subject((struct der){ cert_der, cert_len }, &issuer, &serial,
					&subject) ||
	    serial.n == 0 || wc_Sha256Hash(issuer.p, (word32)issuer.n, out->issuer_sha256) != 0 ||
	    wc_Sha256Hash(subject.p, (word32)subject.n, out->subject_sha256) != 0)
		return -1;
	out->serial = serial.p;
	out->serial_len = serial.n;
	return 0;
}

enum revocation_status revocation_lookup_cert(const struct revocation_index *idx,
					      const uint8_t *cert_der, size_t cert_len)
{
	struct revocation_cert_names names;
	if (revocation_cert_names(cert_der, cert_len, &names) != 0)
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

__attribute__((format(printf, 2, 3))) static int fail(struct build *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (b->errlen)
		vsnprintf(b->err, b->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- building: trusted issuers -------------------------------------- */

/* An issuer certificate: its subject (→ issuer number) and its key. */
struct trusted {
	uint16_t number;
	struct der spki; /* borrowed from the caller's DER */
};

/* Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial,
 * signature, issuer, validity, subject, subjectPublicKeyInfo, ... } ... } */
static bool cert_subject_and_key(struct der cert, struct der *subject, struct der *spki)
{
	struct der c, tbs, v;
	if (!der_expect(&cert, TAG_SEQUENCE, &c, NULL) || !der_expect(&c, TAG_SEQUENCE, &tbs, NULL))
		return false;
	if (der_peek(&tbs, TAG_CTX0))
		der_expect(&tbs, TAG_CTX0, &v, NULL);
	return der_expect(&tbs, TAG_INTEGER, &v, NULL) && der_expect(&tbs, TAG_SEQUENCE, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, NULL) && der_expect(&tbs, TAG_SEQUENCE, &v, NULL) &&
	       der_expect(&tbs, TAG_SEQUENCE, &v, subject) && der_expect(&tbs, TAG_SEQUENCE, &v, spki);
}

static int name_sha256(struct der name, uint8_t out[32])
{
	return wc_Sha256Hash(name.p, (word32)name.n, out) == 0 ? 0 : -1;
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
		return fail(b, "more than %d trusted issuers", MAX_ISSUERS);
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
		return fail(b, "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct der subject, spki;
		uint8_t hash[32];
		if (!cert_subject_and_key((struct der){issuers[i].der, issuers[i].der_len}, &subject,
					  &spki))
			return fail(b, "trusted issuer certificate %zu does not parse", i + 1);
		if (name_sha256(subject, hash) < 0)
			return fail(b, "SHA-256 failed");
		int number = issuer_number(b, hash, subject);
		if (number < 0)
			return -1;
		b->trusted[i] = (struct trusted){(uint16_t)number, spki};
	}
	b->n_trusted = n;
	return 0;
}

/* ---- building: one CRL ---------------------------------------------- */

struct crl {
	char label[512]; /* file name, with the block number for multi-CRL PEM */
	uint8_t *der;	 /* owned */
	size_t der_len;
	struct der tbs;	    /* whole TBSCertList: what the signature covers */
	struct der sig_alg; /* AlgorithmIdentifier content */
	struct der sig;	    /* signature bits */
	struct der issuer;  /* whole Name */
	struct der revoked; /* content of revokedCertificates (may be empty) */
	time_t this_update, next_update; /* next_update 0: absent */
	size_t n_revoked;
	uint16_t number; /* issuer number */
};

static const uint8_t oid_delta_crl[] = {0x55, 0x1d, 0x1b};
static const uint8_t oid_certificate_issuer[] = {0x55, 0x1d, 0x1d};

/* True when the Extensions SEQUENCE parses and holds no extension `oid`. */
static bool extensions_lack(struct der exts, const uint8_t *oid, size_t oid_len, bool *found)
{
	struct der list, ext, id;
	*found = false;
	if (!der_expect(&exts, TAG_SEQUENCE, &list, NULL) || exts.n)
		return false;
	while (list.n) {
		if (!der_expect(&list, TAG_SEQUENCE, &ext, NULL) || !der_expect(&ext, TAG_OID, &id, NULL))
			return false;
		if (der_equal(id, oid, oid_len))
			*found = true;
	}
	return !*found;
}

/* CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm,
 * signatureValue BIT STRING }; TBSCertList ::= SEQUENCE { version OPTIONAL,
 * signature, issuer, thisUpdate, nextUpdate OPTIONAL, revokedCertificates
 * OPTIONAL, [0] crlExtensions OPTIONAL }. */
static const char *crl_parse_outer(struct crl *c, struct der *tbs_content)
{
	struct der in = {c->der, c->der_len}, list, alg_inner, sig, v;
	if (!der_expect(&in, TAG_SEQUENCE, &list, NULL) || in.n)
		return "not a DER CRL (bad outer SEQUENCE or trailing bytes)";
	if (!der_expect(&list, TAG_SEQUENCE, tbs_content, &c->tbs) ||
	    !der_expect(&list, TAG_SEQUENCE, &c->sig_alg, NULL) ||
	    !der_expect(&list, TAG_BIT_STRING, &sig, NULL) || list.n)
		return "not a CRL (expected tbsCertList, signatureAlgorithm, signature)";
	if (sig.n < 2 || sig.p[0] != 0)
		return "malformed signature BIT STRING";
	c->sig = (struct der){sig.p + 1, sig.n - 1};
	struct der t = *tbs_content;
	if (der_peek(&t, TAG_INTEGER) &&
	    (!der_expect(&t, TAG_INTEGER, &v, NULL) || v.n != 1 || v.p[0] != 1))
		return "unsupported CRL version (want v2)";
	*tbs_content = t;
	if (!der_expect(tbs_content, TAG_SEQUENCE, &alg_inner, NULL) ||
	    !der_equal(alg_inner, c->sig_alg.p, c->sig_alg.n))
		return "signature algorithm in tbsCertList differs from the outer one";
	return NULL;
}

static const char *crl_parse_tbs(struct crl *c, struct der t)
{
	struct der v, exts;
	bool delta;
	if (!der_expect(&t, TAG_SEQUENCE, &v, &c->issuer))
		return "bad issuer name";
	if (!der_read_time(&t, &c->this_update))
		return "bad lastUpdate time";
	c->next_update = 0;
	if ((der_peek(&t, TAG_UTC_TIME) || der_peek(&t, TAG_GENERALIZED_TIME)) &&
	    !der_read_time(&t, &c->next_update))
		return "bad nextUpdate time";
	c->revoked = (struct der){NULL, 0};
	if (der_peek(&t, TAG_SEQUENCE) && !der_expect(&t, TAG_SEQUENCE, &c->revoked, NULL))
		return "bad revokedCertificates";
	if (der_peek(&t, TAG_CTX0)) {
		if (!der_expect(&t, TAG_CTX0, &exts, NULL))
			return "bad crlExtensions";
		if (!extensions_lack(exts, oid_delta_crl, sizeof oid_delta_crl, &delta))
			return delta ? "delta CRLs are not supported" : "bad crlExtensions";
	}
	if (t.n)
		return "trailing bytes in tbsCertList";
	return NULL;
}

/* One revokedCertificates entry: { serial INTEGER, revocationDate Time,
 * crlEntryExtensions OPTIONAL }. Gives the canonical serial. */
static const char *crl_next_entry(struct der *it, const uint8_t **serial, size_t *len)
{
	struct der entry, s;
	time_t when;
	bool indirect;
	if (!der_expect(it, TAG_SEQUENCE, &entry, NULL) || !der_expect(&entry, TAG_INTEGER, &s, NULL) ||
	    s.n == 0 || !der_read_time(&entry, &when))
		return "malformed revoked entry";
	/* An entry naming another issuer (indirect CRL) would be filed under
	 * the wrong issuer here: refuse rather than miss a revocation. */
	if (entry.n && !extensions_lack(entry, oid_certificate_issuer, sizeof oid_certificate_issuer,
					&indirect))
		return indirect ? "indirect CRL entries (certificateIssuer) are not supported"
				: "malformed revoked entry extensions";
	*serial = s.p;
	*len = s.n;
	strip_leading_zeros(serial, len);
	if (*len > REVOCATION_SERIAL_MAX)
		return "revoked serial longer than 20 octets";
	return NULL;
}

/* Validates every entry now so that inserting later cannot fail. */
static const char *crl_count_entries(struct crl *c)
{
	struct der it = c->revoked;
	const uint8_t *serial;
	size_t len;
	c->n_revoked = 0;
	while (it.n) {
		const char *why = crl_next_entry(&it, &serial, &len);
		if (why)
			return why;
		c->n_revoked++;
	}
	return NULL;
}

/* ---- building: signatures ------------------------------------------- */

struct sig_alg {
	uint8_t oid[9];
	size_t oid_len;
	enum wc_HashType hash;
	enum wc_SignatureType type;
};

static const struct sig_alg sig_algs[] = {
	{{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}, 8, WC_HASH_TYPE_SHA256, WC_SIGNATURE_TYPE_ECC},
	{{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}, 8, WC_HASH_TYPE_SHA384, WC_SIGNATURE_TYPE_ECC},
	{{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04}, 8, WC_HASH_TYPE_SHA512, WC_SIGNATURE_TYPE_ECC},
	{{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b}, 9, WC_HASH_TYPE_SHA256,
	 WC_SIGNATURE_TYPE_RSA_W_ENC},
	{{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c}, 9, WC_HASH_TYPE_SHA384,
	 WC_SIGNATURE_TYPE_RSA_W_ENC},
	{{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d}, 9, WC_HASH_TYPE_SHA512,
	 WC_SIGNATURE_TYPE_RSA_W_ENC},
};

static const struct sig_alg *sig_alg_of(struct der alg)
{
	struct der oid;
	if (!der_expect(&alg, TAG_OID, &oid, NULL))
		return NULL;
	for (size_t i = 0; i < sizeof sig_algs / sizeof sig_algs[0]; i++)
		if (der_equal(oid, sig_algs[i].oid, sig_algs[i].oid_len))
			return &sig_algs[i];
	return NULL;
}

static bool verify_ecc(const struct sig_alg *alg, const struct crl *c, struct der spki)
{
	ecc_key key;
	word32 at = 0;
	bool ok = false;
	if (wc_ecc_init(&key) != 0)
		return false;
	if (wc_EccPublicKeyDecode(spki.p, &at, &key, (word32)spki.n) == 0)
		ok = wc_SignatureVerify(alg->hash, alg->type, c->tbs.p, (word32)c->tbs.n, c->sig.p,
					(word32)c->sig.n, &key, sizeof key) == 0;
	wc_ecc_free(&key);
	return ok;
}

static bool verify_rsa(const struct sig_alg *alg, const struct crl *c, struct der spki)
{
	RsaKey key;
	word32 at = 0;
	bool ok = false;
	if (wc_InitRsaKey(&key, NULL) != 0)
		return false;
	if (wc_RsaPublicKeyDecode(spki.p, &at, &key, (word32)spki.n) == 0)
		ok = wc_SignatureVerify(alg->hash, alg->type, c->tbs.p, (word32)c->tbs.n, c->sig.p,
					(word32)c->sig.n, &key, sizeof key) == 0;
	wc_FreeRsaKey(&key);
	return ok;
}

/* Tries every trusted certificate with the CRL issuer's name (a re-keyed CA
 * has two). Returns the issuer number, or -1 with the error set. */
static int crl_verify(struct build *b, struct crl *c)
{
	uint8_t hash[32];
	char name[128];
	const struct sig_alg *alg = sig_alg_of(c->sig_alg);
	if (!alg)
		return fail(b, "%s: unsupported signature algorithm", c->label);
	if (name_sha256(c->issuer, hash) < 0)
		return fail(b, "%s: SHA-256 failed", c->label);
	int number = -1;
	for (size_t i = 0; i < b->n_trusted; i++) {
		const struct trusted *t = &b->trusted[i];
		if (memcmp(b->idx->issuers[t->number].name_sha256, hash, 32) != 0)
			continue;
		number = t->number;
		bool ok = alg->type == WC_SIGNATURE_TYPE_ECC ? verify_ecc(alg, c, t->spki)
							     : verify_rsa(alg, c, t->spki);
		if (ok)
			return number;
	}
	if (number >= 0)
		return fail(b, "%s: signature does not verify against '%s'", c->label,
			    b->idx->issuers[number].name);
	struct der s = c->issuer, inner;
	der_expect(&s, TAG_SEQUENCE, &inner, NULL);
	name_common_name(inner, name, sizeof name);
	return fail(b, "%s: issuer '%s' is not a trusted issuer", c->label, name);
}

/* ---- building: dates ------------------------------------------------ */

static int crl_check_dates(struct build *b, const struct crl *c)
{
	char t1[40], t2[40];
	if (c->this_update > b->now + CLOCK_SKEW_S)
		return fail(b, "%s: lastUpdate %s is in the future", c->label,
			    format_time(c->this_update, t1, sizeof t1));
	if (c->next_update && c->next_update < c->this_update)
		return fail(b, "%s: nextUpdate %s is before lastUpdate %s", c->label,
			    format_time(c->next_update, t1, sizeof t1),
			    format_time(c->this_update, t2, sizeof t2));
	if (c->next_update && c->next_update <= b->now)
		log_warn("%s: CRL nextUpdate %s has passed", c->label,
			 format_time(c->next_update, t1, sizeof t1));
	return 0;
}

static void issuer_account_crl(struct issuer_entry *is, const struct crl *c)
{
	is->crls++;
	if (c->this_update > is->this_update)
		is->this_update = c->this_update;
	if (!c->next_update)
		is->never_expires = true;
	else if (c->next_update > is->next_update)
		is->next_update = c->next_update;
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

static int crl_check(struct build *b, struct crl *c)
{
	struct der tbs_content;
	const char *why = crl_parse_outer(c, &tbs_content);
	if (!why)
		why = crl_parse_tbs(c, tbs_content);
	if (why)
		return fail(b, "%s: %s", c->label, why);
	int number = crl_verify(b, c);
	if (number < 0)
		return -1;
	c->number = (uint16_t)number;
	if (crl_check_dates(b, c) < 0)
		return -1;
	/* Entries are checked only once the signature holds: no work for junk. */
	why = crl_count_entries(c);
	if (why)
		return fail(b, "%s: %s", c->label, why);
	issuer_account_crl(&b->idx->issuers[number], c);
	return 0;
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

/* ---- building: files ------------------------------------------------ */

static struct crl *crl_add(struct build *b, const char *label, uint8_t *der, size_t len)
{
	if (b->n_crls == b->cap_crls) {
		size_t cap = b->cap_crls ? 2 * b->cap_crls : 8;
		struct crl *n = realloc(b->crls, cap * sizeof *n);
		if (!n)
			return NULL;
		b->crls = n;
		b->cap_crls = cap;
	}
	struct crl *c = &b->crls[b->n_crls++];
	memset(c, 0, sizeof *c);
	snprintf(c->label, sizeof c->label, "%s", label);
	c->der = der;
	c->der_len = len;
	return c;
}

/* On failure *buf is NULL and *len 0: nothing for the caller to free. */
static int read_file(struct build *b, const char *path, uint8_t **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return fail(b, "%s: %s", path, strerror(e));
	}
	*buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	size_t got = 0;
	while (*buf && got < (size_t)st.st_size) {
		ssize_t n = read(fd, *buf + got, (size_t)st.st_size - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (!*buf || got != (size_t)st.st_size) {
		free(*buf);
		*buf = NULL;
		return fail(b, "%s: read failed", path);
	}
	*len = got;
	return 0;
}

static const char pem_begin[] = "-----BEGIN X509 CRL-----";
static const char pem_end[] = "-----END X509 CRL-----";

/* Each BEGIN/END X509 CRL block of the file becomes one CRL. */
static int pem_split(struct build *b, const char *path, const uint8_t *text, size_t len)
{
	const char *p = (const char *)text, *end = p + len;
	unsigned block = 0;
	/* An empty file has no block (and memmem gets no NULL text). */
	while (len && (p = memmem(p, (size_t)(end - p), pem_begin, sizeof pem_begin - 1))) {
		const char *body = p + sizeof pem_begin - 1;
		const char *stop = memmem(body, (size_t)(end - body), pem_end, sizeof pem_end - 1);
		if (!stop)
			return fail(b, "%s: PEM block without %s", path, pem_end);
		while (body < stop && (*body == '\n' || *body == '\r' || *body == ' '))
			body++;
		word32 out_len = (word32)((stop - body) / 4 * 3 + 4);
		uint8_t *der = malloc(out_len);
		if (!der || Base64_Decode((const byte *)body, (word32)(stop - body), der, &out_len) != 0) {
			free(der);
			return fail(b, "%s: bad base64 in PEM block %u", path, block + 1);
		}
		char label[512];
		snprintf(label, sizeof label, block ? "%s[%u]" : "%s", path, block + 1);
		if (!crl_add(b, label, der, out_len)) {
			free(der);
			return fail(b, "out of memory");
		}
		block++;
		p = stop + sizeof pem_end - 1;
	}
	if (!block)
		return fail(b, "%s: neither a DER CRL nor PEM '%s'", path, pem_begin);
	return 0;
}

static int load_file(struct build *b, const char *path)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	if (read_file(b, path, &buf, &len) < 0)
		return -1;
	if (len > 0 && buf[0] == TAG_SEQUENCE) {
		if (crl_add(b, path, buf, len))
			return 0;
		free(buf);
		return fail(b, "out of memory");
	}
	int rc = pem_split(b, path, buf, len);
	free(buf);
	return rc;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted so that the first bad file named in an error is predictable. */
static int list_dir(struct build *b, const char *dir, char ***names, size_t *n)
{
	size_t cap = 0;
	*names = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return fail(b, "%s: %s", dir, strerror(errno));
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			char **grown = realloc(*names, cap * sizeof *grown);
			if (!grown)
				break;
			*names = grown;
		}
		if (!((*names)[*n] = strdup(e->d_name)))
			break;
		(*n)++;
	}
	bool complete = e == NULL;
	closedir(d);
	if (!complete)
		return fail(b, "out of memory");
	if (*n)
		qsort(*names, *n, sizeof **names, compare_names);
	return 0;
}

static int load_dir(struct build *b, const char *dir)
{
	char **names;
	size_t n;
	int rc = list_dir(b, dir, &names, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (stat(path, &st) < 0)
			rc = fail(b, "%s: %s", path, strerror(errno));
		else if (S_ISREG(st.st_mode))
			rc = load_file(b, path);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* ---- building: the whole index -------------------------------------- */

static uint64_t random_seed(void)
{
	uint64_t seed;
	if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
		seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&seed;
	return seed;
}

static int build_all(struct build *b, const char *crl_dir, const struct revocation_issuer *issuers,
		     size_t n_issuers)
{
	if (trusted_load(b, issuers, n_issuers) < 0)
		return -1;
	if (crl_dir && load_dir(b, crl_dir) < 0)
		return -1;
	size_t total = 0;
	for (size_t i = 0; i < b->n_crls; i++) {
		if (crl_check(b, &b->crls[i]) < 0)
			return -1;
		total += b->crls[i].n_revoked;
	}
	if (table_alloc(b->idx, total) < 0)
		return fail(b, "out of memory for %zu revoked serials", total);
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
	struct build b = {.policy = policy, .now = time(NULL), .err = err, .errlen = errlen};
	if (errlen)
		err[0] = '\0';
	b.idx = calloc(1, sizeof *b.idx);
	if (!b.idx)
		return fail(&b, "out of memory");
	b.idx->seed = random_seed();
	int rc = build_all(&b, crl_dir, issuers, n_issuers);
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
