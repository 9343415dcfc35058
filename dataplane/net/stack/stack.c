/*
 * What every layer of the stack shares: frames out through a burst buffer,
 * a timer wheel of 1 ms slots, the Internet checksum, and SipHash for
 * anything keyed by attacker-chosen values (SYN cookies, the connection
 * table).
 */
#include <string.h>

#include <rte_ethdev.h>

#include "stack.h"

/* ---- frames out ---- */

void stack_tx_flush(struct stack *s)
{
	unsigned done = 0;
	/* A full TX ring empties in microseconds; a few tries, then drop:
	 * TCP retransmits what is lost here. */
	for (int tries = 0; done < s->ntx && tries < 4; tries++)
		done += rte_eth_tx_burst(s->port, s->queue, s->tx + done,
					 (uint16_t)(s->ntx - done));
	s->st.tx_frames += done;
	if (done < s->ntx) {
		s->st.tx_dropped += s->ntx - done;
		rte_pktmbuf_free_bulk(s->tx + done, s->ntx - done);
	}
	s->ntx = 0;
}

void stack_tx(struct stack *s, struct rte_mbuf *m)
{
	if (s->ntx == STACK_TX_BURST)
		stack_tx_flush(s);
	s->tx[s->ntx++] = m;
}

struct rte_mbuf *stack_alloc(struct stack *s)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(s->pool);
	if (!m)
		s->st.tx_nombuf++;
	return m;
}

bool stack_on_link(const struct stack *s, uint32_t ip)
{
	return ((ip ^ s->ip) & s->netmask) == 0;
}

/* ---- timers ---- */

void stimer_wheel_init(struct stimer_wheel *w, uint64_t now_ms)
{
	memset(w, 0, sizeof *w);
	w->now_ms = now_ms;
}

void stimer_disarm(struct stimer *t)
{
	if (!t->pprev)
		return;
	*t->pprev = t->next;
	if (t->next)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
}

void stimer_arm(struct stimer_wheel *w, struct stimer *t, uint64_t deadline_ms)
{
	stimer_disarm(t);
	/* Never due in the slot being processed: callers re-arm from inside
	 * the expiry callback. */
	if (deadline_ms <= w->now_ms)
		deadline_ms = w->now_ms + 1;
	t->deadline_ms = deadline_ms;
	struct stimer **head = &w->slot[deadline_ms & (STIMER_SLOTS - 1)];
	t->next = *head;
	if (*head)
		(*head)->pprev = &t->next;
	*head = t;
	t->pprev = head;
}

/* Timers farther than one turn stay in their slot and are skipped until
 * their turn comes; the fired one is unlinked before its callback, which
 * may re-arm it (into another slot: deadlines are always in the future). */
static void slot_expire(struct stimer **head, uint64_t now_ms, void (*fire)(struct stimer *t))
{
	struct stimer *t = *head;
	while (t) {
		struct stimer *next = t->next;
		if (t->deadline_ms <= now_ms) {
			stimer_disarm(t);
			fire(t);
			/* fire() touches only its own timer, and re-arms it
			 * into a later slot: `next` is still linked here. */
		}
		t = next;
	}
}

void stimer_advance(struct stimer_wheel *w, uint64_t now_ms, void (*fire)(struct stimer *t))
{
	if (now_ms <= w->now_ms)
		return;
	uint64_t from = w->now_ms + 1;
	if (now_ms - from >= STIMER_SLOTS)
		from = now_ms - STIMER_SLOTS + 1;
	w->now_ms = now_ms;
	for (uint64_t ms = from; ms <= now_ms; ms++)
		slot_expire(&w->slot[ms & (STIMER_SLOTS - 1)], now_ms, fire);
}

/* ---- the Internet checksum (RFC 1071) ---- */

/* 32-bit halves of 64-bit loads into a 64-bit sum: no carry is lost for
 * anything shorter than 16 GiB, and as 2^16 = 1 (mod 0xffff) the folded
 * sum is that of the 16-bit words. DPDK's rte_raw_cksum adds one 16-bit
 * word per step (GCC does not vectorise it at -O2): on full-size segments
 * it was most of the stack's time (perf/stackbench). Loads in host order,
 * as rte_raw_cksum's: the result is in the same order as its. */
uint16_t stack_cksum(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t a = 0, b = 0; /* two chains of additions, not one */
	for (; len >= 16; p += 16, len -= 16) {
		uint64_t w0, w1;
		memcpy(&w0, p, 8);
		memcpy(&w1, p + 8, 8);
		a += (w0 & 0xffffffffu) + (w0 >> 32);
		b += (w1 & 0xffffffffu) + (w1 >> 32);
	}
	for (; len >= 4; p += 4, len -= 4) {
		uint32_t w;
		memcpy(&w, p, 4);
		a += w;
	}
	if (len >= 2) {
		uint16_t w;
		memcpy(&w, p, 2);
		a += w;
		p += 2;
		len -= 2;
	}
	if (len)
		a += *p; /* the odd byte, padded with a zero after it */
	a += b;
	while (a >> 16)
		a = (a & 0xffff) + (a >> 16);
	return (uint16_t)a;
}

uint16_t stack_l4_cksum(const struct rte_ipv4_hdr *ip, const void *l4, size_t len)
{
	uint32_t sum = (uint32_t)rte_ipv4_phdr_cksum(ip, 0) + stack_cksum(l4, len);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* ---- SipHash-2-4 ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

/* inline: GCC at -O2 kept it a call, so v[] went through memory in every
 * round; every segment's connection lookup hashes (perf/stackbench). */
static inline void sip_round(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = ROTL(v[1], 13);
	v[1] ^= v[0];
	v[0] = ROTL(v[0], 32);
	v[2] += v[3];
	v[3] = ROTL(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = ROTL(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = ROTL(v[1], 17);
	v[1] ^= v[2];
	v[2] = ROTL(v[2], 32);
}

static uint64_t load64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v; /* little-endian host (x86-64, arm64) */
}

uint64_t siphash24(const uint8_t key[16], const void *data, size_t len)
{
	const uint8_t *in = data;
	uint64_t k0 = load64(key), k1 = load64(key + 8);
	uint64_t v[4] = {0x736f6d6570736575ull ^ k0, 0x646f72616e646f6dull ^ k1,
			 0x6c7967656e657261ull ^ k0, 0x7465646279746573ull ^ k1};
	size_t full = len & ~(size_t)7;
	for (size_t i = 0; i < full; i += 8) {
		uint64_t m = load64(in + i);
		v[3] ^= m;
		sip_round(v);
		sip_round(v);
		v[0] ^= m;
	}
	uint64_t b = (uint64_t)len << 56;
	for (size_t i = full; i < len; i++)
		b |= (uint64_t)in[i] << (8 * (i - full));
	v[3] ^= b;
	sip_round(v);
	sip_round(v);
	v[0] ^= b;
	v[2] ^= 0xff;
	for (int i = 0; i < 4; i++)
		sip_round(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}
