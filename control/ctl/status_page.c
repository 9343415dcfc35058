/*
 * The status page: the authentication-result chart operators expect
 * (succeeded, no certificate, unknown issuer, expired or not yet valid,
 * revoked, blocked, unapproved, wrong key usage) over the last hour, as an
 * inline SVG stacked bar chart, and the totals since start; then the latest
 * refused handshakes, whose certificate and why. No scripts and no external
 * resources: it must render on an air-gapped admin host.
 */
#include "control_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- history ---- */

void control_history_add(struct control_history *h, const struct control_stats *st,
			 uint64_t unix_s)
{
	struct control_sample *s = &h->samples[h->head];
	s->unix_s = unix_s;
	memcpy(s->handshakes, st->handshakes, sizeof s->handshakes);
	h->head = (h->head + 1) % CONTROL_HISTORY_SAMPLES;
	if (h->count < CONTROL_HISTORY_SAMPLES)
		h->count++;
}

const struct control_sample *control_history_at(const struct control_history *h, unsigned i)
{
	unsigned oldest = (h->head + CONTROL_HISTORY_SAMPLES - h->count) % CONTROL_HISTORY_SAMPLES;
	return &h->samples[(oldest + i) % CONTROL_HISTORY_SAMPLES];
}

/* ---- series ---- */

#define BIT(r) (1u << (r))

static const struct series {
	const char *label;
	const char *color;
	unsigned results; /* auth_result bits summed into this series */
} series[] = {
    {"succeeded", "#2e7d32", BIT(AUTH_OK)},
    {"no certificate", "#9e9e9e", BIT(AUTH_NO_CERT)},
    {"unknown issuer", "#6a1b9a", BIT(AUTH_UNKNOWN_ISSUER)},
    {"expired / not yet valid", "#ef6c00", BIT(AUTH_EXPIRED) | BIT(AUTH_NOT_YET_VALID)},
    {"revoked", "#c62828", BIT(AUTH_REVOKED)},
    {"blocked", "#000000", BIT(AUTH_BLOCKED)},
    {"unapproved", "#f9a825", BIT(AUTH_UNAPPROVED)},
    {"wrong key usage", "#1565c0", BIT(AUTH_WRONG_USAGE)},
    {"other", "#795548", BIT(AUTH_OTHER)},
};
#define SERIES_COUNT (sizeof series / sizeof *series)

static uint64_t series_sum(const struct series *s, const uint64_t *handshakes)
{
	uint64_t sum = 0;
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		if (s->results & BIT(r))
			sum += handshakes[r];
	return sum;
}

/* Counters only grow; a smaller value means the server's counters were
 * reset, and a negative bar would be nonsense. */
static uint64_t delta(uint64_t now, uint64_t before)
{
	return now > before ? now - before : 0;
}

/* Per-interval counts: one bar per pair of consecutive samples, and a last
 * bar for the interval so far (from the newest sample to now). */
struct intervals {
	unsigned n;
	uint64_t end_unix_s[CONTROL_HISTORY_SAMPLES];
	uint64_t count[CONTROL_HISTORY_SAMPLES][SERIES_COUNT];
	uint64_t max_total;
};

static void intervals_fill(struct intervals *iv, const struct control_history *h,
			   const struct control_stats *st, uint64_t now)
{
	memset(iv, 0, sizeof *iv);
	for (unsigned i = 0; i < h->count; i++) {
		const uint64_t *before = control_history_at(h, i)->handshakes;
		const uint64_t *after = i + 1 < h->count ? control_history_at(h, i + 1)->handshakes
							 : st->handshakes;
		uint64_t total = 0;
		for (unsigned k = 0; k < SERIES_COUNT; k++) {
			iv->count[i][k] = delta(series_sum(&series[k], after),
						series_sum(&series[k], before));
			total += iv->count[i][k];
		}
		iv->end_unix_s[i] = i + 1 < h->count ? control_history_at(h, i + 1)->unix_s : now;
		if (total > iv->max_total)
			iv->max_total = total;
	}
	iv->n = h->count;
}

/* ---- chart ---- */

#define CHART_W 960.0
#define CHART_H 260.0
#define PLOT_X 60.0
#define PLOT_Y 10.0
#define PLOT_W (CHART_W - PLOT_X - 10.0)
#define PLOT_H (CHART_H - PLOT_Y - 30.0)

/* 1, 2 or 5 times a power of ten, so the axis labels read well. */
static uint64_t nice_ceiling(uint64_t v)
{
	uint64_t p = 1;
	while (v > p * 10)
		p *= 10;
	if (v <= p)
		return p;
	return v <= 2 * p ? 2 * p : v <= 5 * p ? 5 * p : 10 * p;
}

static void time_label(char *buf, size_t len, uint64_t unix_s)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%H:%M:%S", &tm))
		snprintf(buf, len, "?");
}

static void chart_axes(const struct intervals *iv, uint64_t ymax, struct control_buf *o)
{
	for (unsigned g = 0; g <= 2; g++) {
		double y = PLOT_Y + PLOT_H - PLOT_H * g / 2.0;
		control_buf_printf(o,
				   "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" "
				   "stroke=\"#ddd\"/><text x=\"%.0f\" y=\"%.1f\" "
				   "text-anchor=\"end\">%" PRIu64 "</text>\n",
				   PLOT_X, y, PLOT_X + PLOT_W, y, PLOT_X - 6, y + 4, ymax * g / 2);
	}
	if (!iv->n)
		return;
	char first[16], last[16];
	time_label(first, sizeof first, iv->end_unix_s[0] - CONTROL_SAMPLE_INTERVAL_S);
	time_label(last, sizeof last, iv->end_unix_s[iv->n - 1]);
	double x0 = PLOT_X + PLOT_W * (CONTROL_HISTORY_SAMPLES - iv->n) / CONTROL_HISTORY_SAMPLES;
	control_buf_printf(o,
			   "<text x=\"%.1f\" y=\"%.0f\">%s</text><text x=\"%.0f\" y=\"%.0f\" "
			   "text-anchor=\"end\">%s UTC</text>\n",
			   x0, CHART_H - 8, first, PLOT_X + PLOT_W, CHART_H - 8, last);
}

/* One <path> per series, a rectangle per interval where it has a count:
 * a few kilobytes per series instead of thousands of <rect> elements. */
static void chart_bars(const struct intervals *iv, uint64_t ymax, struct control_buf *o)
{
	double slot = PLOT_W / CONTROL_HISTORY_SAMPLES;
	double base[CONTROL_HISTORY_SAMPLES] = {0};
	for (unsigned k = 0; k < SERIES_COUNT; k++) {
		control_buf_printf(o, "<path fill=\"%s\" d=\"", series[k].color);
		for (unsigned i = 0; i < iv->n; i++) {
			if (!iv->count[i][k])
				continue;
			double hgt = PLOT_H * (double)iv->count[i][k] / (double)ymax;
			double x = PLOT_X + slot * (CONTROL_HISTORY_SAMPLES - iv->n + i);
			double y = PLOT_Y + PLOT_H - base[i] - hgt;
			control_buf_printf(o, "M%.1f %.1fh%.2fv%.2fh%.2fz", x, y, slot, hgt, -slot);
			base[i] += hgt;
		}
		control_buf_printf(o, "\"><title>%s</title></path>\n", series[k].label);
	}
}

static void chart_legend(struct control_buf *o)
{
	control_buf_printf(o, "<p class=\"legend\">");
	for (unsigned k = 0; k < SERIES_COUNT; k++)
		control_buf_printf(o, "<span><i style=\"background:%s\"></i>%s</span> ",
				   series[k].color, series[k].label);
	control_buf_printf(o, "</p>\n");
}

static void chart(const struct intervals *iv, struct control_buf *o)
{
	uint64_t ymax = nice_ceiling(iv->max_total ? iv->max_total : 1);
	control_buf_printf(o,
			   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
			   "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
			   "aria-label=\"authentication results per %u s interval\">\n",
			   CHART_W, CHART_H, CHART_W, CHART_H, CONTROL_SAMPLE_INTERVAL_S);
	chart_axes(iv, ymax, o);
	chart_bars(iv, ymax, o);
	control_buf_printf(o, "</svg>\n");
	chart_legend(o);
}

/* ---- page ---- */

static void totals_table(const struct intervals *iv, const struct control_stats *st,
			 struct control_buf *o)
{
	uint64_t all = 0;
	for (unsigned k = 0; k < SERIES_COUNT; k++)
		all += series_sum(&series[k], st->handshakes);
	control_buf_printf(o, "<table><tr><th>result</th><th>since start</th><th>share</th>"
			      "<th>this interval</th></tr>\n");
	for (unsigned k = 0; k < SERIES_COUNT; k++) {
		uint64_t total = series_sum(&series[k], st->handshakes);
		control_buf_printf(o,
				   "<tr><td><i style=\"background:%s\"></i>%s</td><td>%" PRIu64
				   "</td><td>%.1f%%</td><td>%" PRIu64 "</td></tr>\n",
				   series[k].color, series[k].label, total,
				   all ? 100.0 * (double)total / (double)all : 0.0,
				   iv->n ? iv->count[iv->n - 1][k] : 0);
	}
	control_buf_printf(o, "<tr><th>all</th><th>%" PRIu64 "</th><th></th><th></th></tr>"
			      "</table>\n", all);
}

static void summary(const struct control_stats *st, struct control_buf *o)
{
	char loaded[32] = "never";
	if (st->snapshot_loaded_unix_s) {
		time_t t = (time_t)st->snapshot_loaded_unix_s;
		struct tm tm;
		if (gmtime_r(&t, &tm))
			strftime(loaded, sizeof loaded, "%Y-%m-%d %H:%M:%S UTC", &tm);
	}
	control_buf_printf(o,
			   "<p>up %" PRIu64 " s, %" PRIu64 " workers, %" PRIu64 " connections open, "
			   "%" PRIu64 " uploads. Trust snapshot generation %" PRIu64
			   " loaded %s: %" PRIu64 " issuers, %" PRIu64 " revoked serials.</p>\n",
			   st->uptime_s, st->workers, st->connections_open, st->uploads,
			   st->snapshot_generation, loaded, st->issuers, st->revoked_serials);
}

/* ---- refusals ---- */

/* Certificate names are the client's bytes: escaped for HTML here (the TLS
 * part already wrote control bytes as \\xHH). */
static void html_text(struct control_buf *o, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			control_buf_append(o, "&lt;", 4);
			break;
		case '>':
			control_buf_append(o, "&gt;", 4);
			break;
		case '&':
			control_buf_append(o, "&amp;", 5);
			break;
		case '"':
			control_buf_append(o, "&quot;", 6);
			break;
		case '\'':
			control_buf_append(o, "&#39;", 5);
			break;
		default:
			control_buf_append(o, s, 1);
		}
	}
}

static void html_cell(struct control_buf *o, const char *s)
{
	control_buf_printf(o, "<td>");
	html_text(o, s);
	control_buf_printf(o, "</td>");
}

static void refusal_row(const struct tls_refusal *r, struct control_buf *o)
{
	char when[32];
	time_t t = (time_t)r->unix_s;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(when, sizeof when, "?");
	control_buf_printf(o, "<tr class=\"refusal\">");
	html_cell(o, when);
	html_cell(o, r->source);
	html_cell(o, auth_result_name(r->result));
	html_cell(o, r->reason);
	html_cell(o, r->has_cert ? r->cert.subject : "(no certificate)");
	html_cell(o, r->has_cert ? r->cert.issuer : "");
	html_cell(o, r->has_cert ? r->cert.serial : "");
	html_cell(o, r->has_cert ? r->cert.sha256 : "");
	control_buf_printf(o, "</tr>\n");
}

static void refusals_table(const struct tls_refusal *refusals, size_t n, struct control_buf *o)
{
	control_buf_printf(o,
			   "<h2>Latest refused handshakes (newest first, the last %u kept)</h2>\n",
			   (unsigned)TLS_REFUSALS_KEPT);
	if (!n) {
		control_buf_printf(o, "<p>none since start</p>\n");
		return;
	}
	control_buf_printf(o, "<table class=\"refusals\"><tr><th>time (UTC)</th><th>source</th>"
			      "<th>result</th><th>reason</th><th>subject</th><th>issuer</th>"
			      "<th>serial</th><th>SHA-256</th></tr>\n");
	for (size_t i = 0; i < n; i++)
		refusal_row(&refusals[i], o);
	control_buf_printf(o, "</table>\n");
}

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta http-equiv=\"refresh\" content=\"10\"><title>beacond status</title>\n<style>"
    "body{font:14px sans-serif;margin:1.5em;color:#222}svg{font:11px sans-serif}"
    "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    "i{display:inline-block;width:10px;height:10px;margin-right:5px}"
    ".legend span{margin-right:12px}</style></head><body>\n"
    "<h1>beacond</h1>\n";

void control_status_page_render(const struct control_history *h, const struct control_stats *st,
				const struct tls_refusal *refusals, size_t n_refusals,
				uint64_t now_unix_s, struct control_buf *out)
{
	/* On the heap: about 30 KB, too much for a thread's stack frame. */
	struct intervals *iv = malloc(sizeof *iv);
	if (!iv) {
		out->oom = true;
		return;
	}
	intervals_fill(iv, h, st, now_unix_s);
	control_buf_append(out, page_head, sizeof page_head - 1);
	summary(st, out);
	control_buf_printf(out, "<h2>Client authentication, per %u s, last hour</h2>\n",
			   CONTROL_SAMPLE_INTERVAL_S);
	chart(iv, out);
	totals_table(iv, st, out);
	free(iv);
	refusals_table(refusals, n_refusals, out);
	control_buf_printf(out, "<p>Numbers for scripts: <a href=\"/metrics\">/metrics</a>.</p>"
				"</body></html>\n");
}
