/*
 * config values: the forms a value takes in beacond.conf, parsed apart from
 * the key table (config.c) so each can be tested and reused alone: sizes
 * with k/M/G/T, durations with ms/s/m/h/d (us where asked), ADDR:PORT
 * endpoints, and the edit distance behind "did you mean".
 */
#include "beacon/config.h"

#include "config-internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ---- sizes and durations ---- */

/* Parses the leading decimal digits of s; *end points past them. */
int config_parse_digits(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;
	const char *p = s;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (p == s)
		return -1;
	*out = v;
	*end = p;
	return 0;
}

static int mul_checked(uint64_t v, uint64_t mult, uint64_t *out)
{
	if (mult && v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
	uint64_t v, mult = 1;
	const char *p;
	if (config_parse_digits(s, &v, &p) < 0)
		return -1;
	if (*p) {
		const char *const units = "kmgt";
		const char *u = strchr(units, *p | 0x20);
		if (!u || p[1])
			return -1;
		for (const char *q = units; q <= u; q++)
			mult *= 1024;
	}
	return mul_checked(v, mult, out);
}

struct unit {
	const char *suffix;
	uint64_t us;
};

static const struct unit duration_units[] = {
	{"us", 1},	 {"ms", 1000},	       {"s", 1000000},
	{"", 1000000}, /* a bare number means seconds */
	{"m", 60000000}, {"h", 3600000000ull}, {"d", 86400000000ull},
};

/* A duration in microseconds; "us" is accepted only when `micro`. */
int config_parse_duration_us(const char *s, bool micro, uint64_t *out)
{
	uint64_t v;
	const char *p;
	if (config_parse_digits(s, &v, &p) < 0)
		return -1;
	for (size_t i = micro ? 0 : 1; i < sizeof duration_units / sizeof *duration_units; i++)
		if (!strcmp(p, duration_units[i].suffix))
			return mul_checked(v, duration_units[i].us, out);
	return -1;
}

int config_parse_duration_ms(const char *s, unsigned *out)
{
	uint64_t us;
	if (config_parse_duration_us(s, false, &us) < 0 || us / 1000 > UINT_MAX)
		return -1;
	*out = (unsigned)(us / 1000);
	return 0;
}

int config_parse_endpoint(const char *text, struct config_endpoint *out)
{
	const char *host = text, *colon;
	int family = AF_INET;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':')
			return -1;
		host = text + 1;
		colon = close + 1;
		family = AF_INET6;
	} else {
		colon = strchr(text, ':'); /* an IPv4 address has none */
		if (!colon)
			return -1;
	}
	size_t hostlen = (size_t)(colon - host) - (family == AF_INET6);
	uint64_t port;
	const char *end;
	if (hostlen == 0 || hostlen >= sizeof out->addr ||
	    config_parse_digits(colon + 1, &port, &end) < 0 || *end || port > 65535)
		return -1;
	memset(out, 0, sizeof *out);
	memcpy(out->addr, host, hostlen);
	out->addr[hostlen] = '\0';
	out->port = (uint16_t)port;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&out->sa;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->sa;
	if (family == AF_INET && inet_pton(AF_INET, out->addr, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(out->port);
		out->salen = sizeof *in4;
		return 0;
	}
	if (family == AF_INET6 && inet_pton(AF_INET6, out->addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(out->port);
		out->salen = sizeof *in6;
		return 0;
	}
	return -1;
}

/* ---- names ---- */

/* Edit distance of two short names (insertions, deletions, substitutions
 * and swaps of neighbours, case ignored; "tsl" is one edit from "tls").
 * Names longer than 63 count as far. */
unsigned config_name_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return UINT_MAX;
	unsigned d[64][64];
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			int ca = tolower((unsigned char)a[i - 1]),
			    cb = tolower((unsigned char)b[j - 1]);
			unsigned best = d[i - 1][j - 1] + (ca != cb);
			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
			    tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

/* A near miss is at most a third of the name away (two edits for most). */
bool config_near_miss(const char *typed, const char *known)
{
	size_t len = strlen(typed);
	unsigned limit = len < 6 ? 1 : (unsigned)(len / 3);
	return config_name_distance(typed, known) <= limit;
}
