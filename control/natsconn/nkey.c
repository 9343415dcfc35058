/*
 * A user's nkey public key from its seed (nkey.h). cnats signs the
 * server's nonce from a seed file itself, but it asks for the public key
 * too, which an operator should not have to copy into beacond.conf: it
 * is part of what the seed determines. The Ed25519 arithmetic is
 * OpenSSL's libcrypto, which libnats already loads for its own TLS.
 */
#include "nkey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* nkeys' prefix bytes: the type sits in the top five bits. */
#define PREFIX_SEED (18u << 3)
#define PREFIX_USER (20u << 3)

#define KEY_BYTES 32
#define SEED_RAW (2 + KEY_BYTES + 2)   /* two prefix bytes, the seed, CRC16 */
#define PUBLIC_RAW (1 + KEY_BYTES + 2) /* prefix byte, the key, CRC16 */
#define SEED_CHARS 58		       /* base32 of SEED_RAW, unpadded */

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* CRC-16/XMODEM, the checksum every nkey carries. */
static uint16_t crc16(const uint8_t *p, size_t n)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
					     : (uint16_t)(crc << 1);
	}
	return crc;
}

/* Decodes exactly out_len bytes from unpadded base32; 0, or -1 on a
 * character outside the alphabet or a length that does not match. */
static int b32_decode(const char *s, size_t len, uint8_t *out, size_t out_len)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		const char *c = s[i] ? strchr(b32, s[i]) : NULL;
		if (!c)
			return -1;
		acc = (acc << 5) | (uint32_t)(c - b32);
		bits += 5;
		if (bits >= 8) {
			bits -= 8;
			if (n == out_len)
				return -1;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	return n == out_len ? 0 : -1;
}

static void b32_encode(const uint8_t *p, size_t n, char *out)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | p[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			out[o++] = b32[(acc >> bits) & 31];
		}
	}
	if (bits)
		out[o++] = b32[(acc << (5 - bits)) & 31];
	out[o] = '\0';
}

/* The first word of text that reads as a user seed ("SU" and 56 more
 * base32 characters): a bare seed file, or one inside nk's or nsc's
 * decorated blocks. */
static const char *find_user_seed(const char *text)
{
	for (const char *p = strstr(text, "SU"); p; p = strstr(p + 1, "SU")) {
		if (p > text && strchr(b32, p[-1]))
			continue; /* inside a longer word */
		if (strspn(p, b32) == SEED_CHARS)
			return p;
	}
	return NULL;
}

static int ed25519_public(const uint8_t seed[KEY_BYTES], uint8_t pub[KEY_BYTES])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, KEY_BYTES);
	size_t len = KEY_BYTES;
	int ok = k && EVP_PKEY_get_raw_public_key(k, pub, &len) == 1 && len == KEY_BYTES;
	EVP_PKEY_free(k);
	return ok ? 0 : -1;
}

int nkey_user_public(const char *text, char out[NKEY_PUBLIC_CHARS + 1])
{
	const char *s = find_user_seed(text);
	uint8_t raw[SEED_RAW];
	if (!s || b32_decode(s, SEED_CHARS, raw, sizeof raw) != 0)
		return -1;
	uint16_t want = (uint16_t)(raw[SEED_RAW - 2] | raw[SEED_RAW - 1] << 8);
	int rc = -1;
	uint8_t pub[PUBLIC_RAW];
	/* Seed prefix: the seed type, then the key's type split over two bytes. */
	if (crc16(raw, SEED_RAW - 2) != want || (raw[0] & 0xf8) != PREFIX_SEED ||
	    (uint8_t)(((raw[0] & 7) << 5) | (raw[1] >> 3)) != PREFIX_USER)
		goto leave;
	pub[0] = PREFIX_USER;
	if (ed25519_public(raw + 2, pub + 1) != 0)
		goto leave;
	uint16_t crc = crc16(pub, 1 + KEY_BYTES);
	pub[PUBLIC_RAW - 2] = (uint8_t)(crc & 0xff);
	pub[PUBLIC_RAW - 1] = (uint8_t)(crc >> 8);
	b32_encode(pub, sizeof pub, out);
	rc = 0;
leave:
	OPENSSL_cleanse(raw, sizeof raw);
	return rc;
}
