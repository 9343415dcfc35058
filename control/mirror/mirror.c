/*
 * The mirror's thread (beacon/mirror.h): a round at start, then every
 * sync_interval, at once on mirror_sync_now, and after a failure again
 * with backoff (1 s doubling to 60 s, or the interval when shorter).
 */
#include "beacon/mirror.h"

#include "mirror-internal.h"

#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/parentconn.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MAX_S 60u

struct mirror {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool kicked;
	volatile bool stop;
	unsigned interval_s;
	char download_dir[CONFIG_PATH_MAX];
	struct parent_conn *conn;
	struct mirror_status st; /* under lock */
};

void mirror_round_error(struct mirror_round *r, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_warn("mirror: %s", msg);
	if (!r->errors++)
		snprintf(r->err, sizeof r->err, "%s", msg);
}

/* One round: the manifest, each file, then the removals. 0, or -1 with
 * r->err. */
static int round_run(struct mirror *m, struct mirror_round *r, uint64_t *files)
{
	char err[256];
	r->root = open(m->download_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->root < 0) {
		mirror_round_error(r, "download_dir %s: %s", m->download_dir, strerror(errno));
		return -1;
	}
	struct mirror_manifest man = {0};
	bool listed = false;
	if (parent_conn_open(r->conn, err, sizeof err)) {
		mirror_round_error(r, "%s", err);
	} else if (mirror_manifest_fetch(r, &man) == 0) {
		listed = true;
		for (size_t i = 0; i < man.n && !m->stop; i++)
			if (mirror_fetch_file(r, &man.e[i]))
				break;
	}
	/* The list is whole (a bad or cut one was refused), whatever became
	 * of the files: what it does not name goes. That also clears the way
	 * for a name the parent turned from a file into a directory (or back),
	 * or one a planted symlink blocked, for the retry. */
	if (listed && !m->stop)
		mirror_remove_stale(r, &man);
	*files = man.n;
	mirror_manifest_free(&man);
	close(r->root);
	/* The parent closes an idle connection long before the next round. */
	parent_conn_close(r->conn);
	return r->errors || m->stop ? -1 : 0;
}

static void round_record(struct mirror *m, const struct mirror_round *r, int rc, uint64_t files)
{
	pthread_mutex_lock(&m->lock);
	m->st.syncing = false;
	m->st.files_synced += r->synced;
	m->st.bytes_synced += r->bytes;
	m->st.files_removed += r->removed;
	if (rc == 0) {
		m->st.rounds_ok++;
		m->st.files = files;
		m->st.last_success_unix_s = time(NULL);
		m->st.last_error[0] = '\0';
	} else {
		m->st.rounds_failed++;
		snprintf(m->st.last_error, sizeof m->st.last_error, "%s", r->err);
	}
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		log_info("mirror: sync round done: %" PRIu64 " files, %" PRIu64 " fetched (%" PRIu64
			 " bytes), %" PRIu64 " removed",
			 files, r->synced, r->bytes, r->removed);
	else if (!m->stop)
		log_warn("mirror: sync round failed (%u errors): %s", r->errors, r->err);
}

static void deadline_in(struct timespec *ts, unsigned s)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += s;
}

/* Waits (lock held) for the next round: a kick, the deadline, or stop.
 * wait_s 0: no deadline. */
static void wait_next(struct mirror *m, unsigned wait_s)
{
	struct timespec until;
	deadline_in(&until, wait_s);
	while (!m->stop && !m->kicked) {
		int rc = wait_s ? pthread_cond_timedwait(&m->wake, &m->lock, &until)
				: pthread_cond_wait(&m->wake, &m->lock);
		if (rc == ETIMEDOUT)
			break;
	}
	m->kicked = false;
}

static void *mirror_main(void *arg)
{
	struct mirror *m = arg;
	unsigned backoff = 0;
	pthread_mutex_lock(&m->lock);
	while (!m->stop) {
		m->st.syncing = true;
		pthread_mutex_unlock(&m->lock);
		struct mirror_round r = {.conn = m->conn, .stop = &m->stop};
		uint64_t files = 0;
		int rc = round_run(m, &r, &files);
		round_record(m, &r, rc, files);
		backoff = rc == 0   ? 0
			  : backoff ? (backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : backoff * 2)
				    : 1;
		unsigned wait_s = m->interval_s;
		if (backoff && (!wait_s || backoff < wait_s))
			wait_s = backoff;
		pthread_mutex_lock(&m->lock);
		wait_next(m, wait_s);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static int init_sync(struct mirror *m)
{
	pthread_condattr_t ca;
	if (pthread_condattr_init(&ca))
		return -1;
	int rc =
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&m->wake, &ca);
	pthread_condattr_destroy(&ca);
	if (rc)
		return -1;
	if (pthread_mutex_init(&m->lock, NULL)) {
		pthread_cond_destroy(&m->wake);
		return -1;
	}
	return 0;
}

int mirror_start(const struct config *cfg, struct mirror **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!cfg->upstream_sync)
		return 0;
	struct mirror *m = calloc(1, sizeof *m);
	if (!m) {
		snprintf(err, errlen, "mirror: out of memory");
		return -1;
	}
	m->interval_s = cfg->upstream_sync_interval_s;
	snprintf(m->download_dir, sizeof m->download_dir, "%s", cfg->download_dir);
	m->st = (struct mirror_status){.on = true, .started_unix_s = time(NULL)};
	m->conn = parent_conn_new(cfg, err, errlen);
	if (!m->conn)
		goto fail;
	if (init_sync(m)) {
		snprintf(err, errlen, "mirror: cannot make its lock");
		goto fail;
	}
	int rc = pthread_create(&m->thread, NULL, mirror_main, m);
	if (rc) {
		snprintf(err, errlen, "mirror: cannot start its thread: %s", strerror(rc));
		pthread_mutex_destroy(&m->lock);
		pthread_cond_destroy(&m->wake);
		goto fail;
	}
	log_info("mirror: %s from %s every %u s%s", cfg->download_dir, cfg->upstream_url,
		 m->interval_s, m->interval_s ? "" : " (0: on demand only)");
	*out = m;
	return 0;
fail:
	parent_conn_free(m->conn);
	free(m);
	return -1;
}

void mirror_stop(struct mirror *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	m->stop = true;
	pthread_cond_signal(&m->wake);
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->thread, NULL);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->wake);
	parent_conn_free(m->conn);
	free(m);
}

int mirror_sync_now(struct mirror *m, char *msg, size_t msglen)
{
	if (!m) {
		snprintf(msg, msglen, "upstream sync is off ([upstream] sync in beacond.conf)");
		return -1;
	}
	pthread_mutex_lock(&m->lock);
	bool running = m->st.syncing;
	m->kicked = true;
	pthread_cond_signal(&m->wake);
	pthread_mutex_unlock(&m->lock);
	snprintf(msg, msglen,
		 running ? "a sync round is running; another follows it" : "sync round started");
	return 0;
}

void mirror_status(struct mirror *m, struct mirror_status *out)
{
	if (!m) {
		*out = (struct mirror_status){0};
		return;
	}
	pthread_mutex_lock(&m->lock);
	*out = m->st;
	pthread_mutex_unlock(&m->lock);
}
