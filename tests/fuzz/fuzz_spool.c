/*
 * libFuzzer target for what store recovery reads back from disk: the 48-byte
 * record header of a spool segment (record_header_decode, used by recover.c
 * to check every indexed record), the names found in DATA/spool/ (segment
 * files and worker directories), and the LMDB values of the index
 * (upload_decode, segment_row_decode, device_decode), which a torn or
 * tampered data directory may hold. Checks:
 *   - a header that decodes encodes back to the same 32 significant bytes,
 *     and any single-bit change of those bytes is refused;
 *   - a parsed segment name is the name spool_segment_path makes;
 *   - the index decoders never read past the value and leave terminated
 *     strings.
 */
#include "fuzz_common.h"

#include "../../dataplane/store/store-internal.h"

#include <string.h>

static void fuzz_header(const uint8_t *data, size_t size)
{
	uint8_t in[RECORD_HEADER_BYTES] = {0}, out[RECORD_HEADER_BYTES];
	memcpy(in, data, size < sizeof in ? size : sizeof in);
	struct record_header h;
	if (record_header_decode(in, &h) != 0)
		return;
	record_header_encode(out, &h);
	CHECK(memcmp(in, out, 32) == 0);
	/* The header crc covers bytes 0..27; the crc itself is 28..31. */
	size_t bit = size > sizeof in ? data[sizeof in] % 256u : 0;
	in[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	struct record_header h2;
	CHECK(record_header_decode(in, &h2) != 0);
}

static void fuzz_names(const uint8_t *data, size_t size)
{
	char name[64];
	size_t n = size < sizeof name - 1 ? size : sizeof name - 1;
	memcpy(name, data, n);
	name[n] = '\0';
	uint64_t seq;
	if (spool_segment_name_parse(name, &seq)) {
		char path[128];
		CHECK(spool_segment_path(path, sizeof path, "D", 7, seq) == 0);
		CHECK(strcmp(path + strlen("D/spool/w7/"), name) == 0);
	}
	unsigned worker;
	if (spool_worker_dir_parse(name, &worker))
		CHECK(name[0] == 'w');
}

static void fuzz_index_values(const uint8_t *data, size_t size)
{
	/* Exact-size heap copies, so ASan sees any read past the value. */
	uint8_t *v = malloc(size ? size : 1);
	CHECK(v);
	if (size)
		memcpy(v, data, size);
	MDB_val val = {size, v};

	struct upload_record up;
	if (upload_decode(42, &val, &up) == 0) {
		CHECK(up.id == 42);
		CHECK(fuzz_terminated(up.meta.device, sizeof up.meta.device));
		CHECK(fuzz_terminated(up.meta.category, sizeof up.meta.category));
		CHECK(fuzz_terminated(up.meta.name, sizeof up.meta.name));
	}
	struct segment_row row;
	(void)segment_row_decode(&val, &row);

	/* A device record: the first byte says how long the key is. */
	size_t klen = size ? data[0] % 64u : 0;
	if (klen > size)
		klen = size;
	uint8_t *k = malloc(klen ? klen : 1);
	CHECK(k);
	if (klen)
		memcpy(k, data, klen);
	MDB_val key = {klen, k};
	struct device_record dev;
	if (device_decode(&key, &val, &dev) == 0) {
		CHECK(fuzz_terminated(dev.device, sizeof dev.device));
		CHECK(dev.n_fingerprints <= 4);
	}
	free(k);
	free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_header(data, size);
	fuzz_names(data, size);
	fuzz_index_values(data, size);
	return 0;
}
