/*
 * bench_revocation CA_CERT CA_KEY N [AGENT_CERT]
 *
 * Makes a CRL of N random serials signed by CA_CERT/CA_KEY (perf/gen-crl.sh,
 * found through $BEACON_GEN_CRL or ./perf/gen-crl.sh), builds the index
 * from it and prints load time, memory and lookups/s for revoked (hit) and
 * random (miss) serials. With AGENT_CERT, also times wolfSSL's own CRL store
 * on the same file: load, and one wolfSSL_CertManagerCheckCRL of AGENT_CERT
 * (a non-revoked certificate: the whole list is walked).
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>

#include "beacon/revocation.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long max_rss_kib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* NULL with *len 0 when the file cannot be read. */
static uint8_t *read_all(const char *path, size_t *len)
{
	*len = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (n < 0) {
		fclose(f);
		return NULL;
	}
	uint8_t *buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (buf)
		*len = (size_t)n;
	return buf;
}

static uint8_t *pem_cert_to_der(const char *path, size_t *len)
{
	size_t pem_len = 0;
	uint8_t *pem = read_all(path, &pem_len);
	if (!pem)
		return NULL;
	/* The DER is shorter than its PEM; an empty file still gets a buffer. */
	uint8_t *der = malloc(pem_len ? pem_len : 1);
	int n = der ? wc_CertPemToDer(pem, (int)pem_len, der, (int)pem_len, CERT_TYPE) : -1;
	free(pem);
	if (n <= 0) {
		free(der);
		return NULL;
	}
	*len = (size_t)n;
	return der;
}

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The serial list gen-crl.sh wrote: 16-byte hex serials, one a line; a line
 * with anything but hex digits in its first 32 characters is skipped. */
static uint8_t (*read_serials(const char *path, size_t *n))[16]
{
	FILE *f = fopen(path, "r");
	size_t cap = 1 << 20;
	uint8_t(*s)[16] = malloc(cap * 16);
	char line[128];
	*n = 0;
	while (f && s && fgets(line, sizeof line, f) && *n < cap) {
		if (strlen(line) < 32)
			continue;
		int i = 0;
		for (; i < 16; i++) {
			int hi = hex_nibble(line[2 * i]), lo = hex_nibble(line[2 * i + 1]);
			if (hi < 0 || lo < 0)
				break;
			s[*n][i] = (uint8_t)((unsigned)hi << 4 | (unsigned)lo);
		}
		if (i == 16)
			(*n)++;
	}
	if (f)
		fclose(f);
	return s;
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Times `rounds` lookups cycling through `serials` (n > 0); returns
 * lookups/s. */
static double time_lookups(const struct revocation_index *idx, const uint8_t hash[32],
			   uint8_t (*serials)[16], size_t n, size_t rounds,
			   enum revocation_status want, size_t *wrong)
{
	if (n == 0)
		return 0;
	double t0 = now_s();
	for (size_t i = 0; i < rounds; i++)
		if (revocation_lookup(idx, hash, serials[i % n], 16) != want)
			(*wrong)++;
	return (double)rounds / (now_s() - t0);
}

/* Runs argv[0] (through PATH) with argv, no shell in between: the paths go
 * through as they are. Returns its wait status, or -1 if it did not run. */
static int run_cmd(char *const argv[])
{
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
	if (rc) {
		fprintf(stderr, "%s: %s\n", argv[0], strerror(rc));
		return -1;
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

static int run_gen(const char *ca, const char *key, const char *n, const char *dir,
		   const char *list)
{
	const char *gen = getenv("BEACON_GEN_CRL");
	char out[4096];
	snprintf(out, sizeof out, "%s/big.crl", dir);
	char *argv[] = {(char *)(gen ? gen : "./perf/gen-crl.sh"),
			"-w",
			(char *)list,
			(char *)ca,
			(char *)key,
			(char *)n,
			out,
			NULL};
	double t0 = now_s();
	int rc = run_cmd(argv);
	printf("generate CRL (openssl ca -gencrl): %.2f s\n", now_s() - t0);
	return rc;
}

static void bench_wolfssl(const char *ca, const char *crl, const char *agent)
{
	WOLFSSL_CERT_MANAGER *cm = wolfSSL_CertManagerNew();
	size_t der_len;
	uint8_t *der = pem_cert_to_der(agent, &der_len);
	if (!cm || !der || wolfSSL_CertManagerLoadCA(cm, ca, NULL) != WOLFSSL_SUCCESS ||
	    wolfSSL_CertManagerEnableCRL(cm, 0) != WOLFSSL_SUCCESS) {
		fprintf(stderr, "wolfSSL CertManager setup failed\n");
		goto out;
	}
	/* A buffer: LoadCRLFile refuses files over wolfSSL's 4 MB limit. */
	size_t pem_len;
	uint8_t *pem = read_all(crl, &pem_len);
	if (!pem) {
		fprintf(stderr, "%s: cannot read\n", crl);
		goto out;
	}
	long rss0 = max_rss_kib();
	double t0 = now_s();
	int rc = wolfSSL_CertManagerLoadCRLBuffer(cm, pem, (long)pem_len, WOLFSSL_FILETYPE_PEM);
	double t1 = now_s();
	free(pem);
	printf("wolfSSL CertManagerLoadCRLBuffer: %.2f s (rc %d), max RSS +%ld MiB\n", t1 - t0, rc,
	       (max_rss_kib() - rss0) / 1024);
	int checks = 20;
	for (int i = 0; i < checks; i++)
		rc = wolfSSL_CertManagerCheckCRL(cm, der, (int)der_len);
	double t2 = now_s();
	printf("wolfSSL CertManagerCheckCRL (good cert): %.2f ms per check (rc %d)\n",
	       (t2 - t1) * 1e3 / checks, rc);
out:
	if (cm)
		wolfSSL_CertManagerFree(cm);
	free(der);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s CA_CERT CA_KEY N [AGENT_CERT]\n", argv[0]);
		return 2;
	}
	char dir[] = "/tmp/bench-revocation.XXXXXX", list[64], crl[64];
	if (!mkdtemp(dir))
		return 1;
	snprintf(list, sizeof list, "%s/serials.txt", dir);
	snprintf(crl, sizeof crl, "%s/big.crl", dir);
	if (run_gen(argv[1], argv[2], argv[3], dir, list) != 0)
		return 1;
	size_t ca_len, n;
	uint8_t *ca = pem_cert_to_der(argv[1], &ca_len);
	uint8_t(*serials)[16] = read_serials(list, &n);
	remove(list);
	if (!ca || !serials || n == 0) {
		fprintf(stderr, "%s\n", ca ? "no serials" : "cannot read the CA certificate");
		free(ca);
		free(serials);
		return 1;
	}

	struct revocation_issuer issuer = {ca, ca_len};
	struct revocation_index *idx;
	char err[512];
	long rss0 = max_rss_kib();
	double t0 = now_s();
	if (revocation_index_build(dir, &issuer, 1, CRL_STALE_REFUSE, &idx, err, sizeof err) < 0) {
		fprintf(stderr, "build: %s\n", err);
		free(ca);
		free(serials);
		return 1;
	}
	double load = now_s() - t0;
	struct revocation_stats st;
	struct revocation_issuer_info info;
	revocation_index_stats(idx, &st);
	revocation_index_issuer(idx, 0, &info);
	printf("index build (read + base64 + verify + insert): %.3f s for %zu serials\n", load,
	       st.serials);
	printf("index memory: %.1f MiB (%zu slots x 24 B, %.1f B per serial); "
	       "max RSS during build +%ld MiB\n",
	       (double)st.bytes / (1 << 20), st.slots, (double)st.bytes / (double)st.serials,
	       (max_rss_kib() - rss0) / 1024);

	size_t wrong = 0, rounds = 20 * 1000 * 1000;
	double hit =
		time_lookups(idx, info.name_sha256, serials, n, rounds, REVOCATION_REVOKED, &wrong);
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < 16; k += 8) {
			uint64_t r = xorshift(&x);
			memcpy(&serials[i][k], &r, 8);
		}
	double miss =
		time_lookups(idx, info.name_sha256, serials, n, rounds, REVOCATION_GOOD, &wrong);
	printf("lookups, one thread: %.1f M/s revoked (hit), %.1f M/s random (miss); "
	       "%.0f / %.0f ns each; wrong answers: %zu\n",
	       hit / 1e6, miss / 1e6, 1e9 / hit, 1e9 / miss, wrong);
	revocation_index_free(idx);
	free(serials);

	if (argc > 4)
		bench_wolfssl(argv[1], crl, argv[4]);
	free(ca);
	char *rm[] = {"rm", "-rf", dir, NULL};
	return run_cmd(rm) == 0 && wrong == 0 ? 0 : 1;
}
