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
 * The identity blob a ticket carries after wolfSSL's own fields:
 *   u8 version, u8 device_len, device, 32 cert sha256, 32 issuer name sha256,
 *   u8 serial_len, serial, u16 total length (of the whole blob, last).
 * Written from the session's verified peer; read back into a resuming one.
 * Both return the blob's size, 0 on failure.
 */
size_t tls_ticket_blob_write(const struct tls_session *s, uint8_t *out, size_t room);
size_t tls_ticket_blob_read(struct tls_session *s, const uint8_t *ticket, size_t len);

/* Whether the identity read from a ticket is still admitted. */
bool tls_resumed_peer_allowed(struct tls_session *s);
void tls_resumed_peer_forget(struct tls_session *s);

/* Marks the session's peer as authenticated by its ticket: the fresh ticket
 * a resumed TLS 1.3 session gets carries the same identity on. */
void tls_resumed_peer_admit(struct tls_session *s);

#endif
