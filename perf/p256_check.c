/*
 * p256_check: does this build's P-256 ever make a bad signature, reject a
 * good one, or agree a wrong shared secret? With the same wolfSSL build and
 * assembly as beacond's, each iteration
 *   - signs a random digest with one of a set of keys and verifies the
 *     signature, and OpenSSL's libcrypto (an implementation that shares no
 *     code with it) verifies it too: a handshake's CertificateVerify;
 *   - makes a fresh key pair and computes its ECDH secret with the set's
 *     key both ways round, and OpenSSL computes it a third time: a
 *     handshake's key share, from which both ends derive their keys.
 * Every disagreement is printed with its inputs, so a case can be
 * replayed ("A rare handshake failure" in perf/README.md).
 *
 *   p256_check [--iterations N] [--keys K] [--flip M]
 *
 * --flip M flips one bit of every M-th signature and of one of its secrets
 * before they are checked: the checker's own test (both libraries must
 * reject those signatures, the secrets must differ, and it must say so).
 * Prints one JSON line of counts; exits 1 if any signature was rejected or
 * could not be made or any secret differed, 2 on bad arguments or set-up.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* EC_KEY: the shortest way to a raw key */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/random.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdh.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P256_BYTES 32
#define POINT_BYTES (1 + 2 * P256_BYTES) /* uncompressed: 04 || x || y */
#define MAX_KEYS 1024

struct key {
	ecc_key wolf;
	EC_KEY *ossl;
	unsigned char point[POINT_BYTES];
};

struct counts {
	unsigned long long iterations, sign_errors, wolf_rejects, ossl_rejects;
	unsigned long long flip_every, flipped;
	unsigned long long ecdh_errors, ecdh_mismatches;
};

static void print_hex(const char *name, const unsigned char *p, size_t n)
{
	printf("  %s ", name);
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

/* --flip: this iteration's signature and secret get a bit flipped. */
static bool flip_due(const struct counts *c)
{
	return c->flip_every && c->iterations % c->flip_every == 0;
}

/* A fresh wolfSSL key, and the same public point as an OpenSSL key. */
static int key_make(struct key *k, WC_RNG *rng)
{
	word32 len = sizeof k->point;
	/* the shared secret's blinding draws on it (ECC_TIMING_RESISTANT) */
	if (wc_ecc_init(&k->wolf) != 0 || wc_ecc_set_rng(&k->wolf, rng) != 0 ||
	    wc_ecc_make_key_ex(rng, P256_BYTES, &k->wolf, ECC_SECP256R1) != 0 ||
	    wc_ecc_export_x963(&k->wolf, k->point, &len) != 0 || len != POINT_BYTES)
		return -1;
	k->ossl = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	return k->ossl && EC_KEY_oct2key(k->ossl, k->point, len, NULL) == 1 ? 0 : -1;
}

/* One digest signed and checked by both; false when either rejected. */
static bool check_one(struct key *k, WC_RNG *rng, struct counts *c)
{
	unsigned char digest[P256_BYTES], sig[ECC_MAX_SIG_SIZE];
	word32 sig_len = sizeof sig;
	c->iterations++;
	if (wc_RNG_GenerateBlock(rng, digest, sizeof digest) != 0 ||
	    wc_ecc_sign_hash(digest, sizeof digest, sig, &sig_len, rng, &k->wolf) != 0) {
		c->sign_errors++;
		return false;
	}
	if (flip_due(c)) {
		/* a bit of s, the DER's last byte: the signature stays well formed */
		sig[sig_len - 1] ^= 0x01;
		c->flipped++;
	}
	int verified = 0;
	bool wolf_ok =
		wc_ecc_verify_hash(sig, sig_len, digest, sizeof digest, &verified, &k->wolf) == 0 &&
		verified == 1;
	bool ossl_ok = ECDSA_verify(0, digest, sizeof digest, sig, (int)sig_len, k->ossl) == 1;
	c->wolf_rejects += !wolf_ok;
	c->ossl_rejects += !ossl_ok;
	if (wolf_ok && ossl_ok)
		return true;
	printf("iteration %llu: wolfSSL %s, OpenSSL %s\n", c->iterations,
	       wolf_ok ? "accepts" : "rejects", ossl_ok ? "accepts" : "rejects");
	print_hex("public key", k->point, sizeof k->point);
	print_hex("digest", digest, sizeof digest);
	print_hex("signature", sig, sig_len);
	return false;
}

/* OpenSSL's ECDH of wolfSSL key e's private scalar with k's public point. */
static int ossl_secret(ecc_key *e, const struct key *k, unsigned char out[P256_BYTES])
{
	unsigned char scalar[P256_BYTES];
	word32 len = sizeof scalar;
	if (wc_ecc_export_private_only(e, scalar, &len) != 0 || len != P256_BYTES)
		return -1;
	EC_KEY *mine = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	BIGNUM *d = BN_bin2bn(scalar, (int)len, NULL);
	int n = mine && d && EC_KEY_set_private_key(mine, d) == 1
			? ECDH_compute_key(out, P256_BYTES, EC_KEY_get0_public_key(k->ossl), mine,
					   NULL)
			: -1;
	BN_clear_free(d);
	EC_KEY_free(mine);
	return n == P256_BYTES ? 0 : -1;
}

/* A fresh key pair's secret with k: wolfSSL both ways round, and OpenSSL;
 * false when they are not all one. */
static bool check_ecdh(struct key *k, WC_RNG *rng, struct counts *c)
{
	ecc_key e;
	unsigned char ours[P256_BYTES], theirs[P256_BYTES], ossl[P256_BYTES];
	word32 ours_len = sizeof ours, theirs_len = sizeof theirs;
	unsigned char e_point[POINT_BYTES];
	word32 e_len = sizeof e_point;
	bool made = wc_ecc_init(&e) == 0 && wc_ecc_set_rng(&e, rng) == 0 &&
		    wc_ecc_make_key_ex(rng, P256_BYTES, &e, ECC_SECP256R1) == 0 &&
		    wc_ecc_export_x963(&e, e_point, &e_len) == 0 &&
		    wc_ecc_shared_secret(&e, &k->wolf, ours, &ours_len) == 0 &&
		    wc_ecc_shared_secret(&k->wolf, &e, theirs, &theirs_len) == 0 &&
		    ossl_secret(&e, k, ossl) == 0;
	if (made && flip_due(c))
		theirs[0] ^= 0x01;
	bool same = made && ours_len == P256_BYTES && theirs_len == P256_BYTES &&
		    memcmp(ours, theirs, P256_BYTES) == 0 && memcmp(ours, ossl, P256_BYTES) == 0;
	if (!made)
		c->ecdh_errors++;
	else if (!same) {
		c->ecdh_mismatches++;
		unsigned char scalar[P256_BYTES];
		word32 len = sizeof scalar;
		printf("iteration %llu: ECDH secrets differ\n", c->iterations);
		if (wc_ecc_export_private_only(&e, scalar, &len) == 0)
			print_hex("fresh private key", scalar, len);
		print_hex("fresh public key", e_point, e_len);
		print_hex("set's public key", k->point, sizeof k->point);
		print_hex("wolfSSL, fresh x set", ours, ours_len);
		print_hex("wolfSSL, set x fresh", theirs, theirs_len);
		print_hex("OpenSSL", ossl, sizeof ossl);
	}
	wc_ecc_free(&e);
	return same;
}

static int parse_args(int argc, char **argv, unsigned long long *iterations, unsigned *keys,
		      unsigned long long *flip_every)
{
	static const struct option opts[] = {{"iterations", required_argument, NULL, 'n'},
					     {"keys", required_argument, NULL, 'k'},
					     {"flip", required_argument, NULL, 'f'},
					     {0}};
	int opt;
	char *end;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'n')
			*iterations = strtoull(optarg, &end, 10);
		else if (opt == 'k')
			*keys = (unsigned)strtoul(optarg, &end, 10);
		else if (opt == 'f')
			*flip_every = strtoull(optarg, &end, 10);
		else
			return -1;
		if (*end)
			return -1;
	}
	return optind == argc && *iterations > 0 && *keys > 0 && *keys <= MAX_KEYS ? 0 : -1;
}

int main(int argc, char **argv)
{
	unsigned long long iterations = 100000;
	unsigned nkeys = 64;
	struct counts c = {0};
	if (parse_args(argc, argv, &iterations, &nkeys, &c.flip_every) < 0) {
		fprintf(stderr,
			"usage: p256_check [--iterations N] [--keys K (1 to %d)] [--flip M]\n",
			MAX_KEYS);
		return 2;
	}
	static struct key keys[MAX_KEYS];
	WC_RNG rng;
	if (wc_InitRng(&rng) != 0) {
		fprintf(stderr, "p256_check: no random number generator\n");
		return 2;
	}
	for (unsigned i = 0; i < nkeys; i++)
		if (key_make(&keys[i], &rng) != 0) {
			fprintf(stderr, "p256_check: cannot make key %u\n", i);
			return 2;
		}
	bool all_ok = true;
	for (unsigned long long i = 0, k = 0; i < iterations; i++, k = k + 1 < nkeys ? k + 1 : 0)
		all_ok &= check_one(&keys[k], &rng, &c) & check_ecdh(&keys[k], &rng, &c);
	printf("{\"iterations\":%llu,\"keys\":%u,\"flipped\":%llu,\"sign_errors\":%llu,"
	       "\"wolfssl_rejects\":%llu,\"openssl_rejects\":%llu,\"ecdh_errors\":%llu,"
	       "\"ecdh_mismatches\":%llu,\"wolfssl\":\"%s\"}\n",
	       c.iterations, nkeys, c.flipped, c.sign_errors, c.wolf_rejects, c.ossl_rejects,
	       c.ecdh_errors, c.ecdh_mismatches, LIBWOLFSSL_VERSION_STRING);
	for (unsigned i = 0; i < nkeys; i++) {
		wc_ecc_free(&keys[i].wolf);
		EC_KEY_free(keys[i].ossl);
	}
	wc_FreeRng(&rng);
	return all_ok ? 0 : 1;
}
