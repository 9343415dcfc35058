/*
 * Session ticket keys and the ticket callback. A ticket is the wolfSSL
 * internal ticket followed by our own identity blob (struct
 * ticket_identity in tls-internal.h),
 * sealed with AES-256-GCM under the current key; the key's name is the GCM
 * additional data. Decryption accepts the current and the previous key and
 * asks wolfSSL to issue a fresh ticket when the previous one was used.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/random.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "beacon/log.h"
#include "tls-internal.h"
#include "beacon/tls.h"

#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

struct ticket_key {
	uint8_t name[WOLFSSL_TICKET_NAME_SZ];
	uint8_t key[32];
	bool valid;
};

/* Rotation is rare and lookups are short: one mutex is cheaper to reason
 * about than anything cleverer, and never held across I/O. */
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
#define TICKET_KEYS 4
static struct ticket_key keys[TICKET_KEYS]; /* [0] encrypts; all decrypt */

static _Thread_local WC_RNG *thread_rng;
static pthread_key_t rng_key;
static pthread_once_t rng_key_once = PTHREAD_ONCE_INIT;

static void rng_release(void *p)
{
	wc_FreeRng(p);
	free(p);
}

static void rng_key_create(void)
{
	(void)pthread_key_create(&rng_key, rng_release);
}

int tls_random(uint8_t *out, size_t len)
{
	if (!thread_rng) {
		pthread_once(&rng_key_once, rng_key_create);
		WC_RNG *rng = calloc(1, sizeof *rng);
		if (!rng || wc_InitRng(rng) != 0) {
			free(rng);
			return -1;
		}
		thread_rng = rng;
		/* Released when the thread exits (worker stop). */
		(void)pthread_setspecific(rng_key, rng);
	}
	return wc_RNG_GenerateBlock(thread_rng, out, (word32)len) == 0 ? 0 : -1;
}

/* Makes `fresh` the current key; older ones shift down, the oldest goes. */
static void ticket_key_push(const struct ticket_key *fresh)
{
	pthread_mutex_lock(&keys_lock);
	memmove(&keys[1], &keys[0], sizeof keys[0] * (TICKET_KEYS - 1));
	keys[0] = *fresh;
	pthread_mutex_unlock(&keys_lock);
}

int tls_tickets_rotate(void)
{
	struct ticket_key fresh = {.valid = true};
	if (tls_random(fresh.name, sizeof fresh.name) != 0 ||
	    tls_random(fresh.key, sizeof fresh.key) != 0)
		return -1;
	ticket_key_push(&fresh);
	return 0;
}

int tls_tickets_new_key(char *err, size_t errlen)
{
	if (tls_tickets_rotate() != 0) {
		snprintf(err, errlen, "tickets: random number generator failed");
		return -1;
	}
	return 0;
}

static int hex_nibble(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int parse_key_line(const char *line, struct ticket_key *k)
{
	uint8_t raw[sizeof k->name + sizeof k->key];
	for (size_t i = 0; i < sizeof raw; i++) {
		int hi = hex_nibble((unsigned char)line[2 * i]);
		int lo = hi < 0 ? -1 : hex_nibble((unsigned char)line[2 * i + 1]);
		if (lo < 0)
			return -1;
		raw[i] = (uint8_t)(hi << 4 | lo);
	}
	const char *rest = line + 2 * sizeof raw;
	if (*rest && *rest != '\n' && *rest != '\r' && *rest != ' ')
		return -1;
	memcpy(k->name, raw, sizeof k->name);
	memcpy(k->key, raw + sizeof k->name, sizeof k->key);
	k->valid = true;
	return 0;
}

int tls_tickets_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "ticket_key_file %s: %s", path, strerror(errno));
		return -1;
	}
	struct ticket_key loaded[TICKET_KEYS] = {0};
	char line[256];
	unsigned n = 0, lineno = 0;
	int rc = 0;
	while (rc == 0 && fgets(line, sizeof line, f)) {
		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (n == TICKET_KEYS) {
			snprintf(err, errlen, "%s:%u: more than %d keys", path, lineno,
				 TICKET_KEYS);
			rc = -1;
		} else if (parse_key_line(line, &loaded[n]) != 0) {
			snprintf(err, errlen,
				 "%s:%u: a key is 96 hex digits (16-byte name, 32-byte key)", path,
				 lineno);
			rc = -1;
		} else {
			n++;
		}
	}
	fclose(f);
	if (rc == 0 && n == 0) {
		snprintf(err, errlen, "ticket_key_file %s: no keys", path);
		rc = -1;
	}
	if (rc != 0)
		return -1;
	pthread_mutex_lock(&keys_lock);
	memcpy(keys, loaded, sizeof keys);
	pthread_mutex_unlock(&keys_lock);
	return 0;
}

unsigned tls_tickets_count(void)
{
	unsigned n = 0;
	pthread_mutex_lock(&keys_lock);
	for (int i = 0; i < TICKET_KEYS; i++)
		n += keys[i].valid;
	pthread_mutex_unlock(&keys_lock);
	return n;
}

/* Copies the key named `name` out of the table; returns its slot or -1. */
static int ticket_key_find(const uint8_t *name, struct ticket_key *out)
{
	int slot = -1;
	pthread_mutex_lock(&keys_lock);
	for (int i = 0; i < TICKET_KEYS; i++) {
		if (keys[i].valid && memcmp(keys[i].name, name, sizeof keys[i].name) == 0) {
			*out = keys[i];
			slot = i;
			break;
		}
	}
	pthread_mutex_unlock(&keys_lock);
	return slot;
}

/* AES-256-GCM in place over a ticket; the key's name is the additional
 * data, so a ticket cannot be replayed under another key. 0 or non-zero. */
static int ticket_gcm(const struct ticket_key *k, bool seal, uint8_t *ticket, int len,
		      const uint8_t *iv, uint8_t *tag)
{
	Aes aes;
	int rc = wc_AesInit(&aes, NULL, INVALID_DEVID);
	if (rc == 0)
		rc = wc_AesGcmSetKey(&aes, k->key, sizeof k->key);
	if (rc == 0 && seal)
		rc = wc_AesGcmEncrypt(&aes, ticket, ticket, (word32)len, iv, GCM_IV_LEN, tag,
				      GCM_TAG_LEN, k->name, WOLFSSL_TICKET_NAME_SZ);
	else if (rc == 0)
		rc = wc_AesGcmDecrypt(&aes, ticket, ticket, (word32)len, iv, GCM_IV_LEN, tag,
				      GCM_TAG_LEN, k->name, WOLFSSL_TICKET_NAME_SZ);
	wc_AesFree(&aes);
	return rc;
}

static int ticket_seal(struct tls_session *s, uint8_t name[WOLFSSL_TICKET_NAME_SZ],
		       uint8_t iv[WOLFSSL_TICKET_IV_SZ], uint8_t mac[WOLFSSL_TICKET_MAC_SZ],
		       uint8_t *ticket, int in_len, int *out_len)
{
	struct ticket_key k;
	pthread_mutex_lock(&keys_lock);
	k = keys[0];
	pthread_mutex_unlock(&keys_lock);
	if (!k.valid)
		return WOLFSSL_TICKET_RET_FATAL;

	/* Room for our blob was reserved at build time
	 * (WOLFSSL_TICKET_EXTRA_PADDING_SZ); *out_len says how much. */
	size_t blob = tls_ticket_blob_write(s, ticket + in_len, (size_t)(*out_len - in_len));
	if (blob == 0)
		return WOLFSSL_TICKET_RET_FATAL;
	int total = in_len + (int)blob;

	memcpy(name, k.name, WOLFSSL_TICKET_NAME_SZ);
	memset(iv, 0, WOLFSSL_TICKET_IV_SZ);
	memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
	if (tls_random(iv, GCM_IV_LEN) != 0)
		return WOLFSSL_TICKET_RET_FATAL;
	if (ticket_gcm(&k, true, ticket, total, iv, mac) != 0)
		return WOLFSSL_TICKET_RET_FATAL;
	*out_len = total;
	return WOLFSSL_TICKET_RET_OK;
}

static int ticket_open(struct tls_session *s, const uint8_t *name, const uint8_t *iv,
		       const uint8_t *mac, uint8_t *ticket, int in_len, int *out_len)
{
	struct ticket_key k;
	int slot = ticket_key_find(name, &k);
	if (slot < 0)
		return WOLFSSL_TICKET_RET_REJECT; /* unknown or expired key: full handshake */
	if (ticket_gcm(&k, false, ticket, in_len, iv, (uint8_t *)mac) != 0)
		return WOLFSSL_TICKET_RET_REJECT;

	struct ticket_identity id;
	size_t blob = tls_ticket_blob_read(ticket, (size_t)in_len, &id);
	/* Every ticket of a ClientHello is opened here, also those wolfSSL
	 * will not resume: this one is only offered, not taken (see
	 * tls_resumption_offered). A refused one means a full handshake. */
	bool ok = blob != 0 && tls_resumption_offered(s, &id);
	explicit_bzero(&id, sizeof id);
	if (!ok)
		return WOLFSSL_TICKET_RET_REJECT;
	*out_len = in_len - (int)blob;
	return slot == 0 ? WOLFSSL_TICKET_RET_OK : WOLFSSL_TICKET_RET_CREATE;
}

int tls_ticket_cb(WOLFSSL *ssl, unsigned char key_name[WOLFSSL_TICKET_NAME_SZ],
		  unsigned char iv[WOLFSSL_TICKET_IV_SZ], unsigned char mac[WOLFSSL_TICKET_MAC_SZ],
		  int enc, unsigned char *ticket, int in_len, int *out_len, void *ctx)
{
	(void)ctx;
	struct tls_session *s = wolfSSL_GetIOReadCtx(ssl);
	if (!s)
		return WOLFSSL_TICKET_RET_FATAL;
	if (enc)
		return ticket_seal(s, key_name, iv, mac, ticket, in_len, out_len);
	int rc = ticket_open(s, key_name, iv, mac, ticket, in_len, out_len);
	/* "Resume, and issue a fresh ticket" exists only in TLS 1.2; TLS 1.3
	 * refuses to resume on it, and issues a fresh ticket after every
	 * handshake anyway. */
	if (rc == WOLFSSL_TICKET_RET_CREATE && wolfSSL_version(ssl) == TLS1_3_VERSION)
		rc = WOLFSSL_TICKET_RET_OK;
	return rc;
}
