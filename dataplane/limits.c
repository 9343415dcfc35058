#include "limits.h"

#include "beacon/config.h"
#include "worker-internal.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

int source_table_init(struct source_table *t, unsigned max_conns, unsigned rate_per_s)
{
	memset(t, 0, sizeof *t);
	t->slots = calloc(SOURCE_SLOTS, sizeof *t->slots);
	if (!t->slots)
		return -1;
	t->max_conns = max_conns;
	t->rate_per_ms = (float)rate_per_s / 1000.0f;
	/* A burst of one second's worth: an agent that reconnects a few times
	 * in a row is not punished. */
	t->burst = rate_per_s ? (float)rate_per_s : 0;
	return 0;
}

void source_table_free(struct source_table *t)
{
	free(t->slots);
	t->slots = NULL;
}

void source_key(const struct sockaddr *peer, uint8_t key[16])
{
	memset(key, 0, 16);
	if (peer->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
	} else if (peer->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)peer)->sin_addr, 4);
	}
}

static unsigned source_hash(const uint8_t key[16])
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 0x100000001b3ull;
	return (unsigned)(h ^ (h >> 29)) & (SOURCE_SLOTS - 1);
}

/* Forgets sources without open connections, rebuilding the probe chains. */
static void source_table_sweep(struct source_table *t)
{
	struct source *old = t->slots;
	struct source *fresh = calloc(SOURCE_SLOTS, sizeof *fresh);
	if (!fresh)
		return;
	t->slots = fresh;
	t->used = 0;
	for (unsigned i = 0; i < SOURCE_SLOTS; i++) {
		if (!old[i].used || !old[i].conns)
			continue;
		unsigned j = source_hash(old[i].addr);
		while (fresh[j].used)
			j = (j + 1) & (SOURCE_SLOTS - 1);
		fresh[j] = old[i];
		t->used++;
	}
	free(old);
}

static struct source *source_find(struct source_table *t, const uint8_t key[16], uint64_t now_ms)
{
	if (t->used >= SOURCE_SLOTS * 3 / 4)
		source_table_sweep(t);
	if (t->used >= SOURCE_SLOTS * 3 / 4)
		return NULL;
	unsigned i = source_hash(key);
	while (t->slots[i].used) {
		if (!memcmp(t->slots[i].addr, key, 16))
			return &t->slots[i];
		i = (i + 1) & (SOURCE_SLOTS - 1);
	}
	struct source *s = &t->slots[i];
	memcpy(s->addr, key, 16);
	s->used = 1;
	s->conns = 0;
	s->tokens = t->burst;
	s->refill_ms = (uint32_t)now_ms;
	t->used++;
	return s;
}

enum source_verdict source_admit(struct source_table *t, const uint8_t key[16], uint64_t now_ms)
{
	struct source *s = source_find(t, key, now_ms);
	if (!s)
		return SOURCE_TABLE_FULL;
	if (t->max_conns && s->conns >= t->max_conns)
		return SOURCE_TOO_MANY;
	if (t->rate_per_ms > 0) {
		uint32_t elapsed = (uint32_t)now_ms - s->refill_ms;
		s->refill_ms = (uint32_t)now_ms;
		s->tokens += (float)elapsed * t->rate_per_ms;
		if (s->tokens > t->burst)
			s->tokens = t->burst;
		if (s->tokens < 1.0f)
			return SOURCE_TOO_FAST;
		s->tokens -= 1.0f;
	}
	s->conns++;
	return SOURCE_OK;
}

void source_release(struct source_table *t, const uint8_t key[16])
{
	unsigned i = source_hash(key);
	while (t->slots[i].used) {
		if (!memcmp(t->slots[i].addr, key, 16)) {
			if (t->slots[i].conns)
				t->slots[i].conns--;
			return;
		}
		i = (i + 1) & (SOURCE_SLOTS - 1);
	}
}

bool admit_worker(struct worker *w)
{
	if (atomic_load(&w->stopping) ||
	    transport_conn_count(w->transport) > w->cfg->max_connections) {
		counter_add(&w->counters.connections_refused, 1);
		return false;
	}
	if (w->handshakes_active >= w->cfg->max_handshakes_in_progress) {
		counter_add(&w->counters.refused_handshakes, 1);
		return false;
	}
	return true;
}

unsigned admit_room(void *worker)
{
	const struct worker *w = worker;
	unsigned cap = w->cfg->max_handshakes_in_progress;
	if (atomic_load(&w->stopping) || w->handshakes_active >= cap)
		return 0;
	return cap - w->handshakes_active;
}

void handshake_slot_take(struct worker *w)
{
	w->handshakes_active++;
	counter_add(&w->counters.handshakes_in_progress, 1);
}

void handshake_slot_give(struct worker *w)
{
	w->handshakes_active--;
	counter_add(&w->counters.handshakes_in_progress, (uint64_t)-1);
	/* A connection waiting in the listen queue may take the slot. */
	transport_accept_ready(w->transport);
}

bool admit_source(struct worker *w, const uint8_t key[16])
{
	switch (source_admit(&w->sources, key, w->timers.now_ms)) {
	case SOURCE_OK:
		return true;
	case SOURCE_TOO_FAST:
		counter_add(&w->counters.refused_rate, 1);
		return false;
	case SOURCE_TOO_MANY:
	case SOURCE_TABLE_FULL:
		counter_add(&w->counters.refused_per_source, 1);
		return false;
	}
	return false;
}

bool admit_connection(struct worker *w, const struct sockaddr *peer, uint8_t key[16])
{
	source_key(peer, key);
	return admit_worker(w) && admit_source(w, key);
}

bool source_in_prefixes(const struct sockaddr *peer, const struct config_prefix *list, unsigned n)
{
	uint8_t key[16];
	source_key(peer, key);
	if (peer->sa_family != AF_INET && peer->sa_family != AF_INET6)
		return false;
	for (unsigned i = 0; i < n; i++) {
		unsigned bits = list[i].bits, whole = bits / 8, rest = bits % 8;
		if (memcmp(key, list[i].addr, whole) != 0)
			continue;
		if (rest && ((key[whole] ^ list[i].addr[whole]) & (uint8_t)(0xff00 >> rest)))
			continue;
		return true;
	}
	return false;
}
