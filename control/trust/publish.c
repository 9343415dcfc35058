/*
 * publish: the RCU swap of the current snapshot (the model is in
 * beacon/snapshot.h): the workers' quiescent points, and the control
 * thread's publication that waits for them before it drops the old one.
 */
#include "beacon/tls.h"
#include "beacon/trust.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define OFFLINE UINT64_MAX

/* One cache line per worker: each writes only its own. */
struct worker_slot {
	_Atomic uint64_t seen;
	char pad[64 - sizeof(uint64_t)];
};

static _Atomic(struct tls_server *) current;
static _Atomic uint64_t epoch = 1;
static struct worker_slot *slots;
static unsigned n_slots;

int trust_init(unsigned nworkers, struct tls_server *first)
{
	slots = aligned_alloc(64, sizeof *slots * (nworkers ? nworkers : 1));
	if (!slots)
		return -1;
	n_slots = nworkers;
	for (unsigned i = 0; i < nworkers; i++)
		atomic_store(&slots[i].seen, OFFLINE);
	atomic_store(&current, first);
	return 0;
}

void trust_shutdown(void)
{
	tls_server_unref(atomic_exchange(&current, NULL));
	free(slots);
	slots = NULL;
	n_slots = 0;
}

struct tls_server *trust_acquire(void)
{
	return tls_server_ref(atomic_load_explicit(&current, memory_order_acquire));
}

uint64_t trust_generation(void)
{
	/* trust_publish swaps the pointer before it bumps the epoch: whoever
	 * sees the new epoch then acquires the new snapshot. */
	return atomic_load_explicit(&epoch, memory_order_acquire);
}

void trust_quiescent(unsigned worker)
{
	atomic_store_explicit(&slots[worker].seen,
			      atomic_load_explicit(&epoch, memory_order_acquire),
			      memory_order_release);
}

void trust_offline(unsigned worker)
{
	atomic_store_explicit(&slots[worker].seen, OFFLINE, memory_order_release);
}

static bool grace_period_over(uint64_t target)
{
	for (unsigned i = 0; i < n_slots; i++) {
		uint64_t seen = atomic_load_explicit(&slots[i].seen, memory_order_acquire);
		if (seen != OFFLINE && seen < target)
			return false;
	}
	return true;
}

void trust_publish(struct tls_server *next)
{
	struct tls_server *old = atomic_exchange_explicit(&current, next, memory_order_acq_rel);
	uint64_t target = atomic_fetch_add_explicit(&epoch, 1, memory_order_acq_rel) + 1;
	/* Workers pass a quiescent point at least every loop tick (10 ms). */
	struct timespec nap = {.tv_sec = 0, .tv_nsec = 1000000};
	while (!grace_period_over(target))
		nanosleep(&nap, NULL);
	tls_server_unref(old);
}

void trust_current_info(struct tls_server_info *out)
{
	trust_snapshot_info(tls_server_trust(atomic_load_explicit(&current, memory_order_acquire)),
			    out);
}

void trust_current_dates(void (*fn)(const struct trust_date *d, void *arg), void *arg)
{
	trust_snapshot_dates(tls_server_trust(atomic_load_explicit(&current, memory_order_acquire)),
			     fn, arg);
}
