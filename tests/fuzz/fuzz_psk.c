/*
 * libFuzzer target: TLS 1.3 ClientHellos with crafted pre_shared_key
 * extensions against a real tls_session (dataplane/tls), for the
 * resumption identity confusion of issue 12: a client resumes its own
 * ticket and offers another device's ticket bytes beside it.
 *
 * At start-up the target builds a tls_server on a throwaway PKI
 * (psk_pki.h) and gets two real tickets from it with wolfSSL clients:
 * agent1's (TLS_AES_256_GCM_SHA384) and agent2's (TLS_AES_128_GCM_SHA256),
 * with the secrets their binders need. It takes the ClientHello a wolfSSL
 * client sends to resume agent1, and checks once that its own binder
 * computation gives that ClientHello's binder byte for byte.
 *
 * Each input rebuilds the ClientHello's pre_shared_key extension: one to
 * five identities, each agent1's or agent2's ticket with a correct or a
 * wrong binder, a truncated or bit-flipped ticket, or junk from the
 * input, with ages from the input, sometimes with a length that lies. The
 * correct binders are recomputed over the new ClientHello, as a client
 * that holds those tickets would. The server's first flight tells which
 * identity it selected (ServerHello's pre_shared_key). Then:
 *   - it selected only an identity whose binder is correct;
 *   - the session's device is that ticket's device, or none yet;
 *   - when it selected none, no offered ticket left a device in the
 *     session (a full handshake must start from nothing).
 * The handshake is not completed: the client's key schedule would need the
 * rebuilt ClientHello. The identity is fixed by the time the server sends
 * its ServerHello, and that is where the confusion shows.
 */
#include "fuzz_common.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/wolfcrypt/sha512.h>

#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/tls.h"
#include "beacon/trust.h"

#include "psk_pki.h"

#include <string.h>
#include <sys/stat.h>

#define PIPE_MAX (64 * 1024)
#define MAX_IDS 5
#define MAX_TICKET 1024

struct pipe {
	uint8_t buf[PIPE_MAX];
	size_t len, off;
};

static struct pipe to_server, to_client;

/* A real ticket and what a client needs to prove it holds it. */
struct ticket {
	const char *device;
	uint8_t bytes[MAX_TICKET];
	size_t len;
	int hash; /* WC_SHA256 or WC_SHA384 */
	size_t hash_len;
	uint8_t psk[WC_SHA384_DIGEST_SIZE];
};

static struct tls_server *server;
static struct ticket tickets[2]; /* agent1, agent2 */
/* agent1's resuming ClientHello: the handshake message, and where its
 * pre_shared_key extension starts and what came before it. */
static uint8_t hello[PIPE_MAX];
static size_t hello_len, psk_ext_at, exts_len_at;
static uint8_t hello_record_version[2];
static uint32_t agent1_age;

/* ---- in-memory I/O ---- */

static void pipe_put(struct pipe *p, const uint8_t *d, size_t n)
{
	CHECK(p->len + n <= sizeof p->buf);
	memcpy(p->buf + p->len, d, n);
	p->len += n;
}

static int client_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	(void)ctx;
	size_t left = to_client.len - to_client.off;
	if (!left)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	size_t n = left < (size_t)sz ? left : (size_t)sz;
	memcpy(buf, to_client.buf + to_client.off, n);
	to_client.off += n;
	return (int)n;
}

static int client_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	(void)ctx;
	pipe_put(&to_server, (const uint8_t *)buf, (size_t)sz);
	return sz;
}

static size_t server_send(void *arg, const uint8_t *d, size_t n)
{
	(void)arg;
	pipe_put(&to_client, d, n);
	return n;
}

/* Hands what the client wrote to the server session. */
static int server_step(struct tls_session *s)
{
	tls_session_input(s, to_server.buf, to_server.len);
	int rc = tls_session_handshake(s);
	CHECK(tls_session_input_left(s) == 0 || rc == TLS_FAILED);
	to_server.len = 0;
	return rc;
}

/* ---- files and the server ---- */

static const char *write_pem(const char *name, const char *text)
{
	static char paths[8][400];
	static int n;
	CHECK(n < 8);
	char *path = paths[n++];
	snprintf(path, 400, "%s/%s", fuzz_dir_get(), name);
	FILE *f = fopen(path, "w");
	CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0);
	return path;
}

static void server_init(void)
{
	static struct config cfg;
	config_defaults(&cfg);
	snprintf(cfg.cert, sizeof cfg.cert, "%s", write_pem("server.pem", psk_server_pem));
	snprintf(cfg.key, sizeof cfg.key, "%s", write_pem("server.key", psk_server_key));
	CHECK(chmod(cfg.key, 0600) == 0);
	snprintf(cfg.issuers, sizeof cfg.issuers, "%s",
		 write_pem("issuers.pem", psk_agents_ca_pem));
	cfg.crl_dir[0] = '\0';
	cfg.blocklist[0] = '\0';
	cfg.ticket_key_file[0] = '\0';
	char err[512];
	if (trust_server_build(&cfg, NULL, &server, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz_psk: %s\n", err);
		abort();
	}
}

static WOLFSSL_CTX *client_ctx(const char *suites, const char *cert, const char *key)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
	CHECK(ctx);
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	CHECK(wolfSSL_CTX_set_cipher_list(ctx, suites) == WOLFSSL_SUCCESS);
	if (cert) {
		CHECK(wolfSSL_CTX_use_certificate_file(ctx, cert, WOLFSSL_FILETYPE_PEM) ==
		      WOLFSSL_SUCCESS);
		CHECK(wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) ==
		      WOLFSSL_SUCCESS);
	}
	wolfSSL_CTX_SetIORecv(ctx, client_recv);
	wolfSSL_CTX_SetIOSend(ctx, client_send);
	return ctx;
}

/* ---- TLS 1.3 key schedule pieces (RFC 8446 7.1, 4.2.11.2) ---- */

static void expand_label(int hash, size_t hlen, const uint8_t *secret, const char *label,
			 const uint8_t *ctx, size_t ctx_len, uint8_t *out, size_t out_len)
{
	uint8_t info[2 + 1 + 255 + 1 + 64];
	size_t ll = 6 + strlen(label), n = 0;
	info[n++] = (uint8_t)(out_len >> 8);
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)ll;
	memcpy(info + n, "tls13 ", 6);
	memcpy(info + n + 6, label, strlen(label));
	n += ll;
	info[n++] = (uint8_t)ctx_len;
	if (ctx_len)
		memcpy(info + n, ctx, ctx_len);
	n += ctx_len;
	CHECK(wc_HKDF_Expand(hash, secret, (word32)hlen, info, (word32)n, out, (word32)out_len) ==
	      0);
}

static void digest(int hash, const uint8_t *d, size_t n, uint8_t *out)
{
	CHECK((hash == WC_SHA256 ? wc_Sha256Hash(d, (word32)n, out)
				 : wc_Sha384Hash(d, (word32)n, out)) == 0);
}

/* binder = HMAC(finished_key, Hash(ClientHello up to the binders)). */
static void binder(const struct ticket *t, const uint8_t *truncated, size_t len, uint8_t *out)
{
	uint8_t early[WC_SHA384_DIGEST_SIZE], empty_hash[WC_SHA384_DIGEST_SIZE];
	uint8_t binder_key[WC_SHA384_DIGEST_SIZE], finished[WC_SHA384_DIGEST_SIZE];
	uint8_t th[WC_SHA384_DIGEST_SIZE];
	size_t h = t->hash_len;
	CHECK(wc_HKDF_Extract(t->hash, NULL, 0, t->psk, (word32)h, early) == 0);
	digest(t->hash, (const uint8_t *)"", 0, empty_hash);
	expand_label(t->hash, h, early, "res binder", empty_hash, h, binder_key, h);
	expand_label(t->hash, h, binder_key, "finished", NULL, 0, finished, h);
	digest(t->hash, truncated, len, th);
	Hmac mac;
	CHECK(wc_HmacInit(&mac, NULL, INVALID_DEVID) == 0);
	CHECK(wc_HmacSetKey(&mac, t->hash, finished, (word32)h) == 0);
	CHECK(wc_HmacUpdate(&mac, th, (word32)h) == 0);
	CHECK(wc_HmacFinal(&mac, out) == 0);
	wc_HmacFree(&mac);
}

/* ---- real tickets ---- */

/* A full handshake as `device`; keeps its ticket and resumption secret
 * and returns the client's session. */
static WOLFSSL_SESSION *get_ticket(struct ticket *t, const char *device, const char *suite,
				   const char *cert, const char *key)
{
	WOLFSSL_CTX *ctx = client_ctx(suite, cert, key);
	WOLFSSL *c = wolfSSL_new(ctx);
	struct tls_session *s = tls_session_new(server, server_send, NULL);
	CHECK(c && s);
	to_server.len = to_client.len = to_client.off = 0;
	int srv = TLS_WANT_READ, cli = 0;
	for (int i = 0; i < 16 && (srv != TLS_OK || cli != WOLFSSL_SUCCESS); i++) {
		cli = wolfSSL_connect(c);
		if (to_server.len)
			srv = server_step(s);
	}
	CHECK(srv == TLS_OK && cli == WOLFSSL_SUCCESS);
	CHECK(strcmp(tls_session_peer(s)->device, device) == 0);
	char b;
	for (int i = 0; i < 4 && !wolfSSL_SESSION_has_ticket(wolfSSL_get_session(c)); i++) {
		CHECK(tls_session_write(s, "x", 1) == 1); /* flushes the ticket too */
		wolfSSL_read(c, &b, 1);
	}
	WOLFSSL_SESSION *sess = wolfSSL_get1_session(c);
	CHECK(sess && wolfSSL_SESSION_has_ticket(sess));
	word32 len = sizeof t->bytes;
	CHECK(wolfSSL_get_SessionTicket(c, t->bytes, &len) == WOLFSSL_SUCCESS && len > 0);
	t->len = len;
	t->device = device;
	bool sha384 = strstr(suite, "SHA384") != NULL;
	t->hash = sha384 ? WC_SHA384 : WC_SHA256;
	t->hash_len = sha384 ? WC_SHA384_DIGEST_SIZE : WC_SHA256_DIGEST_SIZE;
	tls_session_free(s);
	wolfSSL_free(c);
	wolfSSL_CTX_free(ctx);
	return sess;
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Finds the extensions of a ClientHello or ServerHello body; returns the
 * offset of the extensions' length field, or 0. */
static size_t hello_exts_at(const uint8_t *body, size_t n, bool server_hello)
{
	size_t at = 2 + 32;
	if (at + 1 > n)
		return 0;
	at += 1 + body[at]; /* session id */
	if (server_hello) {
		at += 2 + 1; /* cipher suite, compression */
	} else {
		if (at + 2 > n)
			return 0;
		at += 2 + be16(body + at); /* cipher suites */
		if (at + 1 > n)
			return 0;
		at += 1 + body[at]; /* compression methods */
	}
	return at + 2 <= n ? at : 0;
}

/* The ClientHello that resumes agent1: captured, parsed, and its binder
 * recomputed here, which also finds the ticket nonce wolfSSL used. */
static void capture_hello(WOLFSSL_SESSION *agent1)
{
	WOLFSSL_CTX *ctx =
		client_ctx("TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384", NULL, NULL);
	WOLFSSL *c = wolfSSL_new(ctx);
	CHECK(c && wolfSSL_set_session(c, agent1) == WOLFSSL_SUCCESS);
	to_server.len = 0;
	CHECK(wolfSSL_connect(c) != WOLFSSL_SUCCESS);
	const uint8_t *rec = to_server.buf;
	CHECK(to_server.len > 9 && rec[0] == 22 && rec[5] == 1);
	hello_record_version[0] = rec[1];
	hello_record_version[1] = rec[2];
	hello_len = be16(rec + 3);
	CHECK(5 + hello_len <= to_server.len);
	memcpy(hello, rec + 5, hello_len);
	const uint8_t *body = hello + 4;
	size_t body_len = hello_len - 4;
	exts_len_at = hello_exts_at(body, body_len, false);
	CHECK(exts_len_at);
	size_t at = exts_len_at + 2;
	psk_ext_at = 0;
	while (at + 4 <= body_len) {
		if (be16(body + at) == 41)
			psk_ext_at = at;
		at += 4 + be16(body + at + 2);
	}
	CHECK(psk_ext_at && at == body_len); /* pre_shared_key is the last */
	/* identities: len, identity, age; then binders */
	const uint8_t *ids = body + psk_ext_at + 4;
	size_t id_len = be16(ids + 2);
	CHECK(id_len == tickets[0].len && memcmp(ids + 4, tickets[0].bytes, id_len) == 0);
	const uint8_t *age = ids + 4 + id_len;
	agent1_age = (uint32_t)age[0] << 24 | (uint32_t)age[1] << 16 | age[2] << 8 | age[3];
	const uint8_t *binders = age + 4;
	size_t truncated = (size_t)(binders - hello);
	CHECK(binders[2] == tickets[0].hash_len);
	/* wolfSSL's server counts ticket nonces from 0, one byte. */
	uint8_t secret[WC_SHA384_DIGEST_SIZE];
	CHECK(wolfSSL_SESSION_get_master_key(agent1, secret, sizeof secret) > 0);
	bool found = false;
	for (int nonce = 0; nonce < 8 && !found; nonce++) {
		uint8_t n = (uint8_t)nonce, mine[WC_SHA384_DIGEST_SIZE];
		expand_label(tickets[0].hash, tickets[0].hash_len, secret, "resumption", &n, 1,
			     tickets[0].psk, tickets[0].hash_len);
		binder(&tickets[0], hello, truncated, mine);
		found = memcmp(mine, binders + 3, tickets[0].hash_len) == 0;
	}
	CHECK(found); /* else this target's binders would prove nothing */
	wolfSSL_free(c);
	wolfSSL_CTX_free(ctx);
}

static void psk_of(struct ticket *t, WOLFSSL_SESSION *sess)
{
	uint8_t secret[WC_SHA384_DIGEST_SIZE];
	uint8_t nonce = 0;
	CHECK(wolfSSL_SESSION_get_master_key(sess, secret, sizeof secret) > 0);
	expand_label(t->hash, t->hash_len, secret, "resumption", &nonce, 1, t->psk, t->hash_len);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERR);
	CHECK(wolfSSL_Init() == WOLFSSL_SUCCESS);
	server_init();
	const char *a1 = write_pem("agent1.pem", psk_agent1_pem);
	const char *k1 = write_pem("agent1.key", psk_agent1_key);
	const char *a2 = write_pem("agent2.pem", psk_agent2_pem);
	const char *k2 = write_pem("agent2.key", psk_agent2_key);
	WOLFSSL_SESSION *s1 =
		get_ticket(&tickets[0], "agent1.example", "TLS13-AES256-GCM-SHA384", a1, k1);
	WOLFSSL_SESSION *s2 =
		get_ticket(&tickets[1], "agent2.example", "TLS13-AES128-GCM-SHA256", a2, k2);
	capture_hello(s1);
	psk_of(&tickets[1], s2);
	wolfSSL_SESSION_free(s1);
	wolfSSL_SESSION_free(s2);
	return 0;
}

/* ---- one input ---- */

enum id_kind {
	ID_AGENT1,	   /* agent1's ticket, correct binder */
	ID_AGENT1_BAD,	   /* agent1's ticket, wrong binder */
	ID_AGENT2,	   /* agent2's ticket, correct binder */
	ID_AGENT2_BAD,	   /* agent2's ticket, wrong binder: the attack */
	ID_AGENT2_CUT,	   /* agent2's ticket, truncated */
	ID_AGENT1_FLIPPED, /* agent1's ticket with one bit flipped */
	ID_JUNK,	   /* bytes from the input */
	ID_KINDS
};

struct offered {
	enum id_kind kind;
	const struct ticket *t; /* whose binder is computed, or NULL */
	uint8_t bytes[MAX_TICKET];
	size_t len;
	uint32_t age;
	size_t binder_len;
};

/* Reads the next byte of the input, 0 past its end. */
struct reader {
	const uint8_t *p;
	size_t n;
};

static uint8_t next(struct reader *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

static void offer(struct offered *o, struct reader *r)
{
	o->kind = (enum id_kind)(next(r) % ID_KINDS);
	uint8_t p = next(r);
	o->t = NULL;
	o->age = (uint32_t)next(r) << 24 | (uint32_t)next(r) << 8;
	const struct ticket *src =
		o->kind == ID_AGENT2 || o->kind == ID_AGENT2_BAD || o->kind == ID_AGENT2_CUT
			? &tickets[1]
			: &tickets[0];
	memcpy(o->bytes, src->bytes, src->len);
	o->len = src->len;
	o->binder_len = src->hash_len;
	switch (o->kind) {
	case ID_AGENT1:
		o->age = agent1_age;
		/* fall through */
	case ID_AGENT2:
		o->t = src;
		break;
	case ID_AGENT2_CUT:
		o->len = 1 + p % src->len;
		break;
	case ID_AGENT1_FLIPPED:
		o->bytes[p % src->len] ^= (uint8_t)(1u << (p % 8));
		break;
	case ID_JUNK:
		o->len = 1 + p % 200;
		for (size_t i = 0; i < o->len; i++)
			o->bytes[i] = next(r);
		o->binder_len = p & 1 ? WC_SHA384_DIGEST_SIZE : WC_SHA256_DIGEST_SIZE;
		break;
	default:
		break;
	}
}

/* Writes the ClientHello with `ids` into `out` as one record; returns its
 * length. `lie` != 0 makes the identities' length wrong by that much. */
static size_t build_hello(struct offered *ids, size_t n, int lie, uint8_t *out)
{
	uint8_t *msg = out + 5, *body = msg + 4;
	memcpy(msg, hello, 4 + psk_ext_at); /* up to the pre_shared_key extension */
	uint8_t *ext = body + psk_ext_at, *p = ext + 4 + 2;
	for (size_t i = 0; i < n; i++) {
		put16(p, ids[i].len);
		memcpy(p + 2, ids[i].bytes, ids[i].len);
		p += 2 + ids[i].len;
		for (int b = 3; b >= 0; b--)
			*p++ = (uint8_t)(ids[i].age >> (8 * b));
	}
	put16(ext + 4, (size_t)((long)(p - ext - 6) + lie));
	size_t truncated = (size_t)(p - msg);
	uint8_t *binders = p;
	p += 2;
	for (size_t i = 0; i < n; i++) {
		*p = (uint8_t)ids[i].binder_len;
		memset(p + 1, 0xb5, ids[i].binder_len); /* a wrong binder */
		p += 1 + ids[i].binder_len;
	}
	put16(binders, (size_t)(p - binders - 2));
	put16(ext, 41);
	put16(ext + 2, (size_t)(p - ext - 4));
	put16(body + exts_len_at, (size_t)(p - body - exts_len_at - 2));
	size_t msg_len = (size_t)(p - msg);
	msg[1] = (uint8_t)((msg_len - 4) >> 16);
	msg[2] = (uint8_t)((msg_len - 4) >> 8);
	msg[3] = (uint8_t)(msg_len - 4);
	/* Binders last: they cover everything before them. */
	p = binders + 2;
	for (size_t i = 0; i < n; i++) {
		if (ids[i].t)
			binder(ids[i].t, msg, truncated, p + 1);
		p += 1 + ids[i].binder_len;
	}
	out[0] = 22;
	out[1] = hello_record_version[0];
	out[2] = hello_record_version[1];
	put16(out + 3, msg_len);
	return 5 + msg_len;
}

/* The identity ServerHello says the server selected, or -1. */
static int selected_identity(void)
{
	const uint8_t *r = to_client.buf;
	size_t n = to_client.len;
	if (n < 9 || r[0] != 22 || r[5] != 2)
		return -1;
	size_t len = be16(r + 3);
	if (len > n - 5 || len < 4)
		return -1;
	const uint8_t *body = r + 9;
	size_t body_len = len - 4;
	size_t at = hello_exts_at(body, body_len, true);
	if (!at)
		return -1;
	size_t end = at + 2 + be16(body + at);
	for (at += 2; at + 4 <= end && end <= body_len; at += 4 + be16(body + at + 2))
		if (be16(body + at) == 41 && be16(body + at + 2) == 2)
			return be16(body + at + 4);
	return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t record[PIPE_MAX];
	static struct offered ids[MAX_IDS];
	struct reader r = {data, size};
	uint8_t head = next(&r);
	size_t n = 1 + head % MAX_IDS;
	int lie = (head & 0x80) ? (int)(head >> 5 & 3) - 2 : 0;
	for (size_t i = 0; i < n; i++)
		offer(&ids[i], &r);
	size_t len = build_hello(ids, n, lie, record);

	struct tls_session *s = tls_session_new(server, server_send, NULL);
	CHECK(s);
	to_server.len = to_client.len = to_client.off = 0;
	pipe_put(&to_server, record, len);
	(void)server_step(s);
	const struct tls_peer *peer = tls_session_peer(s);
	int sel = selected_identity();
	if (getenv("FUZZ_PSK_VERBOSE"))
		fprintf(stderr, "fuzz_psk: %zu identities, selected %d, device '%s'\n", n, sel,
			peer->device);
	if (sel >= 0) {
		CHECK((size_t)sel < n && ids[sel].t != NULL);
		if (peer->device[0])
			CHECK(strcmp(peer->device, ids[sel].t->device) == 0);
	} else {
		CHECK(peer->device[0] == '\0'); /* no offered ticket left a trace */
	}
	tls_session_free(s);
	return 0;
}
