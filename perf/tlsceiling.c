/*
 * tlsceiling: what beacond's own TLS library allows on one core. A wolfSSL
 * server and a wolfSSL client in one thread, joined by two in-memory byte
 * queues (wolfSSL_SetIORecv/SetIOSend), run handshakes back to back; only
 * the server's calls are timed, with CLOCK_THREAD_CPUTIME_ID, so the
 * figure is handshakes per second of *server* CPU, as perf/bench.sh counts
 * for the real servers.
 *
 * The server context is set up as dataplane/tls/tls.c sets up beacond's:
 * TLS 1.2 and 1.3, the same cipher list, groups X25519 then P-256, the
 * client-signature list, mutual authentication that fails without a client
 * certificate, the agents' CA named in the CertificateRequest, no session
 * cache and AES-256-GCM session tickets. The client is set up as agentsim
 * sets up its agents (P-256 key share, AES-128-GCM, no server-certificate
 * check), so the server does the same work in both. Each exchange also
 * carries a 1 KiB request and a short response, and the server's
 * wolfSSL_new and wolfSSL_free are counted: beacond pays both per
 * connection. What beacond adds on top (its verify callback's revocation
 * and policy checks, HTTP, the store, the kernel) is not here: that is the
 * point of the ceiling.
 *
 *   tlsceiling --server-cert F --server-key F --ca F --client-cert F
 *              --client-key F [--seconds S] [--handshakes N]
 *              [--kinds "full13 resume13 full12"] [--interleave N] [--json]
 *   tlsceiling --ops [--json]
 *
 * --interleave N keeps N connections in flight, each stepped in turn as a
 * server's event loop steps its connections (full handshakes only). It is
 * a soak as much as a figure: a handshake that fails is counted and said,
 * and the run goes on ("A rare handshake failure" in perf/README.md).
 *
 * --ops times the P-256 operations of a full handshake alone (key
 * generation, shared secret, signature, verification), so that
 * perf/phases.sh can share out the samples its unwinder cannot trace
 * through wolfSSL's assembly.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* as in dataplane/tls/tls.c */
static const char server_ciphers[] =
	"TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305";
static const char client_sigalgs[] =
	"ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:RSA-PSS+SHA256:RSA-PSS+SHA384:RSA-PSS+SHA512:"
	"RSA+SHA256:RSA+SHA384:RSA+SHA512";

#define QUEUE_SIZE (1 << 17)
#define REQUEST_SIZE 1024
#define MAX_TURNS 64
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

/* One direction of the connection: bytes written by one side, read by the
 * other. Emptied between exchanges. */
struct queue {
	uint8_t buf[QUEUE_SIZE];
	size_t head, tail;
};

struct link {
	struct queue to_server, to_client;
};

enum kind { FULL13, RESUME13, FULL12, KINDS };
static const char *const kind_names[KINDS] = {"full13", "resume13", "full12"};

struct options {
	const char *server_cert, *server_key, *ca, *client_cert, *client_key;
	double seconds;
	unsigned long max_handshakes;
	bool kinds[KINDS];
	bool json, ops;
	unsigned interleave; /* 0: one connection at a time */
};

struct result {
	unsigned long handshakes, resumed;
	uint64_t server_ns, client_ns;
	unsigned long client_failures, server_failures; /* --interleave */
};

static WC_RNG rng;
static uint8_t ticket_key[32];
static uint8_t ticket_name[WOLFSSL_TICKET_NAME_SZ];

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int queue_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	struct queue *q = ctx;
	size_t n = q->tail - q->head;
	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (n > (size_t)sz)
		n = (size_t)sz;
	memcpy(buf, q->buf + q->head, n);
	q->head += n;
	if (q->head == q->tail)
		q->head = q->tail = 0;
	return (int)n;
}

static int queue_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	(void)ssl;
	struct queue *q = ctx;
	if ((size_t)sz > QUEUE_SIZE - q->tail)
		return WOLFSSL_CBIO_ERR_GENERAL; /* a flight never comes near it */
	memcpy(q->buf + q->tail, buf, (size_t)sz);
	q->tail += (size_t)sz;
	return sz;
}

/* AES-256-GCM tickets under one key, as dataplane/tls/tickets.c seals
 * them (without beacond's identity blob). */
static int ticket_cb(WOLFSSL *ssl, unsigned char name[WOLFSSL_TICKET_NAME_SZ],
		     unsigned char iv[WOLFSSL_TICKET_IV_SZ],
		     unsigned char mac[WOLFSSL_TICKET_MAC_SZ], int enc, unsigned char *ticket,
		     int in_len, int *out_len, void *ctx)
{
	(void)ssl;
	(void)ctx;
	Aes aes;
	if (enc) {
		memcpy(name, ticket_name, sizeof ticket_name);
		memset(iv, 0, WOLFSSL_TICKET_IV_SZ);
		memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
		if (wc_RNG_GenerateBlock(&rng, iv, GCM_IV_LEN) != 0)
			return WOLFSSL_TICKET_RET_FATAL;
	} else if (memcmp(name, ticket_name, sizeof ticket_name) != 0) {
		return WOLFSSL_TICKET_RET_REJECT;
	}
	int rc = wc_AesInit(&aes, NULL, INVALID_DEVID);
	if (rc == 0)
		rc = wc_AesGcmSetKey(&aes, ticket_key, sizeof ticket_key);
	if (rc == 0 && enc)
		rc = wc_AesGcmEncrypt(&aes, ticket, ticket, (word32)in_len, iv, GCM_IV_LEN, mac,
				      GCM_TAG_LEN, name, WOLFSSL_TICKET_NAME_SZ);
	else if (rc == 0)
		rc = wc_AesGcmDecrypt(&aes, ticket, ticket, (word32)in_len, iv, GCM_IV_LEN, mac,
				      GCM_TAG_LEN, name, WOLFSSL_TICKET_NAME_SZ);
	wc_AesFree(&aes);
	if (rc != 0)
		return enc ? WOLFSSL_TICKET_RET_FATAL : WOLFSSL_TICKET_RET_REJECT;
	*out_len = in_len;
	return WOLFSSL_TICKET_RET_OK;
}

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "tlsceiling: %s%s%s\n", what, path ? " " : "", path ? path : "");
	return -1;
}

/* The agents' CA's subject, for the CertificateRequest, as beacond sends it. */
static int advertise_ca(WOLFSSL_CTX *ctx, const char *ca)
{
	WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(ca, WOLFSSL_FILETYPE_PEM);
	WOLF_STACK_OF(WOLFSSL_X509_NAME) *names = wolfSSL_sk_X509_NAME_new(NULL);
	WOLFSSL_X509_NAME *dup = x ? wolfSSL_X509_NAME_dup(wolfSSL_X509_get_subject_name(x)) : NULL;
	wolfSSL_X509_free(x);
	if (!names || !dup || wolfSSL_sk_X509_NAME_push(names, dup) <= 0) {
		wolfSSL_X509_NAME_free(dup);
		if (names)
			wolfSSL_sk_X509_NAME_pop_free(names, NULL);
		return fail("cannot read the subject of", ca);
	}
	wolfSSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
	return 0;
}

static WOLFSSL_CTX *server_ctx(const struct options *o)
{
	int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	if (!ctx)
		return NULL;
	int ok = wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) == WOLFSSL_SUCCESS &&
		 wolfSSL_CTX_set_cipher_list(ctx, server_ciphers) == WOLFSSL_SUCCESS &&
		 wolfSSL_CTX_set_groups(ctx, groups, 2) == WOLFSSL_SUCCESS;
	if (!ok)
		fail("cannot set the server's versions, ciphers or groups", NULL);
	else if (wolfSSL_CTX_use_certificate_chain_file(ctx, o->server_cert) != WOLFSSL_SUCCESS)
		ok = !fail("cannot load the certificate chain", o->server_cert);
	else if (wolfSSL_CTX_use_PrivateKey_file(ctx, o->server_key, WOLFSSL_FILETYPE_PEM) !=
		 WOLFSSL_SUCCESS)
		ok = !fail("cannot load the key", o->server_key);
	else if (wolfSSL_CTX_load_verify_locations(ctx, o->ca, NULL) != WOLFSSL_SUCCESS)
		ok = !fail("cannot load the agents' CA", o->ca);
	else if (advertise_ca(ctx, o->ca) != 0)
		ok = 0;
	else if (wolfSSL_CTX_set1_sigalgs_list(ctx, client_sigalgs) != WOLFSSL_SUCCESS)
		ok = !fail("cannot set the client signature algorithms", NULL);
	if (ok) {
		/* No verify callback: beacond's adds its own policy checks,
		 * which are beacond's cost, not the library's. */
		wolfSSL_CTX_set_verify(
			ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
		ok = wolfSSL_CTX_set_TicketEncCb(ctx, ticket_cb) == WOLFSSL_SUCCESS &&
		     wolfSSL_CTX_set_timeout(ctx, 3600) == WOLFSSL_SUCCESS &&
		     wolfSSL_CTX_set_TicketHint(ctx, 3600) == WOLFSSL_SUCCESS;
		if (!ok)
			fail("cannot enable session tickets", NULL);
	}
	if (!ok) {
		wolfSSL_CTX_free(ctx);
		return NULL;
	}
	wolfSSL_CTX_SetIORecv(ctx, queue_recv);
	wolfSSL_CTX_SetIOSend(ctx, queue_send);
	return ctx;
}

/* As agentsim's make_ctx, with the agent's certificate on the context. */
static WOLFSSL_CTX *client_ctx(const struct options *o, bool tls13)
{
	int groups[] = {WOLFSSL_ECC_SECP256R1};
	WOLFSSL_CTX *ctx =
		wolfSSL_CTX_new(tls13 ? wolfTLSv1_3_client_method() : wolfTLSv1_2_client_method());
	if (!ctx)
		return NULL;
	const char *ciphers = tls13 ? "TLS13-AES128-GCM-SHA256" : "ECDHE-ECDSA-AES128-GCM-SHA256";
	if (wolfSSL_CTX_set_cipher_list(ctx, ciphers) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_groups(ctx, groups, 1) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_certificate_file(ctx, o->client_cert, WOLFSSL_FILETYPE_PEM) !=
		    WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_PrivateKey_file(ctx, o->client_key, WOLFSSL_FILETYPE_PEM) !=
		    WOLFSSL_SUCCESS) {
		fail("cannot set up the client with", o->client_cert);
		wolfSSL_CTX_free(ctx);
		return NULL;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
	wolfSSL_CTX_SetIORecv(ctx, queue_recv);
	wolfSSL_CTX_SetIOSend(ctx, queue_send);
	return ctx;
}

static bool want_io(WOLFSSL *ssl, int rc)
{
	int err = wolfSSL_get_error(ssl, rc);
	return err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE;
}

static int io_error(const char *side, WOLFSSL *ssl, int rc)
{
	char text[WOLFSSL_MAX_ERROR_SZ];
	int err = wolfSSL_get_error(ssl, rc);
	fprintf(stderr, "tlsceiling: %s: %s (%d)\n", side, wolfSSL_ERR_error_string(err, text),
		err);
	return -1;
}

/* One side's handshake step, its CPU time charged to *ns: 1 when its
 * handshake is done, 0 while it waits for the other side, -1 when it failed
 * (said on stderr). */
static int side_step(WOLFSSL *ssl, bool server, uint64_t *ns)
{
	uint64_t t0 = thread_cpu_ns();
	int rc = server ? wolfSSL_accept(ssl) : wolfSSL_connect(ssl);
	*ns += thread_cpu_ns() - t0;
	if (rc == WOLFSSL_SUCCESS)
		return 1;
	if (want_io(ssl, rc))
		return 0;
	io_error(server ? "server handshake" : "client handshake", ssl, rc);
	return -1;
}

/* The two ends in turn until both have finished the handshake. */
static int handshake(WOLFSSL *srv, WOLFSSL *cli, struct result *r)
{
	int srv_done = 0, cli_done = 0;
	for (int turn = 0; turn < MAX_TURNS && !(srv_done == 1 && cli_done == 1); turn++) {
		if (cli_done == 0 && (cli_done = side_step(cli, false, &r->client_ns)) < 0)
			return -1;
		if (srv_done == 0 && (srv_done = side_step(srv, true, &r->server_ns)) < 0)
			return -1;
	}
	return srv_done == 1 && cli_done == 1 ? 0 : fail("the handshake did not finish", NULL);
}

/* A 1 KiB request one way, a short response the other; the client's read
 * also takes in the TLS 1.3 session ticket. */
static int exchange(WOLFSSL *srv, WOLFSSL *cli, struct result *r)
{
	static const char response[] = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
	uint8_t req[REQUEST_SIZE], buf[REQUEST_SIZE];
	memset(req, 'x', sizeof req);
	if (wolfSSL_write(cli, req, sizeof req) != (int)sizeof req)
		return io_error("client write", cli, 0);
	uint64_t t0 = thread_cpu_ns();
	int got = 0, rc = 0;
	while (got < REQUEST_SIZE && (rc = wolfSSL_read(srv, buf, REQUEST_SIZE - got)) > 0)
		got += rc;
	int sent = got == REQUEST_SIZE ? wolfSSL_write(srv, response, (int)sizeof response - 1) : 0;
	r->server_ns += thread_cpu_ns() - t0;
	if (got != REQUEST_SIZE)
		return io_error("server read", srv, rc);
	if (sent != (int)sizeof response - 1)
		return io_error("server write", srv, sent);
	rc = wolfSSL_read(cli, buf, sizeof buf);
	return rc == (int)sizeof response - 1 ? 0 : io_error("client read", cli, rc);
}

/* A server and a client joined by l's emptied queues; the server's
 * wolfSSL_new is counted (beacond pays it per connection). 0, or -1 when
 * either could not be made (both are then freed by pair_close). */
static int pair_open(WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx, struct link *l, WOLFSSL **srv,
		     WOLFSSL **cli, struct result *r)
{
	l->to_server.head = l->to_server.tail = 0;
	l->to_client.head = l->to_client.tail = 0;
	uint64_t t0 = thread_cpu_ns();
	*srv = wolfSSL_new(sctx);
	r->server_ns += thread_cpu_ns() - t0;
	*cli = wolfSSL_new(cctx);
	if (!*srv || !*cli)
		return fail("out of memory", NULL);
	wolfSSL_SetIOReadCtx(*srv, &l->to_server);
	wolfSSL_SetIOWriteCtx(*srv, &l->to_client);
	wolfSSL_SetIOReadCtx(*cli, &l->to_client);
	wolfSSL_SetIOWriteCtx(*cli, &l->to_server);
	return 0;
}

/* Frees both; the server's wolfSSL_free is counted too. */
static void pair_close(WOLFSSL *srv, WOLFSSL *cli, struct result *r)
{
	wolfSSL_free(cli);
	uint64_t t0 = thread_cpu_ns();
	wolfSSL_free(srv);
	r->server_ns += thread_cpu_ns() - t0;
}

/* One connection: server and client objects, handshake, exchange, free.
 * In resume mode *session is offered and replaced by the fresh one. */
static int connection(WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx, WOLFSSL_SESSION **session,
		      struct link *l, struct result *r)
{
	WOLFSSL *srv, *cli;
	int rc = pair_open(sctx, cctx, l, &srv, &cli, r);
	if (rc == 0) {
		if (session && *session)
			wolfSSL_set_session(cli, *session);
		rc = handshake(srv, cli, r);
	}
	if (rc == 0)
		rc = exchange(srv, cli, r);
	if (rc == 0) {
		r->handshakes++;
		r->resumed += wolfSSL_session_reused(srv) ? 1 : 0;
		if (session) {
			wolfSSL_SESSION_free(*session);
			*session = wolfSSL_get1_session(cli);
		}
	}
	pair_close(srv, cli, r);
	return rc;
}

/* ---- --interleave: many connections in flight ---- */

#define INTERLEAVE_MAX 256

struct slot {
	struct link l;
	WOLFSSL *srv, *cli;
	bool srv_done, cli_done;
};

static void slot_end(struct slot *s, struct result *r)
{
	pair_close(s->srv, s->cli, r);
	s->cli = s->srv = NULL;
}

static int slot_begin(WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx, struct slot *s, struct result *r)
{
	s->srv_done = s->cli_done = false;
	return pair_open(sctx, cctx, &s->l, &s->srv, &s->cli, r);
}

/* One turn of a connection: each side takes what the other sent. A failed
 * handshake is said and counted, and its slot starts again. */
static int slot_turn(WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx, struct slot *s, struct result *r)
{
	if (!s->srv && slot_begin(sctx, cctx, s, r) != 0)
		return -1;
	int cli = s->cli_done ? 1 : side_step(s->cli, false, &r->client_ns);
	int srv = cli < 0 || s->srv_done ? 1 : side_step(s->srv, true, &r->server_ns);
	if (cli < 0 || srv < 0) {
		if (cli < 0)
			r->client_failures++;
		else
			r->server_failures++;
		slot_end(s, r);
		return 0;
	}
	s->cli_done = cli == 1;
	s->srv_done = srv == 1;
	if (s->srv_done && s->cli_done) {
		if (exchange(s->srv, s->cli, r) == 0)
			r->handshakes++;
		else
			r->server_failures++;
		slot_end(s, r);
	}
	return 0;
}

static int run_interleaved(const struct options *o, WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx,
			   struct result *r)
{
	static struct slot slots[INTERLEAVE_MAX];
	uint64_t budget = (uint64_t)(o->seconds * 1e9);
	int rc = 0;
	while (rc == 0 && r->server_ns < budget && r->handshakes < o->max_handshakes)
		for (unsigned i = 0; i < o->interleave && rc == 0; i++)
			rc = slot_turn(sctx, cctx, &slots[i], r);
	for (unsigned i = 0; i < o->interleave; i++)
		if (slots[i].srv || slots[i].cli)
			slot_end(&slots[i], r);
	return rc;
}

static int run_kind(const struct options *o, WOLFSSL_CTX *sctx, enum kind k, struct result *r)
{
	WOLFSSL_CTX *cctx = client_ctx(o, k != FULL12);
	if (!cctx)
		return -1;
	if (o->interleave) {
		int rc = run_interleaved(o, sctx, cctx, r);
		wolfSSL_CTX_free(cctx);
		return rc;
	}
	static struct link l;
	WOLFSSL_SESSION *session = NULL;
	WOLFSSL_SESSION **keep = k == RESUME13 ? &session : NULL;
	struct result warm = {0};
	/* warm-up (caches, lazily built tables) and, for resume, a ticket */
	int rc = 0;
	for (int i = 0; i < 3 && rc == 0; i++)
		rc = connection(sctx, cctx, keep, &l, &warm);
	uint64_t budget = (uint64_t)(o->seconds * 1e9);
	while (rc == 0 && r->server_ns < budget && r->handshakes < o->max_handshakes)
		rc = connection(sctx, cctx, keep, &l, r);
	wolfSSL_SESSION_free(session);
	wolfSSL_CTX_free(cctx);
	return rc;
}

static void print_result(const struct options *o, enum kind k, const struct result *r)
{
	double server_s = (double)r->server_ns / 1e9;
	double per_s = server_s > 0 ? (double)r->handshakes / server_s : 0;
	double us = r->handshakes ? (double)r->server_ns / 1e3 / (double)r->handshakes : 0;
	double resumed = r->handshakes ? (double)r->resumed / (double)r->handshakes : 0;
	if (o->json)
		printf("{\"server\":\"ceiling\",\"scenario\":\"%s\",\"handshakes\":%lu,"
		       "\"server_cpu_s\":%.6f,\"client_cpu_s\":%.6f,"
		       "\"handshakes_per_server_cpu_s\":%.1f,\"server_us_per_handshake\":%.1f,"
		       "\"resumed_fraction\":%.4f,\"interleave\":%u,\"client_failures\":%lu,"
		       "\"server_failures\":%lu,\"wolfssl\":\"%s\"}\n",
		       kind_names[k], r->handshakes, server_s, (double)r->client_ns / 1e9, per_s,
		       us, resumed, o->interleave, r->client_failures, r->server_failures,
		       wolfSSL_lib_version());
	else
		printf("%-9s %9lu handshakes %10.1f / server CPU s %8.1f us each  resumed %.2f"
		       "  failed %lu\n",
		       kind_names[k], r->handshakes, per_s, us, resumed,
		       r->client_failures + r->server_failures);
	fflush(stdout);
}

/* ---- --ops: the P-256 operations alone ---- */

#define OP_ROUNDS 200

enum op { OP_KEYGEN, OP_ECDH, OP_SIGN, OP_VERIFY, OPS };
static const char *const op_names[OPS] = {"keygen", "ecdh", "sign", "verify"};

struct p256 {
	ecc_key mine, peer;
	uint8_t hash[32], sig[80], secret[32];
	word32 sig_len;
};

static int op_once(struct p256 *p, enum op op)
{
	word32 len = sizeof p->secret;
	int verified = 0, rc;
	switch (op) {
	case OP_KEYGEN:
		wc_ecc_free(&p->mine);
		rc = wc_ecc_init(&p->mine);
		if (rc == 0)
			rc = wc_ecc_make_key_ex(&rng, 32, &p->mine, ECC_SECP256R1);
		return rc == 0 ? wc_ecc_set_rng(&p->mine, &rng) : rc;
	case OP_ECDH:
		return wc_ecc_shared_secret(&p->mine, &p->peer, p->secret, &len);
	case OP_SIGN:
		p->sig_len = sizeof p->sig;
		return wc_ecc_sign_hash(p->hash, sizeof p->hash, p->sig, &p->sig_len, &rng,
					&p->mine);
	default:
		rc = wc_ecc_verify_hash(p->sig, p->sig_len, p->hash, sizeof p->hash, &verified,
					&p->mine);
		return rc == 0 && verified == 1 ? 0 : -1;
	}
}

static int run_ops(const struct options *o)
{
	static struct p256 p;
	int rc = wc_ecc_init(&p.mine) || wc_ecc_init(&p.peer) ||
		 wc_ecc_make_key_ex(&rng, 32, &p.peer, ECC_SECP256R1) || op_once(&p, OP_KEYGEN) ||
		 op_once(&p, OP_SIGN);
	for (int op = 0; op < OPS && rc == 0; op++) {
		uint64_t t0 = thread_cpu_ns();
		for (int i = 0; i < OP_ROUNDS && rc == 0; i++)
			rc = op_once(&p, (enum op)op);
		double us = (double)(thread_cpu_ns() - t0) / 1e3 / OP_ROUNDS;
		if (rc == 0 && o->json)
			printf("{\"op\":\"%s\",\"curve\":\"P-256\",\"us\":%.2f}\n", op_names[op],
			       us);
		else if (rc == 0)
			printf("%-7s P-256 %8.1f us\n", op_names[op], us);
	}
	wc_ecc_free(&p.mine);
	wc_ecc_free(&p.peer);
	if (rc != 0)
		fprintf(stderr, "tlsceiling: a P-256 operation failed (%d)\n", rc);
	return rc == 0 ? 0 : -1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tlsceiling --server-cert F --server-key F --ca F --client-cert F\n"
		"                  --client-key F [--seconds S] [--handshakes N]\n"
		"                  [--kinds \"full13 resume13 full12\"] [--interleave N] [--json]\n"
		"       tlsceiling --ops [--json]\n"
		"Handshakes per second of server CPU, wolfSSL server and client in memory.\n"
		"--seconds: server CPU time per kind (default 2); --handshakes: at most N;\n"
		"--interleave: N connections in flight, stepped in turn (full kinds only;\n"
		"a failed handshake is counted and the run goes on).\n");
}

static int parse_kinds(struct options *o, char *list)
{
	memset(o->kinds, 0, sizeof o->kinds);
	for (char *save = NULL, *t = strtok_r(list, " ,", &save); t;
	     t = strtok_r(NULL, " ,", &save)) {
		int k = 0;
		while (k < KINDS && strcmp(t, kind_names[k]) != 0)
			k++;
		if (k == KINDS)
			return fail("unknown kind", t);
		o->kinds[k] = true;
	}
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{"server-cert", required_argument, NULL, 's'},
		{"server-key", required_argument, NULL, 'k'},
		{"ca", required_argument, NULL, 'a'},
		{"client-cert", required_argument, NULL, 'c'},
		{"client-key", required_argument, NULL, 'K'},
		{"seconds", required_argument, NULL, 't'},
		{"handshakes", required_argument, NULL, 'n'},
		{"kinds", required_argument, NULL, 'm'},
		{"json", no_argument, NULL, 'j'},
		{"ops", no_argument, NULL, 'o'},
		{"interleave", required_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	*o = (struct options){.seconds = 2, .max_handshakes = (unsigned long)-1};
	for (int k = 0; k < KINDS; k++)
		o->kinds[k] = true;
	int c;
	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (c) {
		case 's':
			o->server_cert = optarg;
			break;
		case 'k':
			o->server_key = optarg;
			break;
		case 'a':
			o->ca = optarg;
			break;
		case 'c':
			o->client_cert = optarg;
			break;
		case 'K':
			o->client_key = optarg;
			break;
		case 't':
			o->seconds = strtod(optarg, NULL);
			break;
		case 'n':
			o->max_handshakes = strtoul(optarg, NULL, 10);
			break;
		case 'm':
			if (parse_kinds(o, optarg) != 0)
				return -1;
			break;
		case 'j':
			o->json = true;
			break;
		case 'o':
			o->ops = true;
			break;
		case 'i':
			o->interleave = (unsigned)strtoul(optarg, NULL, 10);
			if (o->interleave == 0 || o->interleave > INTERLEAVE_MAX)
				return fail("--interleave: 1 to 256 connections", NULL);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (o->ops)
		return 0;
	if (!o->server_cert || !o->server_key || !o->ca || !o->client_cert || !o->client_key ||
	    o->seconds <= 0 || o->max_handshakes == 0) {
		usage(stderr);
		return -1;
	}
	if (o->interleave && o->kinds[RESUME13])
		return fail("--interleave: full handshakes only (--kinds \"full13 full12\")", NULL);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	if (parse_options(argc, argv, &o) != 0)
		return 2;
	if (wolfSSL_Init() != WOLFSSL_SUCCESS || wc_InitRng(&rng) != 0 ||
	    wc_RNG_GenerateBlock(&rng, ticket_key, sizeof ticket_key) != 0 ||
	    wc_RNG_GenerateBlock(&rng, ticket_name, sizeof ticket_name) != 0) {
		fail("wolfSSL initialisation failed", NULL);
		return 1;
	}
	if (o.ops) {
		int rc = run_ops(&o);
		wc_FreeRng(&rng);
		return rc == 0 ? 0 : 1;
	}
	WOLFSSL_CTX *sctx = server_ctx(&o);
	if (!sctx)
		return 1;
	int rc = 0;
	unsigned long failures = 0;
	for (int k = 0; k < KINDS && rc == 0; k++) {
		struct result r = {0};
		if (!o.kinds[k])
			continue;
		rc = run_kind(&o, sctx, (enum kind)k, &r);
		if (rc == 0)
			print_result(&o, (enum kind)k, &r);
		failures += r.client_failures + r.server_failures;
	}
	wolfSSL_CTX_free(sctx);
	wc_FreeRng(&rng);
	wolfSSL_Cleanup();
	return rc == 0 && failures == 0 ? 0 : 1;
}
