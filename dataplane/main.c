/*
 * beacond: loads the configuration, builds the first trust snapshot and
 * opens the store, starts one worker per configured core and the control
 * thread, then waits for signals. The main thread also runs the control
 * plane's clocks: ticket-key rotation and the watch on trust files.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
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
#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/transport.h"
#include "beacon/trust.h"
#include "beacon/worker.h"
#include "stats.h"

#define MAX_WORKERS 256
#define SHUTDOWN_GRACE_MS 10000
#define WATCH_POLL_S 1

struct beacond {
	const char *conf_path; /* NULL: embedded defaults */
	struct config cfg;
	struct store *store;
	struct worker *workers[MAX_WORKERS];
	unsigned n_workers;
	time_t started;
	/* Reloads come from the control thread, SIGHUP and the file watch:
	 * one at a time. */
	pthread_mutex_t reload_lock;
	struct store_reader *reader; /* device states, for the snapshot */
	/* Between READY=1 and STOPPING=1 (under reload_lock): only then does
	 * a reload tell the service manager, which would otherwise hear
	 * READY=1 too early from a reload that came in during start-up. */
	bool serving;
	time_t last_rotation;
	uint64_t watch_signature;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: beacond [-c beacond.conf] [-t] [-v]\n"
		   "       beacond --help | --version\n"
		   "  -c FILE    configuration (without it: the embedded demo defaults)\n"
		   "  -t         check the configuration, certificates and store (read-only), then exit\n"
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

/* ---- trust reload ---- */

/* The trust settings as they are on disk now: the config file read again
 * (its trust keys take effect, see config_take_reloadable). Keys changed
 * in the file that only a restart applies are named in `restart` ("" when
 * none): the running values stay, and a reload must not pass for having
 * applied them. */
static int reload_config(struct beacond *b, struct config *out, char *restart, size_t rlen,
			 char *msg, size_t len)
{
	*out = b->cfg;
	restart[0] = '\0';
	if (!b->conf_path)
		return 0;
	struct config fresh;
	config_defaults(&fresh);
	if (config_load(b->conf_path, &fresh, msg, len) != 0)
		return -1;
	config_take_reloadable(out, &fresh);
	if (config_restart_keys(&b->cfg, &fresh, restart, rlen) > 0)
		log_warn("reload: %s: changed keys NOT applied until a restart (the running "
			 "values stay in force): %s",
			 b->conf_path, restart);
	return 0;
}

/* Ticket keys come from ticket_key_file, or live in memory and change only
 * by rotation (ticket_rotate, `beaconctl tickets rotate`), which keeps the
 * previous ones. A reload reads the file again; without one it changes
 * nothing: a new key on every trust reload (SIGHUP, the file watch after a
 * CRL fetch, `reload all`) would push the keys of live tickets out of the
 * table, and a fleet's agents to full handshakes. */
static int reload_tickets(const struct config *cfg, char *msg, size_t len)
{
	if (!cfg->ticket_key_file[0]) {
		snprintf(msg, len,
			 "ticket keys: %u kept (no ticket_key_file; 'beaconctl tickets rotate' "
			 "makes a new one)",
			 tls_tickets_count());
		return 0;
	}
	if (tls_tickets_load(cfg->ticket_key_file, msg, len) != 0)
		return -1;
	snprintf(msg, len, "ticket keys: %u loaded from %s", tls_tickets_count(),
		 cfg->ticket_key_file);
	return 0;
}

static int rotate_tickets(char *msg, size_t len)
{
	if (tls_tickets_new_key(msg, len) != 0)
		return -1;
	snprintf(msg, len, "ticket keys: new key made, %u accepted", tls_tickets_count());
	return 0;
}

struct device_list {
	char **names;
	size_t n;
	bool failed;
};

static int collect_blocked(const struct device_record *rec, void *arg)
{
	struct device_list *l = arg;
	if (rec->state != DEVICE_BLOCKED)
		return 0;
	char **grown = realloc(l->names, (l->n + 1) * sizeof *grown);
	if (!grown || !(grown[l->n] = strdup(rec->device))) {
		if (grown)
			l->names = grown;
		l->failed = true;
		return 1;
	}
	l->names = grown;
	l->n++;
	return 0;
}

static void device_list_free(struct device_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
}

/* A snapshot from `cfg` plus the devices an operator blocked. */
static int snapshot_build(struct beacond *b, const struct config *cfg, struct tls_server **out,
			  char *msg, size_t len)
{
	struct device_list blocked = {0};
	/* beacond -t opens no reader: it changes nothing on disk. */
	int rc = b->reader ? store_reader_devices(b->reader, collect_blocked, &blocked) : 0;
	if (rc != 0 || blocked.failed) {
		snprintf(msg, len, "reading blocked devices: %s",
			 rc ? store_strerror(rc) : "out of memory");
		device_list_free(&blocked);
		return -1;
	}
	rc = tls_server_new_blocking(cfg, (const char *const *)blocked.names, blocked.n, out, msg,
				     len);
	device_list_free(&blocked);
	return rc;
}

static int reload_snapshot(struct beacond *b, char *msg, size_t len)
{
	struct config cfg;
	char restart[320];
	if (reload_config(b, &cfg, restart, sizeof restart, msg, len) != 0)
		return -1;
	struct tls_server *next;
	if (snapshot_build(b, &cfg, &next, msg, len) != 0)
		return -1;
	trust_publish(next);
	struct tls_server_info info;
	trust_current_info(&info);
	snprintf(msg, len,
		 "trust snapshot %llu: %u issuers, %llu revoked serials from %llu CRLs, "
		 "%u blocked%s%s",
		 (unsigned long long)info.generation, info.issuers,
		 (unsigned long long)info.revoked_serials, (unsigned long long)info.crls,
		 info.blocked_entries, restart[0] ? "; NOT applied, a restart is needed for: " : "",
		 restart);
	return 0;
}

/* READY=1 (serving) or STOPPING=1 (not), in step with the reloads. */
static void set_serving(struct beacond *b, bool serving)
{
	pthread_mutex_lock(&b->reload_lock);
	b->serving = serving;
	notify(serving ? "READY=1" : "STOPPING=1");
	pthread_mutex_unlock(&b->reload_lock);
}

static int handle_reload(void *arg, const char *what, char *msg, size_t len)
{
	struct beacond *b = arg;
	int rc;
	static const char *const targets[] = {"all", "issuers", "crl", "blocklist", "tickets"};
	bool known = false;
	for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
		known = known || strcmp(what, targets[i]) == 0;
	if (!known) {
		snprintf(msg, len, "reload what? all, issuers, crl, blocklist or tickets");
		return -1;
	}
	pthread_mutex_lock(&b->reload_lock);
	/* Inside the lock: each reload's RELOADING=1 is followed by its own
	 * READY=1, whichever thread asked for it. */
	if (b->serving)
		notify_reloading();
	if (strcmp(what, "tickets") == 0) {
		rc = reload_tickets(&b->cfg, msg, len);
	} else {
		/* Issuers, CRLs and the block list are one snapshot: rebuilding
		 * it whole keeps them consistent with each other. */
		rc = reload_snapshot(b, msg, len);
		if (rc == 0 && strcmp(what, "all") == 0) {
			char tmsg[256];
			if (reload_tickets(&b->cfg, tmsg, sizeof tmsg) != 0) {
				snprintf(msg, len, "%s", tmsg);
				rc = -1;
			}
		}
	}
	/* A refused reload leaves the old trust serving: ready all the same. */
	if (b->serving)
		notify("READY=1");
	pthread_mutex_unlock(&b->reload_lock);
	if (rc == 0)
		log_info("reload %s: %s", what, msg);
	else
		log_err("reload %s refused, the running trust stays in force: %s", what, msg);
	return rc;
}

static int handle_tickets_rotate(void *arg, char *msg, size_t len)
{
	struct beacond *b = arg;
	if (b->cfg.ticket_key_file[0]) {
		snprintf(msg, len,
			 "keys come from ticket_key_file %s (shared by the fleet): write the new "
			 "key first in that file, then run 'beaconctl reload tickets'",
			 b->cfg.ticket_key_file);
		return -1;
	}
	pthread_mutex_lock(&b->reload_lock);
	int rc = rotate_tickets(msg, len);
	b->last_rotation = time(NULL);
	pthread_mutex_unlock(&b->reload_lock);
	if (rc == 0)
		log_info("tickets rotate: %s", msg);
	return rc;
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

/* ---- stats ---- */

static void handle_stats(void *arg, struct control_stats *out)
{
	struct beacond *b = arg;
	const struct stats_sources src = {.workers = b->workers,
					  .n_workers = b->n_workers,
					  .started = b->started,
					  .net_stack = b->cfg.backend == BACKEND_DPDK,
					  .store = b->store,
					  .trust_lock = &b->reload_lock};
	stats_collect(&src, out);
}

static size_t handle_refusals(void *arg, struct tls_refusal *out, size_t max)
{
	(void)arg;
	return tls_refusals_latest(out, max);
}

/* ---- the watch on trust files ---- */

static uint64_t mix(uint64_t h, uint64_t v)
{
	return (h ^ v) * 0x100000001b3ull;
}

static uint64_t path_signature(uint64_t h, const char *path)
{
	struct stat st;
	if (!path[0] || stat(path, &st) != 0)
		return mix(h, 1);
	h = mix(mix(mix(h, (uint64_t)st.st_mtim.tv_sec), (uint64_t)st.st_mtim.tv_nsec),
		(uint64_t)st.st_size);
	if (!S_ISDIR(st.st_mode))
		return h;
	DIR *d = opendir(path);
	if (!d)
		return h;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char sub[CONFIG_PATH_MAX + 256];
		snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
		struct stat fs;
		if (stat(sub, &fs) == 0)
			h = mix(mix(h, (uint64_t)fs.st_mtim.tv_nsec ^ (uint64_t)fs.st_mtim.tv_sec),
				(uint64_t)fs.st_size ^ e->d_ino);
	}
	closedir(d);
	return h;
}

static uint64_t trust_files_signature(const struct config *cfg)
{
	uint64_t h = 0xcbf29ce484222325ull;
	const char *paths[] = {cfg->cert, cfg->key, cfg->issuers, cfg->crl_dir, cfg->blocklist,
			       cfg->ticket_key_file};
	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
		h = path_signature(h, paths[i]);
	return h;
}

/* Called once a second: reloads when the trust files changed and then
 * stayed the same for a second (an editor or a CRL fetch mid-write is not
 * picked up half-done), and rotates ticket keys when their time is up. */
static void control_tick(struct beacond *b, uint64_t *pending)
{
	char msg[512];
	if (b->cfg.watch) {
		uint64_t sig = trust_files_signature(&b->cfg);
		if (sig != b->watch_signature) {
			if (*pending == sig) {
				b->watch_signature = sig;
				*pending = 0;
				log_info("watch: trust files changed; reloading");
				handle_reload(b, "all", msg, sizeof msg);
			} else {
				*pending = sig;
			}
		}
	}
	if (!b->cfg.ticket_key_file[0] && b->cfg.ticket_rotate_s &&
	    time(NULL) - b->last_rotation >= (time_t)b->cfg.ticket_rotate_s)
		handle_tickets_rotate(b, msg, sizeof msg);
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
	uint64_t pending = 0;
	struct timespec tick = {.tv_sec = WATCH_POLL_S, .tv_nsec = 0};
	char msg[512];
	for (;;) {
		int sig = sigtimedwait(set, NULL, &tick);
		if (sig < 0) {
			if (errno == EAGAIN)
				control_tick(b, &pending);
			continue;
		}
		if (sig == SIGHUP) {
			log_info("SIGHUP: reloading trust");
			handle_reload(b, "all", msg, sizeof msg);
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
static int check_config(struct beacond *b)
{
	char err[512] = "", report[1024];
	if (store_check(b->cfg.data_dir, report, sizeof report, err, sizeof err) != 0) {
		log_err("store %s: %s", b->cfg.data_dir, err);
		return 1;
	}
	fprintf(stderr, "beacond: %s\n", report);
	struct tls_server *tls = NULL;
	if (snapshot_build(b, &b->cfg, &tls, err, sizeof err) != 0) {
		log_err("%s", err);
		return 1;
	}
	tls_server_unref(tls);
	fprintf(stderr, "beacond: configuration OK\n");
	return 0;
}

static int run(struct beacond *b, bool check_only)
{
	const struct config *cfg = &b->cfg;
	char err[512] = "";
	if (cfg->ticket_key_file[0] && tls_tickets_load(cfg->ticket_key_file, err, sizeof err) != 0) {
		log_err("%s", err);
		return 1;
	}
	if (check_only)
		return check_config(b);
	/* Every thread inherits this mask (the store's writer, DPDK's, the
	 * workers, the control thread): signals are taken by the main thread
	 * alone, in sigtimedwait. A thread started before it would take a
	 * SIGTERM that arrives while the main thread is between waits, and
	 * die of it (killed, not stopped). */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	unsigned n = worker_count(cfg);
	if (store_open(cfg->data_dir, &cfg->store, n, &b->store, err, sizeof err) != 0) {
		log_err("store %s: %s", cfg->data_dir, err);
		return 1;
	}
	if (store_reader_open(cfg->data_dir, &b->reader, err, sizeof err) != 0) {
		log_err("store %s: %s", cfg->data_dir, err);
		store_close(b->store);
		return 1;
	}
	struct tls_server *tls = NULL;
	if (snapshot_build(b, cfg, &tls, err, sizeof err) != 0) {
		log_err("%s", err);
		store_reader_close(b->reader);
		store_close(b->store);
		return 1;
	}
	if (trust_init(n, tls) != 0) {
		log_err("out of memory");
		return 1;
	}

	/* DPDK's EAL and port come up once, before any worker opens a queue. */
	if (cfg->backend == BACKEND_DPDK && transport_dpdk_init(cfg, n, err, sizeof err) != 0) {
		log_err("%s", err);
		trust_shutdown();
		store_reader_close(b->reader);
		store_close(b->store);
		return 1;
	}
	b->started = b->last_rotation = time(NULL);
	b->watch_signature = trust_files_signature(cfg);
	int status = start_workers(b, n) == 0 ? 0 : 1;
	struct control *ctl = NULL;
	const struct control_handlers handlers = {
		.arg = b,
		.stats = handle_stats,
		.refusals = handle_refusals,
		.reload = handle_reload,
		.tickets_rotate = handle_tickets_rotate,
		.device_set_state = handle_device_state,
	};
	if (status == 0 && control_start(cfg->control_socket, cfg->metrics_listen, &handlers, &ctl,
					 err, sizeof err) != 0) {
		log_err("control: %s", err);
		status = 1;
	}
	if (status == 0 && drop_privileges(cfg->user, cfg->data_dir) != 0)
		status = 1;
	if (status == 0) {
		/* Every worker's listener, the control socket and the admin
		 * listener are open and privileges are dropped: ready. */
		log_info("ready: listening on %s:%u with %u worker%s (%s transport); control "
			 "socket %s%s%s",
			 cfg->listen_addr, cfg->listen_port, n, n == 1 ? "" : "s",
			 cfg->backend == BACKEND_DPDK ? "DPDK" : "kernel",
			 cfg->control_socket, cfg->metrics_listen[0] ? "; metrics on http://" : "",
			 cfg->metrics_listen);
		set_serving(b, true);
		status = wait_for_stop(b, &set);
		set_serving(b, false);
	}
	if (ctl)
		control_stop(ctl);
	stop_workers(b);
	if (cfg->backend == BACKEND_DPDK)
		transport_dpdk_shutdown();
	trust_shutdown();
	store_reader_close(b->reader);
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
		 b.conf_path ? b.conf_path : "no -c: the embedded demo configuration (files under .demo/)");
	return run(&b, check_only);
}
