/*
 * Private to dataplane/tls: the server and session objects and what the
 * layer's files share. tls.c (context, session, I/O), verify.c
 * (certificate policy), resumption.c (tickets' identities), tickets.c
 * (ticket keys), refusals.c (the refusal log).
 */
#ifndef BEACON_TLS_INTERNAL_H
#define BEACON_TLS_INTERNAL_H

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "beacon/tls.h"

/* Fills out[0..len) from this thread's DRBG. 0 or -1. */
int tls_random(uint8_t *out, size_t len);

/* Replaces the current ticket key with a fresh one; the current one becomes
 * the previous and stays accepted until the next rotation. 0 or -1. */
int tls_tickets_rotate(void);

/* wolfSSL's ticket encryption callback (wolfSSL_CTX_set_TicketEncCb). */
int tls_ticket_cb(WOLFSSL *ssl, unsigned char key_name[WOLFSSL_TICKET_NAME_SZ],
		  unsigned char iv[WOLFSSL_TICKET_IV_SZ], unsigned char mac[WOLFSSL_TICKET_MAC_SZ],
		  int enc, unsigned char *ticket, int in_len, int *out_len, void *ctx);

/*
 * What a ticket says about the certificate that began its session. The
 * fields travel sealed in the ticket, after wolfSSL's own (the "blob"):
 *   u8 version (2), u8 device_len, device, 32 cert sha256, 32 issuer name
 *   sha256, u8 serial_len, serial, u32 not_after, u32 auth_time, u32 issued,
 *   16 secret_id, u16 total length (of the whole blob, last).
 * Times are Unix seconds, big-endian (a notAfter past 2106 is sealed as
 * 2106). At most 384 bytes: the room WOLFSSL_TICKET_EXTRA_PADDING_SZ keeps.
 */
struct ticket_identity {
	char device[STORE_DEVICE_MAX];
	uint8_t cert_sha256[32];
	uint8_t issuer_hash[32];
	uint8_t serial_len;
	uint8_t serial[32];
	int64_t not_after; /* the certificate's notAfter */
	int64_t auth_time; /* when a full handshake verified the certificate */
	int64_t issued;	   /* when this ticket was sealed */
	/* The first half of the SHA-256 of the resumption secret sealed in the
	 * same ticket (TLS 1.3; zero in TLS 1.2): tells which of several
	 * offered tickets wolfSSL resumed. */
	uint8_t secret_id[16];
};

/* Writes the blob for the ticket being sealed: the identity of a full
 * handshake's certificate, or the one a resumed session took from its
 * ticket (auth time and notAfter carried on unchanged). The blob's size,
 * 0 when there is no admitted identity or no room. */
size_t tls_ticket_blob_write(struct tls_session *s, uint8_t *out, size_t room);

/* Parses the blob at the end of a decrypted ticket[0..len). Its size, 0
 * when it is malformed. */
size_t tls_ticket_blob_read(const uint8_t *ticket, size_t len, struct ticket_identity *out);

/* A ticket the client offered, decrypted: whether it may resume (its
 * certificate within notAfter and still admitted, its session younger than
 * max_session_age, the ticket younger than ticket_lifetime). An admitted
 * one is kept aside, nothing more: the session takes its identity only
 * from the ticket wolfSSL actually resumes, once that is known. */
bool tls_resumption_offered(struct tls_session *s, const struct ticket_identity *id);

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

/* ---- verify.c ---- */

/* wolfSSL's verify callback: every certificate of the chain. */
int tls_verify_cb(int preverify, WOLFSSL_X509_STORE_CTX *store);
/* The session's snapshot's policy. */
const struct trust_policy *tls_policy(const struct tls_session *s);
/* Records a refusal: result, reason (cut to fit) and the alert it sends. */
void tls_refuse(struct tls_session *s, enum auth_result r, const char *why);
/* An identity is used in logs, the index and file names: printable only. */
bool tls_identity_acceptable(const char *id);
/* Today's verdict on the session's identity: not blocked, not revoked. */
bool tls_peer_admitted(struct tls_session *s);
/* The configured CAs above issuer `issuer` (akid: its key id, may be
 * absent), each on its own issuer's CRL. */
bool tls_cas_admitted(struct tls_session *s, const uint8_t issuer[32], const uint8_t *akid,
		      size_t akid_len);

/* ---- resumption.c ---- */

/* What a ticket must carry about the leaf wolfSSL just verified. */
void tls_leaf_validity(struct tls_session *s, WOLFSSL_X509 *x);

/* sigcache.c: hands wolfSSL the cache of passed certificate signatures. */
void tls_sig_cache_start(void);
/* Today's verdict on an identity verified earlier (a ticket's, or an open
 * connection's), against s->srv's snapshot. */
bool tls_identity_still_admitted(struct tls_session *s);
/* After every handshake step: which offered ticket wolfSSL resumes. */
void tls_note_resumed_ticket(struct tls_session *s);
/* A resumed session becomes the device of the ticket it resumed. */
bool tls_resumed_identity_take(struct tls_session *s);
void tls_offered_tickets_release(struct tls_session *s);

#endif
