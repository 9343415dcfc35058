/*
 * tls: mutual TLS for one connection, over bytes the transport delivers.
 * wolfSSL does the protocol; this part decides policy: TLS 1.2/1.3 only,
 * AES-GCM and ChaCha20-Poly1305, X25519 and P-256, a client certificate that
 * chains to a configured issuer with clientAuth and digitalSignature usage,
 * the CA names advertised in the CertificateRequest, session tickets that
 * carry the client's identity so a resumed session can be checked again.
 *
 * A tls_server is built by the trust part (control/trust) at start-up and
 * on every reload, over a trust snapshot it reads through beacon/snapshot.h
 * only, and is immutable afterwards; tls_sessions are created and used by
 * one worker thread. Ticket keys are shared by the whole process
 * and rotate under a lock that only the (rare) key change takes for long.
 *
 * A session keeps the snapshot it began with until it ends (its wolfSSL
 * objects belong to that snapshot), but it is not trusted on that
 * snapshot's word alone: once a newer one is published, the connection
 * asks tls_session_recheck before its next request, so a device revoked,
 * blocked or left without a trusted issuer stops at its next request
 * rather than when its keep-alive connection ends.
 *
 * I/O: the caller hands ciphertext in with tls_session_input() and gets
 * ciphertext out through the `send` callback given at creation; nothing in
 * here touches a socket.
 */
#ifndef BEACON_TLS_H
#define BEACON_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "beacon/auth-t.h"

struct trust_snapshot;
struct tls_server;
struct tls_session;

/* The server's own certificate chain and key, as PEM bytes the trust part
 * read (and checked the key file's mode); the paths name them in errors.
 * Borrowed for the call: wolfSSL keeps its own copies. */
struct tls_server_keys {
	const char *cert_path;
	const uint8_t *cert_pem;
	size_t cert_len;
	const char *key_path;
	const uint8_t *key_pem;
	size_t key_len;
};

/* A tls_server is a trust snapshot (beacon/snapshot.h) with the wolfSSL
 * context over it. The trust part builds one in two steps, so that errors
 * come in the order the files are checked: tls_server_new with the
 * server's keys (protocol settings, the chain, the key, that they match),
 * then tls_server_serve with the snapshot (its issuers for chain building,
 * the advertised CA names, the verify and ticket callbacks). Both: 0, or
 * -1 with a reason naming the file. tls_server_serve takes the snapshot,
 * even when it fails; it is called once per server. Neither reads a file:
 * the trust part reads and checks them. Reference counted: tls_server_new returns one reference; each
 * session takes one; the last unref frees the server and its snapshot. */
int tls_server_new(const struct tls_server_keys *keys, struct tls_server **out, char *err,
		   size_t errlen);
int tls_server_serve(struct tls_server *srv, struct trust_snapshot *trust, char *err,
		     size_t errlen);
struct tls_server *tls_server_ref(struct tls_server *srv);
void tls_server_unref(struct tls_server *srv);

/* The snapshot the server serves (read-only). */
const struct trust_snapshot *tls_server_trust(const struct tls_server *srv);

/* Ticket keys (process-wide, shared by every snapshot). tls_tickets_load
 * reads a fleet key file: one key per line, 96 hex digits (16-byte name,
 * 32-byte AES-256 key), newest first; up to 4 are accepted, the first
 * encrypts. tls_tickets_new_key makes a fresh random key the current one
 * and keeps up to 3 previous ones. 0, or -1 with a reason in err. */
int tls_tickets_load(const char *path, char *err, size_t errlen);
int tls_tickets_new_key(char *err, size_t errlen);
unsigned tls_tickets_count(void);

/* Ciphertext out. Returns how many bytes it took (0 when its buffer is full:
 * the session reports TLS_WANT_WRITE and the caller retries once the buffer
 * drained). */
typedef size_t (*tls_send_fn)(void *arg, const uint8_t *data, size_t len);

enum tls_status {
	TLS_OK = 0,
	TLS_WANT_READ = -1,  /* needs more ciphertext */
	TLS_WANT_WRITE = -2, /* the send buffer is full */
	TLS_CLOSED = -3,     /* the peer sent close_notify */
	TLS_FAILED = -4,     /* fatal: alert sent where possible; close */
};

/* Who is on the other end, once the handshake is done (or failed). */
struct tls_peer {
	enum auth_result result; /* AUTH_OK, or why the certificate was refused */
	char device[STORE_DEVICE_MAX];
	uint8_t cert_sha256[32];
	bool resumed;
	int version;	  /* 0x0303 TLS 1.2, 0x0304 TLS 1.3 */
	char reason[128]; /* for the log when result != AUTH_OK */
};

/* Takes a reference on srv for the session's life. */
struct tls_session *tls_session_new(struct tls_server *srv, tls_send_fn send, void *arg);
void tls_session_free(struct tls_session *s);

/* Lends in[0..len) to the session until the next call; the session reads
 * from it as it needs. Returns how many bytes are still unread. */
void tls_session_input(struct tls_session *s, const uint8_t *in, size_t len);
size_t tls_session_input_left(const struct tls_session *s);

/* Advances the handshake: TLS_OK once done, else a tls_status. */
int tls_session_handshake(struct tls_session *s);

/* Plaintext in: bytes (> 0) or a tls_status (TLS_WANT_READ when the lent
 * input is used up). */
ssize_t tls_session_read(struct tls_session *s, void *buf, size_t len);

/* Plaintext out: bytes taken (> 0) or a tls_status. */
ssize_t tls_session_write(struct tls_session *s, const void *buf, size_t len);

/* Sends close_notify (best effort). */
void tls_session_shutdown(struct tls_session *s);

const struct tls_peer *tls_session_peer(const struct tls_session *s);

/*
 * Checks an established session's peer against `now`, the newest trust
 * snapshot, with the rules a resumption meets: its issuer still trusted,
 * the certificate not revoked (nor its issuer's CRL stale under crl_stale =
 * refuse), the certificate and device not blocked. True when still
 * admitted. False otherwise, and tls_session_peer()'s result and reason
 * then say why (for the answer and the log): the caller closes the
 * connection. The session keeps its own snapshot; `now` is only read,
 * during the call. On the session's worker thread.
 */
bool tls_session_recheck(struct tls_session *s, struct tls_server *now);

/* A short description of the last failure, for the log. */
const char *tls_session_error(const struct tls_session *s);

/* ---- refusals: whose certificate, why, from where ---- */

/* The client's (leaf) certificate a refusal was about, as text: names with
 * bytes outside printable ASCII written as \xHH (a NUL or a newline in a
 * name shows; it cannot cut or split a log line), cut with "..." when long. */
struct tls_cert_summary {
	char subject[160];
	char issuer[160];
	char serial[48];    /* hex, as openssl x509 -serial prints it */
	char sha256[65];    /* hex fingerprint of the whole DER */
	char not_after[24]; /* "2027-01-31T12:00:00Z", "" when unreadable */
};

/* One refused handshake. */
#define TLS_REFUSAL_SOURCE_MAX 64
struct tls_refusal {
	uint64_t unix_s;
	char source[TLS_REFUSAL_SOURCE_MAX]; /* address:port of the client */
	enum auth_result result;
	char reason[128];
	char device[STORE_DEVICE_MAX]; /* the identity, when it was read before the refusal */
	bool has_cert;		       /* false: the client sent none (or none was read) */
	struct tls_cert_summary cert;
};

/* How many refusals tls_refusals_latest keeps (the /status page's list). */
#define TLS_REFUSALS_KEPT 32
/* Refusal log lines a second, at most: past it a line says how many were
 * left out. A flood of bad handshakes cannot flood the log. */
#define TLS_REFUSAL_LOG_PER_S 10

/* Reports a handshake that s refused: one log line naming the certificate
 * (subject, issuer, serial, SHA-256), the reason and `source`, within the
 * log budget above; and, when it was a verdict on a client certificate (or
 * on its absence), an entry in the process-wide list of the latest ones.
 * Any thread. */
void tls_session_report_refusal(const struct tls_session *s, const char *source);

/* Copies the latest refusals, newest first, into out[0..max); returns how
 * many. Any thread. */
size_t tls_refusals_latest(struct tls_refusal *out, size_t max);

/* The log budget, apart so that it can be tested with a clock the test
 * sets: up to `per_s` lines in each second; take() says whether one more
 * may be written now and, when lines were left out since the last one
 * written, how many (then reset). Not thread-safe by itself. */
struct tls_log_budget {
	uint64_t second;
	unsigned used;
	uint64_t left_out;
};
bool tls_log_budget_take(struct tls_log_budget *b, unsigned per_s, uint64_t now_s,
			 uint64_t *left_out_before);
/* The count left out in a second that has ended (0 while it lasts, or when
 * none was), and forgets it: a flood that stops is still summed up. */
uint64_t tls_log_budget_flush(struct tls_log_budget *b, uint64_t now_s);
/* Logs the refusal lines a past second left out, if any, as one line.
 * Called on the control thread's tick. */
void tls_refusals_log_summary(void);

/* ECDSA certificate signature checks answered from the cache of checks that
 * passed (dataplane/tls/sigcache.c), and those that had to run. */
void tls_sig_cache_counts(uint64_t *hits, uint64_t *misses);

#endif
