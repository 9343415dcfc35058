/*
 * issuers: the configured issuer CAs of a trust snapshot, from [tls]
 * issuers (a PEM bundle or a directory of them), and which of them the
 * CertificateRequest names ([tls] advertise). The TLS layer later loads
 * each CA's DER into its wolfSSL context (tls_server_serve).
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/openssl/x509.h>
#include <wolfssl/wolfcrypt/asn.h>

#include "beacon/certid.h"
#include "beacon/config.h"
#include "beacon/file.h"
#include "beacon/log.h"
#include "trust-internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define ADVERTISED_WARN_BYTES (16 * 1024)

/* Whether a trusted issuer with common name `cn` is in the advertised list:
 * whole comma-separated entries, spaces trimmed. */
static bool advertise_listed(const struct config *cfg, const char *cn)
{
	if (cfg->advertise == ADVERTISE_ALL)
		return true;
	if (cfg->advertise != ADVERTISE_LIST)
		return false;
	const char *p = cfg->advertise_list;
	size_t cl = strlen(cn);
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		while (l && p[l - 1] == ' ')
			l--;
		if (l && l == cl && strncmp(p, cn, l) == 0)
			return true;
		p += l;
	}
	return false;
}

/* The copy's raw names, serial and key ids. 0, or -1 when it does not parse
 * (the issuer file is refused). */
static int trust_ca_fill(struct trust_ca *ca, const uint8_t *der, size_t len)
{
	struct cert_names names;
	struct cert_view v;
	if (cert_names(der, len, &names) != 0 || cert_view_parse(der, len, &v) != 0 ||
	    names.serial_len > sizeof ca->serial)
		return -1;
	memset(ca, 0, sizeof *ca);
	memcpy(ca->subject_sha256, names.subject_sha256, 32);
	memcpy(ca->issuer_sha256, names.issuer_sha256, 32);
	memcpy(ca->serial, names.serial, names.serial_len);
	ca->serial_len = (uint8_t)names.serial_len;
	ca->skid_len = (uint8_t)cert_key_id(&v, false, ca->skid);
	ca->akid_len = (uint8_t)cert_key_id(&v, true, ca->akid);
	ca->self_issued = memcmp(names.subject_sha256, names.issuer_sha256, 32) == 0;
	cert_name_text(v.subject, v.subject_len, ca->name, sizeof ca->name);
	ca->der = der;
	ca->der_len = len;
	return 0;
}

/* Whether the issuer is named in CertificateRequests; adds its share of the
 * list's size to *advertised_bytes. */
static bool advertise(WOLFSSL_X509 *x, const struct config *cfg, size_t *advertised_bytes)
{
	WOLFSSL_X509_NAME *subj = wolfSSL_X509_get_subject_name(x);
	char cn[256] = "";
	wolfSSL_X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof cn);
	if (!advertise_listed(cfg, cn))
		return false;
	/* wolfSSL encodes names of at most WC_ASN_NAME_MAX bytes; a longer one
	 * would go out as garbage in every CertificateRequest, and clients
	 * then refuse the whole handshake. Such an issuer is trusted, not named. */
	int name_len = wolfSSL_i2d_X509_NAME(subj, NULL);
	if (name_len <= 0) {
		log_warn("issuers: \"%s\": its subject name is too long to advertise (wolfSSL "
			 "encodes at most %d bytes); trusted, but left out of the CA names",
			 cn, WC_ASN_NAME_MAX);
		return false;
	}
	*advertised_bytes += (size_t)name_len + 2;
	return true;
}

/* 0 when wolfSSL cannot read it (no alert can be made of that). */
static int64_t x509_not_after(WOLFSSL_X509 *x)
{
	struct tm tm = {0};
	const WOLFSSL_ASN1_TIME *na = wolfSSL_X509_get_notAfter(x);
	if (!na || wolfSSL_ASN1_TIME_to_tm(na, &tm) != WOLFSSL_SUCCESS)
		return 0;
	return (int64_t)timegm(&tm);
}

int cert_pem_dates(const uint8_t *pem, size_t len, char *name, size_t name_len, int64_t *not_after)
{
	WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_buffer(pem, (int)len, WOLFSSL_FILETYPE_PEM);
	int der_len = 0;
	const unsigned char *der = x ? wolfSSL_X509_get_der(x, &der_len) : NULL;
	struct cert_view v;
	int rc = -1;
	if (der && der_len > 0 && cert_view_parse(der, (size_t)der_len, &v) == 0) {
		cert_name_text(v.subject, v.subject_len, name, name_len);
		*not_after = x509_not_after(x);
		rc = 0;
	}
	wolfSSL_X509_free(x);
	return rc;
}

static int add_issuer(struct trust_snapshot *t, WOLFSSL_X509 *x, const struct config *cfg,
		      size_t *advertised_bytes)
{
	int der_len = 0;
	const unsigned char *der = wolfSSL_X509_get_der(x, &der_len);
	if (!der || der_len <= 0 || t->n_ca >= TRUST_MAX_ISSUERS)
		return -1;
	uint8_t *copy = malloc((size_t)der_len);
	if (!copy)
		return -1;
	memcpy(copy, der, (size_t)der_len);
	struct trust_ca *ca = &t->ca[t->n_ca];
	if (trust_ca_fill(ca, copy, (size_t)der_len) != 0) {
		free(copy);
		return -1;
	}
	ca->advertised = advertise(x, cfg, advertised_bytes);
	ca->not_after = x509_not_after(x);
	t->n_ca++;
	return 0;
}

/* Loads every certificate of a PEM file (a bundle may hold many: wolfSSL's
 * PEM_read_X509 stops after the first). Returns how many, or -1. */
static int load_issuer_file(struct trust_snapshot *t, const char *path, const struct config *cfg,
			    size_t *advertised_bytes, char *err, size_t errlen)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	static const char end[] = "-----END CERTIFICATE-----";
	uint8_t *text;
	size_t len;
	char why[CONFIG_PATH_MAX + 320];
	if (file_read(path, &text, &len, why, sizeof why) != 0) {
		snprintf(err, errlen, "issuers %s", why);
		return -1;
	}
	char *pem = (char *)text;
	int loaded = 0;
	for (char *p = strstr(pem, begin); p; p = strstr(p, begin)) {
		char *e = strstr(p, end);
		if (!e)
			break;
		e += sizeof end - 1;
		WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_buffer(
			(const unsigned char *)p, (int)(e - p), WOLFSSL_FILETYPE_PEM);
		if (!x || add_issuer(t, x, cfg, advertised_bytes) != 0) {
			snprintf(err, errlen, "issuers %s: certificate %d cannot be loaded%s", path,
				 loaded + 1,
				 t->n_ca >= TRUST_MAX_ISSUERS ? " (too many issuers)" : "");
			wolfSSL_X509_free(x);
			free(pem);
			return -1;
		}
		wolfSSL_X509_free(x);
		loaded++;
		p = e;
	}
	free(pem);
	return loaded;
}

static int has_cert_suffix(const char *n)
{
	size_t l = strlen(n);
	return (l > 4 && (strcmp(n + l - 4, ".pem") == 0 || strcmp(n + l - 4, ".crt") == 0));
}

/* Every *.pem and *.crt of a directory, in name order. */
static int load_issuer_dir(struct trust_snapshot *t, const struct config *cfg,
			   size_t *advertised_bytes, char *err, size_t errlen)
{
	struct dirent **ents;
	int n = scandir(cfg->issuers, &ents, NULL, alphasort);
	if (n < 0) {
		snprintf(err, errlen, "issuers %s: %s", cfg->issuers, strerror(errno));
		return -1;
	}
	int total = 0;
	for (int i = 0; i < n; i++) {
		char path[CONFIG_PATH_MAX + 256];
		if (total >= 0 && has_cert_suffix(ents[i]->d_name)) {
			snprintf(path, sizeof path, "%s/%s", cfg->issuers, ents[i]->d_name);
			int k = load_issuer_file(t, path, cfg, advertised_bytes, err, errlen);
			total = k < 0 ? -1 : total + k;
		}
		free(ents[i]);
	}
	free(ents);
	return total;
}

int issuers_load(struct trust_snapshot *t, const struct config *cfg, char *err, size_t errlen)
{
	size_t adv_bytes = 0;
	int total;
	struct stat st;
	if (stat(cfg->issuers, &st) != 0) {
		snprintf(err, errlen, "issuers %s: %s", cfg->issuers, strerror(errno));
		return -1;
	}
	if (S_ISDIR(st.st_mode))
		total = load_issuer_dir(t, cfg, &adv_bytes, err, errlen);
	else
		total = load_issuer_file(t, cfg->issuers, cfg, &adv_bytes, err, errlen);
	if (total == 0)
		snprintf(err, errlen, "issuers %s: no certificates found", cfg->issuers);
	if (total <= 0)
		return -1;
	if (adv_bytes > ADVERTISED_WARN_BYTES)
		log_warn("issuers %s: the advertised CA name list is %zu bytes; some Windows "
			 "clients fail above 16 KiB (set [tls] advertise to a subset)",
			 cfg->issuers, adv_bytes);
	log_info("tls: %d issuer certificates from %s, %zu bytes of CA names advertised", total,
		 cfg->issuers, adv_bytes);
	return 0;
}
