/*
 * libFuzzer target for the certificate identity reader
 * (dataplane/tls/certid.c), which walks the DER a client sent. The input is
 * a certificate's DER. Checks, whatever the bytes:
 *   - no read outside the input (ASan);
 *   - an accepted identity is 1 to 255 characters, each printable ASCII
 *     other than space, '/' and '\': never a NUL, a control byte or a cut
 *     value that the verdict calls OK;
 *   - a key identifier is at most 32 bytes;
 *   - a name as text is NUL-terminated within its buffer and printable.
 */
#include "fuzz_common.h"

#include "beacon/certid.h"

#include <string.h>

static void check_identity(enum cert_id r, const char *out, size_t len)
{
	if (r != CERT_ID_OK)
		return;
	size_t n = strnlen(out, len);
	CHECK(n > 0 && n < len);
	for (size_t i = 0; i < n; i++)
		CHECK(out[i] > 0x20 && out[i] < 0x7f && out[i] != '/' && out[i] != '\\');
}

static void check_text(const char *text, size_t len)
{
	size_t n = strnlen(text, len);
	CHECK(n < len);
	for (size_t i = 0; i < n; i++)
		CHECK(text[i] >= 0x20 && text[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cert_view v;
	char out[256], text[160];
	uint8_t kid[32];
	if (cert_view_parse(data, size, &v) != 0)
		return 0;
	check_identity(cert_common_name(&v, out, sizeof out), out, sizeof out);
	static const uint8_t tags[] = {CERT_SAN_DNS, CERT_SAN_EMAIL, CERT_SAN_URI};
	for (size_t i = 0; i < sizeof tags; i++)
		check_identity(cert_san(&v, tags[i], out, sizeof out), out, sizeof out);
	CHECK(cert_key_id(&v, true, kid) <= 32);
	CHECK(cert_key_id(&v, false, kid) <= 32);
	cert_name_text(v.subject, v.subject_len, text, sizeof text);
	check_text(text, sizeof text);
	cert_name_text(v.issuer, v.issuer_len, text, sizeof text);
	check_text(text, sizeof text);
	return 0;
}
