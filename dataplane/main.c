/*
 * beacond: loads the configuration, builds the TLS server and opens the
 * store, starts one worker per configured core, then waits for signals.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/worker.h"

#define MAX_WORKERS 256
#define SHUTDOWN_GRACE_MS 10000

static void usage(FILE *f)
{
	fprintf(f, "usage: beacond [-c beacond.conf] [-t] [-v]\n"
		   "  -c FILE  configuration (without it: the embedded demo defaults)\n"
		   "  -t       check the configuration, certificates and store, then exit\n"
		   "  -v       log debug lines\n");
}

static unsigned worker_count(const struct config *cfg)
{
	if (cfg->workers)
		return cfg->workers;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)(n < MAX_WORKERS ? n : MAX_WORKERS) : 1;
}

static void log_totals(struct worker **workers, unsigned n)
{
	uint64_t uploads = 0, bytes = 0, ok = 0, refused = 0;
	for (unsigned i = 0; i < n; i++) {
		const struct worker_counters *k = worker_counters(workers[i]);
		uploads += k->uploads;
		bytes += k->upload_bytes;
		ok += k->handshakes[AUTH_OK];
		for (int r = AUTH_OK + 1; r < AUTH_RESULT_COUNT; r++)
			refused += k->handshakes[r];
	}
	log_info("totals: %llu handshakes admitted, %llu refused, %llu uploads, %llu bytes",
		 (unsigned long long)ok, (unsigned long long)refused,
		 (unsigned long long)uploads, (unsigned long long)bytes);
}

static int run(const struct config *cfg, bool check_only)
{
	char err[512] = "";
	if (cfg->backend != BACKEND_KERNEL) {
		log_err("[server] backend = dpdk: this build has only the kernel transport; "
			"set backend = kernel");
		return 1;
	}
	struct tls_server *tls = NULL;
	if (tls_server_new(cfg, &tls, err, sizeof err) != 0) {
		log_err("%s", err);
		return 1;
	}
	unsigned n = worker_count(cfg);
	struct store *store = NULL;
	int rc = store_open(&cfg->store, n, &store, err, sizeof err);
	if (rc != 0) {
		log_err("store %s: %s", cfg->data_dir, err);
		tls_server_free(tls);
		return 1;
	}
	if (check_only) {
		store_close(store);
		tls_server_free(tls);
		fprintf(stderr, "beacond: configuration OK\n");
		return 0;
	}

	/* Workers inherit this mask: signals are taken here, by sigwait. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct worker *workers[MAX_WORKERS];
	unsigned started = 0;
	for (; started < n; started++) {
		if (worker_start(started, cfg, tls, store, &workers[started], err, sizeof err) != 0) {
			log_err("%s", err);
			break;
		}
	}
	int status = started == n ? 0 : 1;
	if (status == 0)
		log_info("listening on %s:%u with %u worker%s (kernel transport)", cfg->listen_addr,
			 cfg->listen_port, n, n == 1 ? "" : "s");
	while (status == 0) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_warn("SIGHUP: this build reloads nothing at run time; restart to apply "
				 "configuration changes");
			continue;
		}
		log_info("%s: stopping", strsignal(sig));
		break;
	}
	for (unsigned i = 0; i < started; i++)
		worker_stop(workers[i], SHUTDOWN_GRACE_MS);
	log_totals(workers, started);
	for (unsigned i = 0; i < started; i++)
		worker_free(workers[i]);
	store_close(store);
	tls_server_free(tls);
	return status;
}

int main(int argc, char **argv)
{
	const char *conf = NULL;
	bool check_only = false;
	int opt;
	while ((opt = getopt(argc, argv, "c:tvh")) != -1) {
		switch (opt) {
		case 'c':
			conf = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'v':
			log_set_level(LOG_DEBUG);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	static struct config cfg;
	config_defaults(&cfg);
	char err[1024];
	if (conf && config_load(conf, &cfg, err, sizeof err) != 0) {
		fprintf(stderr, "beacond: %s\n", err);
		return 1;
	}
	return run(&cfg, check_only);
}
