/*
 * libFuzzer targets for CRL loading (control/trust/crl.c, revocation.c): the input becomes
 * a file in a CRL directory of its own, built with revocation_index_build
 * against one trusted issuer, the throwaway CA of crl_ca.h.
 *
 *   fuzz_crl         the input is the CRL file as is (DER, or PEM with one
 *                    or more blocks). Junk stops at the parse or at the
 *                    signature; the seeds are valid CRLs of that CA.
 *   fuzz_crl_resign  (-DFUZZ_CRL_RESIGN) the input is a tbsCertList; the
 *                    target signs it with the CA's key (ECDSA P-256,
 *                    SHA-256) and wraps it as a DER CRL, so every mutation
 *                    of a valid CRL's body gets past the signature check
 *                    and reaches the date checks, the revoked-entry parser
 *                    and the hash index. Seeds: corpus/crl_resign/, the
 *                    tbsCertList of each corpus/crl/ seed.
 *
 * Checks: an error names the file (the message starts with the CRL
 * directory); a built index is consistent (count, stats, one issuer with
 * one CRL) and answers lookups; nothing leaks.
 */
#include "fuzz_common.h"

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/signature.h>

#include "beacon/log.h"
#include "beacon/revocation.h"

#include "crl_ca.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_ERR); /* a stale CRL is a warning per input */
	return 0;
}

#ifdef FUZZ_CRL_RESIGN
static ecc_key ca_key;
static WC_RNG rng;
static bool signer_ready;

static void signer_init(void)
{
	word32 at = 0;
	CHECK(wc_ecc_init(&ca_key) == 0);
	CHECK(wc_EccPrivateKeyDecode(fuzz_ca_key_der, &at, &ca_key, sizeof fuzz_ca_key_der) == 0);
	CHECK(wc_InitRng(&rng) == 0);
	signer_ready = true;
}

static size_t der_len_put(uint8_t *out, size_t len)
{
	if (len < 0x80) {
		out[0] = (uint8_t)len;
		return 1;
	}
	size_t n = 0;
	for (size_t v = len; v; v >>= 8)
		n++;
	out[0] = (uint8_t)(0x80 | n);
	for (size_t i = 0; i < n; i++)
		out[1 + i] = (uint8_t)(len >> (8 * (n - 1 - i)));
	return 1 + n;
}

/* SEQUENCE { tbs, SEQUENCE { ecdsa-with-SHA256 }, BIT STRING { 0, sig } } */
static uint8_t *resign(const uint8_t *tbs, size_t tbs_len, size_t *out_len)
{
	static const uint8_t alg[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
				      0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
	uint8_t sig[160];
	word32 sig_len = sizeof sig;
	if (!signer_ready)
		signer_init();
	CHECK(wc_SignatureGenerate(WC_HASH_TYPE_SHA256, WC_SIGNATURE_TYPE_ECC, tbs, (word32)tbs_len,
				   sig, &sig_len, &ca_key, sizeof ca_key, &rng) == 0);
	uint8_t bits_hdr[8];
	bits_hdr[0] = 0x03;
	size_t bh = 1 + der_len_put(bits_hdr + 1, sig_len + 1);
	size_t body = tbs_len + sizeof alg + bh + 1 + sig_len;
	uint8_t *out = malloc(body + 10);
	CHECK(out);
	size_t n = 0;
	out[n++] = 0x30;
	n += der_len_put(out + n, body);
	memcpy(out + n, tbs, tbs_len);
	n += tbs_len;
	memcpy(out + n, alg, sizeof alg);
	n += sizeof alg;
	memcpy(out + n, bits_hdr, bh);
	n += bh;
	out[n++] = 0x00;
	memcpy(out + n, sig, sig_len);
	n += sig_len;
	*out_len = n;
	return out;
}
#endif

static void check_index(const struct revocation_index *idx, const uint8_t *data, size_t size)
{
	struct revocation_stats st;
	revocation_index_stats(idx, &st);
	CHECK(st.serials == revocation_index_count(idx));
	CHECK(st.issuers == 1 && revocation_index_issuer_count(idx) == 1);
	CHECK(st.crls >= 1);
	struct revocation_issuer_info info;
	revocation_index_issuer(idx, 0, &info);
	CHECK(info.name && strcmp(info.name, "Beacon Fuzz CRL CA") == 0);
	CHECK(info.crls == st.crls);
	CHECK(info.serials == st.serials);
	/* Lookups of serials cut from the input, and of the CA itself. */
	for (size_t off = 0; off + 1 < size && off < 64; off += 7) {
		size_t n = data[off] % (REVOCATION_SERIAL_MAX + 2);
		if (off + 1 + n > size)
			n = size - off - 1;
		enum revocation_status s =
			revocation_lookup(idx, info.name_sha256, data + off + 1, n);
		CHECK(s == REVOCATION_GOOD || s == REVOCATION_REVOKED || s == REVOCATION_STALE);
	}
	(void)revocation_lookup_cert(idx, fuzz_ca_der, sizeof fuzz_ca_der);
	(void)revocation_lookup_cert(idx, data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *file = data;
	size_t file_len = size;
	uint8_t *owned = NULL;
#ifdef FUZZ_CRL_RESIGN
	if (size == 0 || size > 1 << 20) /* nothing to sign; too big to matter */
		return 0;
	owned = resign(data, size, &file_len);
	file = owned;
#endif
	fuzz_write_file("fuzz.crl", file, file_len);
	const char *dir = fuzz_dir_get();
	struct revocation_issuer issuer = {fuzz_ca_der, sizeof fuzz_ca_der};
	enum crl_stale_policy policy = size % 2 ? CRL_STALE_REFUSE : CRL_STALE_WARN;
	struct revocation_index *idx = NULL;
	char err[512] = "";
	int rc = revocation_index_build(dir, &issuer, 1, policy, &idx, err, sizeof err);
	if (rc != 0) {
		CHECK(rc == -1 && !idx);
		CHECK(memchr(err, '\0', sizeof err));
		CHECK(strncmp(err, dir, strlen(dir)) == 0 || strcmp(err, "out of memory") == 0 ||
		      strncmp(err, "out of memory for", 17) == 0);
	} else {
		CHECK(idx);
		check_index(idx, data, size);
		revocation_index_free(idx);
	}
	free(owned);
	return 0;
}
