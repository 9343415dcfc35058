/*
 * status_chart: the status page's authentication-result panel. Counts span
 * five orders of magnitude (5 refusals next to 50,000 successes), so every
 * length is on a log scale and every count is printed as a number too.
 */
#ifndef BEACON_STATUS_CHART_H
#define BEACON_STATUS_CHART_H

#include "control_internal.h"

#include <stddef.h>
#include <stdint.h>

/* The panel: a bar per result since start with its count and share, the
 * last hour per interval, and the totals table. */
void status_chart_auth_panel(const struct control_history *h, const struct control_stats *st,
			     uint64_t now_unix_s, struct control_buf *o);

/* part's share of all as "12.5%", "0.01%", "<0.01%" or ">99.99%": never
 * "0%" for a non-zero part nor "100%" for less than all. */
void status_share(char *buf, size_t len, uint64_t part, uint64_t all);

#endif
