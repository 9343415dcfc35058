/*
 * libFuzzer target for the PROXY protocol header parser
 * (dataplane/net/proxy.c). The first byte picks the versions taken
 * (PROXY_ACCEPT_* bits, 0 read as both); the rest is what a peer sent.
 * Checks, besides ASan's never reading past the input:
 *   - DONE takes at most the input and at most PROXY_HEADER_MAX bytes, and
 *     names an IPv4 or IPv6 source unless local;
 *   - INCOMPLETE only below PROXY_HEADER_MAX bytes (no unbounded wait);
 *   - MALFORMED carries a reason;
 *   - the verdict depends on the header's bytes only: the header alone
 *     gives the same DONE, and every shorter prefix of it is INCOMPLETE.
 */
#include "fuzz_common.h"

#include "beacon/proxy.h"

#include <string.h>

static void check_consistent(const uint8_t *data, size_t size, unsigned accept,
			     const struct proxy_header *h)
{
	struct proxy_header again;
	CHECK(proxy_parse(data, h->len, accept, &again) == PROXY_DONE);
	CHECK(again.len == h->len && again.local == h->local && again.version == h->version);
	CHECK(memcmp(&again.source, &h->source, sizeof h->source) == 0);
	/* Prefixes: a few, not all (each call is linear). */
	size_t step = h->len / 16 + 1;
	for (size_t i = 0; i < h->len; i += step)
		CHECK(proxy_parse(data, i, accept, &again) == PROXY_INCOMPLETE);
	CHECK(proxy_parse(data, h->len - 1, accept, &again) == PROXY_INCOMPLETE);
	(void)size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned accept = data[0] & 3;
	if (!accept)
		accept = PROXY_ACCEPT_V1 | PROXY_ACCEPT_V2;
	data++, size--;
	/* A copy of exactly `size` bytes, so ASan sees any read past it. */
	uint8_t *in = malloc(size ? size : 1);
	CHECK(in);
	memcpy(in, data, size);
	struct proxy_header h;
	switch (proxy_parse(in, size, accept, &h)) {
	case PROXY_DONE:
		CHECK(h.len > 0 && h.len <= size && h.len <= PROXY_HEADER_MAX);
		CHECK(h.version == 1 || h.version == 2);
		CHECK((h.version == 1 ? PROXY_ACCEPT_V1 : PROXY_ACCEPT_V2) & accept);
		CHECK(h.local || h.source.ss_family == AF_INET || h.source.ss_family == AF_INET6);
		check_consistent(in, size, accept, &h);
		break;
	case PROXY_INCOMPLETE:
		CHECK(size < PROXY_HEADER_MAX);
		break;
	case PROXY_MALFORMED:
		CHECK(h.reason && h.reason[0]);
		break;
	}
	free(in);
	return 0;
}
