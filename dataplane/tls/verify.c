/*
 * verify: the certificate policy of a full handshake (wolfSSL's verify
 * callback, on every certificate of the chain) and the checks a resumed or
 * open session meets again against a snapshot: usage, identity, block
 * list, revocation of the leaf and of the configured CAs above it.
 */
#include "tls-internal.h"
#include "beacon/certid.h"
#include "beacon/snapshot.h"

#include <wolfssl/openssl/x509.h>
#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The verify callback relies on both (scripts/setup.sh says why): without
 * them a usage error could hide a chain error, and a CA the client sends
 * would escape its issuer's CRL. */
#if !defined(IGNORE_KEY_EXTENSIONS) || !defined(WOLFSSL_VERIFY_CB_ALL_CERTS)
#error "wolfSSL must be built by scripts/setup.sh (IGNORE_KEY_EXTENSIONS, WOLFSSL_VERIFY_CB_ALL_CERTS)"
#endif

/* Configured CAs walked above a certificate: deeper than any real PKI, and
 * a bound on a loop of cross-certified CAs. */
#define MAX_CA_WALK 8

/* The store's error is wolfSSL's own code or, with the OpenSSL
 * compatibility layer built in, OpenSSL's X509_V_ERR number: take both. */
static enum auth_result classify_verify_error(int err)
{
	switch (err) {
	case ASN_AFTER_DATE_E:
	case WOLFSSL_X509_V_ERR_CERT_HAS_EXPIRED:
		return AUTH_EXPIRED;
	case ASN_BEFORE_DATE_E:
	case WOLFSSL_X509_V_ERR_CERT_NOT_YET_VALID:
		return AUTH_NOT_YET_VALID;
	case ASN_NO_SIGNER_E:
	case ASN_SELF_SIGNED_E:
	case ASN_PATHLEN_INV_E:
	case ASN_PATHLEN_SIZE_E:
	case WOLFSSL_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case WOLFSSL_X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
		return AUTH_UNKNOWN_ISSUER;
	case CRL_CERT_REVOKED:
	case WOLFSSL_X509_V_ERR_CERT_REVOKED:
		return AUTH_REVOKED;
	default:
		return AUTH_OTHER;
	}
}

/* The alert a refusal sends (RFC 8446, 6.2): the most precise one for the
 * cause, so that an agent (and its operator) can tell a revoked certificate
 * from an expired one or an unknown issuer. */
static uint8_t alert_for(enum auth_result r)
{
	switch (r) {
	case AUTH_UNKNOWN_ISSUER:
		return unknown_ca;
	case AUTH_EXPIRED:
	case AUTH_NOT_YET_VALID: /* "has expired or is not currently valid" */
		return certificate_expired;
	case AUTH_REVOKED:
		return certificate_revoked;
	case AUTH_BLOCKED:
	case AUTH_UNAPPROVED: /* a valid certificate, refused by access control */
		return access_denied;
	case AUTH_WRONG_USAGE:
		return unsupported_certificate;
	default:
		return bad_certificate;
	}
}

const struct trust_policy *tls_policy(const struct tls_session *s)
{
	return trust_snapshot_policy(s->srv->trust);
}

void tls_refuse(struct tls_session *s, enum auth_result r, const char *why)
{
	s->peer.result = r;
	s->alert = alert_for(r);
	/* Cut to fit: a reason names CAs and names of any length. */
	size_t n = strnlen(why, sizeof s->peer.reason - 1);
	memcpy(s->peer.reason, why, n);
	s->peer.reason[n] = '\0';
}

/* An identity is used in logs, the index and file names: printable only. */
bool tls_identity_acceptable(const char *id)
{
	if (!id[0])
		return false;
	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		if (*p < 0x21 || *p >= 0x7f || *p == '/' || *p == '\\')
			return false;
	return true;
}

/* The device identity from the certificate's own bytes (certid.h): a value
 * with a NUL, a control byte or more than 255 bytes, or a second CN (or a
 * second SAN of the configured type), refuses the certificate rather than
 * cutting the value or picking one. */
static bool peer_identity(struct tls_session *s, const struct cert_view *v)
{
	char *out = s->peer.device;
	size_t len = sizeof s->peer.device;
	enum cert_id r;
	const char *what;
	switch (tls_policy(s)->identity) {
	case IDENTITY_SAN_DNS:
		r = cert_san(v, CERT_SAN_DNS, out, len);
		what = "subjectAltName dNSName";
		break;
	case IDENTITY_SAN_EMAIL:
		r = cert_san(v, CERT_SAN_EMAIL, out, len);
		what = "subjectAltName rfc822Name";
		break;
	case IDENTITY_SAN_URI:
		r = cert_san(v, CERT_SAN_URI, out, len);
		what = "subjectAltName URI";
		break;
	default:
		r = cert_common_name(v, out, len);
		what = "subject commonName";
		break;
	}
	if (r == CERT_ID_OK && tls_identity_acceptable(out))
		return true;
	out[0] = '\0';
	char why[160];
	snprintf(why, sizeof why, "no usable device identity: the %s %s", what,
		 cert_id_problem(r == CERT_ID_OK ? CERT_ID_BAD : r));
	tls_refuse(s, AUTH_OTHER, why);
	return false;
}

/* Today's verdict on a verified certificate's identity: not blocked, not
 * revoked (and, under crl_stale = refuse, its issuer's CRL not out of
 * date). Used for full handshakes and for every resumption. */
bool tls_peer_admitted(struct tls_session *s)
{
	const struct trust_snapshot *trust = s->srv->trust;
	if (trust_snapshot_blocked(trust, s->peer.cert_sha256, s->peer.device)) {
		tls_refuse(s, AUTH_BLOCKED, "certificate or device is blocked");
		return false;
	}
	switch (trust_snapshot_revocation(trust, s->issuer_hash, s->serial, s->serial_len)) {
	case REVOCATION_GOOD:
		break;
	case REVOCATION_REVOKED:
		tls_refuse(s, AUTH_REVOKED, "certificate is revoked");
		return false;
	case REVOCATION_STALE:
		tls_refuse(s, AUTH_REVOKED,
			   "issuer's CRL is past its nextUpdate (crl_stale = refuse)");
		/* Not known to be revoked: its status is unknown. */
		s->alert = certificate_unknown;
		return false;
	}
	s->peer.result = AUTH_OK;
	return true;
}

/* A CA certificate's standing on its own issuer's CRL. */
static bool ca_admitted(struct tls_session *s, const uint8_t issuer_sha256[32],
			const uint8_t *serial, size_t serial_len, const char *which)
{
	char why[160];
	switch (trust_snapshot_revocation(s->srv->trust, issuer_sha256, serial, serial_len)) {
	case REVOCATION_GOOD:
		return true;
	case REVOCATION_REVOKED:
		snprintf(why, sizeof why, "%s is revoked", which);
		tls_refuse(s, AUTH_REVOKED, why);
		return false;
	case REVOCATION_STALE:
		snprintf(why, sizeof why,
			 "%s: its issuer's CRL is past its nextUpdate "
			 "(crl_stale = refuse)",
			 which);
		tls_refuse(s, AUTH_REVOKED, why);
		s->alert = certificate_unknown;
		return false;
	}
	return false;
}

/* The configured issuers above a certificate whose issuer is `issuer`
 * (matched by raw subject name and, when the certificate names one, by key
 * identifier, as wolfSSL picks a signer) are checked against their own
 * issuers' CRLs, up to a self-issued root: an intermediate CA configured as
 * an issuer and revoked by its root is no longer trusted. Where two
 * configured CAs could have signed, each is checked: fail closed. */
bool tls_cas_admitted(struct tls_session *s, const uint8_t issuer[32], const uint8_t *akid,
		      size_t akid_len)
{
	const struct trust_snapshot *trust = s->srv->trust;
	size_t n_ca = trust_snapshot_ca_count(trust);
	for (int level = 0; level < MAX_CA_WALK; level++) {
		const struct trust_ca *next = NULL;
		for (size_t i = 0; i < n_ca; i++) {
			const struct trust_ca *ca = trust_snapshot_ca(trust, i);
			if (memcmp(ca->subject_sha256, issuer, 32) != 0 || ca->self_issued)
				continue;
			if (akid_len && ca->skid_len &&
			    (ca->skid_len != akid_len || memcmp(ca->skid, akid, akid_len) != 0))
				continue;
			char which[120];
			snprintf(which, sizeof which, "issuing CA '%s' (a configured issuer)",
				 ca->name);
			if (!ca_admitted(s, ca->issuer_sha256, ca->serial, ca->serial_len, which))
				return false;
			if (!next)
				next = ca;
		}
		if (!next)
			return true;
		issuer = next->issuer_sha256;
		akid = next->akid;
		akid_len = next->akid_len;
	}
	return true;
}

/* Signatures made with SHA-1 or MD5 can be forged: a certificate signed
 * with one is refused whatever else it carries. */
static bool weak_signature(WOLFSSL_X509 *x)
{
	switch (wolfSSL_X509_get_signature_nid(x)) {
	case NID_sha1WithRSAEncryption:
	case NID_ecdsa_with_SHA1:
	case NID_dsaWithSHA1:
	case NID_md5WithRSAEncryption:
		return true;
	default:
		return false;
	}
}

/* Usage is judged here only, on a chain wolfSSL verified: wolfSSL is built
 * not to judge it (IGNORE_KEY_EXTENSIONS, scripts/setup.sh), so no usage
 * verdict can stand in for, or hide, a chain error. */
static bool usage_admitted(struct tls_session *s, WOLFSSL_X509 *x)
{
	const struct trust_policy *p = tls_policy(s);
	if (p->require_eku) {
		unsigned eku = wolfSSL_X509_get_extended_key_usage(x);
		if (!(eku & (XKU_SSL_CLIENT | XKU_ANYEKU))) {
			tls_refuse(s, AUTH_WRONG_USAGE,
				   "certificate lacks clientAuth extended key usage");
			return false;
		}
	}
	if (p->require_digital_signature && !(wolfSSL_X509_get_keyUsage(x) & KEYUSE_DIGITAL_SIG)) {
		tls_refuse(s, AUTH_WRONG_USAGE, "certificate lacks digitalSignature key usage");
		return false;
	}
	return true;
}

/* Fingerprint, issuer name hash and serial, all from the DER the client
 * sent: exactly what the block list and the CRLs name it by. */
static bool leaf_names(struct tls_session *s, const uint8_t *der, size_t der_len,
		       struct cert_view *view)
{
	struct cert_names names;
	if (wc_Sha256Hash(der, (word32)der_len, s->peer.cert_sha256) != 0 ||
	    cert_names(der, der_len, &names) != 0 || cert_view_parse(der, der_len, view) != 0) {
		tls_refuse(s, AUTH_OTHER, "certificate does not parse");
		return false;
	}
	if (names.serial_len > sizeof s->serial) {
		tls_refuse(s, AUTH_OTHER, "certificate serial is longer than 32 bytes");
		return false;
	}
	memcpy(s->issuer_hash, names.issuer_sha256, 32);
	memcpy(s->serial, names.serial, names.serial_len);
	s->serial_len = (uint8_t)names.serial_len;
	return true;
}

static int check_leaf(struct tls_session *s, WOLFSSL_X509 *x)
{
	if (weak_signature(x)) {
		tls_refuse(s, AUTH_OTHER, "certificate is signed with SHA-1 or MD5");
		return 0;
	}
	int der_len = 0;
	const unsigned char *der = wolfSSL_X509_get_der(x, &der_len);
	struct cert_view view;
	uint8_t akid[32];
	if (!der || der_len <= 0) {
		tls_refuse(s, AUTH_OTHER, "cannot read the certificate");
		return 0;
	}
	if (!leaf_names(s, der, (size_t)der_len, &view) || !peer_identity(s, &view))
		return 0;
	tls_leaf_validity(s, x);
	if (!tls_peer_admitted(s) ||
	    !tls_cas_admitted(s, s->issuer_hash, akid, cert_key_id(&view, true, akid)) ||
	    !usage_admitted(s, x))
		return 0;
	return 1;
}

/* A CA certificate the client sent (wolfSSL verified it against its own
 * issuer; VERIFY_CB_ALL_CERTS brings it here): signed with SHA-1 or MD5,
 * or revoked by its issuer's CRL, the chain fails, as does one revoked
 * above it. */
static int check_chain_ca(struct tls_session *s, WOLFSSL_X509 *x, int depth)
{
	int der_len = 0;
	const unsigned char *der = wolfSSL_X509_get_der(x, &der_len);
	struct cert_names names;
	struct cert_view view;
	uint8_t akid[32];
	if (!der || der_len <= 0 || cert_names(der, (size_t)der_len, &names) != 0 ||
	    cert_view_parse(der, (size_t)der_len, &view) != 0) {
		tls_refuse(s, AUTH_OTHER, "a CA certificate of the chain does not parse");
		return 0;
	}
	char which[64];
	snprintf(which, sizeof which, "CA certificate at depth %d", depth);
	if (weak_signature(x)) {
		/* A client-sent CA's signature is as forgeable as a leaf's. */
		char why[96];
		snprintf(why, sizeof why, "%s is signed with SHA-1 or MD5", which);
		tls_refuse(s, AUTH_OTHER, why);
		return 0;
	}
	return ca_admitted(s, names.issuer_sha256, names.serial, names.serial_len, which) &&
	       tls_cas_admitted(s, names.issuer_sha256, akid, cert_key_id(&view, true, akid));
}

static void hex(const uint8_t *p, size_t n, char *out, size_t len)
{
	static const char digits[] = "0123456789ABCDEF";
	size_t i = 0;
	for (; i < n && 2 * i + 2 < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * i] = '\0';
}

/* The certificate's notAfter in ISO 8601 UTC, for the refusal line (an
 * expired certificate says when); "" when it cannot be read. */
static void not_after_text(const uint8_t *der, int der_len, char *out, size_t len)
{
	out[0] = '\0';
	WOLFSSL_X509 *x = wolfSSL_X509_d2i(NULL, der, der_len);
	struct tm tm;
	if (x && wolfSSL_ASN1_TIME_to_tm(wolfSSL_X509_get_notAfter(x), &tm) == WOLFSSL_SUCCESS)
		strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	wolfSSL_X509_free(x);
}

/* Whose certificate was refused: the client's own (depth 0), even when a
 * CA above it was the cause. */
static void describe_refused(struct tls_session *s, const WOLFSSL_X509_STORE_CTX *store)
{
	const uint8_t *der = NULL;
	int der_len = 0;
	if (store->certs && store->totalCerts > 0) {
		der = store->certs[0].buffer;
		der_len = (int)store->certs[0].length;
	} else if (store->current_cert) {
		der = wolfSSL_X509_get_der(store->current_cert, &der_len);
	}
	struct cert_view v;
	if (s->refused || !der || der_len <= 0 || cert_view_parse(der, (size_t)der_len, &v) != 0)
		return;
	struct tls_cert_summary *c = calloc(1, sizeof *c);
	uint8_t sha[32];
	if (!c)
		return;
	cert_name_text(v.subject, v.subject_len, c->subject, sizeof c->subject);
	cert_name_text(v.issuer, v.issuer_len, c->issuer, sizeof c->issuer);
	/* As openssl x509 -serial prints it: without the sign byte. */
	const uint8_t *serial = v.serial;
	size_t serial_len = v.serial_len;
	while (serial_len > 1 && serial[0] == 0) {
		serial++;
		serial_len--;
	}
	hex(serial, serial_len, c->serial, sizeof c->serial);
	if (wc_Sha256Hash(der, (word32)der_len, sha) == 0)
		hex(sha, 32, c->sha256, sizeof c->sha256);
	not_after_text(der, der_len, c->not_after, sizeof c->not_after);
	s->refused = c;
}

/* A certificate refused only for its dates still names a device we can
 * trust the name of: wolfSSL reports a date error only after the CA's
 * signature on it was confirmed (ParseCertRelative checks the signature,
 * then returns badDate), and only for a chain it could build to a
 * configured issuer. Its identity is read, as for a valid one, so the
 * device's record can say why it stays out; and only while the issuing
 * CAs are themselves admitted, since a revoked CA's key may sign any name.
 * The refusal itself is unchanged. */
static void dated_leaf_identity(struct tls_session *s, WOLFSSL_X509 *x)
{
	struct tls_peer kept = s->peer;
	uint8_t alert = s->alert;
	int der_len = 0;
	const unsigned char *der = x ? wolfSSL_X509_get_der(x, &der_len) : NULL;
	struct cert_view view;
	uint8_t akid[32];
	bool named = der && der_len > 0 && leaf_names(s, der, (size_t)der_len, &view) &&
		     peer_identity(s, &view) &&
		     tls_cas_admitted(s, s->issuer_hash, akid, cert_key_id(&view, true, akid));
	char device[sizeof s->peer.device];
	memcpy(device, s->peer.device, sizeof device);
	uint8_t sha[32];
	memcpy(sha, s->peer.cert_sha256, sizeof sha);
	s->peer = kept;
	s->alert = alert;
	if (!named)
		return;
	memcpy(s->peer.device, device, sizeof device);
	memcpy(s->peer.cert_sha256, sha, sizeof sha);
}

/* Called by wolfSSL for every certificate of the client's chain, CAs first
 * (VERIFY_CB_ALL_CERTS), the client's own last. A chain error is never
 * waived; our own checks run only on what wolfSSL verified. */
int tls_verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct tls_session *s = store->userCtx;
	if (!s)
		return preverify;
	int ok;
	if (store->totalCerts == 0) {
		/* TLS 1.2's empty Certificate (TLS 1.3's never gets here: wolfSSL
		 * sends certificate_required): RFC 5246 7.4.6 says
		 * handshake_failure. */
		tls_refuse(s, AUTH_NO_CERT, "no client certificate");
		wolfSSL_set_cert_alert(s->ssl, handshake_failure);
		return 0;
	}
	if (!preverify) {
		/* The first refusal names the cause; later ones follow from it. */
		if (s->peer.result == AUTH_OTHER || s->peer.result == AUTH_OK) {
			char why[96];
			snprintf(why, sizeof why, "certificate at depth %d: %s", store->error_depth,
				 wolfSSL_ERR_reason_error_string((unsigned long)store->error));
			tls_refuse(s, classify_verify_error(store->error), why);
			if (store->error_depth == 0 && (s->peer.result == AUTH_EXPIRED ||
							s->peer.result == AUTH_NOT_YET_VALID))
				dated_leaf_identity(s, store->current_cert);
		}
		ok = 0;
	} else if (!store->current_cert) {
		tls_refuse(s, AUTH_OTHER, "no decoded certificate to check");
		ok = 0;
	} else if (store->error_depth > 0) {
		ok = check_chain_ca(s, store->current_cert, store->error_depth);
	} else {
		ok = check_leaf(s, store->current_cert);
	}
	if (!ok) {
		describe_refused(s, store);
		wolfSSL_set_cert_alert(s->ssl, s->alert ? s->alert : bad_certificate);
	}
	return ok;
}
