/*
 * Character classes and small slice helpers shared by the HTTP parsers.
 * Private to dataplane/http: plain ASCII tables, never the C locale, so a
 * parse gives the same answer on every host.
 */
#ifndef BEACON_HTTP_CHARS_H
#define BEACON_HTTP_CHARS_H

#include "beacon/http.h"

#include <stdbool.h>
#include <stddef.h>

/* tchar (RFC 9110 section 5.6.2): what methods, field names and codings are
 * made of. */
static inline bool http_is_tchar(unsigned char ch)
{
	if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
		return true;
	switch (ch) {
	case '!':
	case '#':
	case '$':
	case '%':
	case '&':
	case '\'':
	case '*':
	case '+':
	case '-':
	case '.':
	case '^':
	case '_':
	case '`':
	case '|':
	case '~':
		return true;
	default:
		return false;
	}
}

/* A byte allowed inside a field value: VCHAR, obs-text, SP and HTAB. NUL,
 * CR, LF, the other controls and DEL are refused. */
static inline bool http_is_value_char(unsigned char ch)
{
	return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

static inline unsigned char http_lower(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') ? (unsigned char)(ch - 'A' + 'a') : ch;
}

/* Case-insensitive compare of n bytes; `lit` is lower-case ASCII. */
static inline bool http_ieq_n(const char *p, const char *lit, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (http_lower((unsigned char)p[i]) != (unsigned char)lit[i])
			return false;
	return true;
}

/* True when slice `s` equals the lower-case literal `lit`, ignoring case. */
static inline bool http_slice_ieq(struct http_slice s, const char *lit, size_t lit_n)
{
	return s.n == lit_n && http_ieq_n(s.p, lit, lit_n);
}

#define HTTP_SLICE_IEQ(s, lit) http_slice_ieq((s), (lit), sizeof(lit) - 1)

static inline int http_hex_value(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = http_lower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

#endif
