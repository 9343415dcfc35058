/*
 * The PROXY protocol header (beacon/proxy.h). Strict where the spec is:
 * v1 fields are separated by single spaces and end in CRLF within 107
 * bytes; v2 takes only version 2, LOCAL or PROXY, TCP over IPv4 or IPv6,
 * and TLVs that fit the declared length exactly. Anything else is
 * malformed: the balancer is ours to configure, so a header it did not
 * mean to send is an attack or a misconfiguration, not something to guess.
 */
#include "beacon/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[] = "PROXY ";

static enum proxy_status malformed(struct proxy_header *out, const char *reason)
{
	out->reason = reason;
	return PROXY_MALFORMED;
}

/* True when the `len` bytes so far are a prefix of `sig` (or hold all of it). */
static bool starts_like(const uint8_t *data, size_t len, const void *sig, size_t sig_len)
{
	return memcmp(data, sig, len < sig_len ? len : sig_len) == 0;
}

/* ---- v1 ---- */

/* The next space-separated field of [*p, end): false when empty or too
 * long for `out`. */
static bool v1_field(const char **p, const char *end, char *out, size_t cap)
{
	const char *s = *p;
	const char *e = memchr(s, ' ', (size_t)(end - s));
	if (!e)
		e = end;
	size_t n = (size_t)(e - s);
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	*p = e < end ? e + 1 : end;
	return true;
}

/* A port: 1 to 5 digits, no leading zero, at most 65535. */
static bool v1_port(const char *s, uint16_t *port)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

static enum proxy_status v1_parse(const uint8_t *data, size_t len, struct proxy_header *out)
{
	size_t scan = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	const uint8_t *lf = memchr(data, '\n', scan);
	if (!lf)
		return len < PROXY_V1_MAX ? PROXY_INCOMPLETE
					  : malformed(out, "v1 line without CRLF in 107 bytes");
	size_t line_len = (size_t)(lf - data) + 1;
	if (line_len < 2 || lf[-1] != '\r')
		return malformed(out, "v1 line not ended by CRLF");
	const char *p = (const char *)data + sizeof v1_sig - 1;
	const char *end = (const char *)lf - 1; /* the CR */
	out->len = line_len;
	out->version = 1;
	char proto[8], src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], sport[8], dport[8];
	if (!v1_field(&p, end, proto, sizeof proto))
		return malformed(out, "v1 protocol missing");
	if (!strcmp(proto, "UNKNOWN")) {
		out->local = true; /* the rest of the line is to be ignored */
		return PROXY_DONE;
	}
	int family = !strcmp(proto, "TCP4") ? AF_INET : !strcmp(proto, "TCP6") ? AF_INET6 : 0;
	if (!family)
		return malformed(out, "v1 protocol not TCP4, TCP6 or UNKNOWN");
	if (!v1_field(&p, end, src, sizeof src) || !v1_field(&p, end, dst, sizeof dst) ||
	    !v1_field(&p, end, sport, sizeof sport) || !v1_field(&p, end, dport, sizeof dport) ||
	    p != end || end[-1] == ' ')
		return malformed(out, "v1 line not 'PROXY TCPn SRC DST SPORT DPORT'");
	uint16_t sp, dp;
	uint8_t dst_addr[16];
	if (!v1_port(sport, &sp) || !v1_port(dport, &dp))
		return malformed(out, "v1 port not a number 0 to 65535");
	memset(&out->source, 0, sizeof out->source);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&out->source;
		if (inet_pton(AF_INET, src, &a->sin_addr) != 1 ||
		    inet_pton(AF_INET, dst, dst_addr) != 1)
			return malformed(out, "v1 TCP4 address not IPv4");
		a->sin_family = AF_INET;
		a->sin_port = htons(sp);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->source;
		if (inet_pton(AF_INET6, src, &a->sin6_addr) != 1 ||
		    inet_pton(AF_INET6, dst, dst_addr) != 1)
			return malformed(out, "v1 TCP6 address not IPv6");
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(sp);
	}
	return PROXY_DONE;
}

/* ---- v2 ---- */

/* TLVs (type, 16-bit length, value) must tile [p, end) exactly. */
static bool v2_tlvs_fit(const uint8_t *p, const uint8_t *end)
{
	while (p < end) {
		if (end - p < 3)
			return false;
		size_t n = (size_t)p[1] << 8 | p[2];
		if ((size_t)(end - p - 3) < n)
			return false;
		p += 3 + n;
	}
	return true;
}

static enum proxy_status v2_parse(const uint8_t *data, size_t len, struct proxy_header *out)
{
	if (len < 16)
		return PROXY_INCOMPLETE;
	unsigned version = data[12] >> 4, command = data[12] & 0xf;
	unsigned family = data[13] >> 4, transport = data[13] & 0xf;
	size_t payload = (size_t)data[14] << 8 | data[15];
	if (version != 2)
		return malformed(out, "v2 version not 2");
	if (command > 1)
		return malformed(out, "v2 command not LOCAL or PROXY");
	if (payload > PROXY_V2_PAYLOAD_MAX)
		return malformed(out, "v2 length over 1024 bytes");
	if (len < 16 + payload)
		return PROXY_INCOMPLETE;
	const uint8_t *p = data + 16, *end = p + payload;
	out->len = 16 + payload;
	out->version = 2;
	if (command == 0 || family == 0) {
		/* LOCAL: the balancer's own connection (a health check), or
		 * PROXY with AF_UNSPEC: its addresses are to be ignored. */
		out->local = true;
		return PROXY_DONE;
	}
	if (transport != 1 || (family != 1 && family != 2))
		return malformed(out, "v2 not TCP over IPv4 or IPv6");
	size_t addr_len = family == 1 ? 12 : 36;
	if (payload < addr_len)
		return malformed(out, "v2 length shorter than its addresses");
	if (!v2_tlvs_fit(p + addr_len, end))
		return malformed(out, "v2 TLVs do not fit the length");
	memset(&out->source, 0, sizeof out->source);
	if (family == 1) {
		struct sockaddr_in *a = (struct sockaddr_in *)&out->source;
		a->sin_family = AF_INET;
		memcpy(&a->sin_addr, p, 4);
		memcpy(&a->sin_port, p + 8, 2);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->source;
		a->sin6_family = AF_INET6;
		memcpy(&a->sin6_addr, p, 16);
		memcpy(&a->sin6_port, p + 32, 2);
	}
	return PROXY_DONE;
}

enum proxy_status proxy_parse(const uint8_t *data, size_t len, unsigned accept,
			      struct proxy_header *out)
{
	memset(out, 0, sizeof *out);
	if (len == 0)
		return PROXY_INCOMPLETE;
	bool v2 = (accept & PROXY_ACCEPT_V2) && starts_like(data, len, v2_sig, sizeof v2_sig);
	bool v1 = (accept & PROXY_ACCEPT_V1) && starts_like(data, len, v1_sig, sizeof v1_sig - 1);
	if (v2)
		return len < sizeof v2_sig ? PROXY_INCOMPLETE : v2_parse(data, len, out);
	if (v1)
		return len < sizeof v1_sig - 1 ? PROXY_INCOMPLETE : v1_parse(data, len, out);
	return malformed(out, accept == PROXY_ACCEPT_V1	  ? "no PROXY v1 header"
			      : accept == PROXY_ACCEPT_V2 ? "no PROXY v2 header"
							  : "no PROXY header");
}
