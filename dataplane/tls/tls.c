/*
 * Mutual TLS with wolfSSL: the server context over a trust snapshot, and
 * one session per connection (I/O, handshake, records). The certificate
 * policy is in verify.c, tickets' identities in resumption.c, ticket keys
 * in tickets.c, the refusal log in refusals.c. See include/beacon/tls.h.
 */
#include "tls-internal.h"
#include "alloc.h"

#include <wolfssl/openssl/x509.h>
#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/error-ssl.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "beacon/log.h"
#include "beacon/snapshot.h"

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

/* ---- server ---- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_init_rc;

static void tls_global_init(void)
{
	/* Before the first handshake: its large objects go to blocks of their
	 * own (alloc.h). Without them wolfSSL keeps malloc, which works. */
	if (tls_alloc_install() != 0)
		log_warn("tls: no address range for handshake blocks; using malloc");
	/* The first key, unless a fleet key file was loaded already. */
	if (wolfSSL_Init() != WOLFSSL_SUCCESS ||
	    (tls_tickets_count() == 0 && tls_tickets_rotate() != 0))
		global_init_rc = -1;
	tls_sig_cache_start();
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
static int cert_time(const WOLFSSL_ASN1_TIME *t, time_t *out)
{
	struct tm tm;
	if (!t || wolfSSL_ASN1_TIME_to_tm(t, &tm) != WOLFSSL_SUCCESS)
		return -1;
	*out = timegm(&tm);
	return 0;
}

/* A server certificate agents would refuse is refused here, at start-up,
 * by -t and by a reload (the running one stays): outside its validity
 * dates, or with an extended key usage that leaves out serverAuth (none at
 * all means any use, RFC 5280 4.2.1.12). */
static int server_cert_usable(WOLFSSL_X509 *x, const char *path, char *err, size_t errlen)
{
	time_t not_before, not_after, now = time(NULL);
	if (!x || cert_time(wolfSSL_X509_get_notBefore(x), &not_before) != 0 ||
	    cert_time(wolfSSL_X509_get_notAfter(x), &not_after) != 0) {
		snprintf(err, errlen, "cert %s: cannot read its validity dates", path);
		return -1;
	}
	char when[32];
	if (now > not_after) {
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&not_after));
		snprintf(err, errlen, "cert %s: expired on %s", path, when);
		return -1;
	}
	if (now < not_before) {
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&not_before));
		snprintf(err, errlen, "cert %s: not valid before %s", path, when);
		return -1;
	}
	unsigned eku = wolfSSL_X509_get_extended_key_usage(x);
	if (eku && !(eku & (XKU_SSL_SERVER | XKU_ANYEKU))) {
		snprintf(err, errlen,
			 "cert %s: its extended key usage leaves out serverAuth (agents refuse it)",
			 path);
		return -1;
	}
	return 0;
}

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
	/* The chain's first certificate is the server's own. */
	WOLFSSL_X509 *leaf = wolfSSL_X509_load_certificate_buffer(k->cert_pem, (int)k->cert_len,
								  WOLFSSL_FILETYPE_PEM);
	int rc = server_cert_usable(leaf, k->cert_path, err, errlen);
	wolfSSL_X509_free(leaf);
	return rc;
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

int tls_server_serve(struct tls_server *srv, struct trust_snapshot *trust, char *err, size_t errlen)
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
			       tls_verify_cb);
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
	tls_offered_tickets_release(s);
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
	tls_note_resumed_ticket(s);
	if (ret == WOLFSSL_SUCCESS) {
		/* A resumption's identity is its ticket's (checked when it was
		 * offered); a full handshake's is check_leaf's alone. */
		bool resumed = wolfSSL_session_reused(s->ssl);
		bool known = !resumed || tls_resumed_identity_take(s);
		tls_offered_tickets_release(s);
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
			tls_refuse(s, AUTH_NO_CERT, "no client certificate");
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
	bool admitted = tls_identity_still_admitted(s);
	s->srv = own;
	return admitted;
}
