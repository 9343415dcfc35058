/*
 * The authentication-result panel of the status page: the history ring it
 * draws from, a bar per result since start and a line per result over the
 * last hour, both on a log scale so that a handful of refusals next to tens
 * of thousands of successes is as visible as they are, and a table with the
 * exact counts. Axis labels are placed by computed spacing, so they cannot
 * overlap whatever the counts or the time of day.
 */
#include "status_chart.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- history ---- */

/* Counters only grow; a smaller value means the server's counters were
 * reset, and a negative count would be nonsense. */
static uint64_t delta(uint64_t now, uint64_t before)
{
	return now > before ? now - before : 0;
}

void control_history_push(struct control_history *h, const struct control_sample *s)
{
	h->samples[h->head] = *s;
	h->head = (h->head + 1) % CONTROL_HISTORY_SAMPLES;
	if (h->count < CONTROL_HISTORY_SAMPLES)
		h->count++;
}

void control_history_add(struct control_history *h, const struct control_stats *st, uint64_t unix_s)
{
	struct control_sample s = {.unix_s = unix_s};
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		s.handshakes[r] = delta(st->handshakes[r], h->counted[r]);
	memcpy(h->counted, st->handshakes, sizeof h->counted);
	control_history_push(h, &s);
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

/* Per-interval counts: one per sample after the oldest, and a last one
 * for the interval so far (from the newest sample to now). */
struct intervals {
	unsigned n;
	uint64_t end_unix_s[CONTROL_HISTORY_SAMPLES];
	uint64_t count[CONTROL_HISTORY_SAMPLES][SERIES_COUNT];
	uint64_t max_count; /* of any one series in any one interval */
};

static void intervals_fill(struct intervals *iv, const struct control_history *h,
			   const struct control_stats *st, uint64_t now)
{
	memset(iv, 0, sizeof *iv);
	uint64_t so_far[AUTH_RESULT_COUNT];
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		so_far[r] = delta(st->handshakes[r], h->counted[r]);
	/* The oldest sample only marks where the first interval starts. */
	for (unsigned i = 0; i < h->count; i++) {
		bool live = i + 1 == h->count;
		const uint64_t *counts = live ? so_far : control_history_at(h, i + 1)->handshakes;
		for (unsigned k = 0; k < SERIES_COUNT; k++) {
			iv->count[i][k] = series_sum(&series[k], counts);
			if (iv->count[i][k] > iv->max_count)
				iv->max_count = iv->count[i][k];
		}
		iv->end_unix_s[i] = live ? now : control_history_at(h, i + 1)->unix_s;
	}
	iv->n = h->count;
}

/* ---- shares and scales ---- */

void status_share(char *buf, size_t len, uint64_t part, uint64_t all)
{
	if (!part || !all) {
		snprintf(buf, len, "0%%");
		return;
	}
	if (part >= all) {
		snprintf(buf, len, "100%%");
		return;
	}
	double pct = 100.0 * (double)part / (double)all;
	if (pct < 0.01)
		snprintf(buf, len, "<0.01%%");
	else if (pct > 99.99)
		snprintf(buf, len, ">99.99%%");
	else if (pct < 10.0 || pct > 90.0)
		snprintf(buf, len, "%.2f%%", pct);
	else
		snprintf(buf, len, "%.1f%%", pct);
}

/* The smallest power of ten >= v, at least 10: the top of a log axis. */
static uint64_t decade_ceiling(uint64_t v)
{
	uint64_t top = 10;
	while (top < v && top <= UINT64_MAX / 10)
		top *= 10;
	return top;
}

/* Where v sits on a log axis from 0 to top, 0.0 to 1.0. log(1 + v), so
 * that 0 has a place and 1 is clearly above it. */
static double log_position(uint64_t v, uint64_t top)
{
	return log10(1.0 + (double)v) / log10(1.0 + (double)top);
}

/* "1", "10", "100", "1k", ... "1M": powers of ten fit under 40 px. */
static void decade_label(char *buf, size_t len, uint64_t v)
{
	static const char *const suffix[] = {"", "k", "M", "G", "T", "P", "E"};
	unsigned s = 0;
	while (v >= 1000 && v % 1000 == 0 && s + 1 < sizeof suffix / sizeof *suffix) {
		v /= 1000;
		s++;
	}
	snprintf(buf, len, "%" PRIu64 "%s", v, suffix[s]);
}

static void time_label(char *buf, size_t len, uint64_t unix_s)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%H:%M", &tm))
		snprintf(buf, len, "?");
}

/* ---- bars since start ---- */

#define BARS_W 960.0
#define BARS_ROW 22.0
#define BARS_LABEL_W 170.0
#define BARS_LEN 560.0

static void bars_since_start(const struct control_stats *st, struct control_buf *o)
{
	uint64_t all = 0, max = 0;
	for (unsigned k = 0; k < SERIES_COUNT; k++) {
		uint64_t c = series_sum(&series[k], st->handshakes);
		all += c;
		if (c > max)
			max = c;
	}
	uint64_t top = decade_ceiling(max);
	const unsigned rows = SERIES_COUNT;
	double h = BARS_ROW * rows + 8;
	control_buf_printf(
		o,
		"<svg id=\"auth-bars\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
		"height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
		"aria-label=\"authentication results since start, log scale\">\n",
		BARS_W, h, BARS_W, h);
	for (unsigned k = 0; k < SERIES_COUNT; k++) {
		uint64_t c = series_sum(&series[k], st->handshakes);
		double y = 4 + BARS_ROW * k;
		/* A non-zero count is never thinner than 3 px. */
		double len = c ? fmax(3.0, BARS_LEN * log_position(c, top)) : 0.0;
		char share[16];
		status_share(share, sizeof share, c, all);
		control_buf_printf(
			o,
			"<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%s</text>"
			"<rect x=\"%.0f\" y=\"%.0f\" width=\"%.1f\" height=\"%.0f\" "
			"fill=\"%s\"/><text x=\"%.1f\" y=\"%.0f\">%" PRIu64 " (%s)</text>\n",
			BARS_LABEL_W - 6, y + 15, series[k].label, BARS_LABEL_W, y + 3, len,
			BARS_ROW - 6, series[k].color, BARS_LABEL_W + len + 6, y + 15, c, share);
	}
	control_buf_printf(o, "</svg>\n");
}

/* ---- last hour ---- */

#define CHART_W 960.0
#define CHART_H 260.0
#define PLOT_X 50.0
#define PLOT_Y 10.0
#define PLOT_W (CHART_W - PLOT_X - 20.0)
#define PLOT_H (CHART_H - PLOT_Y - 30.0)
#define WINDOW_S ((double)CONTROL_HISTORY_SAMPLES * CONTROL_SAMPLE_INTERVAL_S)
/* The least distance between two labels of an axis, for an 11 px font:
 * a line of text upright, "00:00" and a margin across. */
#define LABEL_GAP_Y 14.0
#define LABEL_GAP_X 80.0

static double x_of(uint64_t unix_s, uint64_t now)
{
	double from_end = (double)delta(now, unix_s);
	return PLOT_X + PLOT_W * (1.0 - fmin(from_end, WINDOW_S) / WINDOW_S);
}

static double y_of(uint64_t v, uint64_t top)
{
	return PLOT_Y + PLOT_H * (1.0 - log_position(v, top));
}

/* 0, 1, 10, 100, ...: a grid line each, a label where it clears the one
 * below by LABEL_GAP_Y (the lowest decades crowd together on a log axis). */
static void value_axis(uint64_t top, struct control_buf *o)
{
	double last_label_y = PLOT_Y + PLOT_H + LABEL_GAP_Y;
	for (uint64_t v = 0;; v = v ? v * 10 : 1) {
		double y = y_of(v, top);
		control_buf_printf(o,
				   "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" "
				   "stroke=\"#ddd\"/>",
				   PLOT_X, y, PLOT_X + PLOT_W, y);
		if (last_label_y - y >= LABEL_GAP_Y) {
			char label[16];
			decade_label(label, sizeof label, v);
			control_buf_printf(o,
					   "<text class=\"ylabel\" x=\"%.0f\" y=\"%.1f\" "
					   "text-anchor=\"end\">%s</text>",
					   PLOT_X - 6, y + 4, label);
			last_label_y = y;
		}
		control_buf_printf(o, "\n");
		if (v >= top)
			break;
	}
}

/* Time labels on whole minutes, at the shortest step that keeps them
 * LABEL_GAP_X apart; none so near an edge that it would be cut. */
static void time_axis(uint64_t now, struct control_buf *o)
{
	static const unsigned steps_s[] = {60, 120, 300, 600, 900, 1200, 1800, 3600};
	double px_per_s = PLOT_W / WINDOW_S;
	unsigned step = steps_s[sizeof steps_s / sizeof *steps_s - 1];
	for (size_t i = 0; i < sizeof steps_s / sizeof *steps_s; i++)
		if (steps_s[i] * px_per_s >= LABEL_GAP_X) {
			step = steps_s[i];
			break;
		}
	uint64_t start = now > (uint64_t)WINDOW_S ? now - (uint64_t)WINDOW_S : 0;
	for (uint64_t t = (start + step - 1) / step * step; t <= now; t += step) {
		double x = x_of(t, now);
		if (x - PLOT_X < LABEL_GAP_X / 4 || PLOT_X + PLOT_W - x < LABEL_GAP_X / 4)
			continue;
		char label[16];
		time_label(label, sizeof label, t);
		control_buf_printf(o,
				   "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" "
				   "stroke=\"#999\"/><text class=\"xlabel\" x=\"%.1f\" y=\"%.0f\" "
				   "text-anchor=\"middle\">%s</text>\n",
				   x, PLOT_Y + PLOT_H, x, PLOT_Y + PLOT_H + 4, x,
				   PLOT_Y + PLOT_H + 16, label);
	}
	control_buf_printf(o, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">UTC</text>\n",
			   PLOT_X + PLOT_W, CHART_H - 2);
}

/* A step line per result that had any count in the window, level across
 * each interval; a zero lies on the baseline. An interval with a count also
 * gets a dot: a single busy interval is 2.5 px wide, too narrow to see. */
static void result_line(const struct intervals *iv, unsigned k, uint64_t top, uint64_t now,
			struct control_buf *o)
{
	double slot = PLOT_W / CONTROL_HISTORY_SAMPLES;
	control_buf_printf(o,
			   "<path class=\"series\" fill=\"none\" stroke=\"%s\" "
			   "stroke-width=\"1.5\" d=\"",
			   series[k].color);
	for (unsigned i = 0; i < iv->n; i++) {
		double x1 = x_of(iv->end_unix_s[i], now);
		control_buf_printf(o, "%c%.1f %.1fH%.1f", i ? 'L' : 'M', fmax(x1 - slot, PLOT_X),
				   y_of(iv->count[i][k], top), x1);
	}
	control_buf_printf(o, "\"><title>%s</title></path>\n<g fill=\"%s\">", series[k].label,
			   series[k].color);
	for (unsigned i = 0; i < iv->n; i++)
		if (iv->count[i][k])
			control_buf_printf(o, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>",
					   x_of(iv->end_unix_s[i], now) - slot / 2,
					   y_of(iv->count[i][k], top));
	control_buf_printf(o, "</g>\n");
}

static void result_lines(const struct intervals *iv, uint64_t top, uint64_t now,
			 struct control_buf *o)
{
	for (unsigned k = 0; k < SERIES_COUNT; k++) {
		bool any = false;
		for (unsigned i = 0; i < iv->n && !any; i++)
			any = iv->count[i][k] != 0;
		if (any)
			result_line(iv, k, top, now, o);
	}
}

static void legend(struct control_buf *o)
{
	control_buf_printf(o, "<p class=\"legend\">");
	for (unsigned k = 0; k < SERIES_COUNT; k++)
		control_buf_printf(o, "<span><i style=\"background:%s\"></i>%s</span> ",
				   series[k].color, series[k].label);
	control_buf_printf(o, "</p>\n");
}

static void last_hour(const struct intervals *iv, uint64_t now, struct control_buf *o)
{
	uint64_t top = decade_ceiling(iv->max_count);
	control_buf_printf(
		o,
		"<h3>Per %u s over the last hour (log scale)</h3>\n"
		"<svg id=\"auth-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
		"height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
		"aria-label=\"authentication results per %u s interval, log scale\">\n",
		CONTROL_SAMPLE_INTERVAL_S, CHART_W, CHART_H, CHART_W, CHART_H,
		CONTROL_SAMPLE_INTERVAL_S);
	value_axis(top, o);
	time_axis(now, o);
	result_lines(iv, top, now, o);
	if (!iv->n)
		control_buf_printf(o,
				   "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">no sample "
				   "yet: one is taken every %u s</text>\n",
				   PLOT_X + PLOT_W / 2, PLOT_Y + PLOT_H / 2,
				   CONTROL_SAMPLE_INTERVAL_S);
	control_buf_printf(o, "</svg>\n");
	legend(o);
}

static void totals_table(const struct intervals *iv, const struct control_stats *st,
			 struct control_buf *o)
{
	uint64_t all = 0;
	for (unsigned k = 0; k < SERIES_COUNT; k++)
		all += series_sum(&series[k], st->handshakes);
	control_buf_printf(o, "<table id=\"auth-totals\"><tr><th>result</th><th>since start</th>"
			      "<th>share</th><th>this interval</th></tr>\n");
	for (unsigned k = 0; k < SERIES_COUNT; k++) {
		uint64_t total = series_sum(&series[k], st->handshakes);
		char share[16];
		status_share(share, sizeof share, total, all);
		control_buf_printf(o,
				   "<tr><td><i style=\"background:%s\"></i>%s</td><td>%" PRIu64
				   "</td><td>%s</td><td>%" PRIu64 "</td></tr>\n",
				   series[k].color, series[k].label, total, share,
				   iv->n ? iv->count[iv->n - 1][k] : 0);
	}
	control_buf_printf(o,
			   "<tr><th>all</th><th>%" PRIu64 "</th><th></th><th></th></tr>"
			   "</table>\n",
			   all);
}

void status_chart_auth_panel(const struct control_history *h, const struct control_stats *st,
			     uint64_t now_unix_s, struct control_buf *o)
{
	/* On the heap: about 30 KB, too much for a thread's stack frame. */
	struct intervals *iv = malloc(sizeof *iv);
	if (!iv) {
		o->oom = true;
		return;
	}
	intervals_fill(iv, h, st, now_unix_s);
	control_buf_printf(o, "<section id=\"auth\"><h2>Client authentication</h2>\n"
			      "<h3>Since start (log scale)</h3>\n");
	bars_since_start(st, o);
	last_hour(iv, now_unix_s, o);
	totals_table(iv, st, o);
	control_buf_printf(o, "</section>\n");
	free(iv);
}
