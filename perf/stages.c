/* --stages: where each upload's time went, from its arrival to its answer,
 * so that a latency tail can be laid at the client's door or the server's.
 * An upload that came with a new connection is cut into five stages by
 * what the client sees (loop.c records it):
 *
 *   client_wait   arrival -> connect()         the load generator's own queue
 *   tcp_connect   connect() -> established      the kernel's SYN and SYN-ACK
 *   server_first  established -> handshake     waiting for the server's first
 *                 done, less client_hs         flight: its accept queue, its
 *                                              worker's queue, its ClientHello
 *   client_hs     time inside wolfSSL_connect  the client's own TLS work
 *   response      handshake done -> answer     the server's second half: the
 *                                              client's certificate, the upload,
 *                                              the durable commit, the 201
 *
 * server_first and response also hold the client's delay in noticing the
 * server's bytes (its event loop's lag behind its other connections);
 * client_wait shows how far that loop is behind.
 *
 * Each thread keeps its own records (no locks); they are merged once the
 * threads have ended. */
#include "agentsim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const stage_names[STAGES] = {"client_wait", "tcp_connect", "server_first",
						"client_hs", "response"};

/* Per thread, at most this many records (20 MiB); past it they are counted
 * as dropped, and the report says how many. */
#define STAGE_LOG_MAX (1u << 20)

void stage_log_add(struct stage_log *l, const struct stage_record *r)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4096;
		struct stage_record *grown = NULL;
		if (cap <= STAGE_LOG_MAX)
			grown = realloc(l->rec, cap * sizeof *grown);
		if (!grown) {
			l->dropped++;
			return;
		}
		l->rec = grown;
		l->cap = cap;
	}
	l->rec[l->n++] = *r;
}

void stage_log_free(struct stage_log *l)
{
	free(l->rec);
	*l = (struct stage_log){0};
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static size_t quantile_index(size_t n, double q)
{
	size_t i = (size_t)(q * (double)n);
	return i < n ? i : n - 1;
}

/* The q quantile of a sorted column, in ms. */
static double quantile_ms(const uint32_t *sorted, size_t n, double q)
{
	return sorted[quantile_index(n, q)] / 1000.0;
}

static uint32_t stage_of(const struct stage_record *r, int stage)
{
	return stage < 0 ? r->total_us : r->us[stage];
}

/* ,"NAME":{p50, p99, tail_mean} of one stage (-1: the total); col is
 * scratch for n values. */
static void print_column(int stage, const struct stage_record *all, size_t n, uint32_t *col,
			 uint32_t tail_from)
{
	double tail_sum = 0;
	size_t tail_n = 0;
	for (size_t j = 0; j < n; j++) {
		col[j] = stage_of(&all[j], stage);
		if (all[j].total_us >= tail_from) {
			tail_sum += col[j];
			tail_n++;
		}
	}
	qsort(col, n, sizeof *col, cmp_u32);
	printf(",\"%s\":{\"p50\":%.3f,\"p99\":%.3f,\"tail_mean\":%.3f}",
	       stage < 0 ? "total" : stage_names[stage], quantile_ms(col, n, 0.5),
	       quantile_ms(col, n, 0.99), tail_n ? tail_sum / (double)tail_n / 1000.0 : 0.0);
}

/* Prints "stages_ms":{...}, for the JSON result: each stage's p50 and p99,
 * and its mean over the slowest 1% of uploads (by total time), which is
 * where the tail's time went; null when no upload was recorded. */
void stage_report(const struct sim_thread *t, unsigned threads)
{
	size_t n = 0;
	uint64_t dropped = 0;
	for (unsigned i = 0; i < threads; i++) {
		n += t[i].stages.n;
		dropped += t[i].stages.dropped;
	}
	uint32_t *col = n ? malloc(n * sizeof *col) : NULL;
	struct stage_record *all = n ? malloc(n * sizeof *all) : NULL;
	if (!col || !all) {
		free(col);
		free(all);
		printf("\"stages_ms\":null,");
		return;
	}
	size_t k = 0;
	for (unsigned i = 0; i < threads; i++) {
		memcpy(all + k, t[i].stages.rec, t[i].stages.n * sizeof *all);
		k += t[i].stages.n;
	}
	for (size_t j = 0; j < n; j++)
		col[j] = all[j].total_us;
	qsort(col, n, sizeof *col, cmp_u32);
	uint32_t tail_from = col[quantile_index(n, 0.99)];
	printf("\"stages_ms\":{\"recorded\":%zu,\"dropped\":%llu", n, (unsigned long long)dropped);
	for (int s = -1; s < STAGES; s++)
		print_column(s, all, n, col, tail_from);
	printf("},");
	free(col);
	free(all);
}
