/*
 * crl: CRL files → parsed, verified CRLs for the index (revocation.c).
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
#include <wolfssl/wolfcrypt/rsa.h>
#include <wolfssl/wolfcrypt/signature.h>

#include "beacon/file.h"
#include "beacon/log.h"
#include "revocation-internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- DER times ------------------------------------------------------ */

static bool der_read_time(struct der *in, time_t *out)
{
	uint8_t tag;
	struct der v;
	return der_read(in, &tag, &v, NULL) && der_time(tag, v, out);
}

/* ---- building: one CRL ---------------------------------------------- */

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
		if (!der_expect(&list, TAG_SEQUENCE, &ext, NULL) ||
		    !der_expect(&ext, TAG_OID, &id, NULL))
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
const char *crl_next_entry(struct der *it, const uint8_t **serial, size_t *len)
{
	struct der entry, s;
	time_t when;
	bool indirect;
	if (!der_expect(it, TAG_SEQUENCE, &entry, NULL) ||
	    !der_expect(&entry, TAG_INTEGER, &s, NULL) || s.n == 0 || !der_read_time(&entry, &when))
		return "malformed revoked entry";
	/* An entry naming another issuer (indirect CRL) would be filed under
	 * the wrong issuer here: refuse rather than miss a revocation. */
	if (entry.n && !extensions_lack(entry, oid_certificate_issuer,
					sizeof oid_certificate_issuer, &indirect))
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
	{{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02},
	 8,
	 WC_HASH_TYPE_SHA256,
	 WC_SIGNATURE_TYPE_ECC},
	{{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03},
	 8,
	 WC_HASH_TYPE_SHA384,
	 WC_SIGNATURE_TYPE_ECC},
	{{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04},
	 8,
	 WC_HASH_TYPE_SHA512,
	 WC_SIGNATURE_TYPE_ECC},
	{{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b},
	 9,
	 WC_HASH_TYPE_SHA256,
	 WC_SIGNATURE_TYPE_RSA_W_ENC},
	{{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c},
	 9,
	 WC_HASH_TYPE_SHA384,
	 WC_SIGNATURE_TYPE_RSA_W_ENC},
	{{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d},
	 9,
	 WC_HASH_TYPE_SHA512,
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
		return build_fail(b, "%s: unsupported signature algorithm", c->label);
	if (name_sha256(c->issuer, hash) < 0)
		return build_fail(b, "%s: SHA-256 failed", c->label);
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
		return build_fail(b, "%s: signature does not verify against '%s'", c->label,
				  b->idx->issuers[number].name);
	struct der s = c->issuer, inner;
	der_expect(&s, TAG_SEQUENCE, &inner, NULL);
	name_common_name(inner, name, sizeof name);
	return build_fail(b, "%s: issuer '%s' is not a trusted issuer", c->label, name);
}

/* ---- building: dates ------------------------------------------------ */

static int crl_check_dates(struct build *b, const struct crl *c)
{
	char t1[40], t2[40];
	if (c->this_update > b->now + CLOCK_SKEW_S)
		return build_fail(b, "%s: lastUpdate %s is in the future", c->label,
				  format_time(c->this_update, t1, sizeof t1));
	if (c->next_update && c->next_update < c->this_update)
		return build_fail(b, "%s: nextUpdate %s is before lastUpdate %s", c->label,
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

int crl_check(struct build *b, struct crl *c)
{
	struct der tbs_content;
	const char *why = crl_parse_outer(c, &tbs_content);
	if (!why)
		why = crl_parse_tbs(c, tbs_content);
	if (why)
		return build_fail(b, "%s: %s", c->label, why);
	int number = crl_verify(b, c);
	if (number < 0)
		return -1;
	c->number = (uint16_t)number;
	if (crl_check_dates(b, c) < 0)
		return -1;
	/* Entries are checked only once the signature holds: no work for junk. */
	why = crl_count_entries(c);
	if (why)
		return build_fail(b, "%s: %s", c->label, why);
	issuer_account_crl(&b->idx->issuers[number], c);
	return 0;
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
			return build_fail(b, "%s: PEM block without %s", path, pem_end);
		while (body < stop && (*body == '\n' || *body == '\r' || *body == ' '))
			body++;
		word32 out_len = (word32)((stop - body) / 4 * 3 + 4);
		uint8_t *der = malloc(out_len);
		if (!der ||
		    Base64_Decode((const byte *)body, (word32)(stop - body), der, &out_len) != 0) {
			free(der);
			return build_fail(b, "%s: bad base64 in PEM block %u", path, block + 1);
		}
		char label[512];
		snprintf(label, sizeof label, block ? "%s[%u]" : "%s", path, block + 1);
		if (!crl_add(b, label, der, out_len)) {
			free(der);
			return build_fail(b, "out of memory");
		}
		block++;
		p = stop + sizeof pem_end - 1;
	}
	if (!block)
		return build_fail(b, "%s: neither a DER CRL nor PEM '%s'", path, pem_begin);
	return 0;
}

/* Takes buf: a DER CRL (one SEQUENCE) is kept whole, PEM is split. */
static int load_bytes(struct build *b, const char *path, uint8_t *buf, size_t len)
{
	if (len > 0 && buf[0] == TAG_SEQUENCE) {
		if (crl_add(b, path, buf, len))
			return 0;
		free(buf);
		return build_fail(b, "out of memory");
	}
	int rc = pem_split(b, path, buf, len);
	free(buf);
	return rc;
}

static int load_file(struct build *b, const char *path)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	if (file_read(path, &buf, &len, b->err, b->errlen) < 0)
		return -1;
	return load_bytes(b, path, buf, len);
}

int crl_load_blob(struct build *b, const char *label, const uint8_t *data, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return build_fail(b, "out of memory");
	if (len)
		memcpy(copy, data, len);
	return load_bytes(b, label, copy, len);
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
		return build_fail(b, "%s: %s", dir, strerror(errno));
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
		return build_fail(b, "out of memory");
	if (*n)
		qsort(*names, *n, sizeof **names, compare_names);
	return 0;
}

int crl_load_dir(struct build *b, const char *dir)
{
	char **names;
	size_t n;
	int rc = list_dir(b, dir, &names, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (stat(path, &st) < 0)
			rc = build_fail(b, "%s: %s", path, strerror(errno));
		else if (S_ISREG(st.st_mode))
			rc = load_file(b, path);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}
