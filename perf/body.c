/* Request bodies: agents upload compressed inventory files, so the bytes on
 * the wire are deflate output of XML-like text, not zeros (which TLS and disks
 * would treat as unrealistically cheap to move) and not a single repeated
 * block. The pool is made once; each upload sends a slice of it. */
#include "agentsim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* XML-ish inventory text of about len bytes, varied by a simple LCG. */
static size_t inventory_text(char *buf, size_t len, uint64_t *seed)
{
	static const char *const vendors[] = {
		"Microsoft", "Adobe",  "Oracle", "Mozilla", "Google",
		"VMware",    "Citrix", "Cisco",	 "IBM",	    "SAP",
	};
	size_t n = (size_t)snprintf(buf, len,
				    "<?xml version=\"1.0\"?>\n"
				    "<Inventory><Hardware/>\n");
	while (n + 256 < len) {
		*seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t r = *seed >> 16;
		n += (size_t)snprintf(
			buf + n, len - n,
			"<Package Vendor=\"%s\" Name=\"pkg-%05u\" "
			"Version=\"%u.%u.%u\" Size=\"%u\" Installed=\"20%02u-%02u-%02u\"/>\n",
			vendors[r % 10], (unsigned)(r >> 8) % 50000, (unsigned)(r >> 20) % 20,
			(unsigned)(r >> 28) % 100, (unsigned)(r >> 36) % 10000,
			(unsigned)(r >> 12) % 100000000, (unsigned)(r >> 40) % 25,
			1 + (unsigned)(r >> 44) % 12, 1 + (unsigned)(r >> 48) % 28);
	}
	n += (size_t)snprintf(buf + n, len - n, "</Inventory>\n");
	return n;
}

int body_pool_make(struct body_pool *pool, size_t want)
{
	enum { TEXT = 1 << 20 };
	char *text = malloc(TEXT);
	uint64_t seed = 0x5eed;

	want += 64 * 1024; /* room for random offsets into the pool */
	pool->bytes = malloc(want + compressBound(TEXT));
	pool->len = 0;
	if (!text || !pool->bytes)
		goto fail;
	while (pool->len < want) {
		size_t tlen = inventory_text(text, TEXT, &seed);
		uLongf out = compressBound(TEXT);
		if (compress2(pool->bytes + pool->len, &out, (const Bytef *)text, tlen, 6) != Z_OK)
			goto fail;
		pool->len += out;
	}
	free(text);
	return 0;
fail:
	free(text);
	free(pool->bytes);
	pool->bytes = NULL;
	pool->len = 0;
	return -1;
}

/* A known body, so that what the server stored can be compared byte for
 * byte (tests/integration/test_memif.py). */
int body_pool_load(struct body_pool *pool, const char *path)
{
	FILE *f = fopen(path, "rb");
	long len = -1;
	if (f && fseek(f, 0, SEEK_END) == 0)
		len = ftell(f);
	pool->len = 0;
	pool->bytes = len >= 0 ? malloc((size_t)len + 1) : NULL;
	if (!pool->bytes || fseek(f, 0, SEEK_SET) != 0 ||
	    fread(pool->bytes, 1, (size_t)len, f) != (size_t)len) {
		fprintf(stderr, "agentsim: cannot read --body-file %s\n", path);
		free(pool->bytes);
		pool->bytes = NULL;
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	pool->len = (size_t)len;
	return 0;
}
