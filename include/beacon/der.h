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
#include <time.h>

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

static inline int der_two_digits(const uint8_t *s)
{
	if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
		return -1;
	return (s[0] - '0') * 10 + (s[1] - '0');
}

/* A Time's content, tag 0x17 UTCTime YYMMDDHHMMSSZ or 0x18 GeneralizedTime
 * YYYYMMDDHHMMSSZ (the RFC 5280 forms; any other is false), in seconds
 * since the epoch. timegm, not mktime: the time is UTC, and mktime also
 * stats /etc/localtime at every call. */
static inline bool der_time(uint8_t tag, struct der v, time_t *out)
{
	const uint8_t *s = v.p;
	int year;
	if (tag == 0x17 && v.n == 13) {
		int yy = der_two_digits(s);
		year = yy < 0 ? -1 : (yy < 50 ? 2000 + yy : 1900 + yy);
		s += 2;
	} else if (tag == 0x18 && v.n == 15) {
		int hi = der_two_digits(s), lo = der_two_digits(s + 2);
		year = hi < 0 || lo < 0 ? -1 : hi * 100 + lo;
		s += 4;
	} else {
		return false;
	}
	struct tm tm = {0};
	tm.tm_year = year - 1900;
	tm.tm_mon = der_two_digits(s) - 1;
	tm.tm_mday = der_two_digits(s + 2);
	tm.tm_hour = der_two_digits(s + 4);
	tm.tm_min = der_two_digits(s + 6);
	tm.tm_sec = der_two_digits(s + 8);
	if (year < 0 || s[10] != 'Z' || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 ||
	    tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60)
		return false;
	*out = timegm(&tm);
	return true;
}

#endif
