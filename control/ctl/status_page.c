/*
 * The status page: panels an operator reads top to bottom. Client
 * authentication (status_chart.c), then failures with the latest refused
 * handshakes, HTTP errors by class and code, the store and the trust
 * snapshot. No scripts and no external resources: it must render on an
 * air-gapped admin host. Every name a client chose (certificate subject and
 * issuer, device) is escaped for HTML here.
 */
#include "status_chart.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- HTML text ---- */

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

static void utc_time(char *buf, size_t len, uint64_t unix_s)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, len, "?");
}

/* ---- counter rows ---- */

/* The plain counters and gauges of beacon/counters.h with their family,
 * labels and HELP text, so that a panel lists a family's rows (a status
 * code added to the table shows here without a change). */
struct stat_row {
	const char *metric;
	const char *labels;
	const char *help;
	size_t offset; /* of the uint64_t in struct control_stats */
};
#define STAT_ROW(field, type, metric, labels, help) STAT_ROW_##type(field, metric, labels, help)
#define STAT_ROW_COUNTER(f, m, l, h) {m, l, h, offsetof(struct control_stats, f)},
#define STAT_ROW_GAUGE(f, m, l, h) STAT_ROW_COUNTER(f, m, l, h)
#define STAT_ROW_COUNTER_BY_RESULT(f, m, l, h)
#define STAT_ROW_HISTOGRAM(f, m, l, h)
#define STAT_ROW_ALSO_COUNTER(f, m, l, h)
static const struct stat_row stat_rows[] = {COUNTERS_WORKER(STAT_ROW) COUNTERS_PROCESS(STAT_ROW)};
#define STAT_ROWS (sizeof stat_rows / sizeof *stat_rows)

static uint64_t stat_value(const struct control_stats *st, const struct stat_row *r)
{
	uint64_t v;
	memcpy(&v, (const char *)st + r->offset, sizeof v);
	return v;
}

/* The value inside a row's labels: "404" of code="404". */
static void label_value(char *buf, size_t len, const char *labels)
{
	const char *q = strchr(labels, '"');
	const char *end = q ? strchr(q + 1, '"') : NULL;
	if (!end) {
		snprintf(buf, len, "%s", labels);
		return;
	}
	snprintf(buf, len, "%.*s", (int)(end - q - 1), q + 1);
}

/* A two-column table of every row of the families in metrics[]: its HELP
 * text (with its label's value where the family has several rows). */
static void stats_table(const struct control_stats *st, const char *id, const char *const *metrics,
			size_t n_metrics, struct control_buf *o)
{
	control_buf_printf(o, "<table id=\"%s\">\n", id);
	for (size_t m = 0; m < n_metrics; m++)
		for (size_t i = 0; i < STAT_ROWS; i++) {
			const struct stat_row *r = &stat_rows[i];
			if (strcmp(r->metric, metrics[m]) != 0)
				continue;
			char label[64] = "";
			if (r->labels[0]) {
				char v[48];
				label_value(v, sizeof v, r->labels);
				snprintf(label, sizeof label, " (%s)", v);
			}
			control_buf_printf(o, "<tr><td>%s%s</td><td>%" PRIu64 "</td></tr>\n",
					   r->help, label, stat_value(st, r));
		}
	control_buf_printf(o, "</table>\n");
}

/* ---- summary ---- */

static void summary(const struct control_stats *st, struct control_buf *o)
{
	control_buf_printf(o,
			   "<p id=\"summary\">up %" PRIu64 " s, %" PRIu64 " workers, %" PRIu64
			   " connections open, %" PRIu64 " uploads since start.</p>\n",
			   st->uptime_s, st->workers, st->connections_open, st->uploads);
}

/* ---- failures ---- */

static void refusal_row(const struct tls_refusal *r, struct control_buf *o)
{
	char when[32];
	utc_time(when, sizeof when, r->unix_s);
	control_buf_printf(o, "<tr class=\"refusal\">");
	html_cell(o, when);
	html_cell(o, r->source);
	html_cell(o, r->device[0] ? r->device : "-");
	html_cell(o, auth_result_name(r->result));
	html_cell(o, r->reason);
	html_cell(o, r->has_cert ? r->cert.subject : "(no certificate)");
	html_cell(o, r->has_cert ? r->cert.issuer : "");
	html_cell(o, r->has_cert ? r->cert.serial : "");
	html_cell(o, r->has_cert ? r->cert.not_after : "");
	control_buf_printf(o, "<td class=\"hash\">");
	html_text(o, r->has_cert ? r->cert.sha256 : "");
	control_buf_printf(o, "</td></tr>\n");
}

static void refusals_table(const struct tls_refusal *refusals, size_t n, struct control_buf *o)
{
	control_buf_printf(o,
			   "<h3>Latest refused handshakes (newest first, the last %u kept)</h3>\n",
			   (unsigned)TLS_REFUSALS_KEPT);
	if (!n) {
		control_buf_printf(o, "<p id=\"no-refusals\">none since start</p>\n");
		return;
	}
	control_buf_printf(
		o, "<table id=\"refusals\"><tr><th>time (UTC)</th><th>source</th>"
		   "<th>device</th><th>result</th><th>reason</th><th>subject</th>"
		   "<th>issuer</th><th>serial</th><th>not after</th><th>SHA-256</th></tr>\n");
	for (size_t i = 0; i < n; i++)
		refusal_row(&refusals[i], o);
	control_buf_printf(o, "</table>\n");
}

static void failures_panel(const struct control_stats *st, const struct tls_refusal *refusals,
			   size_t n, struct control_buf *o)
{
	static const char *const families[] = {
		"beacond_handshake_failures_total", "beacond_limit_refusals_total",
		"beacond_connections_refused_total", "beacond_timeouts_total"};
	uint64_t refused = 0;
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		if (r != AUTH_OK)
			refused += st->handshakes[r];
	control_buf_printf(o,
			   "<section id=\"failures\"><h2>Failures</h2>\n"
			   "<p>%" PRIu64 " client certificates refused since start.</p>\n",
			   refused);
	stats_table(st, "failure-counts", families, sizeof families / sizeof *families, o);
	refusals_table(refusals, n, o);
	control_buf_printf(o, "</section>\n");
}

/* ---- HTTP ---- */

static void http_panel(const struct control_stats *st, struct control_buf *o)
{
	static const char *const classes[] = {"beacond_responses_total"};
	uint64_t all = 0;
	for (size_t i = 0; i < STAT_ROWS; i++)
		if (!strcmp(stat_rows[i].metric, "beacond_responses_by_status_total"))
			all += stat_value(st, &stat_rows[i]);
	control_buf_printf(o, "<section id=\"http\"><h2>HTTP responses</h2>\n");
	stats_table(st, "http-classes", classes, 1, o);
	control_buf_printf(o, "<table id=\"http-codes\"><tr><th>status</th><th>since start</th>"
			      "<th>share</th></tr>\n");
	for (size_t i = 0; i < STAT_ROWS; i++) {
		const struct stat_row *r = &stat_rows[i];
		uint64_t v = stat_value(st, r);
		if (strcmp(r->metric, "beacond_responses_by_status_total") != 0 || !v)
			continue;
		char code[16], share[16];
		label_value(code, sizeof code, r->labels);
		status_share(share, sizeof share, v, all);
		control_buf_printf(
			o, "<tr class=\"%s\"><td>%s</td><td>%" PRIu64 "</td><td>%s</td></tr>\n",
			code[0] == '4' || code[0] == '5' ? "error" : "ok", code, v, share);
	}
	control_buf_printf(o,
			   "<tr><th>all</th><th>%" PRIu64 "</th><th></th></tr></table>\n"
			   "</section>\n",
			   all);
}

/* ---- expiry ---- */

/* Within this many days a date is flagged: what the example alert rules
 * (config/beacond-alerts.yml) warn at for the server certificate. */
#define EXPIRY_WARN_DAYS 14

static const char *date_kind(enum control_date_kind k)
{
	switch (k) {
	case CONTROL_DATE_SERVER_CERT:
		return "server certificate notAfter";
	case CONTROL_DATE_ISSUER_CERT:
		return "issuer certificate notAfter";
	case CONTROL_DATE_CRL:
		return "CRL nextUpdate";
	}
	return "?";
}

static int date_order(const void *a, const void *b)
{
	const struct control_date *x = a, *y = b;
	return (x->unix_s > y->unix_s) - (x->unix_s < y->unix_s);
}

/* The trust snapshot's dates, soonest first, with the days left. */
static void expiry_panel(const struct control_stats *st, uint64_t now, struct control_buf *o)
{
	struct control_date dates[CONTROL_DATES_MAX];
	unsigned n = st->n_dates < CONTROL_DATES_MAX ? st->n_dates : CONTROL_DATES_MAX;
	memcpy(dates, st->dates, n * sizeof *dates);
	qsort(dates, n, sizeof *dates, date_order);
	control_buf_printf(o, "<section id=\"expiry\"><h2>Certificates and CRLs</h2>\n"
			      "<table id=\"expiry-dates\"><tr><th>what</th><th>name</th>"
			      "<th>date (UTC)</th><th>days left</th></tr>\n");
	for (unsigned i = 0; i < n; i++) {
		char when[32];
		int64_t left_s = dates[i].unix_s - (int64_t)now;
		utc_time(when, sizeof when, (uint64_t)(dates[i].unix_s > 0 ? dates[i].unix_s : 0));
		control_buf_printf(o, "<tr class=\"%s\"><td>%s</td>",
				   left_s < EXPIRY_WARN_DAYS * 86400 ? "error" : "ok",
				   date_kind(dates[i].kind));
		html_cell(o, dates[i].name);
		/* Whole days, rounded toward the past: "0" is less than a day. */
		int64_t days = left_s >= 0 ? left_s / 86400 : -((-left_s + 86399) / 86400);
		control_buf_printf(o, "<td>%s</td><td>%" PRId64 "</td></tr>\n", when, days);
	}
	if (!n)
		control_buf_printf(o, "<tr><td>none</td><td></td><td></td><td></td></tr>\n");
	control_buf_printf(o, "</table>\n</section>\n");
}

/* ---- store and trust ---- */

static void store_panel(const struct control_stats *st, struct control_buf *o)
{
	static const char *const families[] = {"beacond_store_commits_total",
					       "beacond_store_fdatasyncs_total",
					       "beacond_store_uploads_committed_total",
					       "beacond_store_uploads_expired_total",
					       "beacond_store_recovered_bad_headers_total",
					       "beacond_store_recovered_truncated_bytes_total",
					       "beacond_store_uploads_open",
					       "beacond_store_uploads_open_max",
					       "beacond_store_spool_bytes",
					       "beacond_store_disk_free_bytes",
					       "beacond_store_disk_size_bytes",
					       "beacond_store_map_used_bytes",
					       "beacond_store_map_size_bytes"};
	control_buf_printf(o, "<section id=\"store\"><h2>Store</h2>\n");
	stats_table(st, "store-counts", families, sizeof families / sizeof *families, o);
	if (st->store_disk_size_bytes) {
		char share[16];
		status_share(share, sizeof share, st->store_disk_free_bytes,
			     st->store_disk_size_bytes);
		control_buf_printf(
			o, "<p id=\"disk-free\">%s of the data directory's disk free.</p>\n",
			share);
	}
	if (st->commit_latency_count)
		control_buf_printf(
			o, "<p>%" PRIu64 " commits waited for, %" PRIu64 " us on average.</p>\n",
			st->commit_latency_count,
			st->commit_latency_sum_us / st->commit_latency_count);
	control_buf_printf(o, "</section>\n");
}

/* Where committed uploads go next, and how far behind that is: the state
 * says why a growing lag grows (down, paused), the error what failed (an
 * error from before the sink connected again is history: not shown). */
static void drain_panel(const struct control_stats *st, const struct drain_status *d,
			struct control_buf *o)
{
	static const char *const families[] = {
		"beacond_drain_lag_uploads", "beacond_drain_lag_bytes",
		"beacond_drain_lag_oldest_seconds", "beacond_drain_uploads_total",
		"beacond_drain_bytes_total"};
	control_buf_printf(o, "<section id=\"drain\"><h2>Drain</h2>\n<p id=\"drain-state\">");
	if (d->state == DRAIN_OFF) {
		control_buf_printf(o,
				   "off: uploads stay in this beacon's store.</p>\n</section>\n");
		return;
	}
	html_text(o, d->sink);
	control_buf_printf(o, ": %s", drain_state_name(d->state));
	if (d->last_error[0] && d->state != DRAIN_CONNECTED) {
		control_buf_printf(o, "; last error: ");
		html_text(o, d->last_error);
	}
	control_buf_printf(o, ".</p>\n");
	stats_table(st, "drain-counts", families, sizeof families / sizeof *families, o);
	control_buf_printf(o, "</section>\n");
}

static void trust_panel(const struct control_stats *st, uint64_t now, struct control_buf *o)
{
	static const char *const families[] = {"beacond_snapshot_generation",
					       "beacond_issuers",
					       "beacond_crls",
					       "beacond_revoked_serials",
					       "beacond_blocked_entries",
					       "beacond_reload_successes_total",
					       "beacond_reload_failures_total"};
	char loaded[32] = "never";
	uint64_t age = 0;
	if (st->snapshot_loaded_unix_s) {
		utc_time(loaded, sizeof loaded, st->snapshot_loaded_unix_s);
		age = now > st->snapshot_loaded_unix_s ? now - st->snapshot_loaded_unix_s : 0;
	}
	control_buf_printf(o,
			   "<section id=\"trust\"><h2>Trust snapshot</h2>\n"
			   "<p>loaded %s UTC, %" PRIu64 " s ago.</p>\n",
			   loaded, age);
	stats_table(st, "trust-counts", families, sizeof families / sizeof *families, o);
	control_buf_printf(o, "</section>\n");
}

/* ---- page ---- */

static const char page_head[] =
	"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	"<meta http-equiv=\"refresh\" content=\"10\"><title>beacond status</title>\n<style>"
	"body{font:14px sans-serif;margin:1.5em;color:#222}svg{font:11px sans-serif}"
	"section{border-top:2px solid #ccc;margin-top:1.5em}"
	"#failures{border-top-color:#c62828}"
	"table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}"
	"td:first-child,th:first-child{text-align:left}"
	"#refusals td,#refusals th{text-align:left;max-width:22em;overflow-wrap:anywhere}"
	"#refusals th,#refusals td:nth-child(-n+2),#refusals td:nth-child(4){white-space:nowrap}"
	"#expiry td,#expiry th{text-align:left}#refusals td.hash{font:11px "
	"monospace;max-width:16ch}tr.error td{color:#c62828}"
	"i{display:inline-block;width:10px;height:10px;margin-right:5px}"
	".legend span{margin-right:12px}</style></head><body>\n"
	"<h1>beacond</h1>\n";

void control_status_page_render(const struct control_history *h, const struct control_stats *st,
				const struct tls_refusal *refusals, size_t n_refusals,
				const struct drain_status *drain, uint64_t now_unix_s,
				struct control_buf *out)
{
	control_buf_append(out, page_head, sizeof page_head - 1);
	summary(st, out);
	status_chart_auth_panel(h, st, now_unix_s, out);
	failures_panel(st, refusals, n_refusals, out);
	http_panel(st, out);
	expiry_panel(st, now_unix_s, out);
	store_panel(st, out);
	drain_panel(st, drain, out);
	trust_panel(st, now_unix_s, out);
	control_buf_printf(out, "<p>Numbers for scripts: <a href=\"/metrics\">/metrics</a>.</p>"
				"</body></html>\n");
}
