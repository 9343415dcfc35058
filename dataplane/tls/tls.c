/*
 * Mutual TLS with wolfSSL: the server context (policy) and one session per
 * connection. See include/beacon/tls.h for the model.
 */
#include "tls-internal.h"
#include "blocklist.h"
#include "certid.h"

#include <wolfssl/openssl/evp.h>
#include <wolfssl/openssl/x509.h>
#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "beacon/auth.h"
#include "beacon/config.h"
#include "beacon/revocation.h"
#include "beacon/log.h"

/* The verify callback relies on both (scripts/setup.sh says why): without
 * them a usage error could hide a chain error, and a CA the client sends
 * would escape its issuer's CRL. */
#if !defined(IGNORE_KEY_EXTENSIONS) || !defined(WOLFSSL_VERIFY_CB_ALL_CERTS)
#error "wolfSSL must be built by scripts/setup.sh (IGNORE_KEY_EXTENSIONS, WOLFSSL_VERIFY_CB_ALL_CERTS)"
#endif

#define MAX_ISSUERS 1024
#define ADVERTISED_WARN_BYTES (16 * 1024)
/* Configured CAs walked above a certificate: deeper than any real PKI, and
 * a bound on a loop of cross-certified CAs. */
#define MAX_CA_WALK 8

/* A configured issuer as the chain above a client's certificate sees it:
 * its own name, and its issuer's name, its serial and key identifiers, so
 * that an intermediate CA configured as an issuer is checked against its
 * issuer's CRL too. Names hashed by revocation_cert_names, as the CRL
 * index hashes them. */
struct trusted_ca {
	uint8_t subject_sha256[32];
	uint8_t issuer_sha256[32];
	uint8_t serial[32];
	uint8_t serial_len;
	uint8_t skid_len, akid_len;
	uint8_t skid[32], akid[32];
	bool self_issued; /* a root: nothing above it to ask */
	char name[64];	  /* for refusal reasons */
};

struct tls_server {
	_Atomic unsigned refs;
	uint64_t generation;
	time_t loaded;
	WOLFSSL_CTX *ctx;
	bool require_eku;
	bool require_digital_signature;
	enum identity_source identity;
	unsigned ticket_lifetime_s;
	unsigned max_session_age_s;
	size_t n_issuers;
	uint8_t issuer_hash[MAX_ISSUERS][32]; /* SHA-256 of each issuer's subject DER */
	struct revocation_issuer issuer_der[MAX_ISSUERS]; /* owned copies */
	struct trusted_ca ca[MAX_ISSUERS];
	struct revocation_index *revocation;
	struct blocklist blocked;
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

/* A private key others can read (or anyone but its owner can change) is
 * refused: group read (0640, for a service group) is the most allowed. */
static bool key_file_exposed(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "key %s: %s", path, strerror(errno));
		return true;
	}
	if (st.st_mode & 0037) {
		snprintf(err, errlen,
			 "key %s: mode %04o lets other users read or change the private key; "
			 "chmod 600 (or 640 for a service group)",
			 path, (unsigned)(st.st_mode & 07777));
		return true;
	}
	return false;
}

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
	switch (s->srv->identity) {
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
	const struct tls_server *srv = s->srv;
	if (blocklist_has(&srv->blocked, s->peer.cert_sha256, s->peer.device)) {
		session_refuse(s, AUTH_BLOCKED, "certificate or device is blocked");
		return false;
	}
	switch (revocation_lookup(srv->revocation, s->issuer_hash, s->serial, s->serial_len)) {
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
	switch (revocation_lookup(s->srv->revocation, issuer_sha256, serial, serial_len)) {
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
	const struct tls_server *srv = s->srv;
	for (int level = 0; level < MAX_CA_WALK; level++) {
		const struct trusted_ca *next = NULL;
		for (size_t i = 0; i < srv->n_issuers; i++) {
			const struct trusted_ca *ca = &srv->ca[i];
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
	const struct tls_server *srv = s->srv;
	if (srv->require_eku) {
		unsigned eku = wolfSSL_X509_get_extended_key_usage(x);
		if (!(eku & (XKU_SSL_CLIENT | XKU_ANYEKU))) {
			session_refuse(s, AUTH_WRONG_USAGE,
				       "certificate lacks clientAuth extended key usage");
			return false;
		}
	}
	if (srv->require_digital_signature &&
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
	struct revocation_cert_names names;
	if (wc_Sha256Hash(der, (word32)der_len, s->peer.cert_sha256) != 0 ||
	    revocation_cert_names(der, der_len, &names) != 0 ||
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
	struct revocation_cert_names names;
	struct cert_view view;
	uint8_t akid[32];
	if (!der || der_len <= 0 || revocation_cert_names(der, (size_t)der_len, &names) != 0 ||
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
	const struct tls_server *srv = s->srv;
	bool trusted = false;
	for (size_t i = 0; i < srv->n_issuers && !trusted; i++)
		trusted = memcmp(srv->issuer_hash[i], s->issuer_hash, 32) == 0;
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
static bool ticket_identity_current(const struct tls_server *srv, const struct ticket_identity *id)
{
	int64_t now = (int64_t)time(NULL);
	const char *why = NULL;
	if (now >= id->not_after)
		why = "its certificate is past its notAfter";
	else if (now - id->auth_time > (int64_t)srv->max_session_age_s)
		why = "its session is older than max_session_age";
	else if (now - id->issued > (int64_t)srv->ticket_lifetime_s)
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
	if (!ticket_identity_current(s->srv, id) || !ticket_identity_admitted(s, id))
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

/* Whether a trusted issuer with common name `cn` is in the advertised list:
 * whole comma-separated entries, spaces trimmed. */
static bool advertise_listed(const struct config *cfg, const char *cn)
{
	if (cfg->advertise == ADVERTISE_ALL)
		return true;
	if (cfg->advertise != ADVERTISE_LIST)
		return false;
	const char *p = cfg->advertise_list;
	size_t cl = strlen(cn);
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		while (l && p[l - 1] == ' ')
			l--;
		if (l && l == cl && strncmp(p, cn, l) == 0)
			return true;
		p += l;
	}
	return false;
}

/* The copy's raw names, serial and key ids. 0, or -1 when it does not parse
 * (the issuer file is refused). */
static int trusted_ca_fill(struct trusted_ca *ca, const uint8_t *der, size_t len)
{
	struct revocation_cert_names names;
	struct cert_view v;
	if (revocation_cert_names(der, len, &names) != 0 || cert_view_parse(der, len, &v) != 0 ||
	    names.serial_len > sizeof ca->serial)
		return -1;
	memset(ca, 0, sizeof *ca);
	memcpy(ca->subject_sha256, names.subject_sha256, 32);
	memcpy(ca->issuer_sha256, names.issuer_sha256, 32);
	memcpy(ca->serial, names.serial, names.serial_len);
	ca->serial_len = (uint8_t)names.serial_len;
	ca->skid_len = (uint8_t)cert_key_id(&v, false, ca->skid);
	ca->akid_len = (uint8_t)cert_key_id(&v, true, ca->akid);
	ca->self_issued = memcmp(names.subject_sha256, names.issuer_sha256, 32) == 0;
	cert_name_text(v.subject, v.subject_len, ca->name, sizeof ca->name);
	return 0;
}

static int add_issuer(struct tls_server *srv, WOLFSSL_X509 *x, const struct config *cfg,
		      WOLF_STACK_OF(WOLFSSL_X509_NAME) * names, size_t *advertised_bytes)
{
	int der_len = 0;
	const unsigned char *der = wolfSSL_X509_get_der(x, &der_len);
	if (!der || srv->n_issuers >= MAX_ISSUERS ||
	    wolfSSL_CTX_load_verify_buffer(srv->ctx, der, der_len, WOLFSSL_FILETYPE_ASN1) !=
		    WOLFSSL_SUCCESS)
		return -1;
	uint8_t *copy = malloc((size_t)der_len);
	if (!copy)
		return -1;
	memcpy(copy, der, (size_t)der_len);
	srv->issuer_der[srv->n_issuers] = (struct revocation_issuer){copy, (size_t)der_len};
	if (trusted_ca_fill(&srv->ca[srv->n_issuers], copy, (size_t)der_len) != 0) {
		free(copy);
		return -1;
	}
	memcpy(srv->issuer_hash[srv->n_issuers], srv->ca[srv->n_issuers].subject_sha256, 32);
	srv->n_issuers++;
	WOLFSSL_X509_NAME *subj = wolfSSL_X509_get_subject_name(x);
	char cn[256] = "";
	wolfSSL_X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof cn);
	if (!advertise_listed(cfg, cn))
		return 0;
	/* wolfSSL encodes names of at most WC_ASN_NAME_MAX bytes; a longer one
	 * would go out as garbage in every CertificateRequest, and clients
	 * then refuse the whole handshake. Such an issuer is trusted, not named. */
	int name_len = wolfSSL_i2d_X509_NAME(subj, NULL);
	if (name_len <= 0) {
		log_warn("issuers: \"%s\": its subject name is too long to advertise (wolfSSL "
			 "encodes at most %d bytes); trusted, but left out of the CA names",
			 cn, WC_ASN_NAME_MAX);
		return 0;
	}
	WOLFSSL_X509_NAME *dup = wolfSSL_X509_NAME_dup(subj);
	if (!dup || wolfSSL_sk_X509_NAME_push(names, dup) <= 0) {
		wolfSSL_X509_NAME_free(dup);
		return -1;
	}
	*advertised_bytes += (size_t)name_len + 2;
	return 0;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	char *buf = NULL;
	size_t cap = 0, n = 0, r;
	do {
		if (n + 4096 > cap) {
			char *grown = realloc(buf, cap = cap * 2 + 8192);
			if (!grown) {
				free(buf);
				fclose(fp);
				errno = ENOMEM;
				return NULL;
			}
			buf = grown;
		}
		r = fread(buf + n, 1, cap - n - 1, fp);
		n += r;
	} while (r > 0);
	fclose(fp);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Loads every certificate of a PEM file (a bundle may hold many: wolfSSL's
 * PEM_read_X509 stops after the first). Returns how many, or -1. */
static int load_issuer_file(struct tls_server *srv, const char *path, const struct config *cfg,
			    WOLF_STACK_OF(WOLFSSL_X509_NAME) * names, size_t *advertised_bytes,
			    char *err, size_t errlen)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	static const char end[] = "-----END CERTIFICATE-----";
	size_t len;
	char *pem = read_file(path, &len);
	if (!pem) {
		snprintf(err, errlen, "issuers %s: %s", path, strerror(errno));
		return -1;
	}
	int loaded = 0;
	for (char *p = strstr(pem, begin); p; p = strstr(p, begin)) {
		char *e = strstr(p, end);
		if (!e)
			break;
		e += sizeof end - 1;
		WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_buffer(
			(const unsigned char *)p, (int)(e - p), WOLFSSL_FILETYPE_PEM);
		if (!x || add_issuer(srv, x, cfg, names, advertised_bytes) != 0) {
			snprintf(err, errlen, "issuers %s: certificate %d cannot be loaded%s", path,
				 loaded + 1, srv->n_issuers >= MAX_ISSUERS ? " (too many issuers)" : "");
			wolfSSL_X509_free(x);
			free(pem);
			return -1;
		}
		wolfSSL_X509_free(x);
		loaded++;
		p = e;
	}
	free(pem);
	return loaded;
}

static int has_cert_suffix(const char *n)
{
	size_t l = strlen(n);
	return (l > 4 && (strcmp(n + l - 4, ".pem") == 0 || strcmp(n + l - 4, ".crt") == 0));
}

static int load_issuers(struct tls_server *srv, const struct config *cfg, char *err,
			size_t errlen)
{
	WOLF_STACK_OF(WOLFSSL_X509_NAME) *names = wolfSSL_sk_X509_NAME_new(NULL);
	if (!names) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t adv_bytes = 0;
	int total = 0;
	struct stat st;
	if (stat(cfg->issuers, &st) != 0) {
		snprintf(err, errlen, "issuers %s: %s", cfg->issuers, strerror(errno));
		total = -1;
	} else if (S_ISDIR(st.st_mode)) {
		struct dirent **ents;
		int n = scandir(cfg->issuers, &ents, NULL, alphasort);
		if (n < 0) {
			snprintf(err, errlen, "issuers %s: %s", cfg->issuers, strerror(errno));
			total = -1;
		}
		for (int i = 0; i < n; i++) {
			char path[CONFIG_PATH_MAX + 256];
			if (total >= 0 && has_cert_suffix(ents[i]->d_name)) {
				snprintf(path, sizeof path, "%s/%s", cfg->issuers, ents[i]->d_name);
				int k = load_issuer_file(srv, path, cfg, names, &adv_bytes, err, errlen);
				total = k < 0 ? -1 : total + k;
			}
			free(ents[i]);
		}
		if (n >= 0)
			free(ents);
	} else {
		total = load_issuer_file(srv, cfg->issuers, cfg, names, &adv_bytes, err, errlen);
	}
	if (total == 0)
		snprintf(err, errlen, "issuers %s: no certificates found", cfg->issuers);
	if (total <= 0) {
		wolfSSL_sk_X509_NAME_pop_free(names, NULL);
		return -1;
	}
	if (adv_bytes > ADVERTISED_WARN_BYTES)
		log_warn("issuers %s: the advertised CA name list is %zu bytes; some Windows "
			 "clients fail above 16 KiB (set [tls] advertise to a subset)",
			 cfg->issuers, adv_bytes);
	if (wolfSSL_sk_X509_NAME_num(names) > 0)
		wolfSSL_CTX_set_client_CA_list(srv->ctx, names); /* takes ownership */
	else
		wolfSSL_sk_X509_NAME_pop_free(names, NULL);
	log_info("tls: %d issuer certificates from %s, %zu bytes of CA names advertised", total,
		 cfg->issuers, adv_bytes);
	return 0;
}

static int server_configure(struct tls_server *srv, const struct config *cfg, char *err,
			    size_t errlen)
{
	WOLFSSL_CTX *ctx = srv->ctx;
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_cipher_list(ctx, cipher_list) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_groups(ctx, groups, 2) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "tls: cannot set protocol versions, ciphers or groups");
		return -1;
	}
	if (wolfSSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cert %s: cannot load a PEM certificate chain", cfg->cert);
		return -1;
	}
	if (key_file_exposed(cfg->key, err, errlen))
		return -1;
	if (wolfSSL_CTX_use_PrivateKey_file(ctx, cfg->key, WOLFSSL_FILETYPE_PEM) !=
	    WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "key %s: cannot load a PEM private key", cfg->key);
		return -1;
	}
	if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "key %s: does not match cert %s", cfg->key, cfg->cert);
		return -1;
	}
	if (load_issuers(srv, cfg, err, errlen) != 0)
		return -1;
	if (revocation_index_build(cfg->crl_dir[0] ? cfg->crl_dir : NULL, srv->issuer_der,
				   srv->n_issuers,
				   cfg->crl_stale == CRL_STALE_MODE_REFUSE ? CRL_STALE_REFUSE
									   : CRL_STALE_WARN,
				   &srv->revocation, err, errlen) != 0)
		return -1;
	if (cfg->blocklist[0] && blocklist_load(&srv->blocked, cfg->blocklist, err, errlen) != 0)
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
	if (wolfSSL_CTX_set_TicketEncCb(ctx, tls_ticket_cb) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_timeout(ctx, cfg->ticket_lifetime_s) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_TicketHint(ctx, (int)cfg->ticket_lifetime_s) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "tls: cannot enable session tickets");
		return -1;
	}
	return 0;
}

static void tls_server_free(struct tls_server *srv);

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_init_rc;

static void tls_global_init(void)
{
	/* The first key, unless a fleet key file was loaded already. */
	if (wolfSSL_Init() != WOLFSSL_SUCCESS ||
	    (tls_tickets_count() == 0 && tls_tickets_rotate() != 0))
		global_init_rc = -1;
}

int tls_server_new(const struct config *cfg, struct tls_server **out, char *err, size_t errlen)
{
	return tls_server_new_blocking(cfg, NULL, 0, out, err, errlen);
}

int tls_server_new_blocking(const struct config *cfg, const char *const *devices,
			    size_t n_devices, struct tls_server **out, char *err, size_t errlen)
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
	static _Atomic uint64_t generations;
	srv->refs = 1;
	srv->generation = atomic_fetch_add(&generations, 1) + 1;
	srv->loaded = time(NULL);
	srv->require_eku = cfg->require_client_auth_eku;
	srv->require_digital_signature = cfg->require_digital_signature;
	srv->identity = cfg->identity;
	srv->ticket_lifetime_s = cfg->ticket_lifetime_s;
	srv->max_session_age_s = cfg->max_session_age_s;
	srv->ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	if (!srv->ctx) {
		snprintf(err, errlen, "tls: cannot create a wolfSSL context");
		free(srv);
		return -1;
	}
	if (server_configure(srv, cfg, err, errlen) != 0 ||
	    blocklist_add_devices(&srv->blocked, devices, n_devices, err, errlen) != 0) {
		tls_server_free(srv);
		return -1;
	}
	*out = srv;
	return 0;
}

static void tls_server_free(struct tls_server *srv)
{
	if (!srv)
		return;
	wolfSSL_CTX_free(srv->ctx);
	revocation_index_free(srv->revocation);
	blocklist_free(&srv->blocked);
	for (size_t i = 0; i < srv->n_issuers; i++)
		free((void *)srv->issuer_der[i].der);
	free(srv);
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

void tls_server_info(const struct tls_server *srv, struct tls_server_info *out)
{
	struct revocation_stats rs = {0};
	revocation_index_stats(srv->revocation, &rs);
	*out = (struct tls_server_info){
		.generation = srv->generation,
		.loaded_unix_s = (uint64_t)srv->loaded,
		.issuers = (unsigned)srv->n_issuers,
		.revoked_serials = rs.serials,
		.crls = rs.crls,
		.blocked_entries = (unsigned)(srv->blocked.n_fingerprints + srv->blocked.n_devices),
	};
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
