/* Private to dataplane/tls: shared between tls.c and tickets.c. */
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
	int64_t issued;    /* when this ticket was sealed */
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

#endif
