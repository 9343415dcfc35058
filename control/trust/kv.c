/*
 * kv: trust for a fleet from a JetStream key-value bucket ([trust]
 * kv_bucket). An operator puts a CRL once (key crl.<name>, PEM or DER) or
 * the block list (key blocklist, the file's format); every beacon watching
 * the bucket hands each change to trust_kv_change, which builds and checks
 * it exactly as a file reload does. The watch pushes a change as it is
 * stored, so it is in force within a round trip and one build.
 *
 * One thread, its own connection (with [drain]'s login and TLS keys): a
 * server, bucket or watch that fails is retried (0.5 s doubling to 5 s)
 * while the trust in force stays; a new watch replays the bucket's every
 * key, so what changed while it was away is applied then.
 */
#include "beacon/config.h"
#include "beacon/log.h"
#include "trust-internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "beacon/natsconn.h"
#include <nats/nats.h>

#define KV_URLS_MAX 16
#define KV_NEXT_MS 250 /* how often the thread looks up from the watch to see a stop */
#define KV_BACKOFF_MIN_MS 500
#define KV_BACKOFF_MAX_MS 5000

struct trust_kv {
	struct trust_control *tc;
	char bucket[64];
	char urls[512];
	char user[128], password[128];
	char creds[CONFIG_PATH_MAX], tls_ca[CONFIG_PATH_MAX];
	char tls_cert[CONFIG_PATH_MAX], tls_key[CONFIG_PATH_MAX];
	pthread_t thread;
	_Atomic bool stop;
	/* Set by cnats when the connection came back: the watch is opened
	 * anew, so that it reads the bucket as it stands now. */
	_Atomic bool reconnected;
	/* Start-up waits on this for the bucket's first whole read. */
	pthread_mutex_t read_lock;
	pthread_cond_t read_cond;
	bool read_once;
	char last_error[512];
};

static void first_read_done(struct trust_kv *k)
{
	pthread_mutex_lock(&k->read_lock);
	k->read_once = true;
	pthread_cond_broadcast(&k->read_cond);
	pthread_mutex_unlock(&k->read_lock);
}

static void error_note(struct trust_kv *k, const char *err)
{
	pthread_mutex_lock(&k->read_lock);
	snprintf(k->last_error, sizeof k->last_error, "%s", err);
	pthread_mutex_unlock(&k->read_lock);
}

/* True once the bucket was read whole; false after wait_ms, with the last
 * failure in err. */
static bool first_read_wait(struct trust_kv *k, unsigned wait_ms, char *err, size_t errlen)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&k->read_lock);
	int rc = 0;
	while (!k->read_once && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&k->read_cond, &k->read_lock, &until);
	bool done = k->read_once;
	if (!done)
		snprintf(err, errlen, "%s", k->last_error[0] ? k->last_error : "no answer yet");
	pthread_mutex_unlock(&k->read_lock);
	return done;
}

/* Process-wide, as the trust in force is: for metrics. */
static _Atomic bool watching;

bool trust_kv_connected(void)
{
	return atomic_load_explicit(&watching, memory_order_relaxed);
}

/* What one connection holds; all NULL when not connected. */
struct kv_session {
	natsConnection *nc;
	jsCtx *js;
	kvStore *store;
	kvWatcher *watch;
};

static void status_text(char *err, size_t errlen, const char *what, natsStatus st)
{
	const char *last = nats_GetLastError(NULL);
	snprintf(err, errlen, "%s: %s%s%s", what, natsStatus_GetText(st), last ? ": " : "",
		 last ? last : "");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	struct trust_kv *k = closure;
	atomic_store(&k->reconnected, true);
}

static natsStatus make_options(struct trust_kv *k, natsOptions **out)
{
	const struct nats_login l = {.urls = k->urls,
				     .user = k->user,
				     .password = k->password,
				     .creds = k->creds,
				     .tls_ca = k->tls_ca,
				     .tls_cert = k->tls_cert,
				     .tls_key = k->tls_key,
				     .connect_timeout_ms = 2000};
	natsStatus st = natsconn_options(&l, out);
	if (st == NATS_OK) {
		st = natsOptions_SetReconnectedCB(*out, on_reconnected, k);
		if (st != NATS_OK)
			natsOptions_Destroy(*out);
	}
	return st;
}

/* The connection is closed first. Stopping a watcher on an open one
 * deletes its ordered consumer, and libnats 3.4 reads the consumer's name
 * there while its own reset thread may be freeing it (a bucket made anew
 * resets the consumer): a use-after-free that ASan caught at shutdown. On
 * a closed connection the unsubscribe stops before that step; the server
 * drops the ephemeral consumer itself once it is inactive. */
static void session_close(struct kv_session *s)
{
	if (s->nc)
		natsConnection_Close(s->nc);
	if (s->watch)
		kvWatcher_Destroy(s->watch);
	kvStore_Destroy(s->store);
	jsCtx_Destroy(s->js);
	natsConnection_Destroy(s->nc);
	*s = (struct kv_session){0};
}

/* Connected, the bucket found, every key of it on its way. 0, or -1 with
 * err (the session closed). */
static int session_open(struct trust_kv *k, struct kv_session *s, char *err, size_t errlen)
{
	natsOptions *o = NULL;
	natsStatus st = make_options(k, &o);
	if (st != NATS_OK) {
		status_text(err, errlen, "nats options", st);
		return -1;
	}
	atomic_store(&k->reconnected, false);
	st = natsConnection_Connect(&s->nc, o);
	natsOptions_Destroy(o);
	const char *what = "connect";
	if (st == NATS_OK) {
		what = "jetstream";
		st = natsConnection_JetStream(&s->js, s->nc, NULL);
	}
	if (st == NATS_OK) {
		what = "bucket";
		st = js_KeyValue(&s->store, s->js, k->bucket);
	}
	if (st == NATS_OK) {
		what = "watch";
		kvWatchOptions wo;
		kvWatchOptions_Init(&wo);
		st = kvStore_WatchAll(&s->watch, s->store, &wo);
	}
	if (st != NATS_OK) {
		status_text(err, errlen, what, st);
		session_close(s);
		return -1;
	}
	return 0;
}

/* crl.<name> or blocklist: the keys trust is made of. */
static bool key_is_trust(const char *key)
{
	return strcmp(key, "blocklist") == 0 || (strncmp(key, "crl.", 4) == 0 && key[4]);
}

static void entry_apply(struct trust_kv *k, kvEntry *e)
{
	const char *key = kvEntry_Key(e);
	if (!key || !key_is_trust(key)) {
		log_warn("trust kv %s: key '%s' ignored: trust keys are crl.<name> and blocklist",
			 k->bucket, key ? key : "");
		return;
	}
	kvOperation op = kvEntry_Operation(e);
	bool gone = op == kvOp_Delete || op == kvOp_Purge;
	int len = gone ? 0 : kvEntry_ValueLen(e);
	const uint8_t *value = gone ? NULL : kvEntry_Value(e);
	trust_kv_change(k->tc, key, value, len > 0 ? (size_t)len : 0, gone);
}

/* The trust keys a watch's first read of the bucket met. */
struct kv_seen {
	char keys[TRUST_KV_MAX_CRLS + 1][TRUST_KV_KEY_MAX];
	size_t n;
	bool overflow;
};

static void seen_add(struct kv_seen *seen, kvEntry *e)
{
	const char *key = kvEntry_Key(e);
	kvOperation op = kvEntry_Operation(e);
	if (!key || !key_is_trust(key) || op == kvOp_Delete || op == kvOp_Purge)
		return;
	if (seen->n == sizeof seen->keys / sizeof *seen->keys) {
		seen->overflow = true;
		return;
	}
	snprintf(seen->keys[seen->n++], TRUST_KV_KEY_MAX, "%s", key);
}

static int watch_loop(struct trust_kv *k, struct kv_session *s, struct kv_seen *seen, char *err,
		      size_t errlen)
{
	unsigned initial = 0;
	bool caught_up = false;
	while (!atomic_load(&k->stop)) {
		/* Whatever the server lost or gained while the link was
		 * down (a bucket made anew has not even delete markers), a
		 * new watch sees the bucket whole. */
		if (atomic_exchange(&k->reconnected, false)) {
			snprintf(err, errlen, "NATS reconnected; reading the bucket anew");
			return -1;
		}
		kvEntry *e = NULL;
		natsStatus st = kvWatcher_Next(&e, s->watch, KV_NEXT_MS);
		if (st == NATS_TIMEOUT) {
			/* While cnats reconnects the watch outlives the link. */
			atomic_store(&watching,
				     natsConnection_Status(s->nc) == NATS_CONN_STATUS_CONNECTED);
			if (natsConnection_IsClosed(s->nc)) {
				snprintf(err, errlen, "connection closed");
				return -1;
			}
			continue;
		}
		if (st != NATS_OK) {
			status_text(err, errlen, "watch", st);
			return -1;
		}
		if (!e) { /* the bucket's keys as they stood are all in */
			caught_up = true;
			log_info("trust kv %s: %u keys read; watching for changes", k->bucket,
				 initial);
			/* Keys gone while no watch was up (a bucket made anew
			 * has not even their delete markers) go now. */
			if (!seen->overflow)
				trust_kv_sweep(k->tc, (const char(*)[TRUST_KV_KEY_MAX])seen->keys,
					       seen->n);
			first_read_done(k);
			continue;
		}
		if (!caught_up) {
			initial++;
			seen_add(seen, e);
		}
		entry_apply(k, e);
		kvEntry_Destroy(e);
	}
	return 0;
}

/* Watches until a stop (0) or a failure (-1 with err). */
static int session_watch(struct trust_kv *k, struct kv_session *s, char *err, size_t errlen)
{
	struct kv_seen *seen = calloc(1, sizeof *seen);
	if (!seen) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int rc = watch_loop(k, s, seen, err, errlen);
	free(seen);
	return rc;
}

/* Sleeps ms, or less when asked to stop. */
static void nap(struct trust_kv *k, unsigned ms)
{
	struct timespec step = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
	for (unsigned slept = 0; slept < ms && !atomic_load(&k->stop); slept += 50)
		nanosleep(&step, NULL);
}

static void *kv_main(void *arg)
{
	struct trust_kv *k = arg;
	unsigned backoff = KV_BACKOFF_MIN_MS;
	char err[512], last[512] = "";
	while (!atomic_load(&k->stop)) {
		struct kv_session s = {0};
		int rc = session_open(k, &s, err, sizeof err);
		if (rc == 0) {
			log_info("trust kv %s: watching on %s", k->bucket, k->urls);
			last[0] = '\0';
			backoff = KV_BACKOFF_MIN_MS;
			atomic_store(&watching, true);
			rc = session_watch(k, &s, err, sizeof err);
			atomic_store(&watching, false);
			session_close(&s);
		}
		if (rc == 0)
			break;
		/* Once per distinct failure: a server down for an hour is
		 * one line, not thousands. */
		error_note(k, err);
		if (strcmp(err, last) != 0)
			log_warn("trust kv %s: %s; the trust in force stays, retrying", k->bucket,
				 err);
		snprintf(last, sizeof last, "%s", err);
		nap(k, backoff);
		backoff = backoff * 2 > KV_BACKOFF_MAX_MS ? KV_BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

int trust_kv_start(struct trust_control *tc, const struct config *cfg, struct trust_kv **out,
		   char *err, size_t errlen)
{
	struct trust_kv *k = calloc(1, sizeof *k);
	if (!k) {
		snprintf(err, errlen, "trust kv: out of memory");
		return -1;
	}
	k->tc = tc;
	snprintf(k->bucket, sizeof k->bucket, "%s", cfg->trust_kv_bucket);
	snprintf(k->urls, sizeof k->urls, "%s",
		 cfg->trust_kv_nats[0] ? cfg->trust_kv_nats : cfg->drain_nats);
	snprintf(k->user, sizeof k->user, "%s", cfg->drain_user);
	snprintf(k->password, sizeof k->password, "%s", cfg->drain_password);
	snprintf(k->creds, sizeof k->creds, "%s", cfg->drain_creds);
	snprintf(k->tls_ca, sizeof k->tls_ca, "%s", cfg->drain_tls_ca);
	snprintf(k->tls_cert, sizeof k->tls_cert, "%s", cfg->drain_tls_cert);
	snprintf(k->tls_key, sizeof k->tls_key, "%s", cfg->drain_tls_key);
	pthread_mutex_init(&k->read_lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&k->read_cond, &attr);
	pthread_condattr_destroy(&attr);
	int rc = pthread_create(&k->thread, NULL, kv_main, k);
	if (rc != 0) {
		snprintf(err, errlen, "trust kv: thread: %s", strerror(rc));
		free(k);
		return -1;
	}
	/* Serving before the bucket is read could admit a device only the
	 * bucket revokes: wait for it, and do not start without it, unless
	 * the operator chose to serve at once (kv_wait = 0). */
	char why[512];
	if (cfg->trust_kv_wait_ms && !first_read_wait(k, cfg->trust_kv_wait_ms, why, sizeof why)) {
		snprintf(err, errlen,
			 "trust kv %s: the bucket was not read within [trust] kv_wait (%u ms): %s; "
			 "not serving with the files' trust alone (kv_wait = 0 would)",
			 k->bucket, cfg->trust_kv_wait_ms, why);
		trust_kv_stop(k);
		return -1;
	}
	*out = k;
	return 0;
}

void trust_kv_stop(struct trust_kv *k)
{
	if (!k)
		return;
	atomic_store(&k->stop, true);
	pthread_join(k->thread, NULL);
	explicit_bzero(k->password, sizeof k->password);
	pthread_cond_destroy(&k->read_cond);
	pthread_mutex_destroy(&k->read_lock);
	free(k);
}
