/*
 * Mutual TLS with wolfSSL: the server context (policy) and one session per
 * connection. See include/beacon/tls.h for the model.
 */
#include "tls-internal.h"
#include "beacon/certid.h"

#include <wolfssl/openssl/evp.h>
#include <wolfssl/openssl/x509.h>
#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "beacon/log.h"
#include "beacon/snapshot.h"

/* The verify callback relies on both (scripts/setup.sh says why): without
 * them a usage error could hide a chain error, and a CA the client sends
 * would escape its issuer's CRL. */
#if !defined(IGNORE_KEY_EXTENSIONS) || !defined(WOLFSSL_VERIFY_CB_ALL_CERTS)
#error "wolfSSL must be built by scripts/setup.sh (IGNORE_KEY_EXTENSIONS, WOLFSSL_VERIFY_CB_ALL_CERTS)"
#endif

/* Configured CAs walked above a certificate: deeper than any real PKI, and
 * a bound on a loop of cross-certified CAs. */
#define MAX_CA_WALK 8

/* A trust snapshot (built and checked by the control plane) with the
 * wolfSSL context over it: what every session of one snapshot shares. */
struct tls_server {
	_Atomic unsigned refs;
	WOLFSSL_CTX *ctx;
	struct trust_snapshot *trust; /* owned: freed with the last reference */
};

struct tls_session {
	struct tls_server *srv;
	WOLFSSL *ssl;
	tls_send_fn send;
	void *arg;
	const uint8_t *in;
	size_t in_len;
	struct tls_peer peer;
	uint8_t issuer_hash[32];
	uint8_t serial_len;
	uint8_t serial[32];
	int last_err;
	int64_t not_after; /* the verified leaf's notAfter, Unix seconds */
	int64_t auth_time; /* when the full handshake verified it */
	/* Tickets the client offered and that may resume, during the
	 * handshake only; which one wolfSSL resumed, or -1. */
	struct ticket_identity *offered;
	unsigned n_offered;
	int resumed_ticket;
	uint8_t alert;			  /* the TLS alert for the refusal in peer.result */
	struct tls_cert_summary *refused; /* whose certificate was refused; NULL */
};

#define MAX_OFFERED_TICKETS 4

static void leaf_validity(struct tls_session *s, WOLFSSL_X509 *x);

static const char cipher_list[] =
	"TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";

static const char client_sigalgs[] =
	"ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:RSA-PSS+SHA256:RSA-PSS+SHA384:RSA-PSS+SHA512:"
	"RSA+SHA256:RSA+SHA384:RSA+SHA512";

/* ---- I/O callbacks: the session's lent input, and the caller's sender ---- */

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	struct tls_session *s = ctx;
	if (s->in_len == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	size_t n = (size_t)sz < s->in_len ? (size_t)sz : s->in_len;
	memcpy(buf, s->in, n);
	s->in += n;
	s->in_len -= n;
	return (int)n;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	struct tls_session *s = ctx;
	size_t n = s->send(s->arg, (const uint8_t *)buf, (size_t)sz);
	return n == 0 ? WOLFSSL_CBIO_ERR_WANT_WRITE : (int)n;
}

/* ---- certificate policy ---- */

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

static const struct trust_policy *policy(const struct tls_session *s)
{
	return trust_snapshot_policy(s->srv->trust);
}

static void session_refuse(struct tls_session *s, enum auth_result r, const char *why)
{
	s->peer.result = r;
	s->alert = alert_for(r);
	/* Cut to fit: a reason names CAs and names of any length. */
	size_t n = strnlen(why, sizeof s->peer.reason - 1);
	memcpy(s->peer.reason, why, n);
	s->peer.reason[n] = '\0';
}

/* An identity is used in logs, the index and file names: printable only. */
static bool identity_acceptable(const char *id)
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
	switch (policy(s)->identity) {
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
	if (r == CERT_ID_OK && identity_acceptable(out))
		return true;
	out[0] = '\0';
	char why[160];
	snprintf(why, sizeof why, "no usable device identity: the %s %s", what,
		 cert_id_problem(r == CERT_ID_OK ? CERT_ID_BAD : r));
	session_refuse(s, AUTH_OTHER, why);
	return false;
}

/* Today's verdict on a verified certificate's identity: not blocked, not
 * revoked (and, under crl_stale = refuse, its issuer's CRL not out of
 * date). Used for full handshakes and for every resumption. */
static bool peer_admitted(struct tls_session *s)
{
	const struct trust_snapshot *trust = s->srv->trust;
	if (trust_snapshot_blocked(trust, s->peer.cert_sha256, s->peer.device)) {
		session_refuse(s, AUTH_BLOCKED, "certificate or device is blocked");
		return false;
	}
	switch (trust_snapshot_revocation(trust, s->issuer_hash, s->serial, s->serial_len)) {
	case REVOCATION_GOOD:
		break;
	case REVOCATION_REVOKED:
		session_refuse(s, AUTH_REVOKED, "certificate is revoked");
		return false;
	case REVOCATION_STALE:
		session_refuse(s, AUTH_REVOKED, "issuer's CRL is past its nextUpdate (crl_stale = refuse)");
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
		session_refuse(s, AUTH_REVOKED, why);
		return false;
	case REVOCATION_STALE:
		snprintf(why, sizeof why,
			 "%s: its issuer's CRL is past its nextUpdate "
			 "(crl_stale = refuse)",
			 which);
		session_refuse(s, AUTH_REVOKED, why);
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
static bool configured_cas_admitted(struct tls_session *s, const uint8_t issuer[32],
				    const uint8_t *akid, size_t akid_len)
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
	const struct trust_policy *p = policy(s);
	if (p->require_eku) {
		unsigned eku = wolfSSL_X509_get_extended_key_usage(x);
		if (!(eku & (XKU_SSL_CLIENT | XKU_ANYEKU))) {
			session_refuse(s, AUTH_WRONG_USAGE,
				       "certificate lacks clientAuth extended key usage");
			return false;
		}
	}
	if (p->require_digital_signature &&
	    !(wolfSSL_X509_get_keyUsage(x) & KEYUSE_DIGITAL_SIG)) {
		session_refuse(s, AUTH_WRONG_USAGE, "certificate lacks digitalSignature key usage");
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
	    cert_names(der, der_len, &names) != 0 ||
	    cert_view_parse(der, der_len, view) != 0) {
		session_refuse(s, AUTH_OTHER, "certificate does not parse");
		return false;
	}
	if (names.serial_len > sizeof s->serial) {
		session_refuse(s, AUTH_OTHER, "certificate serial is longer than 32 bytes");
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
		session_refuse(s, AUTH_OTHER, "certificate is signed with SHA-1 or MD5");
		return 0;
	}
	int der_len = 0;
	const unsigned char *der = wolfSSL_X509_get_der(x, &der_len);
	struct cert_view view;
	uint8_t akid[32];
	if (!der || der_len <= 0) {
		session_refuse(s, AUTH_OTHER, "cannot read the certificate");
		return 0;
	}
	if (!leaf_names(s, der, (size_t)der_len, &view) || !peer_identity(s, &view))
		return 0;
	leaf_validity(s, x);
	if (!peer_admitted(s) ||
	    !configured_cas_admitted(s, s->issuer_hash, akid, cert_key_id(&view, true, akid)) ||
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
		session_refuse(s, AUTH_OTHER, "a CA certificate of the chain does not parse");
		return 0;
	}
	char which[64];
	snprintf(which, sizeof which, "CA certificate at depth %d", depth);
	if (weak_signature(x)) {
		/* A client-sent CA's signature is as forgeable as a leaf's. */
		char why[96];
		snprintf(why, sizeof why, "%s is signed with SHA-1 or MD5", which);
		session_refuse(s, AUTH_OTHER, why);
		return 0;
	}
	return ca_admitted(s, names.issuer_sha256, names.serial, names.serial_len, which) &&
	       configured_cas_admitted(s, names.issuer_sha256, akid,
				       cert_key_id(&view, true, akid));
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
	s->refused = c;
}

/* Called by wolfSSL for every certificate of the client's chain, CAs first
 * (VERIFY_CB_ALL_CERTS), the client's own last. A chain error is never
 * waived; our own checks run only on what wolfSSL verified. */
static int verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct tls_session *s = store->userCtx;
	if (!s)
		return preverify;
	int ok;
	if (store->totalCerts == 0) {
		/* TLS 1.2's empty Certificate (TLS 1.3's never gets here: wolfSSL
		 * sends certificate_required): RFC 5246 7.4.6 says
		 * handshake_failure. */
		session_refuse(s, AUTH_NO_CERT, "no client certificate");
		wolfSSL_set_cert_alert(s->ssl, handshake_failure);
		return 0;
	}
	if (!preverify) {
		/* The first refusal names the cause; later ones follow from it. */
		if (s->peer.result == AUTH_OTHER || s->peer.result == AUTH_OK) {
			char why[96];
			snprintf(why, sizeof why, "certificate at depth %d: %s", store->error_depth,
				 wolfSSL_ERR_reason_error_string((unsigned long)store->error));
			session_refuse(s, classify_verify_error(store->error), why);
		}
		ok = 0;
	} else if (!store->current_cert) {
		session_refuse(s, AUTH_OTHER, "no decoded certificate to check");
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

/* ---- ticket identity blob and resumption ---- */

/* Records what a ticket must carry about the leaf wolfSSL just verified.
 * An unreadable notAfter leaves 0: its tickets never resume. */
static void leaf_validity(struct tls_session *s, WOLFSSL_X509 *x)
{
	struct tm tm = {0};
	const WOLFSSL_ASN1_TIME *na = wolfSSL_X509_get_notAfter(x);
	s->not_after = 0;
	if (na && wolfSSL_ASN1_TIME_to_tm(na, &tm) == WOLFSSL_SUCCESS)
		s->not_after = (int64_t)timegm(&tm);
	s->auth_time = (int64_t)time(NULL);
}

#define BLOB_VERSION 2
#define BLOB_FIXED (1 + 1 + 32 + 32 + 1 + 3 * 4 + 16 + 2) /* all but device, serial */

static uint8_t *put_u32(uint8_t *p, int64_t v)
{
	uint32_t u = v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
	p[0] = (uint8_t)(u >> 24);
	p[1] = (uint8_t)(u >> 16);
	p[2] = (uint8_t)(u >> 8);
	p[3] = (uint8_t)u;
	return p + 4;
}

static const uint8_t *get_u32(const uint8_t *p, int64_t *v)
{
	*v = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
	return p + 4;
}

/* The first half of the SHA-256 of the session's resumption secret: in TLS
 * 1.3 wolfSSL seals ssl->session's master secret into each ticket and,
 * when it resumes one, copies that ticket's secret back there. */
static void resumption_secret_id(struct tls_session *s, uint8_t out[16])
{
	uint8_t secret[64], digest[32];
	memset(out, 0, 16);
	if (wolfSSL_version(s->ssl) != TLS1_3_VERSION)
		return;
	int n = wolfSSL_SESSION_get_master_key(wolfSSL_get_session(s->ssl), secret, sizeof secret);
	if (n > 0 && wc_Sha256Hash(secret, (word32)n, digest) == 0)
		memcpy(out, digest, 16);
	explicit_bzero(secret, sizeof secret);
}

static const struct ticket_identity *resumed_identity(const struct tls_session *s);

/* The identity a ticket sealed now carries: a resumed session's is the one
 * of the ticket it resumed, with the first handshake's auth time and the
 * certificate's notAfter, so a chain of tickets never outlives either. */
static bool identity_to_seal(struct tls_session *s, struct ticket_identity *id)
{
	if (wolfSSL_session_reused(s->ssl)) {
		const struct ticket_identity *from = resumed_identity(s);
		if (!from)
			return false;
		*id = *from;
	} else {
		if (s->peer.result != AUTH_OK)
			return false;
		memset(id, 0, sizeof *id);
		snprintf(id->device, sizeof id->device, "%s", s->peer.device);
		memcpy(id->cert_sha256, s->peer.cert_sha256, 32);
		memcpy(id->issuer_hash, s->issuer_hash, 32);
		id->serial_len = s->serial_len;
		memcpy(id->serial, s->serial, s->serial_len);
		id->not_after = s->not_after;
		id->auth_time = s->auth_time;
	}
	id->issued = (int64_t)time(NULL);
	resumption_secret_id(s, id->secret_id);
	return true;
}

size_t tls_ticket_blob_write(struct tls_session *s, uint8_t *out, size_t room)
{
	struct ticket_identity id;
	if (!identity_to_seal(s, &id))
		return 0;
	size_t dlen = strlen(id.device);
	size_t need = BLOB_FIXED + dlen + id.serial_len;
	if (dlen > 255 || need > room)
		return 0;
	uint8_t *p = out;
	*p++ = BLOB_VERSION;
	*p++ = (uint8_t)dlen;
	memcpy(p, id.device, dlen);
	p += dlen;
	memcpy(p, id.cert_sha256, 32);
	p += 32;
	memcpy(p, id.issuer_hash, 32);
	p += 32;
	*p++ = id.serial_len;
	memcpy(p, id.serial, id.serial_len);
	p += id.serial_len;
	p = put_u32(p, id.not_after);
	p = put_u32(p, id.auth_time);
	p = put_u32(p, id.issued);
	memcpy(p, id.secret_id, 16);
	p += 16;
	p[0] = (uint8_t)(need >> 8);
	p[1] = (uint8_t)need;
	return need;
}

size_t tls_ticket_blob_read(const uint8_t *ticket, size_t len, struct ticket_identity *id)
{
	if (len < 2)
		return 0;
	size_t need = ((size_t)ticket[len - 2] << 8) | ticket[len - 1];
	if (need < BLOB_FIXED || need > len)
		return 0;
	const uint8_t *p = ticket + len - need;
	if (*p++ != BLOB_VERSION) /* version 1 carried no dates: a full handshake */
		return 0;
	memset(id, 0, sizeof *id);
	size_t dlen = *p++;
	if (dlen >= sizeof id->device || BLOB_FIXED + dlen > need)
		return 0;
	size_t serial_len = p[dlen + 64];
	if (serial_len > sizeof id->serial || need != BLOB_FIXED + dlen + serial_len)
		return 0;
	memcpy(id->device, p, dlen);
	p += dlen;
	memcpy(id->cert_sha256, p, 32);
	p += 32;
	memcpy(id->issuer_hash, p, 32);
	p += 32 + 1;
	id->serial_len = (uint8_t)serial_len;
	memcpy(id->serial, p, serial_len);
	p += serial_len;
	p = get_u32(p, &id->not_after);
	p = get_u32(p, &id->auth_time);
	p = get_u32(p, &id->issued);
	memcpy(id->secret_id, p, 16);
	return need;
}

/* Today's verdict on an identity verified earlier (a ticket's, or an open
 * connection's): its issuer still a configured one, then a full
 * handshake's checks that do not need the certificate itself: block list,
 * revocation, and the configured CAs above its issuer, each on its own
 * issuer's CRL. An identity whose issuer is a CA the client sent (not
 * configured) never gets here: its issuer is not in the list, so such a
 * session always falls back to a full handshake, where the whole chain is
 * checked again. */
static bool identity_still_admitted(struct tls_session *s)
{
	const struct trust_snapshot *trust = s->srv->trust;
	bool trusted = false;
	for (size_t i = 0; i < trust_snapshot_ca_count(trust) && !trusted; i++)
		trusted = memcmp(trust_snapshot_ca(trust, i)->subject_sha256, s->issuer_hash, 32) == 0;
	if (!trusted) {
		session_refuse(s, AUTH_UNKNOWN_ISSUER, "certificate's issuer is no longer trusted");
		return false;
	}
	return identity_acceptable(s->peer.device) && peer_admitted(s) &&
	       configured_cas_admitted(s, s->issuer_hash, NULL, 0);
}

/* The session's peer becomes the identity a ticket carries (what the
 * revocation and block checks read). */
static void session_take_identity(struct tls_session *s, const struct ticket_identity *id)
{
	memset(&s->peer, 0, sizeof s->peer);
	snprintf(s->peer.device, sizeof s->peer.device, "%s", id->device);
	memcpy(s->peer.cert_sha256, id->cert_sha256, 32);
	memcpy(s->issuer_hash, id->issuer_hash, 32);
	s->serial_len = id->serial_len;
	memcpy(s->serial, id->serial, id->serial_len);
}

/* Today's policy on a ticket's identity (identity_still_admitted), on a
 * copy: the session keeps no trace of a ticket it does not resume. */
static bool ticket_identity_admitted(struct tls_session *s, const struct ticket_identity *id)
{
	struct tls_peer peer = s->peer;
	uint8_t issuer_hash[32], serial[sizeof s->serial], serial_len = s->serial_len;
	memcpy(issuer_hash, s->issuer_hash, 32);
	memcpy(serial, s->serial, sizeof serial);

	session_take_identity(s, id);
	bool ok = identity_still_admitted(s);
	if (!ok)
		log_debug("tls: ticket of %s not resumed: %s", id->device, s->peer.reason);

	s->peer = peer;
	memcpy(s->issuer_hash, issuer_hash, 32);
	memcpy(s->serial, serial, sizeof serial);
	s->serial_len = serial_len;
	return ok;
}

/* The ticket's dates: the certificate's notAfter, max_session_age since
 * the full handshake, ticket_lifetime since the ticket was sealed. */
static bool ticket_identity_current(const struct trust_policy *p, const struct ticket_identity *id)
{
	int64_t now = (int64_t)time(NULL);
	const char *why = NULL;
	if (now >= id->not_after)
		why = "its certificate is past its notAfter";
	else if (now - id->auth_time > (int64_t)p->max_session_age_s)
		why = "its session is older than max_session_age";
	else if (now - id->issued > (int64_t)p->ticket_lifetime_s)
		why = "it is older than ticket_lifetime";
	if (why)
		log_debug("tls: ticket of %s not resumed: %s", id->device, why);
	return why == NULL;
}

/* The same ticket seen again (a ClientHello after a HelloRetryRequest
 * offers its tickets once more). */
static bool same_ticket(const struct ticket_identity *a, const struct ticket_identity *b)
{
	return memcmp(a->secret_id, b->secret_id, sizeof a->secret_id) == 0 &&
	       memcmp(a->cert_sha256, b->cert_sha256, 32) == 0 && a->issued == b->issued &&
	       a->auth_time == b->auth_time && strcmp(a->device, b->device) == 0;
}

bool tls_resumption_offered(struct tls_session *s, const struct ticket_identity *id)
{
	if (!ticket_identity_current(policy(s), id) || !ticket_identity_admitted(s, id))
		return false;
	for (unsigned i = 0; i < s->n_offered; i++)
		if (same_ticket(&s->offered[i], id))
			return true;
	/* One client is one device: a ticket of another device in the same
	 * ClientHello was copied off the wire. Not needed for correctness
	 * (only the resumed ticket counts), but such a ticket has no business
	 * being opened further. */
	if (s->n_offered > 0 && strcmp(s->offered[0].device, id->device) != 0) {
		log_debug("tls: ticket of %s not resumed: offered with a ticket of %s", id->device,
			  s->offered[0].device);
		return false;
	}
	/* A ticket that cannot be kept aside is refused, so that wolfSSL can
	 * never resume one whose identity is not known here. */
	if (!s->offered) {
		s->offered = calloc(MAX_OFFERED_TICKETS, sizeof *s->offered);
		if (!s->offered)
			return false;
	}
	if (s->n_offered == MAX_OFFERED_TICKETS)
		return false;
	s->offered[s->n_offered++] = *id;
	return true;
}

/* Called after every step of the handshake. Between the ClientHello and
 * the client's Finished, the session's master secret is the resumption
 * secret of the ticket wolfSSL chose (it copies it from that ticket alone,
 * and only once the ticket passed its age and suite checks); after the
 * Finished it is replaced by the next one, so the choice is noted before. */
static void note_resumed_ticket(struct tls_session *s)
{
	if (s->n_offered == 0 || wolfSSL_version(s->ssl) != TLS1_3_VERSION)
		return;
	uint8_t id[16];
	resumption_secret_id(s, id);
	for (unsigned i = 0; i < s->n_offered; i++)
		if (memcmp(s->offered[i].secret_id, id, sizeof id) == 0)
			s->resumed_ticket = (int)i;
}

/* The identity of the ticket this session resumes, or NULL when that is
 * not known for certain. A TLS 1.2 ClientHello carries one ticket. */
static const struct ticket_identity *resumed_identity(const struct tls_session *s)
{
	if (wolfSSL_version(s->ssl) == TLS1_3_VERSION)
		return s->resumed_ticket >= 0 ? &s->offered[s->resumed_ticket] : NULL;
	return s->n_offered == 1 ? &s->offered[0] : NULL;
}

/* A resumed session becomes the device of the ticket it resumed. */
static bool resumed_identity_take(struct tls_session *s)
{
	const struct ticket_identity *id = resumed_identity(s);
	if (!id) {
		session_refuse(s, AUTH_OTHER, "resumed a ticket that cannot be told apart");
		return false;
	}
	session_take_identity(s, id);
	s->not_after = id->not_after;
	s->auth_time = id->auth_time;
	s->peer.result = AUTH_OK;
	return true;
}

static void offered_tickets_release(struct tls_session *s)
{
	if (s->offered)
		explicit_bzero(s->offered, MAX_OFFERED_TICKETS * sizeof *s->offered);
	free(s->offered);
	s->offered = NULL;
	s->n_offered = 0;
}

/* ---- server ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_init_rc;

static void tls_global_init(void)
{
	/* The first key, unless a fleet key file was loaded already. */
	if (wolfSSL_Init() != WOLFSSL_SUCCESS ||
	    (tls_tickets_count() == 0 && tls_tickets_rotate() != 0))
		global_init_rc = -1;
}

static void tls_server_free(struct tls_server *srv)
{
	if (!srv)
		return;
	wolfSSL_CTX_free(srv->ctx);
	trust_snapshot_free(srv->trust);
	free(srv);
}

/* Protocol versions, ciphers and groups, and the server's own chain and key. */
static int server_identity(WOLFSSL_CTX *ctx, const struct tls_server_keys *k, char *err,
			   size_t errlen)
{
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_cipher_list(ctx, cipher_list) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_groups(ctx, groups, 2) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "tls: cannot set protocol versions, ciphers or groups");
		return -1;
	}
	if (wolfSSL_CTX_use_certificate_chain_buffer(ctx, k->cert_pem, (long)k->cert_len) !=
	    WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cert %s: cannot load a PEM certificate chain", k->cert_path);
		return -1;
	}
	if (wolfSSL_CTX_use_PrivateKey_buffer(ctx, k->key_pem, (long)k->key_len,
					      WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "key %s: cannot load a PEM private key", k->key_path);
		return -1;
	}
	if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "key %s: does not match cert %s", k->key_path, k->cert_path);
		return -1;
	}
	return 0;
}

int tls_server_new(const struct tls_server_keys *keys, struct tls_server **out, char *err,
		   size_t errlen)
{
	pthread_once(&global_once, tls_global_init);
	if (global_init_rc != 0) {
		snprintf(err, errlen, "tls: wolfSSL initialisation failed");
		return -1;
	}
	struct tls_server *srv = calloc(1, sizeof *srv);
	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	srv->refs = 1;
	srv->ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	if (!srv->ctx) {
		snprintf(err, errlen, "tls: cannot create a wolfSSL context");
		free(srv);
		return -1;
	}
	if (server_identity(srv->ctx, keys, err, errlen) != 0) {
		tls_server_free(srv);
		return -1;
	}
	*out = srv;
	return 0;
}

/* An advertised issuer's subject name, onto the CertificateRequest's list. */
static int ca_name_push(WOLF_STACK_OF(WOLFSSL_X509_NAME) * names, const struct trust_ca *ca)
{
	WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_buffer(ca->der, (int)ca->der_len,
								WOLFSSL_FILETYPE_ASN1);
	WOLFSSL_X509_NAME *dup = x ? wolfSSL_X509_NAME_dup(wolfSSL_X509_get_subject_name(x)) : NULL;
	wolfSSL_X509_free(x);
	if (!dup || wolfSSL_sk_X509_NAME_push(names, dup) <= 0) {
		wolfSSL_X509_NAME_free(dup);
		return -1;
	}
	return 0;
}

/* Every configured issuer a chain may end at; the advertised ones named in
 * the CertificateRequest, in the snapshot's order. */
static int server_issuers(WOLFSSL_CTX *ctx, const struct trust_snapshot *trust, char *err,
			  size_t errlen)
{
	WOLF_STACK_OF(WOLFSSL_X509_NAME) *names = wolfSSL_sk_X509_NAME_new(NULL);
	if (!names) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < trust_snapshot_ca_count(trust); i++) {
		const struct trust_ca *ca = trust_snapshot_ca(trust, i);
		if (wolfSSL_CTX_load_verify_buffer(ctx, ca->der, (long)ca->der_len,
						   WOLFSSL_FILETYPE_ASN1) != WOLFSSL_SUCCESS ||
		    (ca->advertised && ca_name_push(names, ca) != 0)) {
			snprintf(err, errlen, "issuers: '%s' cannot be loaded into the TLS context",
				 ca->name);
			wolfSSL_sk_X509_NAME_pop_free(names, NULL);
			return -1;
		}
	}
	if (wolfSSL_sk_X509_NAME_num(names) > 0)
		wolfSSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
	else
		wolfSSL_sk_X509_NAME_pop_free(names, NULL);
	return 0;
}

int tls_server_serve(struct tls_server *srv, struct trust_snapshot *trust, char *err,
		     size_t errlen)
{
	WOLFSSL_CTX *ctx = srv->ctx;
	srv->trust = trust;
	if (server_issuers(ctx, trust, err, errlen) != 0)
		return -1;
	/* What a client may sign its CertificateVerify with: no SHA-1. */
	if (wolfSSL_CTX_set1_sigalgs_list(ctx, client_sigalgs) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "tls: cannot set signature algorithms");
		return -1;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
			       verify_cb);
	wolfSSL_CTX_SetIORecv(ctx, io_recv);
	wolfSSL_CTX_SetIOSend(ctx, io_send);
	/* Tickets only: stateless, so any beacon of a fleet sharing the keys
	 * resumes any other's sessions, and no cache grows with the fleet. */
	wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
	/* The timeout bounds the tickets wolfSSL accepts (its own default is
	 * 500 s) and sets the lifetime hint sent with each ticket. */
	unsigned lifetime = trust_snapshot_policy(trust)->ticket_lifetime_s;
	if (wolfSSL_CTX_set_TicketEncCb(ctx, tls_ticket_cb) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_timeout(ctx, lifetime) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_TicketHint(ctx, (int)lifetime) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "tls: cannot enable session tickets");
		return -1;
	}
	return 0;
}

const struct trust_snapshot *tls_server_trust(const struct tls_server *srv)
{
	return srv->trust;
}

struct tls_server *tls_server_ref(struct tls_server *srv)
{
	atomic_fetch_add_explicit(&srv->refs, 1, memory_order_relaxed);
	return srv;
}

void tls_server_unref(struct tls_server *srv)
{
	if (srv && atomic_fetch_sub_explicit(&srv->refs, 1, memory_order_acq_rel) == 1)
		tls_server_free(srv);
}

/* ---- session ---- */

struct tls_session *tls_session_new(struct tls_server *srv, tls_send_fn send, void *arg)
{
	struct tls_session *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->srv = tls_server_ref(srv);
	s->send = send;
	s->arg = arg;
	s->peer.result = AUTH_OTHER;
	s->resumed_ticket = -1;
	s->ssl = wolfSSL_new(srv->ctx);
	if (!s->ssl) {
		tls_server_unref(srv);
		free(s);
		return NULL;
	}
	wolfSSL_SetIOReadCtx(s->ssl, s);
	wolfSSL_SetIOWriteCtx(s->ssl, s);
	wolfSSL_SetCertCbCtx(s->ssl, s);
	return s;
}

void tls_session_free(struct tls_session *s)
{
	if (!s)
		return;
	wolfSSL_free(s->ssl);
	offered_tickets_release(s);
	tls_server_unref(s->srv);
	free(s->refused);
	free(s);
}

void tls_session_input(struct tls_session *s, const uint8_t *in, size_t len)
{
	s->in = in;
	s->in_len = len;
}

size_t tls_session_input_left(const struct tls_session *s)
{
	return s->in_len;
}

static int status_of(struct tls_session *s, int ret)
{
	int e = wolfSSL_get_error(s->ssl, ret);
	switch (e) {
	case WOLFSSL_ERROR_WANT_READ:
		return TLS_WANT_READ;
	case WOLFSSL_ERROR_WANT_WRITE:
		return TLS_WANT_WRITE;
	case WOLFSSL_ERROR_ZERO_RETURN:
		return TLS_CLOSED;
	default:
		s->last_err = e;
		return TLS_FAILED;
	}
}

int tls_session_handshake(struct tls_session *s)
{
	int ret = wolfSSL_accept(s->ssl);
	note_resumed_ticket(s);
	if (ret == WOLFSSL_SUCCESS) {
		/* A resumption's identity is its ticket's (checked when it was
		 * offered); a full handshake's is check_leaf's alone. */
		bool resumed = wolfSSL_session_reused(s->ssl);
		bool known = !resumed || resumed_identity_take(s);
		offered_tickets_release(s);
		s->peer.resumed = resumed;
		s->peer.version = wolfSSL_version(s->ssl);
		if (!known)
			return TLS_FAILED;
		if (s->peer.result != AUTH_OK) {
			/* Cannot happen with FAIL_IF_NO_PEER_CERT; refuse anyway. */
			return TLS_FAILED;
		}
		return TLS_OK;
	}
	int st = status_of(s, ret);
	if (st == TLS_FAILED && s->peer.result == AUTH_OTHER && !s->peer.reason[0]) {
		if (s->last_err == NO_PEER_CERT)
			session_refuse(s, AUTH_NO_CERT, "no client certificate");
		else
			snprintf(s->peer.reason, sizeof s->peer.reason, "handshake: %s (%d)",
				 wolfSSL_ERR_reason_error_string((unsigned long)s->last_err),
				 s->last_err);
	}
	return st;
}

ssize_t tls_session_read(struct tls_session *s, void *buf, size_t len)
{
	int ret = wolfSSL_read(s->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	return ret > 0 ? ret : status_of(s, ret);
}

ssize_t tls_session_write(struct tls_session *s, const void *buf, size_t len)
{
	int ret = wolfSSL_write(s->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	return ret > 0 ? ret : status_of(s, ret);
}

void tls_session_shutdown(struct tls_session *s)
{
	wolfSSL_shutdown(s->ssl);
}

const struct tls_peer *tls_session_peer(const struct tls_session *s)
{
	return &s->peer;
}

const char *tls_session_error(const struct tls_session *s)
{
	if (s->peer.reason[0])
		return s->peer.reason;
	return wolfSSL_ERR_reason_error_string((unsigned long)s->last_err);
}

/* ---- an open connection against a newer snapshot ---- */

bool tls_session_recheck(struct tls_session *s, struct tls_server *now)
{
	if (s->peer.result != AUTH_OK)
		return false;
	if (now == s->srv)
		return true;
	/* The checks judge by s->srv: lend it the newest snapshot for the
	 * verdict only; wolfSSL's objects stay on the session's own. */
	struct tls_server *own = s->srv;
	s->srv = now;
	bool admitted = identity_still_admitted(s);
	s->srv = own;
	return admitted;
}

/* ---- refusals ---- */

bool tls_log_budget_take(struct tls_log_budget *b, unsigned per_s, uint64_t now_s,
			 uint64_t *left_out_before)
{
	if (now_s != b->second) {
		b->second = now_s;
		b->used = 0;
	}
	if (b->used >= per_s) {
		b->left_out++;
		return false;
	}
	b->used++;
	*left_out_before = b->left_out;
	b->left_out = 0;
	return true;
}

/* Process-wide: every worker reports here. A refusal is a whole handshake
 * of work already; one short lock more is noise beside it. */
static pthread_mutex_t refusals_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_refusal refusals[TLS_REFUSALS_KEPT];
static size_t refusals_next, refusals_count;
static struct tls_log_budget refusals_budget;

static void refusal_fill(const struct tls_session *s, const char *source, struct tls_refusal *r)
{
	memset(r, 0, sizeof *r);
	r->unix_s = (uint64_t)time(NULL);
	snprintf(r->source, sizeof r->source, "%s", source);
	r->result = s->peer.result;
	snprintf(r->reason, sizeof r->reason, "%s", tls_session_error(s));
	if (s->refused) {
		r->has_cert = true;
		r->cert = *s->refused;
	}
}

/* A verdict on a certificate (or on its absence) goes to the list; a
 * handshake that failed before any certificate (a scanner, a protocol
 * error) does not crowd the real ones out. */
static bool refusal_listed(const struct tls_refusal *r)
{
	return r->has_cert || r->result != AUTH_OTHER;
}

void tls_session_report_refusal(const struct tls_session *s, const char *source)
{
	struct tls_refusal r;
	refusal_fill(s, source, &r);
	uint64_t left_out = 0;
	pthread_mutex_lock(&refusals_lock);
	if (refusal_listed(&r)) {
		refusals[refusals_next] = r;
		refusals_next = (refusals_next + 1) % TLS_REFUSALS_KEPT;
		if (refusals_count < TLS_REFUSALS_KEPT)
			refusals_count++;
	}
	bool log_it =
		tls_log_budget_take(&refusals_budget, TLS_REFUSAL_LOG_PER_S, r.unix_s, &left_out);
	pthread_mutex_unlock(&refusals_lock);
	if (!log_it)
		return;
	char more[64] = "";
	if (left_out)
		snprintf(more, sizeof more, " [%llu refusal lines left out before this one]",
			 (unsigned long long)left_out);
	if (r.has_cert)
		log_info("%s: refused: %s (%s): subject \"%s\" issuer \"%s\" serial %s sha256 %s%s",
			 r.source, r.reason, auth_result_name(r.result), r.cert.subject,
			 r.cert.issuer, r.cert.serial, r.cert.sha256, more);
	else
		log_info("%s: refused: %s (%s): no client certificate%s", r.source, r.reason,
			 auth_result_name(r.result), more);
}

size_t tls_refusals_latest(struct tls_refusal *out, size_t max)
{
	pthread_mutex_lock(&refusals_lock);
	size_t n = refusals_count < max ? refusals_count : max;
	for (size_t i = 0; i < n; i++)
		out[i] = refusals[(refusals_next + TLS_REFUSALS_KEPT - 1 - i) % TLS_REFUSALS_KEPT];
	pthread_mutex_unlock(&refusals_lock);
	return n;
}
