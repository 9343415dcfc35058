/*
 * certid: identity and key identifiers from a certificate's DER (see
 * certid.h for why not from wolfSSL's decoded copy).
 */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/hash.h>

#include "beacon/certid.h"
#include "beacon/der.h"

#include <string.h>

enum {
	TAG_BOOLEAN = 0x01,
	TAG_INTEGER = 0x02,
	TAG_OCTET_STRING = 0x04,
	TAG_OID = 0x06,
	TAG_UTF8 = 0x0c,
	TAG_PRINTABLE = 0x13,
	TAG_TELETEX = 0x14,
	TAG_IA5 = 0x16,
	TAG_VISIBLE = 0x1a,
	TAG_UNIVERSAL = 0x1c,
	TAG_BMP = 0x1e,
	TAG_SEQUENCE = 0x30,
	TAG_SET = 0x31,
	TAG_CTX0 = 0xa0,   /* [0] constructed: version */
	TAG_CTX3 = 0xa3,   /* [3] constructed: extensions */
	TAG_KEY_ID = 0x80, /* [0] primitive: AKID keyIdentifier */
};

/* Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial,
 * signature, issuer, validity, subject, spki, [1] issuerUID OPTIONAL,
 * [2] subjectUID OPTIONAL, [3] extensions OPTIONAL } ... } */
int cert_view_parse(const uint8_t *der, size_t len, struct cert_view *out)
{
	struct der in = {der, len}, cert, tbs, v, serial, issuer, subject, exts;
	uint8_t tag;
	if (!der_expect(&in, TAG_SEQUENCE, &cert, NULL) ||
	    !der_expect(&cert, TAG_SEQUENCE, &tbs, NULL))
		return -1;
	der_expect(&tbs, TAG_CTX0, &v, NULL);
	if (!der_expect(&tbs, TAG_INTEGER, &serial, NULL) ||
	    !der_expect(&tbs, TAG_SEQUENCE, &v, NULL) ||
	    !der_expect(&tbs, TAG_SEQUENCE, &issuer, NULL) ||
	    !der_expect(&tbs, TAG_SEQUENCE, &v, NULL) ||
	    !der_expect(&tbs, TAG_SEQUENCE, &subject, NULL) ||
	    !der_expect(&tbs, TAG_SEQUENCE, &v, NULL))
		return -1;
	*out = (struct cert_view){serial.p,  serial.n,	issuer.p, issuer.n,
				  subject.p, subject.n, NULL,	  0};
	while (tbs.n) {
		if (!der_read(&tbs, &tag, &v, NULL))
			return -1;
		if (tag != TAG_CTX3)
			continue;
		if (!der_expect(&v, TAG_SEQUENCE, &exts, NULL) || v.n)
			return -1;
		out->exts = exts.p;
		out->exts_len = exts.n;
	}
	return 0;
}

/* ---- values ---- */

/* The names are whole TLVs (tag and length included), as a CRL's issuer is
 * hashed. */
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

int cert_names(const uint8_t *der, size_t len, struct cert_names *out)
{
	struct der issuer, serial, subject;
	if (!cert_issuer_serial_subject((struct der){der, len}, &issuer, &serial, &subject) ||
	    serial.n == 0 || wc_Sha256Hash(issuer.p, (word32)issuer.n, out->issuer_sha256) != 0 ||
	    wc_Sha256Hash(subject.p, (word32)subject.n, out->subject_sha256) != 0)
		return -1;
	out->serial = serial.p;
	out->serial_len = serial.n;
	return 0;
}

static bool identity_char(uint32_t c)
{
	return c > 0x20 && c < 0x7f && c != '/' && c != '\\';
}

/* A string value as ASCII: bytes of the 8-bit types, code units of BMP
 * (2 bytes) and Universal (4 bytes) strings. Any character outside the
 * identity set, a NUL included, refuses the whole value: it is never cut. */
static enum cert_id string_value(uint8_t tag, struct der v, char *out, size_t len)
{
	size_t unit;
	switch (tag) {
	case TAG_UTF8:
	case TAG_PRINTABLE:
	case TAG_TELETEX:
	case TAG_IA5:
	case TAG_VISIBLE:
		unit = 1;
		break;
	case TAG_BMP:
		unit = 2;
		break;
	case TAG_UNIVERSAL:
		unit = 4;
		break;
	default:
		return CERT_ID_BAD;
	}
	size_t chars = v.n / unit;
	if (v.n % unit || chars == 0 || chars >= len)
		return CERT_ID_BAD;
	for (size_t i = 0; i < chars; i++) {
		uint32_t c = 0;
		for (size_t k = 0; k < unit; k++)
			c = c << 8 | v.p[i * unit + k];
		if (!identity_char(c))
			return CERT_ID_BAD;
		out[i] = (char)c;
	}
	out[chars] = '\0';
	return CERT_ID_OK;
}

/* ---- subject commonName ---- */

enum cert_id cert_common_name(const struct cert_view *v, char *out, size_t len)
{
	static const uint8_t oid_cn[] = {0x55, 0x04, 0x03};
	struct der name = {v->subject, v->subject_len}, rdn, atv, oid, val, found = {NULL, 0};
	uint8_t tag, found_tag = 0;
	unsigned count = 0;
	while (name.n) {
		if (!der_expect(&name, TAG_SET, &rdn, NULL))
			return CERT_ID_BAD;
		while (rdn.n) {
			if (!der_expect(&rdn, TAG_SEQUENCE, &atv, NULL) ||
			    !der_expect(&atv, TAG_OID, &oid, NULL) ||
			    !der_read(&atv, &tag, &val, NULL) || atv.n)
				return CERT_ID_BAD;
			if (der_equal(oid, oid_cn, sizeof oid_cn) && count++ == 0) {
				found = val;
				found_tag = tag;
			}
		}
	}
	if (count == 0)
		return CERT_ID_NONE;
	if (count > 1)
		return CERT_ID_SEVERAL;
	return string_value(found_tag, found, out, len);
}

/* ---- extensions ---- */

/* Calls back with the extnValue content of each extension `oid`. */
static enum cert_id each_extension(const struct cert_view *v, const uint8_t *oid, size_t oid_len,
				   enum cert_id (*fn)(struct der value, void *arg), void *arg)
{
	struct der exts = {v->exts, v->exts_len}, ext, id, value, flag;
	while (exts.n) {
		if (!der_expect(&exts, TAG_SEQUENCE, &ext, NULL) ||
		    !der_expect(&ext, TAG_OID, &id, NULL))
			return CERT_ID_BAD;
		der_expect(&ext, TAG_BOOLEAN, &flag, NULL);
		if (!der_expect(&ext, TAG_OCTET_STRING, &value, NULL) || ext.n)
			return CERT_ID_BAD;
		if (!der_equal(id, oid, oid_len))
			continue;
		enum cert_id r = fn(value, arg);
		if (r != CERT_ID_OK)
			return r;
	}
	return CERT_ID_OK;
}

struct san_search {
	uint8_t tag;
	unsigned count;
	struct der value;
};

static enum cert_id san_collect(struct der value, void *arg)
{
	struct san_search *s = arg;
	struct der names, name;
	uint8_t tag;
	if (!der_expect(&value, TAG_SEQUENCE, &names, NULL) || value.n)
		return CERT_ID_BAD;
	while (names.n) {
		if (!der_read(&names, &tag, &name, NULL))
			return CERT_ID_BAD;
		if (tag == s->tag && s->count++ == 0)
			s->value = name;
	}
	return CERT_ID_OK;
}

enum cert_id cert_san(const struct cert_view *v, uint8_t san_tag, char *out, size_t len)
{
	static const uint8_t oid_san[] = {0x55, 0x1d, 0x11};
	struct san_search s = {.tag = san_tag};
	enum cert_id r = each_extension(v, oid_san, sizeof oid_san, san_collect, &s);
	if (r != CERT_ID_OK)
		return r;
	if (s.count == 0)
		return CERT_ID_NONE;
	if (s.count > 1)
		return CERT_ID_SEVERAL;
	/* rfc822Name, dNSName and URI are IA5String, tagged implicitly. */
	return string_value(TAG_IA5, s.value, out, len);
}

struct key_id_search {
	bool authority;
	uint8_t *out;
	size_t len;
};

/* subjectKeyIdentifier ::= OCTET STRING; AuthorityKeyIdentifier ::=
 * SEQUENCE { [0] keyIdentifier OPTIONAL, [1] ..., [2] ... }. */
static enum cert_id key_id_take(struct der value, void *arg)
{
	struct key_id_search *k = arg;
	struct der seq, id;
	bool ok = k->authority ? der_expect(&value, TAG_SEQUENCE, &seq, NULL) &&
					 der_expect(&seq, TAG_KEY_ID, &id, NULL)
			       : der_expect(&value, TAG_OCTET_STRING, &id, NULL);
	if (ok && id.n > 0 && id.n <= 32) {
		memcpy(k->out, id.p, id.n);
		k->len = id.n;
	}
	return CERT_ID_OK;
}

size_t cert_key_id(const struct cert_view *v, bool authority, uint8_t out[32])
{
	static const uint8_t oid_skid[] = {0x55, 0x1d, 0x0e};
	static const uint8_t oid_akid[] = {0x55, 0x1d, 0x23};
	struct key_id_search k = {authority, out, 0};
	if (each_extension(v, authority ? oid_akid : oid_skid, 3, key_id_take, &k) != CERT_ID_OK)
		return 0;
	return k.len;
}

/* ---- names as text ---- */

struct text {
	char *out;
	size_t len, at;
	bool full;
};

static void text_put(struct text *t, const char *s, size_t n)
{
	if (t->full)
		return;
	if (t->at + n + 4 > t->len) { /* room for "..." and the NUL */
		memcpy(t->out + t->at, "...", 3);
		t->at += 3;
		t->full = true;
		return;
	}
	memcpy(t->out + t->at, s, n);
	t->at += n;
}

static void text_value(struct text *t, struct der v)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < v.n && !t->full; i++) {
		uint8_t c = v.p[i];
		if (c >= 0x20 && c < 0x7f && c != ',' && c != '\\' && c != '"') {
			text_put(t, (const char *)&c, 1);
		} else {
			char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
			text_put(t, esc, 4);
		}
	}
}

static const char *attribute_label(struct der oid)
{
	static const struct {
		uint8_t oid[10];
		size_t len;
		const char *label;
	} known[] = {
		{{0x55, 0x04, 0x03}, 3, "CN"},
		{{0x55, 0x04, 0x05}, 3, "serialNumber"},
		{{0x55, 0x04, 0x06}, 3, "C"},
		{{0x55, 0x04, 0x07}, 3, "L"},
		{{0x55, 0x04, 0x08}, 3, "ST"},
		{{0x55, 0x04, 0x0a}, 3, "O"},
		{{0x55, 0x04, 0x0b}, 3, "OU"},
		{{0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19}, 10, "DC"},
		{{0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01}, 10, "UID"},
		{{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01}, 9, "emailAddress"},
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (der_equal(oid, known[i].oid, known[i].len))
			return known[i].label;
	return "OID";
}

void cert_name_text(const uint8_t *name_der, size_t name_len, char *out, size_t len)
{
	struct text t = {out, len, 0, len < 8};
	struct der name = {name_der, name_len}, rdn, atv, oid, val;
	uint8_t tag;
	bool first = true;
	while (name.n && !t.full && der_expect(&name, TAG_SET, &rdn, NULL)) {
		while (rdn.n && der_expect(&rdn, TAG_SEQUENCE, &atv, NULL) &&
		       der_expect(&atv, TAG_OID, &oid, NULL) && der_read(&atv, &tag, &val, NULL)) {
			const char *label = attribute_label(oid);
			if (!first)
				text_put(&t, ", ", 2);
			first = false;
			text_put(&t, label, strlen(label));
			text_put(&t, "=", 1);
			text_value(&t, val);
		}
	}
	if (len)
		out[t.at < len ? t.at : len - 1] = '\0';
}

const char *cert_id_problem(enum cert_id id)
{
	switch (id) {
	case CERT_ID_OK:
		return "ok";
	case CERT_ID_NONE:
		return "carries no such name";
	case CERT_ID_SEVERAL:
		return "carries several such names";
	case CERT_ID_BAD:
		break;
	}
	return "has control, non-ASCII, space, '/' or '\\' characters, or over 255";
}
