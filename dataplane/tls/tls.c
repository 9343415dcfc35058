/*
 * Mutual TLS with wolfSSL: the server context (policy) and one session per
 * connection. See include/beacon/tls.h for the model.
 */
#include "tls-internal.h"
#include "blocklist.h"

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

#include "beacon/config.h"
#include "beacon/revocation.h"
#include "beacon/log.h"

#define MAX_ISSUERS 1024
#define ADVERTISED_WARN_BYTES (16 * 1024)

struct tls_server {
	_Atomic unsigned refs;
	uint64_t generation;
	time_t loaded;
	WOLFSSL_CTX *ctx;
	bool require_eku;
	bool require_digital_signature;
	enum identity_source identity;
	size_t n_issuers;
	uint8_t issuer_hash[MAX_ISSUERS][32]; /* SHA-256 of each issuer's subject DER */
	struct revocation_issuer issuer_der[MAX_ISSUERS]; /* owned copies */
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
};

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

static void name_sha256(WOLFSSL_X509_NAME *name, uint8_t out[32])
{
	unsigned char *der = NULL;
	int len = wolfSSL_i2d_X509_NAME(name, &der);
	if (len > 0 && der)
		wc_Sha256Hash(der, (word32)len, out);
	else
		memset(out, 0, 32);
	if (der)
		XFREE(der, NULL, DYNAMIC_TYPE_OPENSSL);
}

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
	case WOLFSSL_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case WOLFSSL_X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
		return AUTH_UNKNOWN_ISSUER;
	case CRL_CERT_REVOKED:
	case WOLFSSL_X509_V_ERR_CERT_REVOKED:
		return AUTH_REVOKED;
	case EXTKEYUSE_AUTH_E:
	case KEYUSE_SIGNATURE_E:
		return AUTH_WRONG_USAGE;
	default:
		return AUTH_OTHER;
	}
}

static void session_refuse(struct tls_session *s, enum auth_result r, const char *why)
{
	s->peer.result = r;
	snprintf(s->peer.reason, sizeof s->peer.reason, "%s", why);
}

/* The first subjectAltName of the wanted type, or "" when there is none. */
static void san_identity(WOLFSSL_X509 *x, int type, char *out, size_t len)
{
	out[0] = '\0';
	WOLFSSL_STACK *names = wolfSSL_X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	if (!names)
		return;
	int n = wolfSSL_sk_GENERAL_NAME_num(names);
	for (int i = 0; i < n; i++) {
		WOLFSSL_GENERAL_NAME *gn = wolfSSL_sk_GENERAL_NAME_value(names, i);
		if (!gn || gn->type != type)
			continue;
		WOLFSSL_ASN1_STRING *str = gn->d.ia5;
		int slen = wolfSSL_ASN1_STRING_length(str);
		const unsigned char *data = wolfSSL_ASN1_STRING_data(str);
		if (data && slen > 0 && (size_t)slen < len) {
			memcpy(out, data, (size_t)slen);
			out[slen] = '\0';
		}
		break;
	}
	wolfSSL_sk_GENERAL_NAME_pop_free(names, wolfSSL_GENERAL_NAME_free);
}

static void peer_identity(const struct tls_server *srv, WOLFSSL_X509 *x, char *out, size_t len)
{
	switch (srv->identity) {
	case IDENTITY_SAN_DNS:
		san_identity(x, ASN_DNS_TYPE, out, len);
		return;
	case IDENTITY_SAN_EMAIL:
		san_identity(x, ASN_RFC822_TYPE, out, len);
		return;
	case IDENTITY_SAN_URI:
		san_identity(x, ASN_URI_TYPE, out, len);
		return;
	case IDENTITY_CN:
		break;
	}
	WOLFSSL_X509_NAME *subj = wolfSSL_X509_get_subject_name(x);
	if (!subj || wolfSSL_X509_NAME_get_text_by_NID(subj, NID_commonName, out, (int)len) <= 0)
		out[0] = '\0';
}

/* An identity is used in logs, the index and file names: printable only. */
static bool identity_acceptable(const char *id)
{
	if (!id[0])
		return false;
	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		if (*p < 0x21 || *p == 0x7f || *p == '/' || *p == '\\')
			return false;
	return true;
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
		return false;
	}
	s->peer.result = AUTH_OK;
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

static int check_leaf(struct tls_session *s, WOLFSSL_X509 *x)
{
	const struct tls_server *srv = s->srv;
	if (weak_signature(x)) {
		session_refuse(s, AUTH_OTHER, "certificate is signed with SHA-1 or MD5");
		return 0;
	}
	if (srv->require_eku) {
		unsigned eku = wolfSSL_X509_get_extended_key_usage(x);
		if (!(eku & (XKU_SSL_CLIENT | XKU_ANYEKU))) {
			session_refuse(s, AUTH_WRONG_USAGE, "certificate lacks clientAuth extended key usage");
			return 0;
		}
	}
	if (srv->require_digital_signature &&
	    !(wolfSSL_X509_get_keyUsage(x) & KEYUSE_DIGITAL_SIG)) {
		session_refuse(s, AUTH_WRONG_USAGE, "certificate lacks digitalSignature key usage");
		return 0;
	}
	peer_identity(srv, x, s->peer.device, sizeof s->peer.device);
	if (!identity_acceptable(s->peer.device)) {
		session_refuse(s, AUTH_OTHER, "certificate carries no usable device identity");
		return 0;
	}
	int der_len = 0;
	const unsigned char *der = wolfSSL_X509_get_der(x, &der_len);
	if (!der || wc_Sha256Hash(der, (word32)der_len, s->peer.cert_sha256) != 0) {
		session_refuse(s, AUTH_OTHER, "cannot fingerprint certificate");
		return 0;
	}
	name_sha256(wolfSSL_X509_get_issuer_name(x), s->issuer_hash);
	int slen = sizeof s->serial;
	if (wolfSSL_X509_get_serial_number(x, s->serial, &slen) != WOLFSSL_SUCCESS)
		slen = 0;
	s->serial_len = (uint8_t)slen;
	return peer_admitted(s) ? 1 : 0;
}

/* wolfSSL checks a client certificate's usages itself; where the
 * configuration turns one of those checks off, its verdict is waived here
 * and check_leaf applies the configured policy instead. */
static bool usage_error_waived(const struct tls_session *s, int err)
{
	if (err == EXTKEYUSE_AUTH_E)
		return !s->srv->require_eku;
	if (err == KEYUSE_SIGNATURE_E)
		return !s->srv->require_digital_signature;
	return false;
}

static int verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct tls_session *s = store->userCtx;
	if (!s)
		return preverify;
	if (!preverify && store->error_depth == 0 && usage_error_waived(s, store->error))
		preverify = 1;
	if (!preverify) {
		/* The first refusal names the cause; later ones follow from it. */
		if (s->peer.result == AUTH_OTHER || s->peer.result == AUTH_OK) {
			char why[96];
			snprintf(why, sizeof why, "certificate at depth %d: %s", store->error_depth,
				 wolfSSL_ERR_reason_error_string((unsigned long)store->error));
			session_refuse(s, classify_verify_error(store->error), why);
		}
		return 0;
	}
	if (store->error_depth > 0 || !store->current_cert)
		return 1;
	return check_leaf(s, store->current_cert);
}

/* ---- ticket identity blob ---- */

size_t tls_ticket_blob_write(const struct tls_session *s, uint8_t *out, size_t room)
{
	size_t dlen = strlen(s->peer.device);
	if (dlen > 255)
		return 0;
	size_t need = 1 + 1 + dlen + 32 + 32 + 1 + s->serial_len + 2;
	if (need > room || s->peer.result != AUTH_OK)
		return 0;
	uint8_t *p = out;
	*p++ = 1;
	*p++ = (uint8_t)dlen;
	memcpy(p, s->peer.device, dlen);
	p += dlen;
	memcpy(p, s->peer.cert_sha256, 32);
	p += 32;
	memcpy(p, s->issuer_hash, 32);
	p += 32;
	*p++ = s->serial_len;
	memcpy(p, s->serial, s->serial_len);
	p += s->serial_len;
	p[0] = (uint8_t)(need >> 8);
	p[1] = (uint8_t)need;
	return need;
}

size_t tls_ticket_blob_read(struct tls_session *s, const uint8_t *ticket, size_t len)
{
	if (len < 2)
		return 0;
	size_t need = ((size_t)ticket[len - 2] << 8) | ticket[len - 1];
	if (need < 1 + 1 + 32 + 32 + 1 + 2 || need > len)
		return 0;
	const uint8_t *p = ticket + len - need, *end = ticket + len - 2;
	if (*p++ != 1)
		return 0;
	size_t dlen = *p++;
	if (dlen >= sizeof s->peer.device || (size_t)(end - p) < dlen + 32 + 32 + 1)
		return 0;
	memcpy(s->peer.device, p, dlen);
	s->peer.device[dlen] = '\0';
	p += dlen;
	memcpy(s->peer.cert_sha256, p, 32);
	p += 32;
	memcpy(s->issuer_hash, p, 32);
	p += 32;
	s->serial_len = *p++;
	if (s->serial_len > sizeof s->serial || (size_t)(end - p) != s->serial_len)
		return 0;
	memcpy(s->serial, p, s->serial_len);
	return need;
}

bool tls_resumed_peer_allowed(struct tls_session *s)
{
	const struct tls_server *srv = s->srv;
	for (size_t i = 0; i < srv->n_issuers; i++)
		if (memcmp(srv->issuer_hash[i], s->issuer_hash, 32) == 0)
			return identity_acceptable(s->peer.device) && peer_admitted(s);
	session_refuse(s, AUTH_UNKNOWN_ISSUER, "ticket's issuer is no longer trusted");
	return false;
}

void tls_resumed_peer_admit(struct tls_session *s)
{
	s->peer.result = AUTH_OK;
	s->peer.reason[0] = '\0';
}

/* A refused resumption falls back to a full handshake: forget what the
 * ticket said so the certificate decides afresh. */
void tls_resumed_peer_forget(struct tls_session *s)
{
	memset(&s->peer, 0, sizeof s->peer);
	s->peer.result = AUTH_OTHER;
	s->serial_len = 0;
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
	WOLFSSL_X509_NAME *subj = wolfSSL_X509_get_subject_name(x);
	name_sha256(subj, srv->issuer_hash[srv->n_issuers++]);
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
	if (wolfSSL_CTX_set_TicketEncCb(ctx, tls_ticket_cb) != WOLFSSL_SUCCESS ||
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
	tls_server_unref(s->srv);
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
	if (ret == WOLFSSL_SUCCESS) {
		s->peer.resumed = wolfSSL_session_reused(s->ssl);
		s->peer.version = wolfSSL_version(s->ssl);
		if (s->peer.resumed)
			s->peer.result = AUTH_OK; /* checked again in ticket_open */
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

