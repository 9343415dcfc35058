/*
 * refusals: a refused handshake's log line (within a budget) and the list
 * of the latest ones for the /status page.
 */
#include "tls-internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "beacon/auth.h"
#include "beacon/log.h"

bool tls_log_budget_take(struct tls_log_budget *b, unsigned per_s, uint64_t now_s,
			 uint64_t *left_out_before)
{
	if (now_s != b->second) {
		b->second = now_s;
		b->used = 0;
	}
	if (b->used >= per_s) {
		b->left_out++;
		return false;
	}
	b->used++;
	*left_out_before = b->left_out;
	b->left_out = 0;
	return true;
}

uint64_t tls_log_budget_flush(struct tls_log_budget *b, uint64_t now_s)
{
	if (!b->left_out || now_s == b->second)
		return 0;
	uint64_t n = b->left_out;
	b->left_out = 0;
	return n;
}

/* Process-wide: every worker reports here. A refusal is a whole handshake
 * of work already; one short lock more is noise beside it. */
static pthread_mutex_t refusals_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_refusal refusals[TLS_REFUSALS_KEPT];
static size_t refusals_next, refusals_count;
static struct tls_log_budget refusals_budget;

static void refusal_fill(const struct tls_session *s, const char *source, struct tls_refusal *r)
{
	memset(r, 0, sizeof *r);
	r->unix_s = (uint64_t)time(NULL);
	snprintf(r->source, sizeof r->source, "%s", source);
	r->result = s->peer.result;
	snprintf(r->reason, sizeof r->reason, "%s", tls_session_error(s));
	snprintf(r->device, sizeof r->device, "%s", s->peer.device);
	if (s->refused) {
		r->has_cert = true;
		r->cert = *s->refused;
	}
}

/* A verdict on a certificate (or on its absence) goes to the list; a
 * handshake that failed before any certificate (a scanner, a protocol
 * error) does not crowd the real ones out. */
static bool refusal_listed(const struct tls_refusal *r)
{
	return r->has_cert || r->result != AUTH_OTHER;
}

void tls_session_report_refusal(const struct tls_session *s, const char *source)
{
	struct tls_refusal r;
	refusal_fill(s, source, &r);
	uint64_t left_out = 0;
	pthread_mutex_lock(&refusals_lock);
	if (refusal_listed(&r)) {
		refusals[refusals_next] = r;
		refusals_next = (refusals_next + 1) % TLS_REFUSALS_KEPT;
		if (refusals_count < TLS_REFUSALS_KEPT)
			refusals_count++;
	}
	bool log_it =
		tls_log_budget_take(&refusals_budget, TLS_REFUSAL_LOG_PER_S, r.unix_s, &left_out);
	pthread_mutex_unlock(&refusals_lock);
	if (!log_it)
		return;
	char more[64] = "";
	if (left_out)
		snprintf(more, sizeof more, " [%llu refusal lines left out before this one]",
			 (unsigned long long)left_out);
	if (r.has_cert)
		log_info("%s: refused: %s (%s): device %s subject \"%s\" issuer \"%s\" serial %s "
			 "sha256 %s notAfter %s%s",
			 r.source, r.reason, auth_result_name(r.result),
			 r.device[0] ? r.device : "-", r.cert.subject, r.cert.issuer, r.cert.serial,
			 r.cert.sha256, r.cert.not_after[0] ? r.cert.not_after : "-", more);
	else
		log_info("%s: refused: %s (%s): no client certificate%s", r.source, r.reason,
			 auth_result_name(r.result), more);
}

void tls_refusals_log_summary(void)
{
	uint64_t now = (uint64_t)time(NULL);
	pthread_mutex_lock(&refusals_lock);
	uint64_t since = refusals_budget.second;
	uint64_t n = tls_log_budget_flush(&refusals_budget, now);
	pthread_mutex_unlock(&refusals_lock);
	if (n)
		log_warn("%llu more refused handshakes in the second from %llu were not logged one "
			 "by one (at most %d lines a second; /status lists the latest, "
			 "beacond_handshakes_total counts them all)",
			 (unsigned long long)n, (unsigned long long)since, TLS_REFUSAL_LOG_PER_S);
}

size_t tls_refusals_latest(struct tls_refusal *out, size_t max)
{
	pthread_mutex_lock(&refusals_lock);
	size_t n = refusals_count < max ? refusals_count : max;
	for (size_t i = 0; i < n; i++)
		out[i] = refusals[(refusals_next + TLS_REFUSALS_KEPT - 1 - i) % TLS_REFUSALS_KEPT];
	pthread_mutex_unlock(&refusals_lock);
	return n;
}
