/* Latency histogram in microseconds: exact below 64 us, then 64 buckets per
 * power of two, so quantiles are within ~1.6% from 1 us to days, in a fixed
 * array that threads merge at the end without locks. */
#include "agentsim.h"

static unsigned bucket_of(uint64_t us)
{
	if (us < 64)
		return (unsigned)us;
	unsigned msb = 63u - (unsigned)__builtin_clzll(us);
	unsigned idx = 64 + (msb - 6) * 64 + (unsigned)((us >> (msb - 6)) & 63);
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of a bucket, in microseconds. */
static double bucket_value(unsigned idx)
{
	if (idx < 64)
		return idx;
	unsigned shift = (idx - 64) / 64;
	uint64_t low = (uint64_t)(64 + (idx - 64) % 64) << shift;
	return (double)low + (double)((1ULL << shift) - 1) / 2.0;
}

void hist_add(struct hist *h, uint64_t us)
{
	h->count[bucket_of(us)]++;
	h->total++;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->count[i] += from->count[i];
	into->total += from->total;
}

double hist_quantile_ms(const struct hist *h, double q)
{
	if (h->total == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->total);
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->count[i];
		if (seen > rank)
			return bucket_value(i) / 1000.0;
	}
	return bucket_value(HIST_BUCKETS - 1) / 1000.0;
}
