/*
 * resumption: what a session ticket carries about the certificate that
 * began its session (the identity blob sealed after wolfSSL's own fields),
 * and which offered ticket may resume: its dates, and today's verdict on
 * its identity against the session's snapshot.
 */
#include "tls-internal.h"
#include "beacon/snapshot.h"

#include <wolfssl/openssl/x509.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "beacon/der.h"
#include "beacon/log.h"

/* Records what a ticket must carry about the leaf wolfSSL just verified.
 * An unreadable notAfter leaves 0: its tickets never resume. */
void tls_leaf_validity(struct tls_session *s, WOLFSSL_X509 *x)
{
	const WOLFSSL_ASN1_TIME *na = wolfSSL_X509_get_notAfter(x);
	time_t t;
	s->not_after = 0;
	/* Read here, not by wolfSSL_ASN1_TIME_to_tm: that calls mktime, a
	 * stat of /etc/localtime in every handshake. */
	if (na && na->length > 0 && (size_t)na->length <= sizeof na->data &&
	    der_time((uint8_t)na->type, (struct der){na->data, (size_t)na->length}, &t))
		s->not_after = (int64_t)t;
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
bool tls_identity_still_admitted(struct tls_session *s)
{
	const struct trust_snapshot *trust = s->srv->trust;
	bool trusted = false;
	for (size_t i = 0; i < trust_snapshot_ca_count(trust) && !trusted; i++)
		trusted = memcmp(trust_snapshot_ca(trust, i)->subject_sha256, s->issuer_hash, 32) ==
			  0;
	if (!trusted) {
		tls_refuse(s, AUTH_UNKNOWN_ISSUER, "certificate's issuer is no longer trusted");
		return false;
	}
	return tls_identity_acceptable(s->peer.device) && tls_peer_admitted(s) &&
	       tls_cas_admitted(s, s->issuer_hash, NULL, 0);
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
	bool ok = tls_identity_still_admitted(s);
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
	if (!ticket_identity_current(tls_policy(s), id) || !ticket_identity_admitted(s, id))
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
void tls_note_resumed_ticket(struct tls_session *s)
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
bool tls_resumed_identity_take(struct tls_session *s)
{
	const struct ticket_identity *id = resumed_identity(s);
	if (!id) {
		tls_refuse(s, AUTH_OTHER, "resumed a ticket that cannot be told apart");
		return false;
	}
	session_take_identity(s, id);
	s->not_after = id->not_after;
	s->auth_time = id->auth_time;
	s->peer.result = AUTH_OK;
	return true;
}

void tls_offered_tickets_release(struct tls_session *s)
{
	if (s->offered)
		explicit_bzero(s->offered, MAX_OFFERED_TICKETS * sizeof *s->offered);
	free(s->offered);
	s->offered = NULL;
	s->n_offered = 0;
}
