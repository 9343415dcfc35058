/*
 * sigcache: the ECDSA certificate signatures beacond has verified, so
 * that an agent that comes back for a full handshake does not pay again for
 * its CA's signature on its certificate (an ECDSA verification: two scalar
 * multiplications, the costliest public-key operation of the handshake).
 *
 * wolfSSL asks before it runs an ECDSA certificate signature check and
 * tells after one passed (scripts/wolfssl-patches/sig-cache.patch).
 * Verification is a pure function of (digest, signature, issuer key), so an
 * entry is SHA-256 over exactly those three, each with its length: a hit
 * means these very bytes passed before. Only passes are stored, so no input
 * can make the cache answer yes for a signature that does not verify.
 * Everything else about the certificate is judged again at every
 * handshake: wolfSSL looks the issuer up in today's CA set and checks the
 * dates and constraints, and tls's verify callback checks revocation, the
 * block list, usage and identity. The client's CertificateVerify is not a
 * certificate check and never comes here: the possession of the key is
 * proven at every handshake.
 *
 * One table for the process, so that an agent is known whichever worker
 * takes its next connection: 65,536 slots of 40 bytes (2.5 MiB), direct
 * mapped, a newer entry replacing an older one in its slot. Each slot is a
 * seqlock: readers never wait, a writer that finds its slot being written
 * leaves it (the entry is only a saving).
 */
#include "tls-internal.h"

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define SIG_CACHE_SLOTS 65536 /* a power of two */
#define SIG_KEY_WORDS 4	      /* SHA-256 */

struct sig_slot {
	atomic_uint seq; /* odd while written */
	atomic_uint_fast64_t key[SIG_KEY_WORDS];
};

static struct sig_slot slots[SIG_CACHE_SLOTS];
static atomic_uint_fast64_t cache_hits, cache_misses;

static int hash_part(wc_Sha256 *h, const uint8_t *p, uint32_t n)
{
	uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
	return wc_Sha256Update(h, len, sizeof len) != 0 || wc_Sha256Update(h, p, n) != 0 ? -1 : 0;
}

static int sig_cache_key(const uint8_t *sig, uint32_t sig_len, const uint8_t *digest,
			 uint32_t digest_len, const uint8_t *key, uint32_t key_len,
			 uint64_t out[SIG_KEY_WORDS])
{
	wc_Sha256 h;
	uint8_t sum[WC_SHA256_DIGEST_SIZE];
	if (wc_InitSha256(&h) != 0)
		return -1;
	int rc = 0;
	if (hash_part(&h, digest, digest_len) != 0 || hash_part(&h, sig, sig_len) != 0 ||
	    hash_part(&h, key, key_len) != 0 || wc_Sha256Final(&h, sum) != 0)
		rc = -1;
	wc_Sha256Free(&h);
	memcpy(out, sum, sizeof sum);
	return rc;
}

static bool slot_holds(struct sig_slot *sl, const uint64_t k[SIG_KEY_WORDS])
{
	unsigned before = atomic_load_explicit(&sl->seq, memory_order_acquire);
	if (before & 1)
		return false;
	bool same = true;
	for (int i = 0; i < SIG_KEY_WORDS; i++)
		same &= atomic_load_explicit(&sl->key[i], memory_order_relaxed) == k[i];
	atomic_thread_fence(memory_order_acquire);
	return same && atomic_load_explicit(&sl->seq, memory_order_relaxed) == before;
}

static void slot_store(struct sig_slot *sl, const uint64_t k[SIG_KEY_WORDS])
{
	unsigned seq = atomic_load_explicit(&sl->seq, memory_order_relaxed);
	if (seq & 1)
		return; /* another thread is writing it */
	if (!atomic_compare_exchange_strong_explicit(&sl->seq, &seq, seq + 1, memory_order_acquire,
						     memory_order_relaxed))
		return;
	atomic_thread_fence(memory_order_release);
	for (int i = 0; i < SIG_KEY_WORDS; i++)
		atomic_store_explicit(&sl->key[i], k[i], memory_order_relaxed);
	atomic_store_explicit(&sl->seq, seq + 2, memory_order_release);
}

/* wolfSSL's wc_CertSigCacheCb: store 0 asks (1: these bytes passed
 * before), store 1 tells of a pass. */
static int sig_cache_cb(int store, const byte *sig, word32 sig_len, const byte *digest,
			word32 digest_len, const byte *key, word32 key_len)
{
	uint64_t k[SIG_KEY_WORDS];
	if (sig_cache_key(sig, sig_len, digest, digest_len, key, key_len, k) != 0)
		return 0;
	struct sig_slot *sl = &slots[k[0] & (SIG_CACHE_SLOTS - 1)];
	if (store) {
		slot_store(sl, k);
		return 0;
	}
	bool hit = slot_holds(sl, k);
	atomic_fetch_add_explicit(hit ? &cache_hits : &cache_misses, 1, memory_order_relaxed);
	return hit ? 1 : 0;
}

void tls_sig_cache_start(void)
{
	wc_SetCertSigCache(sig_cache_cb);
}

void tls_sig_cache_counts(uint64_t *hits, uint64_t *misses)
{
	*hits = atomic_load_explicit(&cache_hits, memory_order_relaxed);
	*misses = atomic_load_explicit(&cache_misses, memory_order_relaxed);
}
