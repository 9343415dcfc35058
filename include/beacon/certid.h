/*
 * certid: what tls.c reads from a client certificate's own DER bytes rather
 * than from wolfSSL's decoded copy: the device identity (CN or a
 * subjectAltName) and the key identifiers that link it to its issuer.
 *
 * Why not wolfSSL's X509 accessors: they hand back C strings (a NUL inside a
 * name cuts it: "agent1.example\0.attacker.example" reads as
 * "agent1.example"), cut long names to a buffer silently, and give the first
 * of several CNs without saying there were several. Here every byte of the
 * value is seen and judged.
 *
 * A bounded reader (beacon/der.h): definite DER lengths only, no
 * allocation, no recursion; anything that does not parse is refused by the
 * caller. Shared by the TLS layer (client certificates) and the trust part
 * (issuer CAs, the CRL index): both name a certificate the same way.
 */
#ifndef BEACON_CERTID_H
#define BEACON_CERTID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Views into one certificate's DER; nothing is copied. */
struct cert_view {
	const uint8_t *serial; /* INTEGER content */
	size_t serial_len;
	const uint8_t *issuer; /* content of the issuer Name */
	size_t issuer_len;
	const uint8_t *subject; /* content of the subject Name */
	size_t subject_len;
	const uint8_t *exts; /* content of the Extensions SEQUENCE; NULL: none */
	size_t exts_len;
};

/* 0, or -1 when the DER is not a certificate. */
int cert_view_parse(const uint8_t *der, size_t len, struct cert_view *out);

/* A certificate's names and serial exactly as CRLs and the revocation index
 * name them: SHA-256 of the issuer's and the subject's Name DER as they
 * stand in the certificate (never a library's re-encoding of them: wolfSSL
 * turns IA5String and other string types into UTF8String and drops
 * attributes it has no NID for), and the serial's INTEGER content bytes.
 * Every hash of a name that is compared with the index must come from here. */
struct cert_names {
	uint8_t issuer_sha256[32];
	uint8_t subject_sha256[32];
	const uint8_t *serial; /* inside the caller's DER */
	size_t serial_len;
};

/* 0, or -1 when the DER is not a certificate (the caller refuses it). */
int cert_names(const uint8_t *der, size_t len, struct cert_names *out);

enum cert_id {
	CERT_ID_OK,
	CERT_ID_NONE,	 /* no such name */
	CERT_ID_SEVERAL, /* more than one: which is the device is not ours to guess */
	CERT_ID_BAD,	 /* control or non-ASCII bytes, '/', '\\', space, too long, bad DER */
};

/* subjectAltName GeneralName tags (context-specific, primitive). */
#define CERT_SAN_EMAIL 0x81
#define CERT_SAN_DNS 0x82
#define CERT_SAN_URI 0x86

/* The subject's one commonName, or the one subjectAltName of `san_tag`,
 * into out[0..len) NUL-terminated. Accepted values are 1 to len - 1
 * printable ASCII characters other than space, '/' and '\\' (they name
 * files and log lines); PrintableString, UTF8String, IA5String,
 * VisibleString, TeletexString, BMPString and UniversalString are read. */
enum cert_id cert_common_name(const struct cert_view *v, char *out, size_t len);
enum cert_id cert_san(const struct cert_view *v, uint8_t san_tag, char *out, size_t len);

/* The subjectKeyIdentifier (authority false) or the authorityKeyIdentifier's
 * keyIdentifier (authority true) into out; returns its length, 0 when
 * absent or longer than 32 bytes. */
size_t cert_key_id(const struct cert_view *v, bool authority, uint8_t out[32]);

/* A Name (content bytes) as text for logs, RDNs in DER order:
 * "DC=com, DC=example, CN=Example Issuing CA". Bytes outside printable
 * ASCII, and ',' '\\' '"', are written as \\xHH, so a NUL or a newline in
 * a name shows instead of cutting or splitting the line; cut with "..."
 * to fit out[0..len). */
void cert_name_text(const uint8_t *name, size_t name_len, char *out, size_t len);

/* The text name of a cert_id verdict, for refusal reasons. */
const char *cert_id_problem(enum cert_id id);

#endif
