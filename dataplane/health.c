/*
 * health: the reasons behind /healthz and /readyz (see health.h).
 */
#include <stdarg.h>
#include <stdio.h>

#include "beacon/store.h"
#include "beacon/worker.h"
#include "health.h"

/* The reasons found so far: lines appended to msg, cut at its size. */
struct reasons {
	char *msg;
	size_t len, used;
	unsigned n;
};

__attribute__((format(printf, 2, 3))) static void reason_add(struct reasons *r, const char *fmt,
							     ...)
{
	r->n++;
	if (r->used + 1 >= r->len)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(r->msg + r->used, r->len - r->used, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	r->used += (size_t)n < r->len - r->used ? (size_t)n : r->len - r->used - 1;
	if (r->used + 1 < r->len) {
		r->msg[r->used++] = '\n';
		r->msg[r->used] = '\0';
	}
}

static void check_workers(const struct health_sources *src, struct reasons *r)
{
	for (unsigned i = 0; i < src->n_workers; i++) {
		uint64_t idle = worker_idle_ms(src->workers[i]);
		if (idle > src->stall_ms)
			reason_add(r, "worker %u: loop stalled for %llu s", i,
				   (unsigned long long)(idle / 1000u));
	}
}

static void check_commits(const struct store_health *sh, uint64_t stall_ms, struct reasons *r)
{
	if (sh->committing_ms > stall_ms)
		reason_add(r, "store: commit stalled for %llu s",
			   (unsigned long long)(sh->committing_ms / 1000u));
	if (sh->last_commit)
		reason_add(r, "store: last commit failed: %s", store_strerror(sh->last_commit));
}

static int verdict(struct reasons *r)
{
	if (!r->n)
		return 0;
	if (r->used && r->msg[r->used - 1] == '\n')
		r->msg[--r->used] = '\0'; /* the caller ends the body */
	return -1;
}

int health_live(const struct health_sources *src, char *msg, size_t msglen)
{
	struct reasons r = {.msg = msg, .len = msglen};
	if (msglen)
		msg[0] = '\0';
	check_workers(src, &r);
	struct store_health sh;
	store_health(src->store, &sh); /* free space is readiness's concern */
	check_commits(&sh, src->stall_ms, &r);
	return verdict(&r);
}

int health_ready(const struct health_sources *src, char *msg, size_t msglen)
{
	struct reasons r = {.msg = msg, .len = msglen};
	if (msglen)
		msg[0] = '\0';
	if (!src->serving)
		reason_add(&r, "not serving: starting or stopping");
	check_workers(src, &r);
	struct store_health sh;
	int rc = store_health(src->store, &sh);
	check_commits(&sh, src->stall_ms, &r);
	if (rc)
		reason_add(&r, "store: cannot read the free space: %s", store_strerror(rc));
	else if (sh.free_bytes < sh.need_bytes)
		reason_add(&r,
			   "store: disk full: %llu bytes free, an upload needs %llu (uploads get "
			   "507)",
			   (unsigned long long)sh.free_bytes, (unsigned long long)sh.need_bytes);
	return verdict(&r);
}
