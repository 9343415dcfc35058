/* Agent certificates: N EC P-256 keys and certificates signed by the agents'
 * CA, made with wolfSSL's certificate generation and cached in one file so a
 * second run starts at once. A fleet of 100,000 takes seconds: the work is
 * one key generation and one ECDSA signature each, spread over the cores. */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "agentsim.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_MAGIC "AGSIM02\n"
#define CERT_MAX 1024
#define KEY_MAX 160

/* File layout: header, then per agent u16 cert_len, u16 key_len, cert, key.
 * The CA's hash ties a cache to the CA that signed it: a new demo PKI makes
 * the old agents untrusted, so they are made again. */
struct cache_header {
	char magic[8];
	uint32_t count;
	uint32_t reserved;
	unsigned char ca_sha256[32];
};

struct ca_material {
	unsigned char cert[4096];
	int cert_len;
	unsigned char key[512];
	int key_len;
};

struct gen_job {
	const struct ca_material *ca;
	unsigned first, count;
	unsigned char *out; /* records, back to back */
	size_t out_len;
	int failed;
};

void agent_name(unsigned index, char *buf, size_t len)
{
	snprintf(buf, len, "agent-%06u", index + 1);
}

static int read_file(const char *path, unsigned char **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "agentsim: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 1 << 16, n = 0;
	*buf = malloc(cap);
	while (*buf && (n += fread(*buf + n, 1, cap - n, f)) == cap)
		*buf = realloc(*buf, cap *= 2);
	fclose(f);
	*len = n;
	return *buf ? 0 : -1;
}

static int load_ca(struct ca_material *ca, const char *cert_path, const char *key_path)
{
	unsigned char *pem;
	size_t len;
	if (read_file(cert_path, &pem, &len) < 0)
		return -1;
	ca->cert_len = wc_CertPemToDer(pem, (int)len, ca->cert, sizeof ca->cert, CERT_TYPE);
	free(pem);
	if (read_file(key_path, &pem, &len) < 0)
		return -1;
	ca->key_len = wc_KeyPemToDer(pem, (int)len, ca->key, sizeof ca->key, NULL);
	free(pem);
	if (ca->cert_len <= 0 || ca->key_len <= 0) {
		fprintf(stderr, "agentsim: cannot read CA %s / %s as PEM\n", cert_path, key_path);
		return -1;
	}
	return 0;
}

/* The CA key may be PKCS#8 (openssl genpkey) or SEC1: skip the PKCS#8
 * wrapper when there is one. */
static int decode_ca_key(const struct ca_material *ca, ecc_key *key)
{
	unsigned char der[512];
	word32 idx = 0;
	memcpy(der, ca->key, (size_t)ca->key_len);
	if (wc_GetPkcs8TraditionalOffset(der, &idx, (word32)ca->key_len) < 0)
		idx = 0;
	if (wc_ecc_init(key) != 0)
		return -1;
	return wc_EccPrivateKeyDecode(der, &idx, key, (word32)ca->key_len);
}

static void fill_subject(Cert *cert, unsigned index)
{
	char name[32];
	agent_name(index, name, sizeof name);
	snprintf(cert->subject.commonName, CTC_NAME_SIZE, "%s.example", name);
	snprintf(cert->subject.org, CTC_NAME_SIZE, "beacond demo agents");
}

/* One agent: a fresh key and a certificate for it. Writes the record
 * (lengths, cert, key) at out; returns its size or -1. */
static long make_agent(const struct ca_material *ca, ecc_key *ca_key, WC_RNG *rng, unsigned index,
		       unsigned char *out)
{
	ecc_key key;
	Cert cert;
	unsigned char *cert_der = out + 4;
	long ret = -1;

	if (wc_ecc_init(&key) != 0)
		return -1;
	if (wc_ecc_make_key_ex(rng, 32, &key, ECC_SECP256R1) != 0)
		goto out;
	wc_InitCert(&cert);
	fill_subject(&cert, index);
	cert.sigType = CTC_SHA256wECDSA;
	cert.daysValid = 3650;
	cert.serialSz = 16;
	if (wc_RNG_GenerateBlock(rng, cert.serial, 16) != 0)
		goto out;
	cert.serial[0] &= 0x7f; /* a positive INTEGER */
	cert.serial[0] |= 0x01; /* with no leading zero byte */
	if (wc_SetIssuerRaw(&cert, ca->cert, ca->cert_len) != 0 ||
	    wc_SetAuthKeyIdFromCert(&cert, ca->cert, ca->cert_len) != 0 ||
	    wc_SetSubjectKeyIdFromPublicKey_ex(&cert, ECC_TYPE, &key) != 0 ||
	    wc_SetKeyUsage(&cert, "digitalSignature") != 0 ||
	    wc_SetExtKeyUsage(&cert, "clientAuth") != 0)
		goto out;
	if (wc_MakeCert_ex(&cert, cert_der, CERT_MAX, ECC_TYPE, &key, rng) < 0)
		goto out;
	int cert_len = wc_SignCert_ex(cert.bodySz, cert.sigType, cert_der, CERT_MAX, ECC_TYPE,
				      ca_key, rng);
	if (cert_len <= 0)
		goto out;
	int key_len = wc_EccKeyToDer(&key, cert_der + cert_len, KEY_MAX);
	if (key_len <= 0)
		goto out;
	out[0] = (unsigned char)(cert_len >> 8);
	out[1] = (unsigned char)cert_len;
	out[2] = (unsigned char)(key_len >> 8);
	out[3] = (unsigned char)key_len;
	ret = 4 + cert_len + key_len;
out:
	wc_ecc_free(&key);
	return ret;
}

static void *gen_thread(void *arg)
{
	struct gen_job *job = arg;
	ecc_key ca_key;
	WC_RNG rng;

	job->failed = 1;
	job->out = malloc((size_t)job->count * (4 + CERT_MAX + KEY_MAX));
	if (!job->out || wc_InitRng(&rng) != 0)
		return NULL;
	if (decode_ca_key(job->ca, &ca_key) != 0) {
		fprintf(stderr, "agentsim: cannot decode the CA key\n");
		goto out;
	}
	for (unsigned i = 0; i < job->count; i++) {
		long n =
			make_agent(job->ca, &ca_key, &rng, job->first + i, job->out + job->out_len);
		if (n < 0) {
			fprintf(stderr, "agentsim: making agent %u failed\n", job->first + i);
			goto out_key;
		}
		job->out_len += (size_t)n;
	}
	job->failed = 0;
out_key:
	wc_ecc_free(&ca_key);
out:
	wc_FreeRng(&rng);
	return NULL;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Generate count agents over nthreads threads; write the cache file
 * atomically (temporary name, then rename). */
static int generate_cache(const char *path, const struct ca_material *ca,
			  const struct cache_header *hdr, unsigned nthreads)
{
	struct gen_job jobs[64] = {0};
	pthread_t tids[64];
	unsigned count = hdr->count, per;
	int ret = -1;

	if (nthreads > 64)
		nthreads = 64;
	per = (count + nthreads - 1) / nthreads;
	for (unsigned t = 0; t < nthreads; t++) {
		jobs[t].ca = ca;
		jobs[t].first = t * per;
		jobs[t].count =
			jobs[t].first >= count
				? 0
				: (count - jobs[t].first < per ? count - jobs[t].first : per);
		pthread_create(&tids[t], NULL, gen_thread, &jobs[t]);
	}
	for (unsigned t = 0; t < nthreads; t++)
		pthread_join(tids[t], NULL);

	char tmp[4096 + 32];
	snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		fprintf(stderr, "agentsim: %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	bool ok = write_all(fd, hdr, sizeof *hdr) == 0;
	for (unsigned t = 0; t < nthreads && ok; t++)
		ok = !jobs[t].failed && write_all(fd, jobs[t].out, jobs[t].out_len) == 0;
	if (close(fd) != 0 || !ok || rename(tmp, path) != 0) {
		fprintf(stderr, "agentsim: writing %s failed\n", path);
		unlink(tmp);
		goto out;
	}
	ret = 0;
out:
	for (unsigned t = 0; t < nthreads; t++)
		free(jobs[t].out);
	return ret;
}

/* Map the cache and index the first want records. Returns 1 when the cache
 * is absent, stale or too small, 0 on success. */
static int map_cache(struct agent_set *set, const char *path, const struct cache_header *want_hdr,
		     unsigned want)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0)
		return 1;
	if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(struct cache_header)) {
		close(fd);
		return 1;
	}
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return 1;
	const struct cache_header *hdr = map;
	if (memcmp(hdr->magic, CACHE_MAGIC, 8) != 0 || hdr->count < want ||
	    memcmp(hdr->ca_sha256, want_hdr->ca_sha256, 32) != 0) {
		munmap(map, (size_t)st.st_size);
		return 1;
	}
	set->creds = calloc(want, sizeof *set->creds);
	const unsigned char *p = (const unsigned char *)(hdr + 1);
	const unsigned char *end = (const unsigned char *)map + st.st_size;
	for (unsigned i = 0; i < want; i++) {
		if (end - p < 4)
			goto corrupt;
		struct agent_cred *c = &set->creds[i];
		c->cert_len = (uint16_t)(p[0] << 8 | p[1]);
		c->key_len = (uint16_t)(p[2] << 8 | p[3]);
		c->cert = p + 4;
		c->key = c->cert + c->cert_len;
		p = c->key + c->key_len;
		if (p > end)
			goto corrupt;
	}
	set->count = want;
	set->map = map;
	set->map_len = (size_t)st.st_size;
	return 0;
corrupt:
	free(set->creds);
	munmap(map, (size_t)st.st_size);
	return 1;
}

int agents_load_or_make(struct agent_set *set, const struct sim_options *o)
{
	struct ca_material ca;
	struct cache_header hdr = {0};
	char path[4096];

	if (load_ca(&ca, o->ca_cert, o->ca_key) < 0)
		return -1;
	memcpy(hdr.magic, CACHE_MAGIC, 8);
	hdr.count = o->certs;
	if (wc_Sha256Hash(ca.cert, (word32)ca.cert_len, hdr.ca_sha256) != 0)
		return -1;
	if (mkdir(o->cache_dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "agentsim: %s: %s\n", o->cache_dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof path, "%s/agents-p256.bin", o->cache_dir);
	if (map_cache(set, path, &hdr, o->certs) == 0)
		return 0;

	uint64_t t0 = now_ns();
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	if (generate_cache(path, &ca, &hdr, cores > 0 ? (unsigned)cores : 1) < 0)
		return -1;
	if (!o->quiet)
		fprintf(stderr, "agentsim: made %u agent certificates in %.2f s (%s)\n", o->certs,
			(double)(now_ns() - t0) / 1e9, path);
	return map_cache(set, path, &hdr, o->certs) == 0 ? 0 : -1;
}

void agents_release(struct agent_set *set)
{
	free(set->creds);
	if (set->map)
		munmap(set->map, set->map_len);
	set->creds = NULL;
	set->map = NULL;
}
