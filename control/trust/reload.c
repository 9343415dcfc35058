/*
 * reload: what makes a new snapshot, and when. The control socket's
 * `reload` and `tickets rotate`, SIGHUP and the blocking of a device come
 * in through trust_reload / trust_tickets_rotate; the main thread's clock
 * calls trust_tick for the file watch and the rotation timer. One reload
 * at a time (the lock of trust_options), each one either published whole
 * or refused with the running trust left in force.
 */
#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/tls.h"
#include "beacon/trust.h"
#include "trust-internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct trust_control {
	struct trust_options o;
	/* Between READY=1 and STOPPING=1 (under the lock): only then does a
	 * reload tell the service manager, which would otherwise hear READY=1
	 * too early from a reload that came in during start-up. */
	bool serving;
	time_t last_rotation;
	uint64_t watch_signature; /* of the files the running snapshot was built from */
	uint64_t watch_pending;	  /* a changed signature waiting to hold still */
	/* The bucket's trust data in force ([trust] kv_bucket; under the
	 * lock) and the thread that watches the bucket (NULL: off). */
	struct trust_kv_set kv;
	struct trust_kv *kv_watch;
};

/* The trust settings as they are on disk now: the config file read again
 * (its trust keys take effect, see config_take_reloadable). Keys changed
 * in the file that only a restart applies are named in `restart` ("" when
 * none): the running values stay, and a reload must not pass for having
 * applied them. */
static int reload_config(struct trust_control *tc, struct config *out, char *restart, size_t rlen,
			 char *msg, size_t len)
{
	*out = *tc->o.cfg;
	restart[0] = '\0';
	if (!tc->o.conf_path)
		return 0;
	struct config fresh;
	config_defaults(&fresh);
	if (config_load(tc->o.conf_path, &fresh, msg, len) != 0)
		return -1;
	config_take_reloadable(out, &fresh);
	if (config_restart_keys(tc->o.cfg, &fresh, restart, rlen) > 0)
		log_warn("reload: %s: changed keys NOT applied until a restart (the running "
			 "values stay in force): %s",
			 tc->o.conf_path, restart);
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

static int reload_snapshot(struct trust_control *tc, char *msg, size_t len)
{
	struct config cfg;
	char restart[320];
	if (reload_config(tc, &cfg, restart, sizeof restart, msg, len) != 0)
		return -1;
	struct tls_server *next;
	if (trust_server_build_with(&cfg, &tc->kv, tc->o.reader, &next, msg, len) != 0)
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

static bool reload_target_known(const char *what)
{
	static const char *const targets[] = {"all", "issuers", "crl", "blocklist", "tickets"};
	for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
		if (strcmp(what, targets[i]) == 0)
			return true;
	return false;
}

/* Under the lock. */
static int reload_locked(struct trust_control *tc, const char *what, char *msg, size_t len)
{
	if (strcmp(what, "tickets") == 0)
		return reload_tickets(tc->o.cfg, msg, len);
	/* Issuers, CRLs and the block list are one snapshot: rebuilding it
	 * whole keeps them consistent with each other. */
	int rc = reload_snapshot(tc, msg, len);
	if (rc == 0 && strcmp(what, "all") == 0) {
		char tmsg[256];
		if (reload_tickets(tc->o.cfg, tmsg, sizeof tmsg) != 0) {
			snprintf(msg, len, "%s", tmsg);
			rc = -1;
		}
	}
	return rc;
}

/* Process-wide, as the snapshot in force is: for metrics. */
static _Atomic uint64_t reloads_ok, reloads_failed;

void trust_reload_counts(uint64_t *succeeded, uint64_t *failed)
{
	*succeeded = atomic_load_explicit(&reloads_ok, memory_order_relaxed);
	*failed = atomic_load_explicit(&reloads_failed, memory_order_relaxed);
}

static _Atomic uint64_t kv_applied, kv_refused;

/* Every reload, whatever its source, is counted and logged alike. */
static void reload_account(int rc, const char *what, const char *msg)
{
	atomic_fetch_add_explicit(rc == 0 ? &reloads_ok : &reloads_failed, 1, memory_order_relaxed);
	if (rc == 0)
		log_info("reload %s: %s", what, msg);
	else
		log_err("reload %s refused, the running trust stays in force: %s", what, msg);
}

int trust_reload(struct trust_control *tc, const char *what, char *msg, size_t len)
{
	if (!reload_target_known(what)) {
		snprintf(msg, len, "reload what? all, issuers, crl, blocklist or tickets");
		return -1;
	}
	pthread_mutex_lock(tc->o.lock);
	/* Inside the lock: each reload's RELOADING=1 is followed by its own
	 * READY=1, whichever thread asked for it. */
	if (tc->serving)
		tc->o.reloading();
	int rc = reload_locked(tc, what, msg, len);
	/* A refused reload leaves the old trust serving: ready all the same. */
	if (tc->serving)
		tc->o.notify("READY=1");
	pthread_mutex_unlock(tc->o.lock);
	reload_account(rc, what, msg);
	return rc;
}

/* ---- the key-value bucket's changes ---- */

static struct trust_kv_value *kv_find(struct trust_kv_set *s, const char *label)
{
	if (strcmp(label, "kv:blocklist") == 0)
		return s->has_blocklist ? &s->blocklist : NULL;
	for (size_t i = 0; i < s->n_crls; i++)
		if (strcmp(s->crls[i].key, label) == 0)
			return &s->crls[i];
	return NULL;
}

/* Puts `value` under `label` in s (a copy; *old gets what it replaced) or
 * removes the label (*old gets the removed value). 0, 1 when a removal
 * finds nothing, or -1 with msg set. */
static int kv_stage(struct trust_kv_set *s, const char *label, const uint8_t *value, size_t len,
		    bool deleted, uint8_t **old, char *msg, size_t msglen)
{
	struct trust_kv_value *v = kv_find(s, label);
	bool is_blocklist = strcmp(label, "kv:blocklist") == 0;
	*old = v ? v->data : NULL;
	if (deleted) {
		if (!v)
			return 1;
		if (is_blocklist)
			s->has_blocklist = false;
		else
			*v = s->crls[--s->n_crls];
		return 0;
	}
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy) {
		snprintf(msg, msglen, "%s: out of memory", label);
		return -1;
	}
	if (len)
		memcpy(copy, value, len);
	if (!v && is_blocklist) {
		v = &s->blocklist;
		s->has_blocklist = true;
	} else if (!v && s->n_crls == TRUST_KV_MAX_CRLS) {
		free(copy);
		snprintf(msg, msglen, "%s: the bucket holds %d CRL keys already, the most taken",
			 label, TRUST_KV_MAX_CRLS);
		return -1;
	} else if (!v) {
		v = &s->crls[s->n_crls++];
	}
	snprintf(v->key, sizeof v->key, "%s", label);
	v->data = copy;
	v->len = len;
	return 0;
}

/* What `label` holds in s now (the value staged), NULL when none. */
static uint8_t *kv_staged_data(struct trust_kv_set *s, const char *label)
{
	struct trust_kv_value *v = kv_find(s, label);
	return v ? v->data : NULL;
}

void trust_kv_counts(uint64_t *applied, uint64_t *refused, uint64_t *connected)
{
	*applied = atomic_load_explicit(&kv_applied, memory_order_relaxed);
	*refused = atomic_load_explicit(&kv_refused, memory_order_relaxed);
	*connected = trust_kv_connected() ? 1 : 0;
}

int trust_kv_change(struct trust_control *tc, const char *key, const uint8_t *value, size_t len,
		    bool deleted)
{
	char label[sizeof tc->kv.blocklist.key], msg[768];
	snprintf(label, sizeof label, "kv:%s", key);
	struct trust_kv_set *before = malloc(sizeof *before);
	if (!before) {
		atomic_fetch_add_explicit(&kv_refused, 1, memory_order_relaxed);
		reload_account(-1, label, "out of memory");
		return -1;
	}
	pthread_mutex_lock(tc->o.lock);
	*before = tc->kv; /* shallow: the values stay owned by whichever set wins */
	uint8_t *old = NULL;
	int rc = kv_stage(&tc->kv, label, value, len, deleted, &old, msg, sizeof msg);
	if (rc == 1) {
		pthread_mutex_unlock(tc->o.lock);
		free(before);
		log_info("reload %s: deleted, and nothing of it was in force", label);
		return 0;
	}
	if (rc == 0) {
		if (tc->serving)
			tc->o.reloading();
		rc = reload_snapshot(tc, msg, sizeof msg);
		if (tc->serving)
			tc->o.notify("READY=1");
	}
	/* The set that lost gives up its own value for label. */
	uint8_t *drop = rc == 0 ? old : kv_staged_data(&tc->kv, label);
	if (rc != 0)
		tc->kv = *before;
	pthread_mutex_unlock(tc->o.lock);
	if (rc != 0 && drop == old)
		drop = NULL; /* a refused removal: old is back in force */
	free(drop);
	free(before);
	atomic_fetch_add_explicit(rc == 0 ? &kv_applied : &kv_refused, 1, memory_order_relaxed);
	reload_account(rc, label, msg);
	return rc;
}

/* The bucket's keys in force that `present` (n keys) lacks, "kv:" left
 * out, into out (at most max). Their count. */
static size_t kv_absent(struct trust_control *tc, const char (*present)[TRUST_KV_KEY_MAX], size_t n,
			char (*out)[TRUST_KV_KEY_MAX], size_t max)
{
	size_t found = 0;
	pthread_mutex_lock(tc->o.lock);
	size_t total = tc->kv.n_crls + (tc->kv.has_blocklist ? 1 : 0);
	for (size_t i = 0; i < total && found < max; i++) {
		const char *label = i < tc->kv.n_crls ? tc->kv.crls[i].key : tc->kv.blocklist.key;
		bool seen = false;
		for (size_t j = 0; j < n && !seen; j++)
			seen = strcmp(label + 3, present[j]) == 0;
		if (!seen)
			snprintf(out[found++], TRUST_KV_KEY_MAX, "%s", label + 3);
	}
	pthread_mutex_unlock(tc->o.lock);
	return found;
}

void trust_kv_sweep(struct trust_control *tc, const char (*present)[TRUST_KV_KEY_MAX], size_t n)
{
	size_t max = TRUST_KV_MAX_CRLS + 1;
	char(*gone)[TRUST_KV_KEY_MAX] = calloc(max, sizeof *gone);
	if (!gone) {
		log_err("trust kv: out of memory to take out the keys gone from the bucket");
		return;
	}
	size_t n_gone = kv_absent(tc, present, n, gone, max);
	for (size_t i = 0; i < n_gone; i++) {
		log_info("reload kv:%s: no longer in the bucket", gone[i]);
		trust_kv_change(tc, gone[i], NULL, 0, true);
	}
	free(gone);
}

int trust_tickets_rotate(struct trust_control *tc, char *msg, size_t len)
{
	if (tc->o.cfg->ticket_key_file[0]) {
		snprintf(msg, len,
			 "keys come from ticket_key_file %s (shared by the fleet): write the new "
			 "key first in that file, then run 'beaconctl reload tickets'",
			 tc->o.cfg->ticket_key_file);
		return -1;
	}
	pthread_mutex_lock(tc->o.lock);
	int rc = rotate_tickets(msg, len);
	tc->last_rotation = time(NULL);
	pthread_mutex_unlock(tc->o.lock);
	if (rc == 0)
		log_info("tickets rotate: %s", msg);
	return rc;
}

/* Reloads when the trust files changed and then stayed the same for a tick
 * (an editor or a CRL fetch mid-write is not picked up half-done). */
static void watch_tick(struct trust_control *tc)
{
	uint64_t sig = trust_files_signature(tc->o.cfg);
	if (sig == tc->watch_signature)
		return;
	if (tc->watch_pending != sig) {
		tc->watch_pending = sig;
		return;
	}
	char msg[512];
	tc->watch_signature = sig;
	tc->watch_pending = 0;
	log_info("watch: trust files changed; reloading");
	trust_reload(tc, "all", msg, sizeof msg);
}

void trust_tick(struct trust_control *tc)
{
	const struct config *cfg = tc->o.cfg;
	if (cfg->watch)
		watch_tick(tc);
	char msg[512];
	if (!cfg->ticket_key_file[0] && cfg->ticket_rotate_s &&
	    time(NULL) - tc->last_rotation >= (time_t)cfg->ticket_rotate_s)
		trust_tickets_rotate(tc, msg, sizeof msg);
}

void trust_set_serving(struct trust_control *tc, bool serving)
{
	pthread_mutex_lock(tc->o.lock);
	tc->serving = serving;
	tc->o.notify(serving ? "READY=1" : "STOPPING=1");
	pthread_mutex_unlock(tc->o.lock);
}

int trust_start(const struct trust_options *o, unsigned nworkers, struct trust_control **out,
		char *err, size_t errlen)
{
	struct trust_control *tc = calloc(1, sizeof *tc);
	struct tls_server *first = NULL;
	if (!tc) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	tc->o = *o;
	if (trust_server_build(o->cfg, o->reader, &first, err, errlen) != 0)
		goto fail;
	if (trust_init(nworkers, first) != 0) {
		snprintf(err, errlen, "out of memory");
		tls_server_unref(first);
		goto fail;
	}
	tc->last_rotation = time(NULL);
	tc->watch_signature = trust_files_signature(o->cfg);
	/* A bucket out of reach stops the start only past [trust] kv_wait
	 * (kv.c says why); once serving, the watcher keeps trying. */
	if (o->cfg->trust_kv_bucket[0] &&
	    trust_kv_start(tc, o->cfg, &tc->kv_watch, err, errlen) != 0)
		goto fail_published;
	*out = tc;
	return 0;
fail_published:
	trust_shutdown();
	free(tc);
	return -1;
fail:
	free(tc);
	return -1;
}

void trust_stop(struct trust_control *tc)
{
	if (!tc)
		return;
	/* First: its reloads need the snapshot and the store reader. */
	trust_kv_stop(tc->kv_watch);
	trust_shutdown();
	for (size_t i = 0; i < tc->kv.n_crls; i++)
		free(tc->kv.crls[i].data);
	if (tc->kv.has_blocklist)
		free(tc->kv.blocklist.data);
	free(tc);
}
