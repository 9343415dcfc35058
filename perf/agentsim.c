/* agentsim: simulates N inventory agents uploading to https://HOST:PORT with
 * mutual TLS, and prints one JSON line of results.
 *
 *   agentsim [options] https://HOST:PORT
 *
 * See usage() for the options; perf/bench.sh shows typical runs. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "agentsim.h"
#include "io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

const char *const err_kind_names[ERR_KINDS] = {
	"connect", "handshake", "status", "timeout", "closed", "protocol", "overload",
};

atomic_bool sim_stop;
_Atomic uint64_t sim_started;
_Atomic uint64_t sim_idle_ready;
atomic_bool sim_measuring;
_Atomic uint64_t sim_finished, sim_window_ns;

static const char *const mode_names[] = {"full", "resume", "keepalive", "idle"};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: agentsim [options] https://HOST:PORT\n"
		"  --mode full|resume|keepalive|idle   connection per upload with a full or a\n"
		"                          resumed handshake, uploads on one connection, or\n"
		"                          hold handshaken connections (default full)\n"
		"  --tls 1.3|1.2           protocol version (default 1.3)\n"
		"  --ciphers LIST          wolfSSL cipher list (default AES128-GCM)\n"
		"  --certs N               agents, each with its own certificate (default 1000)\n"
		"  --ca-cert F --ca-key F  the agents' CA, signs the agent certificates\n"
		"  --cache DIR             where agent certificates are kept (default "
		"perf/out/agents)\n"
		"  --server-ca F           verify the server against this CA (default: no check)\n"
		"  --sni NAME              send this server name\n"
		"  --concurrency C         connections at once (default 32)\n"
		"  --threads T             event-loop threads (default 1)\n"
		"  --duration S            seconds to run; idle: seconds to hold (default 10)\n"
		"  --requests R            stop after R uploads instead\n"
		"  --rate R                open loop: Poisson arrivals, R per second\n"
		"  --burst                 open loop: all --requests agents arrive at the\n"
		"                          same instant (give --concurrency >= --requests\n"
		"                          for them all to connect at once)\n"
		"  --body-size SIZE        body size, e.g. 1k, 16k, 1M (default 1k)\n"
		"  --body-min SIZE --body-max SIZE   log-uniform sizes in this range\n"
		"  --expect LIST           accepted HTTP statuses (default 201)\n"
		"  --timeout S             per phase: connect+handshake, request (default 10)\n"
		"  --ready-file F          idle: create F once every connection is up\n"
		"  --source ADDR           connect from this IPv4 address (several agentsims on\n"
		"                          different ones get past one address's ~64k ports)\n"
		"  --method PUT|GET        PUT uploads (default), or GET downloads from\n"
		"                          --path, over the connections of --mode\n"
		"  --path TEMPLATE         GET: the path; {device} is replaced by the agent's\n"
		"                          name (keep-alive: by each device in turn)\n"
		"  --if-modified-since D   GET: up-to-date agents send this HTTP-date and\n"
		"                          must get 304\n"
		"  --if-none-match TAG     GET: up-to-date agents send this entity tag\n"
		"  --stale F               GET: fraction of polls from agents with an older\n"
		"                          copy (an old date and tag): they must get 200\n"
		"                          (default 0; without a condition every GET wants 200)\n"
		"  --expect-length N       GET: every 200 must carry N body bytes\n"
		"  --warmup N              N requests before the measured window (not counted)\n"
		"  --server-pid PID        report PID's CPU time (utime + stime) over the window\n"
		"  --body-file F           every body is F's bytes (a known upload)\n"
		"  --dpdk \"EAL ARGS\"       connect through beacond's own TCP/IPv4 stack on a\n"
		"                          DPDK port (e.g. --vdev=net_memif0,...) instead of\n"
		"                          the kernel's; one thread (root, a DPDK build)\n"
		"  --dpdk-addr A.B.C.D/N   --dpdk: the stack's own address and prefix\n"
		"  --stages                report where each upload's time went: the\n"
		"                          client's queue, TCP connect, until the\n"
		"                          ServerHello, the client's handshake, until the\n"
		"                          answer (p50, p99, and the mean over the slowest 1%%)\n"
		"  --quiet                 no progress lines\n");
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	double v = strtod(s, &end);
	switch (*end) {
	case 'k':
	case 'K':
		v *= 1024;
		end++;
		break;
	case 'm':
	case 'M':
		v *= 1024 * 1024;
		end++;
		break;
	case 'g':
	case 'G':
		v *= 1024.0 * 1024 * 1024;
		end++;
		break;
	}
	if (*end || v < 0)
		return -1;
	*out = (size_t)v;
	return 0;
}

static int parse_fraction(const char *s, double *out)
{
	char *end;
	*out = strtod(s, &end);
	return end != s && !*end && *out >= 0 && *out <= 1 ? 0 : -1;
}

static int parse_mode(const char *s, enum sim_mode *m)
{
	for (unsigned i = 0; i < sizeof mode_names / sizeof *mode_names; i++)
		if (strcmp(s, mode_names[i]) == 0) {
			*m = (enum sim_mode)i;
			return 0;
		}
	return -1;
}

static int parse_expect(const char *s, struct sim_options *o)
{
	o->n_expect = 0;
	for (const char *p = s; *p && o->n_expect < SIM_MAX_EXPECT;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p || v < 100 || v > 599)
			return -1;
		o->expect[o->n_expect++] = (int)v;
		p = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return o->n_expect > 0 ? 0 : -1;
}

/* https://HOST:PORT[anything]: HOST 1 to 255 characters up to ':' or '/'. */
static int parse_url(const char *url, struct sim_options *o)
{
	static const char scheme[] = "https://";
	char host[256];
	if (strncmp(url, scheme, sizeof scheme - 1) != 0)
		return -1;
	const char *h = url + sizeof scheme - 1;
	size_t hlen = strcspn(h, ":/");
	if (hlen == 0 || hlen >= sizeof host || h[hlen] != ':')
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	const char *digits = h + hlen + 1;
	char *end;
	errno = 0;
	unsigned long port = strtoul(digits, &end, 10);
	if (end == digits || errno || port > 65535)
		return -1;
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai;
	if (getaddrinfo(host, NULL, &hints, &ai) != 0)
		return -1;
	memcpy(&o->addr, ai->ai_addr, sizeof o->addr);
	freeaddrinfo(ai);
	o->addr.sin_port = htons((uint16_t)port);
	snprintf(o->host, sizeof o->host, "%s:%lu", host, port);
	return 0;
}

/* A.B.C.D/N: the DPDK stack's address and on-link prefix. */
static int parse_cidr(const char *s, struct sim_options *o)
{
	char addr[INET_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	char *end;
	if (!slash || (size_t)(slash - s) >= sizeof addr)
		return -1;
	memcpy(addr, s, (size_t)(slash - s));
	addr[slash - s] = '\0';
	unsigned long prefix = strtoul(slash + 1, &end, 10);
	if (end == slash + 1 || *end || prefix < 1 || prefix > 32)
		return -1;
	o->dpdk_prefix = (unsigned)prefix;
	return inet_pton(AF_INET, addr, &o->dpdk_addr) == 1 ? 0 : -1;
}

enum {
	OPT_MODE = 256,
	OPT_TLS,
	OPT_CIPHERS,
	OPT_CERTS,
	OPT_CA_CERT,
	OPT_CA_KEY,
	OPT_CACHE,
	OPT_SERVER_CA,
	OPT_SNI,
	OPT_CONC,
	OPT_THREADS,
	OPT_DURATION,
	OPT_REQUESTS,
	OPT_RATE,
	OPT_BURST,
	OPT_BODY,
	OPT_BODY_MIN,
	OPT_BODY_MAX,
	OPT_EXPECT,
	OPT_TIMEOUT,
	OPT_READY,
	OPT_SOURCE,
	OPT_QUIET,
	OPT_METHOD,
	OPT_PATH,
	OPT_IMS,
	OPT_INM,
	OPT_STALE,
	OPT_EXPECT_LENGTH,
	OPT_WARMUP,
	OPT_SERVER_PID,
	OPT_BODY_FILE,
	OPT_DPDK,
	OPT_DPDK_ADDR,
	OPT_STAGES,
	OPT_HELP,
};

static const struct option long_opts[] = {
	{"mode", required_argument, NULL, OPT_MODE},
	{"tls", required_argument, NULL, OPT_TLS},
	{"ciphers", required_argument, NULL, OPT_CIPHERS},
	{"certs", required_argument, NULL, OPT_CERTS},
	{"ca-cert", required_argument, NULL, OPT_CA_CERT},
	{"ca-key", required_argument, NULL, OPT_CA_KEY},
	{"cache", required_argument, NULL, OPT_CACHE},
	{"server-ca", required_argument, NULL, OPT_SERVER_CA},
	{"sni", required_argument, NULL, OPT_SNI},
	{"concurrency", required_argument, NULL, OPT_CONC},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"duration", required_argument, NULL, OPT_DURATION},
	{"requests", required_argument, NULL, OPT_REQUESTS},
	{"rate", required_argument, NULL, OPT_RATE},
	{"burst", no_argument, NULL, OPT_BURST},
	{"body-size", required_argument, NULL, OPT_BODY},
	{"body-min", required_argument, NULL, OPT_BODY_MIN},
	{"body-max", required_argument, NULL, OPT_BODY_MAX},
	{"expect", required_argument, NULL, OPT_EXPECT},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"ready-file", required_argument, NULL, OPT_READY},
	{"source", required_argument, NULL, OPT_SOURCE},
	{"quiet", no_argument, NULL, OPT_QUIET},
	{"method", required_argument, NULL, OPT_METHOD},
	{"path", required_argument, NULL, OPT_PATH},
	{"if-modified-since", required_argument, NULL, OPT_IMS},
	{"if-none-match", required_argument, NULL, OPT_INM},
	{"stale", required_argument, NULL, OPT_STALE},
	{"expect-length", required_argument, NULL, OPT_EXPECT_LENGTH},
	{"warmup", required_argument, NULL, OPT_WARMUP},
	{"server-pid", required_argument, NULL, OPT_SERVER_PID},
	{"body-file", required_argument, NULL, OPT_BODY_FILE},
	{"dpdk", required_argument, NULL, OPT_DPDK},
	{"dpdk-addr", required_argument, NULL, OPT_DPDK_ADDR},
	{"stages", no_argument, NULL, OPT_STAGES},
	{"help", no_argument, NULL, OPT_HELP},
	{0},
};

static int apply_option(struct sim_options *o, int opt, const char *arg)
{
	switch (opt) {
	case OPT_MODE:
		return parse_mode(arg, &o->mode);
	case OPT_TLS:
		o->tls = strcmp(arg, "1.3") == 0 ? 13 : strcmp(arg, "1.2") == 0 ? 12 : 0;
		return o->tls ? 0 : -1;
	case OPT_CIPHERS:
		o->ciphers = arg;
		return 0;
	case OPT_CERTS:
		o->certs = (unsigned)strtoul(arg, NULL, 10);
		return o->certs ? 0 : -1;
	case OPT_CA_CERT:
		o->ca_cert = arg;
		return 0;
	case OPT_CA_KEY:
		o->ca_key = arg;
		return 0;
	case OPT_CACHE:
		o->cache_dir = arg;
		return 0;
	case OPT_SERVER_CA:
		o->server_ca = arg;
		return 0;
	case OPT_SNI:
		o->sni = arg;
		return 0;
	case OPT_CONC:
		o->concurrency = (unsigned)strtoul(arg, NULL, 10);
		return o->concurrency ? 0 : -1;
	case OPT_THREADS:
		o->threads = (unsigned)strtoul(arg, NULL, 10);
		return o->threads ? 0 : -1;
	case OPT_DURATION:
		o->duration_s = strtod(arg, NULL);
		return o->duration_s > 0 ? 0 : -1;
	case OPT_REQUESTS:
		o->requests = strtoull(arg, NULL, 10);
		return 0;
	case OPT_RATE:
		o->rate = strtod(arg, NULL);
		return o->rate >= 0 ? 0 : -1;
	case OPT_BURST:
		o->burst = true;
		return 0;
	case OPT_BODY:
		if (parse_size(arg, &o->body_max) < 0)
			return -1;
		o->body_min = o->body_max;
		return 0;
	case OPT_BODY_MIN:
		return parse_size(arg, &o->body_min);
	case OPT_BODY_MAX:
		return parse_size(arg, &o->body_max);
	case OPT_EXPECT:
		return parse_expect(arg, o);
	case OPT_TIMEOUT:
		o->timeout_s = strtod(arg, NULL);
		return o->timeout_s > 0 ? 0 : -1;
	case OPT_READY:
		o->ready_file = arg;
		return 0;
	case OPT_SOURCE:
		o->source.sin_family = AF_INET;
		return inet_pton(AF_INET, arg, &o->source.sin_addr) == 1 ? 0 : -1;
	case OPT_QUIET:
		o->quiet = true;
		return 0;
	case OPT_STAGES:
		o->stages = true;
		return 0;
	case OPT_METHOD:
		o->get = strcmp(arg, "GET") == 0;
		return o->get || strcmp(arg, "PUT") == 0 ? 0 : -1;
	case OPT_PATH:
		o->path = arg;
		return arg[0] == '/' && strlen(arg) < 512 && !strpbrk(arg, " \r\n") ? 0 : -1;
	case OPT_IMS:
		o->if_modified_since = arg;
		return strlen(arg) < 64 && !strpbrk(arg, "\r\n") ? 0 : -1;
	case OPT_INM:
		o->if_none_match = arg;
		return strlen(arg) < 128 && !strpbrk(arg, "\r\n") ? 0 : -1;
	case OPT_STALE:
		return parse_fraction(arg, &o->stale);
	case OPT_EXPECT_LENGTH: {
		size_t len;
		if (parse_size(arg, &len) < 0 || len > LLONG_MAX)
			return -1;
		o->expect_length = (long long)len;
		return 0;
	}
	case OPT_WARMUP:
		o->warmup = strtoull(arg, NULL, 10);
		return 0;
	case OPT_SERVER_PID: {
		char *end;
		long pid = strtol(arg, &end, 10);
		o->server_pid = pid > 0 && pid <= INT_MAX && end != arg && !*end ? (int)pid : 0;
		return o->server_pid ? 0 : -1;
	}
	case OPT_BODY_FILE:
		o->body_file = arg;
		return 0;
	case OPT_DPDK:
		o->dpdk_eal = arg;
		return 0;
	case OPT_DPDK_ADDR:
		return parse_cidr(arg, o);
	case OPT_HELP:
		usage(stdout);
		exit(0);
	default:
		return -1;
	}
}

static int parse_args(int argc, char **argv, struct sim_options *o)
{
	*o = (struct sim_options){
		.mode = MODE_FULL,
		.tls = 13,
		.certs = 1000,
		.cache_dir = "perf/out/agents",
		.concurrency = 32,
		.threads = 1,
		.duration_s = 10,
		.body_min = 1024,
		.body_max = 1024,
		.expect = {201},
		.n_expect = 1,
		.timeout_s = 10,
		.expect_length = -1,
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "", long_opts, NULL)) != -1)
		if (opt < OPT_MODE) { /* '?': getopt said what it did not know */
			usage(stderr);
			return -1;
		} else if (apply_option(o, opt, optarg) < 0) {
			fprintf(stderr, "agentsim: bad value for --%s: %s\n",
				long_opts[opt - OPT_MODE].name, optarg ? optarg : "");
			return -1;
		}
	if (optind != argc - 1 || parse_url(argv[optind], o) < 0) {
		usage(stderr);
		return -1;
	}
	if (!o->ca_cert || !o->ca_key) {
		fprintf(stderr, "agentsim: --ca-cert and --ca-key are needed\n");
		return -1;
	}
	if (o->burst && !o->requests) {
		fprintf(stderr, "agentsim: --burst needs --requests (how many agents arrive)\n");
		return -1;
	}
	if (o->certs < o->threads || o->body_min > o->body_max) {
		fprintf(stderr, "agentsim: need --certs >= --threads and body-min <= body-max\n");
		return -1;
	}
	if (o->get != (o->path != NULL) || (o->get && o->mode == MODE_IDLE)) {
		fprintf(stderr, "agentsim: --method GET goes with --path, and not with idle\n");
		return -1;
	}
	if (o->warmup && (o->mode == MODE_IDLE || o->rate > 0 || o->burst)) {
		fprintf(stderr,
			"agentsim: --warmup is for closed-loop requests, not idle or open loop\n");
		return -1;
	}
	if (o->dpdk_eal && (!o->dpdk_prefix || o->threads != 1 || o->source.sin_family)) {
		fprintf(stderr, "agentsim: --dpdk needs --dpdk-addr, and goes with one thread and "
				"no --source (the stack has one address)\n");
		return -1;
	}
	if (!o->ciphers)
		o->ciphers =
			o->tls == 13 ? "TLS13-AES128-GCM-SHA256" : "ECDHE-ECDSA-AES128-GCM-SHA256";
	return 0;
}

/* One client context for every thread: it holds no per-agent state (each
 * connection loads its agent's certificate), and wolfSSL allows sharing a
 * context between threads once it is set up. */
static WOLFSSL_CTX *make_ctx(const struct sim_options *o)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(o->tls == 13 ? wolfTLSv1_3_client_method()
							: wolfTLSv1_2_client_method());
	int groups[] = {WOLFSSL_ECC_SECP256R1};
	if (!ctx)
		return NULL;
	if (wolfSSL_CTX_set_cipher_list(ctx, o->ciphers) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_groups(ctx, groups, 1) != WOLFSSL_SUCCESS) {
		fprintf(stderr, "agentsim: bad cipher list or group\n");
		wolfSSL_CTX_free(ctx);
		return NULL;
	}
	if (o->server_ca) {
		if (wolfSSL_CTX_load_verify_locations(ctx, o->server_ca, NULL) != WOLFSSL_SUCCESS) {
			fprintf(stderr, "agentsim: cannot load %s\n", o->server_ca);
			wolfSSL_CTX_free(ctx);
			return NULL;
		}
		wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	} else {
		/* benchmarks skip it: two ECDSA verifies per handshake would
		 * make the load generator, not the server, the bottleneck */
		wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	}
	/* sessions are kept per agent by the simulator, not in wolfSSL's
	 * process-wide cache */
	wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
	if (o->mode == MODE_RESUME && o->tls == 12)
		wolfSSL_CTX_UseSessionTicket(ctx);
	return ctx;
}

struct totals {
	uint64_t handshakes, resumed, uploads, body_bytes, open_conns, http_503;
	uint64_t http_200, http_304;
	uint64_t errors[ERR_KINDS];
};

static void sum_stats(struct sim_thread *t, unsigned n, struct totals *s)
{
	memset(s, 0, sizeof *s);
	for (unsigned i = 0; i < n; i++) {
		struct sim_stats *st = &t[i].stats;
		s->handshakes += atomic_load(&st->handshakes);
		s->resumed += atomic_load(&st->resumed);
		s->uploads += atomic_load(&st->uploads);
		s->body_bytes += atomic_load(&st->body_bytes);
		s->open_conns += atomic_load(&st->open_conns);
		s->http_503 += atomic_load(&st->http_503);
		s->http_200 += atomic_load(&st->http_200);
		s->http_304 += atomic_load(&st->http_304);
		for (int k = 0; k < ERR_KINDS; k++)
			s->errors[k] += atomic_load(&st->errors[k]);
	}
}

static uint64_t error_total(const struct totals *s)
{
	uint64_t n = 0;
	for (int k = 0; k < ERR_KINDS; k++)
		if (k != ERR_OVERLOAD)
			n += s->errors[k];
	return n;
}

static void progress_line(const struct totals *now, const struct totals *prev, double t)
{
	fprintf(stderr,
		"agentsim: %5.0fs handshakes %llu (+%llu) uploads %llu (+%llu) "
		"open %llu errors %llu\n",
		t, (unsigned long long)now->handshakes,
		(unsigned long long)(now->handshakes - prev->handshakes),
		(unsigned long long)now->uploads,
		(unsigned long long)(now->uploads - prev->uploads),
		(unsigned long long)now->open_conns, (unsigned long long)error_total(now));
}

static bool idle_all_up(const struct sim_options *o, const struct totals *s)
{
	return atomic_load(&sim_idle_ready) + s->errors[ERR_CONNECT] + s->errors[ERR_HANDSHAKE] +
		       s->errors[ERR_TIMEOUT] >=
	       o->concurrency;
}

/* SIGTERM or SIGINT ends the run early, results still printed: a script
 * holding idle connections from several agentsims stops them all at once. */
static volatile sig_atomic_t sim_signalled;

static void on_stop_signal(int sig)
{
	(void)sig;
	sim_signalled = 1;
}

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of a process (all its threads), in seconds; -1 if it
 * cannot be read. */
static double process_cpu_s(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may hold spaces and ')': fields count from the
	 * last; utime and stime are the 12th and 13th after it (proc(5)) */
	char *p = strrchr(buf, ')');
	for (int field = 0; p && field < 12; field++)
		p = strchr(p + 1, ' ');
	if (!p)
		return -1;
	char *end;
	unsigned long long utime = strtoull(p + 1, &end, 10);
	if (end == p + 1 || *end != ' ')
		return -1;
	unsigned long long stime = strtoull(end + 1, &p, 10);
	if (p == end + 1)
		return -1;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The measured window: from the end of the warm-up to the stop. */
struct window {
	uint64_t start_ns;
	double server_cpu0, server_cpu_s;
	double client_cpu0; /* and up to the result: the teardown is the run's */
};

/* The server's CPU time is read here, at most one supervisor tick after
 * the warm-up's last answer: a few ms in a window of seconds. */
static void window_open(const struct sim_options *o, struct window *win, uint64_t start_ns)
{
	win->start_ns = start_ns;
	win->server_cpu0 = o->server_pid ? process_cpu_s(o->server_pid) : -1;
	win->client_cpu0 = cpu_seconds();
	atomic_store(&sim_measuring, true);
	if (o->warmup && !o->quiet)
		fprintf(stderr, "agentsim: warm-up done (%llu requests), measuring\n",
			(unsigned long long)o->warmup);
}

static void window_close(const struct sim_options *o, struct window *win)
{
	double cpu1 = o->server_pid ? process_cpu_s(o->server_pid) : -1;
	win->server_cpu_s = win->server_cpu0 >= 0 && cpu1 >= 0 ? cpu1 - win->server_cpu0 : -1;
}

/* The main thread only watches: it prints progress, decides when the run is
 * over and stops the workers. Fills in the measured window. */
static void supervise(const struct sim_options *o, struct sim_thread *t, struct window *win)
{
	uint64_t start = now_ns(), hold_from = 0, next_line = start + 1000000000ULL;
	struct totals cur, prev = {0};

	for (;;) {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
		uint64_t now = now_ns();
		sum_stats(t, o->threads, &cur);
		if (!win->start_ns && atomic_load(&sim_measuring))
			window_open(o, win, atomic_load(&sim_window_ns));
		if (o->mode == MODE_IDLE && !hold_from && idle_all_up(o, &cur)) {
			hold_from = now;
			if (o->ready_file)
				touch(o->ready_file);
			if (!o->quiet)
				fprintf(stderr, "agentsim: %llu connections up, holding\n",
					(unsigned long long)cur.open_conns);
		}
		if (!o->quiet && o->duration_s >= 3 && now >= next_line) {
			progress_line(&cur, &prev, (double)(now - start) / 1e9);
			prev = cur;
			next_line += 1000000000ULL;
		}
		if (sim_signalled || atomic_load(&sim_stop))
			break;
		if (o->mode == MODE_IDLE) {
			if (hold_from && now - hold_from >= (uint64_t)(o->duration_s * 1e9))
				break;
		} else if (!win->start_ns) {
			continue;
		} else if (o->requests) {
			if (cur.uploads + error_total(&cur) >= o->requests)
				break;
		} else if (now - win->start_ns >= (uint64_t)(o->duration_s * 1e9)) {
			break;
		}
	}
	window_close(o, win);
	atomic_store(&sim_stop, true);
}

/* GET mode's own fields: requests and what they got. */
static void print_get_fields(const struct sim_options *o, const struct totals *s, double secs)
{
	if (!o->get)
		return;
	printf("\"method\":\"GET\",\"requests\":%llu,\"requests_per_s\":%.1f,"
	       "\"http_200\":%llu,\"http_304\":%llu,\"stale\":%.4f,",
	       (unsigned long long)s->uploads, (double)s->uploads / secs,
	       (unsigned long long)s->http_200, (unsigned long long)s->http_304, o->stale);
}

static void print_result(const struct sim_options *o, const struct sim_thread *t,
			 const struct totals *s, const struct hist *lat, double secs, double cpu,
			 double server_cpu)
{
	printf("{\"mode\":\"%s\",\"tls\":\"%s\",\"concurrency\":%u,\"threads\":%u,"
	       "\"duration_s\":%.3f,\"handshakes\":%llu,\"handshakes_per_s\":%.1f,"
	       "\"resumed_fraction\":%.4f,\"uploads\":%llu,\"uploads_per_s\":%.1f,"
	       "\"mb_per_s\":%.2f,\"body_bytes\":%llu,"
	       "\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f},"
	       "\"connections_open\":%llu,\"http_503\":%llu,\"errors\":{",
	       mode_names[o->mode], o->tls == 13 ? "1.3" : "1.2", o->concurrency, o->threads, secs,
	       (unsigned long long)s->handshakes, (double)s->handshakes / secs,
	       s->handshakes ? (double)s->resumed / (double)s->handshakes : 0.0,
	       (unsigned long long)s->uploads, (double)s->uploads / secs,
	       (double)s->body_bytes / secs / 1e6, (unsigned long long)s->body_bytes,
	       hist_quantile_ms(lat, 0.5), hist_quantile_ms(lat, 0.99),
	       hist_quantile_ms(lat, 0.999), (unsigned long long)s->open_conns,
	       (unsigned long long)s->http_503);
	for (int k = 0; k < ERR_KINDS; k++)
		printf("%s\"%s\":%llu", k ? "," : "", err_kind_names[k],
		       (unsigned long long)s->errors[k]);
	printf("},");
	if (o->stages)
		stage_report(t, o->threads);
	print_get_fields(o, s, secs);
	if (o->server_pid)
		printf("\"server_cpu_s\":%.3f,", server_cpu);
	printf("\"client_cpu_s\":%.3f}\n", cpu);
	fflush(stdout);
}

/* Kernel sockets, or --dpdk's stack where this agentsim was built with
 * DPDK; NULL (said why) where it was not. */
static const struct io_ops *pick_io(const struct sim_options *o)
{
	if (!o->dpdk_eal)
		return &io_socket_ops;
#ifdef AGENTSIM_DPDK
	return &io_dpdk_ops;
#else
	fprintf(stderr, "agentsim: --dpdk: this agentsim is built without DPDK\n");
	return NULL;
#endif
}

/* The bodies: cut from generated inventory bytes, or one file's. */
static int bodies_make(struct sim_options *o, struct body_pool *bodies)
{
	if (!o->body_file)
		return body_pool_make(bodies, o->body_max);
	if (body_pool_load(bodies, o->body_file) < 0)
		return -1;
	o->body_min = o->body_max = bodies->len;
	return 0;
}

int main(int argc, char **argv)
{
	struct sim_options o;
	struct agent_set agents = {0};
	struct body_pool bodies = {0};
	WOLFSSL_CTX *ctx = NULL;
	struct sim_thread *t = NULL;
	pthread_t *tids = NULL;
	struct hist *lat = NULL;
	int failed = 1;
	bool io_started = false;

	if (parse_args(argc, argv, &o) < 0)
		return 2;
	const struct io_ops *io = pick_io(&o);
	if (!io)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_stop_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	wolfSSL_Init();
	if (agents_load_or_make(&agents, &o) < 0 || bodies_make(&o, &bodies) < 0)
		goto out;
	ctx = make_ctx(&o);
	t = calloc(o.threads, sizeof *t);
	tids = calloc(o.threads, sizeof *tids);
	/* Before any thread starts: past here there is no way back. */
	lat = calloc(1, sizeof *lat);
	if (!ctx || !t || !tids || !lat)
		goto out;
	if (io->start && io->start(&o) < 0)
		goto out;
	io_started = true;

	struct window win = {0};
	if (!o.warmup) {
		atomic_store(&sim_measuring, true);
		window_open(&o, &win, now_ns());
	}
	/* snapshots of the stats close at the stop: the stopped threads
	 * tear their connections down, which must not show as "open 0" */
	for (unsigned i = 0; i < o.threads; i++) {
		t[i] = (struct sim_thread){.index = i,
					   .opt = &o,
					   .agents = &agents,
					   .bodies = &bodies,
					   .wolf_ctx = ctx,
					   .io = io};
		pthread_create(&tids[i], NULL, sim_thread_run, &t[i]);
	}
	supervise(&o, t, &win);
	double secs = (double)(now_ns() - win.start_ns) / 1e9;
	struct totals s;
	sum_stats(t, o.threads, &s);
	failed = 0;
	for (unsigned i = 0; i < o.threads; i++) {
		pthread_join(tids[i], NULL);
		hist_merge(lat, &t[i].latency);
		failed |= t[i].failed;
	}
	print_result(&o, t, &s, lat, secs, cpu_seconds() - win.client_cpu0, win.server_cpu_s);
out:
	if (io_started && io->stop)
		io->stop();
	free(lat);
	free(tids);
	for (unsigned i = 0; t && i < o.threads; i++)
		stage_log_free(&t[i].stages);
	free(t);
	if (ctx)
		wolfSSL_CTX_free(ctx);
	free(bodies.bytes);
	agents_release(&agents);
	wolfSSL_Cleanup();
	return failed ? 1 : 0;
}
