/*
 * der: a bounded reader of DER (X.690) for the parts that read certificates
 * and CRLs from their own bytes: the certificate identity reader of the TLS
 * part and the CRL index of the trust part. One copy, so that both read
 * the same TLVs the same way.
 *
 * Definite lengths of at most 4 length bytes only, as DER requires; no
 * allocation, no recursion; a reader never reads past its window. Header
 * only: these are a few lines each, on hot parsing paths.
 */
#ifndef BEACON_DER_H
#define BEACON_DER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A window on DER bytes; reading advances p. */
struct der {
	const uint8_t *p;
	size_t n;
};

/* Reads one TLV: `val` gets the content, `whole` (may be NULL) tag to end. */
static inline bool der_read(struct der *in, uint8_t *tag, struct der *val, struct der *whole)
{
	if (in->n < 2 || (in->p[0] & 0x1f) == 0x1f)
		return false;
	size_t len = in->p[1], hdr = 2;
	if (len & 0x80) {
		size_t k = len & 0x7f;
		if (k == 0 || k > 4 || in->n < 2 + k)
			return false;
		len = 0;
		for (size_t i = 0; i < k; i++)
			len = len << 8 | in->p[2 + i];
		hdr += k;
	}
	if (len > in->n - hdr)
		return false;
	*tag = in->p[0];
	*val = (struct der){in->p + hdr, len};
	if (whole)
		*whole = (struct der){in->p, hdr + len};
	in->p += hdr + len;
	in->n -= hdr + len;
	return true;
}

/* One TLV with tag `want`; on any other, nothing is consumed. */
static inline bool der_expect(struct der *in, uint8_t want, struct der *val, struct der *whole)
{
	uint8_t tag;
	struct der save = *in;
	if (der_read(in, &tag, val, whole) && tag == want)
		return true;
	*in = save;
	return false;
}

static inline bool der_peek(const struct der *in, uint8_t tag)
{
	return in->n > 0 && in->p[0] == tag;
}

static inline bool der_equal(struct der a, const uint8_t *b, size_t n)
{
	return a.n == n && memcmp(a.p, b, n) == 0;
}

#endif
