/*
 * stats: fills struct control_stats from the counter table (beacon/
 * counters.h): the workers' rows summed over workers, the process's rows
 * from the trust snapshot, the store and the clock.
 */
#include "stats.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "beacon/drain.h"
#include "beacon/mirror.h"
#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/transport.h"
#include "beacon/snapshot.h"
#include "beacon/trust.h"
#include "beacon/worker.h"

static uint64_t load(const _Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* A worker counts each commit in its own bucket; the totals are cumulative
 * (a commit counts in its bucket and every wider one), as Prometheus wants,
 * and the widest (+Inf) is the count. */
static void add_histogram(uint64_t *bucket, uint64_t *sum_us, uint64_t *count,
			  const _Atomic uint64_t *w_bucket, const _Atomic uint64_t *w_sum_us)
{
	uint64_t below = 0;
	for (unsigned i = 0; i < COMMIT_LATENCY_BUCKETS; i++) {
		below += load(&w_bucket[i]);
		bucket[i] += below;
	}
	*count += below;
	*sum_us += load(w_sum_us);
}

/* What adding one worker's row to the totals is, by the row's type. */
#define ADD_COUNTER(f) out->f += load(&k->f);
#define ADD_GAUGE(f) out->f += load(&k->f);
#define ADD_COUNTER_BY_RESULT(f)                                                                   \
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)                                           \
		out->f[r] += load(&k->f[r]);
#define ADD_HISTOGRAM(f)                                                                           \
	add_histogram(out->f##_bucket, &out->f##_sum_us, &out->f##_count, k->f##_bucket,           \
		      &k->f##_sum_us);
#define ADD_ALSO_COUNTER(f) /* its field is added by its first row */

static void add_worker(const struct worker_counters *k, struct control_stats *out)
{
#define ADD_ROW(field, type, metric, labels, help) ADD_##type(field)
	COUNTERS_WORKER(ADD_ROW)
#undef ADD_ROW
#define ADD_NET(name, help) out->net.name += load(&k->net.name);
	TRANSPORT_NET_COUNTERS(ADD_NET)
#undef ADD_NET
}

/* Keeps the soonest CONTROL_DATES_MAX: those are the ones to act on. */
static void add_date(const struct trust_date *d, void *arg)
{
	struct control_stats *out = arg;
	enum control_date_kind kind = d->kind == TRUST_DATE_SERVER_CERT	  ? CONTROL_DATE_SERVER_CERT
				      : d->kind == TRUST_DATE_ISSUER_CERT ? CONTROL_DATE_ISSUER_CERT
									  : CONTROL_DATE_CRL;
	/* Two issuers of one name (a CA re-keyed) would be one series twice:
	 * the sooner date stands for both. */
	for (unsigned i = 0; i < out->n_dates; i++) {
		struct control_date *c = &out->dates[i];
		if (c->kind == kind && !strncmp(c->name, d->name, sizeof c->name - 1)) {
			if (d->unix_s < c->unix_s)
				c->unix_s = d->unix_s;
			return;
		}
	}
	unsigned slot = out->n_dates;
	if (slot == CONTROL_DATES_MAX) {
		slot = 0;
		for (unsigned i = 1; i < CONTROL_DATES_MAX; i++)
			if (out->dates[i].unix_s > out->dates[slot].unix_s)
				slot = i;
		if (out->dates[slot].unix_s <= d->unix_s)
			return;
	} else {
		out->n_dates++;
	}
	struct control_date *c = &out->dates[slot];
	c->kind = kind;
	c->unix_s = d->unix_s;
	snprintf(c->name, sizeof c->name, "%s", d->name);
}

static void add_trust(pthread_mutex_t *lock, struct control_stats *out)
{
	struct tls_server_info info;
	pthread_mutex_lock(lock);
	trust_current_info(&info);
	trust_current_dates(add_date, out);
	pthread_mutex_unlock(lock);
	out->snapshot_generation = info.generation;
	out->snapshot_loaded_unix_s = info.loaded_unix_s;
	out->issuers = info.issuers;
	out->crls = info.crls;
	out->revoked_serials = info.revoked_serials;
	out->blocked_entries = info.blocked_entries;
	trust_reload_counts(&out->reload_successes, &out->reload_failures);
	trust_kv_counts(&out->trust_kv_applied, &out->trust_kv_refused, &out->trust_kv_connected);
	tls_sig_cache_counts(&out->sig_cache_hits, &out->sig_cache_misses);
}

static void add_store(struct store *store, struct control_stats *out)
{
	struct store_stats ss;
	store_stats(store, &ss);
	out->store_commits = ss.commits;
	out->store_fdatasyncs = ss.fsyncs;
	out->store_uploads_committed = ss.uploads_committed;
	out->store_uploads_expired = ss.uploads_expired;
	out->store_uploads_deduplicated = ss.uploads_deduplicated;
	out->store_recovered_bad_headers = ss.recovered_bad_headers;
	out->store_recovered_truncated_bytes = ss.recovered_truncated_bytes;
	out->store_disk_free_bytes = ss.disk_free_bytes;
	out->store_disk_size_bytes = ss.disk_size_bytes;
	out->store_spool_bytes = ss.spool_bytes;
	out->store_map_used_bytes = ss.map_used_bytes;
	out->store_map_size_bytes = ss.map_size_bytes;
	out->store_uploads_open = ss.uploads_open;
	out->store_uploads_open_max = ss.uploads_open_max;
}

static void add_drain(struct drain *drain, struct control_stats *out)
{
	struct drain_status ds;
	drain_status(drain, &ds);
	out->drain_uploads_published = ds.uploads_published;
	out->drain_uploads_acked = ds.uploads_acked;
	out->drain_uploads_failed = ds.uploads_failed;
	out->drain_bytes_published = ds.bytes_published;
	out->drain_bytes_acked = ds.bytes_acked;
	out->drain_bytes_failed = ds.bytes_failed;
	out->drain_connected = ds.state == DRAIN_CONNECTED;
	out->drain_lag_uploads = ds.lag_uploads;
	out->drain_lag_bytes = ds.lag_bytes;
	out->drain_lag_oldest_s = ds.lag_oldest_s;
}

static void add_upstream(struct drain *upstream, struct control_stats *out)
{
	struct drain_status ds;
	drain_status(upstream, &ds);
	out->upstream_uploads_published = ds.uploads_published;
	out->upstream_uploads_acked = ds.uploads_acked;
	out->upstream_uploads_failed = ds.uploads_failed;
	out->upstream_connected = ds.state == DRAIN_CONNECTED;
	out->upstream_lag_uploads = ds.lag_uploads;
	out->upstream_lag_bytes = ds.lag_bytes;
	out->upstream_lag_oldest_s = ds.lag_oldest_s;
}

static void add_mirror(struct mirror *mirror, time_t now, struct control_stats *out)
{
	struct mirror_status ms;
	mirror_status(mirror, &ms);
	out->mirror_files_synced = ms.files_synced;
	out->mirror_files_removed = ms.files_removed;
	out->mirror_bytes = ms.bytes_synced;
	out->mirror_rounds_ok = ms.rounds_ok;
	out->mirror_rounds_failed = ms.rounds_failed;
	int64_t since = ms.last_success_unix_s ? ms.last_success_unix_s : ms.started_unix_s;
	out->mirror_last_success_age_s = ms.on && now > since ? (uint64_t)(now - since) : 0;
}

void stats_collect(const struct stats_sources *src, struct control_stats *out)
{
	memset(out, 0, sizeof *out);
	time_t now = time(NULL);
	out->uptime_s = now > src->started ? (uint64_t)(now - src->started) : 0;
	out->workers = src->n_workers;
	for (unsigned i = 0; i < src->n_workers; i++) {
		add_worker(worker_counters(src->workers[i]), out);
		if (i < CONTROL_WORKERS_MAX) {
			const struct worker_counters *c = worker_counters(src->workers[i]);
			out->worker_work_ns[out->n_worker_busy] = load(&c->work_ns);
			out->worker_busy_ns[out->n_worker_busy++] = load(&c->busy_ns);
		}
	}
	out->net_stack = src->net_stack;
	add_trust(src->trust_lock, out);
	add_store(src->store, out);
	add_drain(src->drain, out);
	add_upstream(src->upstream, out);
	add_mirror(src->mirror, now, out);
}
