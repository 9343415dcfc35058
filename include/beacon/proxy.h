/*
 * proxy: the PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text
 * and v2 binary) that an L4 balancer sends before the client's bytes, so
 * that beacond learns the agent's address. A pure function over bytes: no
 * allocation, no state, bounded by PROXY_HEADER_MAX.
 */
#ifndef BEACON_PROXY_H
#define BEACON_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Which versions a listener takes: a bit each ([server] proxy_protocol). */
#define PROXY_ACCEPT_V1 1u
#define PROXY_ACCEPT_V2 2u

/* v1 lines are at most 107 bytes with their CRLF (the spec's bound). */
#define PROXY_V1_MAX 107
/* v2: the 16-byte fixed part and at most this many address and TLV bytes
 * (addresses take 36 at most; the rest is room for a balancer's TLVs). */
#define PROXY_V2_PAYLOAD_MAX 1024
#define PROXY_HEADER_MAX (16 + PROXY_V2_PAYLOAD_MAX)

enum proxy_status {
	PROXY_INCOMPLETE, /* a header's prefix so far: wait for more bytes */
	PROXY_DONE,	  /* a whole header: see struct proxy_header */
	PROXY_MALFORMED,  /* not a header we take: close (reason says why) */
};

struct proxy_header {
	size_t len; /* bytes the header took; the client's bytes follow */
	/* true for v2 LOCAL, v1 UNKNOWN and v2 AF_UNSPEC: the balancer speaks
	 * for itself (a health check), the connection keeps its own address */
	bool local;
	unsigned version;		/* 1 or 2 */
	struct sockaddr_storage source; /* AF_INET or AF_INET6, when !local */
	const char *reason;		/* PROXY_MALFORMED: why, a static string */
};

/* Parses the header at the start of `data` (`len` bytes so far), taking the
 * versions in `accept` (PROXY_ACCEPT_* bits). Never reads past `len`;
 * returns PROXY_INCOMPLETE only while `len` is below PROXY_HEADER_MAX. */
enum proxy_status proxy_parse(const uint8_t *data, size_t len, unsigned accept,
			      struct proxy_header *out);

#endif
