/* Unit tests for the revocation index, on real CRLs that openssl makes at
 * test time (config/demo-pki.sh, perf/gen-crl.sh): revoked and good serials,
 * PEM and DER, bad signatures, untrusted issuers, corrupted files, expired
 * CRLs under both policies, lastUpdate in the future, 100,000 serials. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/hash.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "beacon/revocation.h"

static char tmp[256], pki[300];
static char err[1024];

/* Trusted issuers: both agents CAs (as DER). */
static uint8_t *ca_der[2];
static size_t ca_len[2];
static struct revocation_issuer issuers[2];

struct cert {
	uint8_t *der;
	size_t len;
};
static struct cert agent1, agent2, agent_ca2;

__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	return system(cmd);
}

static const char *gen_crl(void)
{
	const char *g = getenv("BEACON_GEN_CRL");
	return g ? g : "perf/gen-crl.sh";
}

static uint8_t *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static struct cert load_cert(const char *name)
{
	char path[512];
	size_t pem_len;
	snprintf(path, sizeof path, "%s/%s.pem", pki, name);
	uint8_t *pem = read_all(path, &pem_len);
	struct cert c = {malloc(pem_len), 0};
	int n = wc_CertPemToDer(pem, (int)pem_len, c.der, (int)pem_len, CERT_TYPE);
	assert_true(n > 0);
	c.len = (size_t)n;
	free(pem);
	return c;
}

static int group_setup(void **state)
{
	const char *demo = getenv("BEACON_DEMO_PKI");
	snprintf(tmp, sizeof tmp, "%s/beacon-revocation-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	if (sh("%s %s >/dev/null", demo ? demo : "config/demo-pki.sh", pki) != 0)
		return -1;
	/* agent2's serial, for gen-crl.sh -s */
	if (sh("openssl x509 -noout -serial -in %s/agent2.pem | cut -d= -f2 >%s/agent2.serial", pki,
	       tmp) != 0)
		return -1;
	/* A CA with agents-ca's exact subject but another key: its CRLs name
	 * the trusted issuer and must fail the signature check. */
	if (sh("cd %s && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
	       "-out impostor.key 2>/dev/null && openssl req -new -x509 -key impostor.key "
	       "-subj \"$(openssl x509 -noout -subject -nameopt compat -in agents-ca.pem "
	       "| sed 's/^subject=//')\" -days 30 -out impostor.pem",
	       pki) != 0)
		return -1;
	struct cert a = load_cert("agents-ca"), b = load_cert("agents-ca2");
	ca_der[0] = a.der, ca_len[0] = a.len;
	ca_der[1] = b.der, ca_len[1] = b.len;
	issuers[0] = (struct revocation_issuer){ca_der[0], ca_len[0]};
	issuers[1] = (struct revocation_issuer){ca_der[1], ca_len[1]};
	agent1 = load_cert("agent1");
	agent2 = load_cert("agent2");
	agent_ca2 = load_cert("agent-ca2");
	return 0;
}

static int group_teardown(void **state)
{
	sh("rm -rf '%s'", tmp);
	free(ca_der[0]);
	free(ca_der[1]);
	free(agent1.der);
	free(agent2.der);
	free(agent_ca2.der);
	return 0;
}

/* A fresh, empty CRL directory tmp/NAME; returns its path (static). */
static const char *crl_dir(const char *name)
{
	static char dir[512];
	snprintf(dir, sizeof dir, "%s/%s", tmp, name);
	assert_int_equal(sh("rm -rf '%s' && mkdir -p '%s'", dir, dir), 0);
	return dir;
}

/* gen-crl.sh OPTS CA N DIR/FILE, CA being a name in the PKI. */
static void make_crl(const char *dir, const char *file, const char *ca, int n, const char *opts)
{
	assert_int_equal(sh("%s %s %s/%s.pem %s/%s.key %d %s/%s", gen_crl(), opts, pki, ca, pki, ca,
			    n, dir, file),
			 0);
}

static struct revocation_index *build_ok(const char *dir, enum crl_stale_policy policy)
{
	struct revocation_index *idx = NULL;
	int rc = revocation_index_build(dir, issuers, 2, policy, &idx, err, sizeof err);
	if (rc != 0)
		fail_msg("build failed: %s", err);
	assert_non_null(idx);
	return idx;
}

static void build_fails(const char *dir, const char *want)
{
	struct revocation_index *idx = (struct revocation_index *)(uintptr_t)1;
	assert_int_equal(
		revocation_index_build(dir, issuers, 2, CRL_STALE_WARN, &idx, err, sizeof err), -1);
	assert_ptr_equal(idx, (struct revocation_index *)(uintptr_t)1); /* untouched */
	if (!strstr(err, want))
		fail_msg("error '%s' lacks '%s'", err, want);
}

static const char *agent2_serial_opt(void)
{
	static char opt[400];
	snprintf(opt, sizeof opt, "-s %s/agent2.serial", tmp);
	return opt;
}

/* The issuer hash as the TLS layer would compute it with wolfSSL. */
static void issuer_hash_via_wolfssl(const struct cert *c, uint8_t out[32])
{
	const unsigned char *p = c->der;
	WOLFSSL_X509 *x = wolfSSL_d2i_X509(NULL, &p, (int)c->len);
	assert_non_null(x);
	unsigned char *name = NULL;
	int n = wolfSSL_i2d_X509_NAME(wolfSSL_X509_get_issuer_name(x), &name);
	assert_true(n > 0);
	assert_int_equal(wc_Sha256Hash(name, (word32)n, out), 0);
	XFREE(name, NULL, DYNAMIC_TYPE_OPENSSL);
	wolfSSL_X509_free(x);
}

static void check_agent2_revoked(struct revocation_index *idx)
{
	assert_int_equal(revocation_lookup_cert(idx, agent2.der, agent2.len), REVOCATION_REVOKED);
	assert_int_equal(revocation_lookup_cert(idx, agent1.der, agent1.len), REVOCATION_GOOD);
	assert_int_equal(revocation_lookup_cert(idx, agent_ca2.der, agent_ca2.len),
			 REVOCATION_GOOD);

	/* By issuer hash and serial bytes, with and without a leading zero. */
	uint8_t hash[32], serial[40] = {0};
	int len = (int)sizeof serial - 1;
	issuer_hash_via_wolfssl(&agent2, hash);
	const unsigned char *p = agent2.der;
	WOLFSSL_X509 *x = wolfSSL_d2i_X509(NULL, &p, (int)agent2.len);
	assert_int_equal(wolfSSL_X509_get_serial_number(x, serial + 1, &len), WOLFSSL_SUCCESS);
	wolfSSL_X509_free(x);
	assert_int_equal(revocation_lookup(idx, hash, serial + 1, (size_t)len), REVOCATION_REVOKED);
	assert_int_equal(revocation_lookup(idx, hash, serial, (size_t)len + 1), REVOCATION_REVOKED);
	serial[len] ^= 1;
	assert_int_equal(revocation_lookup(idx, hash, serial + 1, (size_t)len), REVOCATION_GOOD);
}

static void test_revoked_pem(void **state)
{
	const char *dir = crl_dir("pem");
	make_crl(dir, "agents.crl", "agents-ca", 10, agent2_serial_opt());
	struct revocation_index *idx = build_ok(dir, CRL_STALE_REFUSE);
	assert_int_equal(revocation_index_count(idx), 11);
	check_agent2_revoked(idx);

	struct revocation_stats st;
	revocation_index_stats(idx, &st);
	assert_int_equal(st.crls, 1);
	assert_int_equal(st.serials, 11);
	assert_int_equal(st.issuers, 2);
	assert_true(st.slots * 2 >= st.serials * 3);
	assert_int_equal(revocation_index_issuer_count(idx), 2);
	struct revocation_issuer_info info;
	revocation_index_issuer(idx, 0, &info);
	assert_string_equal(info.name, "Beacon Demo Agents CA");
	assert_int_equal(info.crls, 1);
	assert_int_equal(info.serials, 11);
	assert_false(info.stale);
	assert_true(info.next_update > time(NULL));
	uint8_t hash[32];
	issuer_hash_via_wolfssl(&agent2, hash);
	assert_memory_equal(info.name_sha256, hash, 32);
	revocation_index_issuer(idx, 1, &info);
	assert_int_equal(info.crls, 0);
	revocation_index_free(idx);
}

static void test_revoked_der(void **state)
{
	char opts[512];
	const char *dir = crl_dir("der");
	snprintf(opts, sizeof opts, "-D %s", agent2_serial_opt());
	make_crl(dir, "agents.der", "agents-ca", 10, opts);
	struct revocation_index *idx = build_ok(dir, CRL_STALE_REFUSE);
	assert_int_equal(revocation_index_count(idx), 11);
	check_agent2_revoked(idx);
	revocation_index_free(idx);
}

/* Each issuer's serials stay its own: agent2's serial under agents-ca2 is
 * not revoked. Two CRLs in one PEM file both count. */
static void test_two_issuers_one_file(void **state)
{
	const char *dir = crl_dir("two");
	make_crl(dir, "a.pem", "agents-ca", 5, agent2_serial_opt());
	make_crl(dir, "b.pem", "agents-ca2", 5, "");
	assert_int_equal(sh("cat %s/a.pem %s/b.pem >%s/both.crl && rm %s/a.pem %s/b.pem", dir, dir,
			    dir, dir, dir),
			 0);
	struct revocation_index *idx = build_ok(dir, CRL_STALE_REFUSE);
	assert_int_equal(revocation_index_count(idx), 11);
	struct revocation_stats st;
	revocation_index_stats(idx, &st);
	assert_int_equal(st.crls, 2);

	uint8_t hash2[32];
	struct revocation_issuer_info info;
	revocation_index_issuer(idx, 1, &info);
	memcpy(hash2, info.name_sha256, 32);
	assert_int_equal(info.serials, 5);
	const unsigned char *p = agent2.der;
	WOLFSSL_X509 *x = wolfSSL_d2i_X509(NULL, &p, (int)agent2.len);
	uint8_t serial[40];
	int len = sizeof serial;
	assert_int_equal(wolfSSL_X509_get_serial_number(x, serial, &len), WOLFSSL_SUCCESS);
	wolfSSL_X509_free(x);
	assert_int_equal(revocation_lookup(idx, hash2, serial, (size_t)len), REVOCATION_GOOD);
	check_agent2_revoked(idx);
	revocation_index_free(idx);
}

static void test_empty(void **state)
{
	struct revocation_index *idx = build_ok(crl_dir("empty"), CRL_STALE_REFUSE);
	assert_int_equal(revocation_index_count(idx), 0);
	assert_int_equal(revocation_lookup_cert(idx, agent2.der, agent2.len), REVOCATION_GOOD);
	revocation_index_free(idx);
	idx = build_ok(NULL, CRL_STALE_REFUSE);
	assert_int_equal(revocation_lookup_cert(idx, agent2.der, agent2.len), REVOCATION_GOOD);
	revocation_index_free(idx);
	build_fails("/nonexistent/crl", "/nonexistent/crl: No such file");
}

static void test_wrong_signer(void **state)
{
	const char *dir = crl_dir("impostor");
	make_crl(dir, "agents.crl", "impostor", 3, agent2_serial_opt());
	char want[1024];
	snprintf(want, sizeof want,
		 "%s/agents.crl: signature does not verify against "
		 "'Beacon Demo Agents CA'",
		 dir);
	build_fails(dir, want);
}

static void test_untrusted_issuer(void **state)
{
	const char *dir = crl_dir("rogue");
	make_crl(dir, "good.crl", "agents-ca", 3, "");
	make_crl(dir, "rogue.crl", "rogue-ca", 3, "");
	build_fails(dir, "/rogue.crl: issuer '");
	assert_non_null(strstr(err, "' is not a trusted issuer"));
}

/* XORs the byte at `at` (negative: from the end) of a file. */
static void flip_byte(const char *path, long at)
{
	size_t len;
	uint8_t *buf = read_all(path, &len);
	buf[at < 0 ? (long)len + at : at] ^= 0x01;
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
	free(buf);
}

static void test_corrupted(void **state)
{
	const char *dir = crl_dir("corrupt");
	char path[600];
	snprintf(path, sizeof path, "%s/flip.der", dir);

	/* The last byte of the signature flipped. */
	make_crl(dir, "flip.der", "agents-ca", 50, "-D");
	flip_byte(path, -1);
	build_fails(dir, "/flip.der: signature does not verify against 'Beacon Demo Agents CA'");

	/* One bit of agent2's revoked serial flipped: parses, fails to verify. */
	const unsigned char *p = agent2.der;
	WOLFSSL_X509 *x = wolfSSL_d2i_X509(NULL, &p, (int)agent2.len);
	uint8_t serial[40];
	int slen = sizeof serial;
	assert_int_equal(wolfSSL_X509_get_serial_number(x, serial, &slen), WOLFSSL_SUCCESS);
	wolfSSL_X509_free(x);
	make_crl(dir, "flip.der", "agents-ca", 50, agent2_serial_opt());
	assert_int_equal(
		sh("cd %s && openssl crl -in flip.der -outform DER -out f && mv f flip.der", dir),
		0);
	size_t len;
	uint8_t *der = read_all(path, &len);
	uint8_t *at = memmem(der, len, serial, (size_t)slen);
	assert_non_null(at);
	flip_byte(path, at - der + slen - 1);
	free(der);
	build_fails(dir, "/flip.der: signature does not verify");

	/* Truncated. */
	assert_int_equal(sh("cd %s && head -c 300 flip.der >cut.der && rm flip.der", dir), 0);
	build_fails(dir, "/cut.der: not a DER CRL");

	/* Not a CRL at all. */
	assert_int_equal(sh("cd %s && rm cut.der && echo hello >notes.txt", dir), 0);
	build_fails(dir, "/notes.txt: neither a DER CRL nor PEM");

	/* Broken base64 inside a PEM block. */
	make_crl(dir, "b64.pem", "agents-ca", 5, "");
	assert_int_equal(sh("cd %s && rm notes.txt && sed -i '3s/^./*/' b64.pem", dir), 0);
	build_fails(dir, "/b64.pem: bad base64");
}

static void test_expired_warn(void **state)
{
	char opts[512];
	const char *dir = crl_dir("expired-warn");
	snprintf(opts, sizeof opts, "-l 20200101000000Z -n 20200201000000Z %s",
		 agent2_serial_opt());
	make_crl(dir, "old.crl", "agents-ca", 3, opts);
	struct revocation_index *idx = build_ok(dir, CRL_STALE_WARN);
	check_agent2_revoked(idx);
	struct revocation_issuer_info info;
	revocation_index_issuer(idx, 0, &info);
	assert_true(info.stale);
	assert_int_equal(info.next_update, 1580515200);
	revocation_index_free(idx);
}

static void test_expired_refuse(void **state)
{
	char opts[512];
	const char *dir = crl_dir("expired-refuse");
	snprintf(opts, sizeof opts, "-l 20200101000000Z -n 20200201000000Z %s",
		 agent2_serial_opt());
	make_crl(dir, "old.crl", "agents-ca", 3, opts);
	make_crl(dir, "ca2.crl", "agents-ca2", 3, "");
	struct revocation_index *idx = build_ok(dir, CRL_STALE_REFUSE);
	assert_int_equal(revocation_lookup_cert(idx, agent1.der, agent1.len), REVOCATION_STALE);
	assert_int_equal(revocation_lookup_cert(idx, agent2.der, agent2.len), REVOCATION_STALE);
	/* The other issuer's CRL is fresh: its clients are unaffected. */
	assert_int_equal(revocation_lookup_cert(idx, agent_ca2.der, agent_ca2.len),
			 REVOCATION_GOOD);
	revocation_index_free(idx);
}

static void test_lastupdate_in_future(void **state)
{
	char opts[128], last[32], next[32];
	time_t t = time(NULL) + 86400;
	strftime(last, sizeof last, "%Y%m%d%H%M%SZ", gmtime(&t));
	t += 86400;
	strftime(next, sizeof next, "%Y%m%d%H%M%SZ", gmtime(&t));
	snprintf(opts, sizeof opts, "-l %s -n %s", last, next);
	const char *dir = crl_dir("future");
	make_crl(dir, "future.crl", "agents-ca", 3, opts);
	build_fails(dir, "/future.crl: lastUpdate ");
	assert_non_null(strstr(err, "is in the future"));
}

static int hex_nibble(char c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

static void test_100k(void **state)
{
	const char *dir = crl_dir("100k");
	char list[600], opts[700];
	snprintf(list, sizeof list, "%s/100k.serials", tmp);
	snprintf(opts, sizeof opts, "-w %s", list);
	make_crl(dir, "big.crl", "agents-ca", 100000, opts);
	struct revocation_index *idx = build_ok(dir, CRL_STALE_REFUSE);
	assert_int_equal(revocation_index_count(idx), 100000);
	struct revocation_issuer_info info;
	revocation_index_issuer(idx, 0, &info);

	FILE *f = fopen(list, "r");
	assert_non_null(f);
	char line[80];
	size_t n = 0;
	uint8_t serial[17] = {0};
	while (fgets(line, sizeof line, f)) {
		for (int i = 0; i < 16; i++)
			serial[1 + i] = (uint8_t)(hex_nibble(line[2 * i]) << 4 |
						  hex_nibble(line[2 * i + 1]));
		/* As a certificate would carry it: a 00 before a high bit. */
		bool pad = serial[1] & 0x80;
		assert_int_equal(revocation_lookup(idx, info.name_sha256, serial + !pad, 16 + pad),
				 REVOCATION_REVOKED);
		n++;
	}
	fclose(f);
	assert_int_equal(n, 100000);

	/* 100,000 random serials: none is revoked (a collision with 100,000
	 * random 128-bit serials has odds of about 2^-94). */
	srand(42);
	for (int i = 0; i < 100000; i++) {
		for (int k = 0; k < 16; k++)
			serial[k] = (uint8_t)rand();
		assert_int_equal(revocation_lookup(idx, info.name_sha256, serial, 16),
				 REVOCATION_GOOD);
	}
	revocation_index_free(idx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_revoked_pem),
		cmocka_unit_test(test_revoked_der),
		cmocka_unit_test(test_two_issuers_one_file),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_wrong_signer),
		cmocka_unit_test(test_untrusted_issuer),
		cmocka_unit_test(test_corrupted),
		cmocka_unit_test(test_expired_warn),
		cmocka_unit_test(test_expired_refuse),
		cmocka_unit_test(test_lastupdate_in_future),
		cmocka_unit_test(test_100k),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
