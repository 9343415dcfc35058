/*
 * beacond: the process's life cycle. Parses the arguments and loads the
 * configuration, opens the store, starts the trust part (the first
 * snapshot), the workers and the control thread, drops privileges, then
 * waits for signals; stops in the reverse order through one unwind path.
 * The main thread also runs the trust part's clock (trust_tick: the file
 * watch and ticket rotation) and takes SIGHUP as a reload. Everything about
 * trust (building, checking, reloading, publishing) is in control/trust.
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "beacon/config.h"
#include "beacon/control.h"
#include "beacon/log.h"
#include "beacon/drain.h"
#include "beacon/mirror.h"
#include "beacon/natsconn.h"
#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/transport.h"
#include "beacon/trust.h"
#include "beacon/worker.h"
#include "health.h"
#include "stats.h"

#define MAX_WORKERS 256
#define SHUTDOWN_GRACE_MS 10000
#define TICK_S 1 /* the trust part's clock */

struct beacond {
	const char *conf_path; /* NULL: embedded defaults */
	struct config cfg;
	struct store *store;
	struct worker *workers[MAX_WORKERS];
	unsigned n_workers;
	time_t started;
	/* Reloads come from the control thread, SIGHUP and the file watch:
	 * one at a time (the trust part takes it); the stats read the current
	 * snapshot under it too. */
	pthread_mutex_t reload_lock;
	atomic_bool serving;	     /* ready to its end: /readyz */
	struct store_reader *reader; /* device states, for the snapshot */
	struct trust_control *trust;
	/* NULL: [drain] is off (or not started yet: the control thread
	 * may already read it) */
	struct drain *_Atomic drain;
	struct drain *_Atomic upstream; /* NULL: [upstream] url is empty */
	struct mirror *_Atomic mirror;	/* NULL: [upstream] sync is off */
};

static void usage(FILE *f)
{
	fprintf(f, "usage: beacond [-c beacond.conf] [-t] [-v]\n"
		   "       beacond --help | --version\n"
		   "  -c FILE    configuration (without it: the embedded demo defaults)\n"
		   "  -t         check the configuration, certificates and store (read-only), then "
		   "exit\n"
		   "  -v         log debug lines\n"
		   "  -h, --help this text\n"
		   "  --version  print the version\n");
}

static unsigned worker_count(const struct config *cfg)
{
	if (cfg->workers)
		return cfg->workers;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)(n < MAX_WORKERS ? n : MAX_WORKERS) : 1;
}

/* ---- the service manager ---- */

/* systemd's readiness protocol (Type=notify): READY=1 once every listener,
 * the control socket and the admin listener are up and privileges are
 * dropped; RELOADING=1 and READY=1 around each reload; STOPPING=1 at the
 * end. Without NOTIFY_SOCKET (not under systemd) sd_notify does nothing. A
 * failure to tell is logged, never fatal: the server works either way, and
 * systemd's own timeout says what it did not hear. */
static void notify(const char *state)
{
	int rc = sd_notify(0, state);
	if (rc < 0)
		log_warn("notify %s: cannot tell the service manager: %s", state, strerror(-rc));
}

/* systemd wants the reload's start time with RELOADING=1, on
 * CLOCK_MONOTONIC, to tell this reload from an earlier one. */
static void notify_reloading(void)
{
	struct timespec now;
	if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
		notify("RELOADING=1"); /* the stamp is optional; the state is not */
		return;
	}
	char state[96];
	snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)now.tv_sec * 1000000ull +
			 (unsigned long long)now.tv_nsec / 1000ull);
	notify(state);
}

/* ---- the control socket's requests ---- */

static int handle_reload(void *arg, const char *what, char *msg, size_t len)
{
	struct beacond *b = arg;
	return trust_reload(b->trust, what, msg, len);
}

static int handle_tickets_rotate(void *arg, char *msg, size_t len)
{
	struct beacond *b = arg;
	return trust_tickets_rotate(b->trust, msg, len);
}

static int handle_device_state(void *arg, const char *device, enum device_state state, char *msg,
			       size_t len)
{
	struct beacond *b = arg;
	if (store_device_set_state(b->store, device, state, msg, len) != 0)
		return -1;
	/* Blocked devices are refused in the handshake: the snapshot must
	 * know them before the next connection. */
	return handle_reload(b, "blocklist", msg, len);
}

/* For the control socket's status and its answers to a repeated or
 * unknown-device block: read through the reader beacond keeps open. */
static int handle_store_totals(void *arg, uint64_t *uploads, uint64_t *bytes)
{
	struct beacond *b = arg;
	return b->reader && store_reader_totals(b->reader, uploads, bytes) == 0 ? 0 : -1;
}

static int handle_device_lookup(void *arg, const char *device, enum device_state *state, bool *seen)
{
	struct beacond *b = arg;
	struct device_record d;
	int rc = b->reader ? store_reader_device(b->reader, device, &d) : STORE_ERR_INVAL;
	if (rc == STORE_ERR_NOTFOUND)
		return 0;
	if (rc)
		return -1;
	*state = d.state;
	*seen = d.last_seen_unix_ms != 0;
	return 1;
}

/* ---- stats ---- */

static void handle_stats(void *arg, struct control_stats *out)
{
	struct beacond *b = arg;
	const struct stats_sources src = {.workers = b->workers,
					  .n_workers = b->n_workers,
					  .started = b->started,
					  .net_stack = b->cfg.backend == BACKEND_DPDK,
					  .store = b->store,
					  .drain = atomic_load(&b->drain),
					  .upstream = atomic_load(&b->upstream),
					  .mirror = atomic_load(&b->mirror),
					  .trust_lock = &b->reload_lock};
	stats_collect(&src, out);
}

static struct health_sources health_sources(struct beacond *b)
{
	return (struct health_sources){.workers = b->workers,
				       .n_workers = b->n_workers,
				       .store = b->store,
				       .stall_ms = b->cfg.health_stall_ms,
				       .serving = atomic_load(&b->serving)};
}

static int handle_live(void *arg, char *msg, size_t len)
{
	struct health_sources src = health_sources(arg);
	return health_live(&src, msg, len);
}

static int handle_ready(void *arg, char *msg, size_t len)
{
	struct health_sources src = health_sources(arg);
	return health_ready(&src, msg, len);
}

static size_t handle_refusals(void *arg, struct tls_refusal *out, size_t max)
{
	(void)arg;
	return tls_refusals_latest(out, max);
}

/* ---- drain ---- */

static void handle_drain_status(void *arg, struct drain_status *out)
{
	struct beacond *b = arg;
	drain_status(atomic_load(&b->drain), out);
}

static void handle_upstream_status(void *arg, struct drain_status *out)
{
	struct beacond *b = arg;
	drain_status(atomic_load(&b->upstream), out);
}

static void handle_mirror_status(void *arg, struct mirror_status *out)
{
	struct beacond *b = arg;
	mirror_status(atomic_load(&b->mirror), out);
}

static int handle_upstream_sync(void *arg, char *msg, size_t len)
{
	struct beacond *b = arg;
	return mirror_sync_now(atomic_load(&b->mirror), msg, len);
}

static int handle_drain_control(void *arg, const char *action, uint64_t from_id, char *msg,
				size_t len)
{
	struct beacond *b = arg;
	struct drain *d = atomic_load(&b->drain);
	if (!strcmp(action, "replay"))
		return drain_replay(d, from_id, msg, len);
	return drain_pause(d, !strcmp(action, "pause"), msg, len);
}

/* ---- life ---- */

static uid_t chown_uid;
static gid_t chown_gid;

static int chown_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	if (lchown(path, chown_uid, chown_gid) != 0) {
		log_err("[server] user: cannot hand %s over: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* After the listeners and the control socket exist: nothing later needs
 * root. The data directory (which the store created as root) is handed to
 * the user first, as systemd does with a StateDirectory, so the spool and
 * the index stay writable. setgid/setuid apply to every thread (glibc
 * signals them all). */
static int drop_privileges(const char *user, const char *data_dir)
{
	if (!user[0])
		return 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		log_err("[server] user %s: no such user", user);
		return -1;
	}
	chown_uid = pw->pw_uid;
	chown_gid = pw->pw_gid;
	if (nftw(data_dir, chown_entry, 16, FTW_PHYS) != 0)
		return -1;
	if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
		log_err("[server] user %s: cannot switch to it: %s", user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		log_err("[server] user %s: root could be regained; refusing to run", user);
		return -1;
	}
	log_info("running as %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

static int wait_for_stop(struct beacond *b, const sigset_t *set)
{
	struct timespec tick = {.tv_sec = TICK_S, .tv_nsec = 0};
	char msg[512];
	for (;;) {
		int sig = sigtimedwait(set, NULL, &tick);
		if (sig < 0) {
			if (errno == EAGAIN) {
				trust_tick(b->trust);
				tls_refusals_log_summary();
			}
			continue;
		}
		if (sig == SIGHUP) {
			log_info("SIGHUP: reloading trust");
			trust_reload(b->trust, "all", msg, sizeof msg);
			continue;
		}
		log_info("%s: stopping", strsignal(sig));
		return 0;
	}
}

static int start_workers(struct beacond *b, unsigned n)
{
	char err[512];
	for (; b->n_workers < n; b->n_workers++) {
		if (worker_start(b->n_workers, n, &b->cfg, b->store, &b->workers[b->n_workers], err,
				 sizeof err) != 0) {
			log_err("%s", err);
			return -1;
		}
	}
	return 0;
}

static void stop_workers(struct beacond *b)
{
	for (unsigned i = 0; i < b->n_workers; i++)
		worker_stop(b->workers[i], SHUTDOWN_GRACE_MS);
	struct control_stats st;
	handle_stats(b, &st);
	uint64_t refused = 0;
	for (int r = AUTH_OK + 1; r < AUTH_RESULT_COUNT; r++)
		refused += st.handshakes[r];
	log_info("totals: %llu handshakes admitted, %llu refused, %llu uploads, %llu bytes",
		 (unsigned long long)st.handshakes[AUTH_OK], (unsigned long long)refused,
		 (unsigned long long)st.uploads, (unsigned long long)st.upload_bytes);
	for (unsigned i = 0; i < b->n_workers; i++)
		worker_free(b->workers[i]);
	b->n_workers = 0;
}

/* beacond -t: the certificates and trust files as a start would load them,
 * and the store read-only. Nothing on disk changes, whether or not a
 * server runs on the same data directory. */
/* The control socket is made at start-up in a directory that must be
 * there and writable (systemd's RuntimeDirectory= or tmpfiles makes
 * /run/beacond); -t says so now rather than the start failing later.
 * Logs why when not. */
static int control_socket_dir_usable(const char *socket_path)
{
	char dir[CONFIG_PATH_MAX];
	snprintf(dir, sizeof dir, "%s", socket_path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	struct stat st;
	const char *why = NULL;
	if (stat(dir, &st) != 0 || (S_ISDIR(st.st_mode) && access(dir, W_OK | X_OK) != 0))
		why = strerror(errno);
	else if (!S_ISDIR(st.st_mode))
		why = "not a directory";
	if (why) {
		log_err("control_socket %s: directory %s: %s", socket_path, dir, why);
		return -1;
	}
	return 0;
}

static int check_config(struct beacond *b)
{
	char err[512] = "", report[1024];
	if (store_check(b->cfg.data_dir, report, sizeof report, err, sizeof err) != 0) {
		log_err("store %s: %s", b->cfg.data_dir, err);
		return 1;
	}
	fprintf(stderr, "beacond: %s\n", report);
	struct tls_server *tls = NULL;
	if (trust_server_build(&b->cfg, NULL, &tls, err, sizeof err) != 0) {
		log_err("%s", err);
		return 1;
	}
	tls_server_unref(tls);
	if (control_socket_dir_usable(b->cfg.control_socket) != 0)
		return 1;
	fprintf(stderr, "beacond: configuration OK\n");
	return 0;
}

/* Every thread inherits this mask (the store's writer, DPDK's, the
 * workers, the control thread): signals are taken by the main thread
 * alone, in sigtimedwait. A thread started before it would take a SIGTERM
 * that arrives while the main thread is between waits, and die of it
 * (killed, not stopped). */
static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void log_ready(const struct config *cfg, unsigned n)
{
	log_info("ready: listening on %s:%u with %u worker%s (%s transport); control "
		 "socket %s%s%s",
		 cfg->listen_addr, cfg->listen_port, n, n == 1 ? "" : "s",
		 cfg->backend == BACKEND_DPDK ? "DPDK" : "kernel", cfg->control_socket,
		 cfg->metrics_listen[0] ? "; metrics on http://" : "", cfg->metrics_listen);
}

/* Start-up in order, each step undone in reverse through one unwind path
 * (LMDB style): a failed step jumps to the label that releases what the
 * steps before it took. */
static int run(struct beacond *b)
{
	const struct config *cfg = &b->cfg;
	char err[512] = "";
	int status = 1;
	struct control *ctl = NULL;
	sigset_t set;
	block_signals(&set);

	unsigned n = worker_count(cfg);
	if (store_open(cfg->data_dir, &cfg->store, n, &b->store, err, sizeof err) != 0) {
		log_err("store %s: %s", cfg->data_dir, err);
		return 1;
	}
	if (store_reader_open(cfg->data_dir, &b->reader, err, sizeof err) != 0) {
		log_err("store %s: %s", cfg->data_dir, err);
		goto close_store;
	}
	const struct trust_options trust = {
		.conf_path = b->conf_path,
		.cfg = cfg,
		.reader = b->reader,
		.lock = &b->reload_lock,
		.notify = notify,
		.reloading = notify_reloading,
	};
	if (trust_start(&trust, n, &b->trust, err, sizeof err) != 0) {
		log_err("%s", err);
		goto close_reader;
	}
	/* DPDK's EAL and port come up once, before any worker opens a queue. */
	if (cfg->backend == BACKEND_DPDK && transport_dpdk_init(cfg, n, err, sizeof err) != 0) {
		log_err("%s", err);
		goto stop_trust;
	}
	b->started = time(NULL);
	if (start_workers(b, n) != 0)
		goto stop_workers;
	char history_path[sizeof cfg->data_dir + 32];
	snprintf(history_path, sizeof history_path, "%s/status-history", cfg->data_dir);
	const struct control_handlers handlers = {
		.arg = b,
		.stats = handle_stats,
		.refusals = handle_refusals,
		.reload = handle_reload,
		.tickets_rotate = handle_tickets_rotate,
		.device_set_state = handle_device_state,
		.store_totals = handle_store_totals,
		.device_lookup = handle_device_lookup,
		.live = handle_live,
		.ready = handle_ready,
		.history_path = history_path,
		.drain_status = handle_drain_status,
		.drain_control = handle_drain_control,
		.upstream_status = handle_upstream_status,
		.mirror_status = handle_mirror_status,
		.upstream_sync = handle_upstream_sync,
	};
	if (control_start(cfg->control_socket, cfg->metrics_listen, &handlers, &ctl, err,
			  sizeof err) != 0) {
		log_err("control: %s", err);
		goto stop_workers;
	}
	if (drop_privileges(cfg->user, cfg->data_dir) != 0)
		goto stop_control;
	/* After the drop: the drain reads its credentials as the server's
	 * user. A sink that is down is retried, not fatal. */
	struct drain *drain = NULL;
	if (drain_start(cfg, b->store, &drain, err, sizeof err) != 0) {
		log_err("%s", err);
		goto stop_control;
	}
	atomic_store(&b->drain, drain);
	struct drain *upstream = NULL;
	if (drain_start_upstream(cfg, b->store, &upstream, err, sizeof err) != 0) {
		log_err("%s", err);
		goto stop_control;
	}
	atomic_store(&b->upstream, upstream);
	struct mirror *mirror = NULL;
	if (mirror_start(cfg, &mirror, err, sizeof err) != 0) {
		log_err("%s", err);
		goto stop_control;
	}
	atomic_store(&b->mirror, mirror);
	/* Every worker's listener, the control socket and the admin listener
	 * are open and privileges are dropped: ready. */
	log_ready(cfg, n);
	/* /readyz says ready before READY=1 goes out (trust_set_serving
	 * tells it): whoever heard READY=1 and asks must not get 503. */
	atomic_store(&b->serving, true);
	trust_set_serving(b->trust, true);
	status = wait_for_stop(b, &set);
	atomic_store(&b->serving, false);
	trust_set_serving(b->trust, false);

stop_control:
	control_stop(ctl);
	drain_stop(atomic_exchange(&b->drain, NULL)); /* after the control thread: it reads it */
	drain_stop(atomic_exchange(&b->upstream, NULL));
	mirror_stop(atomic_exchange(&b->mirror, NULL));
stop_workers:
	stop_workers(b);
	if (cfg->backend == BACKEND_DPDK)
		transport_dpdk_shutdown();
stop_trust:
	trust_stop(b->trust);
close_reader:
	store_reader_close(b->reader);
close_store:
	store_close(b->store);
	return status;
}

int main(int argc, char **argv)
{
	static struct beacond b = {.reload_lock = PTHREAD_MUTEX_INITIALIZER};
	bool check_only = false, verbose = false;
	static const struct option long_options[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "c:tvh", long_options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			b.conf_path = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("beacond %s\n", BEACON_VERSION);
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
	config_defaults(&b.cfg);
	char err[1024];
	if (b.conf_path && config_load(b.conf_path, &b.cfg, err, sizeof err) != 0) {
		fprintf(stderr, "beacond: %s\n", err);
		return 1;
	}
	log_set_format(b.cfg.log_format);
	log_set_level(verbose ? LOG_DEBUG : b.cfg.log_level);
	log_info("beacond %s, %s", BEACON_VERSION,
		 b.conf_path ? b.conf_path
			     : "no -c: the embedded demo configuration (files under .demo/)");
	/* Ticket keys first: a check validates the key file too, and the first
	 * snapshot makes a key only when none was loaded. */
	if (trust_tickets_init(&b.cfg, err, sizeof err) != 0) {
		log_err("%s", err);
		return 1;
	}
	if (check_only)
		return check_config(&b);
	int status = run(&b);
	natsStatus ns = natsconn_library_close();
	if (ns != NATS_OK && ns != NATS_NOT_INITIALIZED)
		log_warn("nats: the client library's threads did not all end within %d ms: %s",
			 NATSCONN_CLOSE_WAIT_MS, natsStatus_GetText(ns));
	return status;
}
