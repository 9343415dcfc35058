/*
 * A worker thread: its loop runs the ring (transport, spool and store
 * completions all arrive there) and the timer wheel, and nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "beacon/config.h"
#include "beacon/counters.h"
#include "beacon/log.h"
#include "beacon/store.h"
#include "beacon/snapshot.h"
#include "handlers/filecache.h"
#include "worker-internal.h"

#define RING_ENTRIES 4096

static void worker_pin(struct worker *w)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu <= 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(w->id % (unsigned)ncpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
		log_warn("worker %u: cannot pin to CPU %u", w->id, w->id % (unsigned)ncpu);
}

/* "beacond-wN" in ps, top and /proc/PID/task/TID/comm: an operator (or a
 * test) can tell which thread a stalled worker is. */
static void worker_name(struct worker *w)
{
	char name[16];
	snprintf(name, sizeof name, "beacond-w%u", w->id);
	int rc = pthread_setname_np(pthread_self(), name);
	if (rc != 0)
		log_warn("worker %u: cannot name its thread: %s", w->id, strerror(rc));
}

int buf_pool_init(struct buf_pool *p, size_t size, unsigned max)
{
	p->spare = calloc(max, sizeof *p->spare);
	p->n = 0;
	p->max = max;
	p->size = size;
	return p->spare ? 0 : -1;
}

void buf_pool_free(struct buf_pool *p)
{
	while (p->n)
		free(p->spare[--p->n]);
	free(p->spare);
	p->spare = NULL;
}

void *buf_pool_take(struct buf_pool *p)
{
	return p->n ? p->spare[--p->n] : malloc(p->size);
}

void buf_pool_give(struct buf_pool *p, void *buf)
{
	if (!buf)
		return;
	if (p->n < p->max)
		p->spare[p->n++] = buf;
	else
		free(buf);
}

/* Each worker holds its share of [download] cache_size: the bound is on
 * the total. */
static int download_cache_open(struct worker *w)
{
	const struct config *cfg = w->cfg;
	uint64_t share = cfg->download_cache_bytes / (w->n_workers ? w->n_workers : 1);
	if (w->download_dirfd < 0 || share == 0)
		return 0; /* off: every download opens its file */
	w->download_cache = filecache_new(share, cfg->download_cache_file_max,
					  &w->counters.download_cache_bytes);
	return w->download_cache ? 0 : -ENOMEM;
}

static int worker_setup(struct worker *w)
{
	if (buf_pool_init(&w->out_bufs, CONN_OUT_BYTES, BUF_POOL_SPARE) != 0 ||
	    buf_pool_init(&w->in_bufs, conn_in_bytes(w->cfg), BUF_POOL_SPARE) != 0) {
		snprintf(w->err, sizeof w->err, "out of memory");
		return -ENOMEM;
	}
	int rc = ring_init(&w->ring, RING_ENTRIES);
	if (rc < 0) {
		snprintf(w->err, sizeof w->err, "io_uring: %s", strerror(-rc));
		return rc;
	}
	w->ring_ready = true;
	timer_wheel_init(&w->timers, clock_ms());
	if (download_cache_open(w) != 0) {
		snprintf(w->err, sizeof w->err, "download cache: out of memory");
		return -ENOMEM;
	}
	/* With SO_REUSEPORT one source's connections spread over every
	 * worker: each enforces its share. */
	unsigned share = w->n_workers ? w->n_workers : 1;
	unsigned per_source = w->cfg->max_connections_per_source;
	unsigned rate = w->cfg->handshake_rate_per_source;
	if (source_table_init(&w->sources, per_source ? (per_source + share - 1) / share : 0,
			      rate ? (rate + share - 1) / share : 0) != 0) {
		snprintf(w->err, sizeof w->err, "out of memory");
		return -ENOMEM;
	}
	rc = store_worker_attach(w->store, w->id, &w->ring, &w->sw);
	if (rc < 0) {
		snprintf(w->err, sizeof w->err, "store: %s", store_strerror(rc));
		return -EIO;
	}
	if (w->cfg->approval == APPROVAL_REQUIRE &&
	    store_reader_open(w->cfg->data_dir, &w->devices, w->err, sizeof w->err) != 0)
		return -EIO;
	if (w->cfg->backend == BACKEND_DPDK)
		rc = transport_dpdk_open(&w->ring, w->id, w->cfg, &conn_events, w, &w->transport);
	else
		rc = transport_kernel_open(&w->ring, w->cfg, &conn_events, w, &w->transport);
	if (rc < 0) {
		snprintf(w->err, sizeof w->err, "listen %s:%u: %s", w->cfg->listen_addr,
			 w->cfg->listen_port, strerror(-rc));
		return rc;
	}
	return 0;
}

/* Copies the transport's stack counters where other threads read them
 * (relaxed: each is a counter of its own, no ordering among them). */
static void net_counters_publish(struct worker *w, uint64_t now)
{
	struct transport_net_stats s;
	transport_net_stats(w->transport, &s);
#define PUBLISH(name, help)                                                                        \
	atomic_store_explicit(&w->counters.net.name, s.name, memory_order_relaxed);
	TRANSPORT_NET_COUNTERS(PUBLISH)
#undef PUBLISH
	w->net_published_ms = now;
}

static uint64_t clock_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* One turn of the loop: ring completions (transport, spool, store), a
 * polling transport's receive work, timers. Reads as the dataflow: nothing
 * else happens on a worker. A polling transport (DPDK) spins: the ring is
 * then only peeked. Returns 0 or a ring error. */
static int worker_turn(struct worker *w)
{
	uint64_t began_ns = clock_ns(), waited_ns = w->ring.waited_ns;
	trust_quiescent(w->id);
	bool spin = transport_busy_polls(w->transport);
	int rc = ring_run_once(&w->ring, spin ? 0 : TIMER_TICK_MS * 1000000ull);
	conn_flush_queued(w);
	uint64_t now = clock_ms();
	atomic_store_explicit(&w->last_turn_ms, now, memory_order_relaxed);
	int polled = transport_poll(w->transport, now);
	timer_wheel_advance(&w->timers, now);
	conn_flush_queued(w);
	if (now - w->net_published_ms >= WORKER_NET_PUBLISH_MS)
		net_counters_publish(w, now);
	/* The turn's time less its wait in the kernel: the worker's work. */
	uint64_t turn_ns = clock_ns() - began_ns, wait_ns = w->ring.waited_ns - waited_ns;
	uint64_t busy_ns = turn_ns > wait_ns ? turn_ns - wait_ns : 0;
	counter_add(&w->counters.busy_ns, busy_ns);
	/* A polling worker's empty turns are its spin, not work. */
	if (rc > 0 || polled > 0)
		counter_add(&w->counters.work_ns, busy_ns);
	return rc < 0 && rc != -EINTR ? rc : 0;
}

static void worker_loop(struct worker *w)
{
	while (!atomic_load_explicit(&w->stopping, memory_order_relaxed)) {
		int rc = worker_turn(w);
		if (rc < 0) {
			log_err("worker %u: io_uring: %s", w->id, strerror(-rc));
			break;
		}
	}
}

/* Requests in flight finish; new ones are not read; idle ones close. */
static void worker_drain(struct worker *w)
{
	transport_stop_accepting(w->transport);
	uint64_t deadline = clock_ms() + w->grace_ms;
	while (transport_conn_count(w->transport) > 0) {
		conn_shutdown_all(w);
		if (clock_ms() > deadline)
			break;
		worker_turn(w);
	}
	if (!w->conn_head)
		return;
	log_warn("worker %u: %u connections still open after %u ms; closing them", w->id,
		 transport_conn_count(w->transport), w->grace_ms);
	conn_abort_all(w);
	/* Uploads already handed to the store still get their answer. */
	deadline = clock_ms() + 10000;
	while (w->conn_head && clock_ms() < deadline)
		worker_turn(w);
	conn_flush_queued(w); /* lets go of aborted connections still queued */
}

static void worker_teardown(struct worker *w)
{
	buf_pool_free(&w->out_bufs);
	buf_pool_free(&w->in_bufs);
	source_table_free(&w->sources);
	if (w->devices)
		store_reader_close(w->devices);
	if (w->sw)
		store_worker_detach(w->sw);
	if (w->transport) {
		net_counters_publish(w, clock_ms()); /* the last word */
		transport_free(w->transport);
	}
	if (w->ring_ready)
		ring_exit(&w->ring);
	/* Last: a connection the transport freed gave its entry back. */
	filecache_free(w->download_cache);
	w->download_cache = NULL;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	worker_pin(w);
	worker_name(w);
	w->start_rc = worker_setup(w);
	if (w->start_rc == 0) {
		atomic_store_explicit(&w->last_turn_ms, clock_ms(), memory_order_relaxed);
		atomic_store(&w->started, 1);
		worker_loop(w);
		worker_drain(w);
	}
	trust_offline(w->id);
	worker_teardown(w);
	if (w->start_rc != 0)
		atomic_store(&w->started, 1);
	return NULL;
}

int worker_start(unsigned id, unsigned n_workers, const struct config *cfg, struct store *store,
		 struct worker **out, char *err, size_t errlen)
{
	struct worker *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->id = id;
	w->n_workers = n_workers;
	w->cfg = cfg;
	w->store = store;
	w->download_dirfd = -1;
	if (cfg->download_dir[0]) {
		w->download_dirfd = open(cfg->download_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (w->download_dirfd < 0)
			log_warn("download_dir %s: %s; downloads answer 404", cfg->download_dir,
				 strerror(errno));
	}
	w->scratch = malloc(SCRATCH_BYTES);
	int rc = w->scratch ? pthread_create(&w->thread, NULL, worker_main, w) : ENOMEM;
	if (rc != 0) {
		snprintf(err, errlen, "worker %u: cannot start: %s", id, strerror(rc));
		free(w->scratch);
		free(w);
		return -rc;
	}
	while (!atomic_load(&w->started))
		usleep(1000);
	if (w->start_rc != 0) {
		snprintf(err, errlen, "worker %u: %s", id, w->err);
		rc = w->start_rc;
		pthread_join(w->thread, NULL);
		if (w->download_dirfd >= 0)
			close(w->download_dirfd);
		free(w->scratch);
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

void worker_stop(struct worker *w, unsigned grace_ms)
{
	w->grace_ms = grace_ms;
	atomic_store(&w->stopping, 1);
	pthread_join(w->thread, NULL);
}

void worker_free(struct worker *w)
{
	if (w->download_dirfd >= 0)
		close(w->download_dirfd);
	free(w->scratch);
	free(w);
}

const uint64_t worker_commit_latency_le_us[COMMIT_LATENCY_BOUNDS] = COMMIT_LATENCY_BOUNDS_US;

void worker_commit_latency(struct worker *w, uint64_t us)
{
	unsigned i = 0;
	while (i < COMMIT_LATENCY_BOUNDS && us > worker_commit_latency_le_us[i])
		i++;
	counter_add(&w->counters.commit_latency_bucket[i], 1);
	counter_add(&w->counters.commit_latency_sum_us, us);
}

uint64_t worker_idle_ms(const struct worker *w)
{
	uint64_t last = atomic_load_explicit(&w->last_turn_ms, memory_order_relaxed);
	uint64_t now = clock_ms();
	return now > last ? now - last : 0;
}

const struct worker_counters *worker_counters(const struct worker *w)
{
	return &w->counters;
}
