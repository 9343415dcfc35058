/*
 * counters: the one table of what beacond counts and reports. Every value
 * has one row here; the worker's counters (beacon/worker.h), the totals the
 * control plane reports (struct control_stats, beacon/control.h), the sum
 * over workers (dataplane/stats.c), `beaconctl --json stats` (control/ctl/
 * socket.c) and /metrics with its HELP and TYPE lines (control/ctl/
 * metrics.c) are all generated from it, so a value cannot be counted and
 * go unreported. tests/integration/test_counters.py reads this file and
 * checks every row in a running beacond's /metrics and stats.
 *
 * Model: X-macro lists, X(field, type, metric, labels, help):
 *   field   the member in struct worker_counters and struct control_stats,
 *           and the key in `beaconctl --json stats`
 *   type    what the value is and so which members it gets (below):
 *           COUNTER (only grows), GAUGE (goes up and down),
 *           COUNTER_BY_RESULT (a counter per auth_result, labelled
 *           result="<auth_result_name>"), HISTOGRAM (the commit-latency
 *           buckets and sum), or ALSO_COUNTER (the field of an earlier row,
 *           reported once more in another family; it adds no member)
 *   metric  the Prometheus family. Rows of one family are adjacent (the
 *           text format wants a family's samples together) and of one type
 *   labels  the series' labels inside the braces, "" for none
 *   help    the family's HELP line, the same on each of its rows
 *
 * COUNTERS_WORKER are counted by each worker on its own thread and summed
 * over workers; COUNTERS_PROCESS are read once per report from the trust
 * snapshot, the store and the clock (a new row of it needs its source named
 * in dataplane/stats.c). The DPDK stack's counters keep their own list,
 * TRANSPORT_NET_COUNTERS in beacon/transport.h. HISTOGRAM has the
 * commit-latency bounds below; a second histogram would need its bounds
 * as a column.
 *
 * A header of macros only: the user includes what the members name
 * (stdint.h, and AUTH_RESULT_COUNT with auth_result from beacon/auth-t.h
 * types).
 */
#ifndef BEACON_COUNTERS_H
#define BEACON_COUNTERS_H

/* Commit-latency histogram: the upper bounds of its buckets in
 * microseconds, 100 us (page cache) to 250 ms (a slow disk under load), and
 * one more bucket for +Inf. The workers count into buckets by these bounds
 * and /metrics labels them with the same list. */
#define COMMIT_LATENCY_BOUNDS_US                                                                   \
	{                                                                                          \
		100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000               \
	}
#define COMMIT_LATENCY_BOUNDS 11
#define COMMIT_LATENCY_BUCKETS (COMMIT_LATENCY_BOUNDS + 1)

#define COUNTERS_WORKER(X)                                                                         \
	X(handshakes, COUNTER_BY_RESULT, "beacond_handshakes_total", "",                           \
	  "Client authentication attempts by result.")                                             \
	X(handshakes_tls12, COUNTER, "beacond_handshakes_by_version_total", "version=\"1.2\"",     \
	  "Completed TLS handshakes by protocol version.")                                         \
	X(handshakes_tls13, COUNTER, "beacond_handshakes_by_version_total", "version=\"1.3\"",     \
	  "Completed TLS handshakes by protocol version.")                                         \
	X(handshakes_resumed, COUNTER, "beacond_handshakes_resumed_total", "",                     \
	  "Handshakes that resumed a session from a ticket.")                                      \
	X(handshake_failures, COUNTER, "beacond_handshake_failures_total", "",                     \
	  "Handshakes that failed on a protocol error, before any certificate verdict.")           \
	X(connections_open, GAUGE, "beacond_connections_open", "", "Client connections open now.") \
	X(connections_accepted, COUNTER, "beacond_connections_accepted_total", "",                 \
	  "Client connections accepted.")                                                          \
	X(connections_refused, COUNTER, "beacond_connections_refused_total", "",                   \
	  "Client connections refused at the connection limit.")                                   \
	X(connections_refused, ALSO_COUNTER, "beacond_limit_refusals_total",                       \
	  "limit=\"max_connections\"",                                                             \
	  "New connections closed at once by a [limits] connection limit.")                        \
	X(refused_per_source, COUNTER, "beacond_limit_refusals_total",                             \
	  "limit=\"max_connections_per_source\"",                                                  \
	  "New connections closed at once by a [limits] connection limit.")                        \
	X(refused_rate, COUNTER, "beacond_limit_refusals_total",                                   \
	  "limit=\"handshake_rate_per_source\"",                                                   \
	  "New connections closed at once by a [limits] connection limit.")                        \
	X(refused_handshakes, COUNTER, "beacond_limit_refusals_total",                             \
	  "limit=\"max_handshakes_in_progress\"",                                                  \
	  "New connections closed at once by a [limits] connection limit.")                        \
	X(proxy_refused, COUNTER, "beacond_proxy_refusals_total", "",                              \
	  "Connections closed for their PROXY header: missing, malformed, or from a peer "         \
	  "not in proxy_from.")                                                                    \
	X(requests, COUNTER, "beacond_requests_total", "", "HTTP requests parsed.")                \
	X(uploads, COUNTER, "beacond_uploads_total", "", "Uploads received.")                      \
	X(upload_bytes, COUNTER, "beacond_upload_bytes_total", "", "Upload body bytes received.")  \
	X(downloads, COUNTER, "beacond_downloads_total", "", "Downloads served.")                  \
	X(download_bytes, COUNTER, "beacond_download_bytes_total", "",                             \
	  "Download body bytes sent.")                                                             \
	X(download_cache_hits, COUNTER, "beacond_download_cache_hits_total", "",                   \
	  "Downloads answered from the hot-file cache, without opening the file.")                 \
	X(download_cache_bytes, GAUGE, "beacond_download_cache_bytes", "",                         \
	  "Bytes of files held in the hot-file cache.")                                            \
	X(responses_4xx, COUNTER, "beacond_responses_total", "class=\"4xx\"",                      \
	  "Error responses by status class.")                                                      \
	X(responses_5xx, COUNTER, "beacond_responses_total", "class=\"5xx\"",                      \
	  "Error responses by status class.")                                                      \
	X(responses_200, COUNTER, "beacond_responses_by_status_total", "code=\"200\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_201, COUNTER, "beacond_responses_by_status_total", "code=\"201\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_206, COUNTER, "beacond_responses_by_status_total", "code=\"206\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_304, COUNTER, "beacond_responses_by_status_total", "code=\"304\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_400, COUNTER, "beacond_responses_by_status_total", "code=\"400\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_403, COUNTER, "beacond_responses_by_status_total", "code=\"403\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_404, COUNTER, "beacond_responses_by_status_total", "code=\"404\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_405, COUNTER, "beacond_responses_by_status_total", "code=\"405\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_408, COUNTER, "beacond_responses_by_status_total", "code=\"408\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_411, COUNTER, "beacond_responses_by_status_total", "code=\"411\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_413, COUNTER, "beacond_responses_by_status_total", "code=\"413\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_414, COUNTER, "beacond_responses_by_status_total", "code=\"414\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_416, COUNTER, "beacond_responses_by_status_total", "code=\"416\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_417, COUNTER, "beacond_responses_by_status_total", "code=\"417\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_429, COUNTER, "beacond_responses_by_status_total", "code=\"429\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_431, COUNTER, "beacond_responses_by_status_total", "code=\"431\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_500, COUNTER, "beacond_responses_by_status_total", "code=\"500\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_501, COUNTER, "beacond_responses_by_status_total", "code=\"501\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_503, COUNTER, "beacond_responses_by_status_total", "code=\"503\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_505, COUNTER, "beacond_responses_by_status_total", "code=\"505\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_507, COUNTER, "beacond_responses_by_status_total", "code=\"507\"",             \
	  "Final responses by status code.")                                                       \
	X(responses_other, COUNTER, "beacond_responses_by_status_total", "code=\"other\"",         \
	  "Final responses by status code.")                                                       \
	X(timeouts, COUNTER, "beacond_timeouts_total", "", "Connections closed on a timeout.")     \
	X(handshakes_in_progress, GAUGE, "beacond_handshakes_in_progress", "",                     \
	  "TLS handshakes begun and not yet over.")                                                \
	X(commit_latency, HISTOGRAM, "beacond_store_commit_latency_seconds", "",                   \
	  "Wait from an upload's end to its durable commit.")

#define COUNTERS_PROCESS(X)                                                                        \
	X(uptime_s, GAUGE, "beacond_uptime_seconds", "", "Seconds since beacond started.")         \
	X(workers, GAUGE, "beacond_workers", "", "Worker threads serving clients.")                \
	X(snapshot_generation, GAUGE, "beacond_snapshot_generation", "",                           \
	  "Generation of the trust snapshot in force.")                                            \
	X(snapshot_loaded_unix_s, GAUGE, "beacond_snapshot_loaded_timestamp_seconds", "",          \
	  "Unix time at which the trust snapshot in force was loaded.")                            \
	X(issuers, GAUGE, "beacond_issuers", "", "Trusted issuing CAs.")                           \
	X(crls, GAUGE, "beacond_crls", "", "CRLs in the trust snapshot in force.")                 \
	X(revoked_serials, GAUGE, "beacond_revoked_serials", "",                                   \
	  "Revoked serials in the trust snapshot in force.")                                       \
	X(blocked_entries, GAUGE, "beacond_blocked_entries", "",                                   \
	  "Blocked devices in the trust snapshot in force.")                                       \
	X(sig_cache_hits, COUNTER, "beacond_tls_signature_cache_total", "result=\"hit\"",          \
	  "ECDSA certificate signature checks: answered by the cache of passed checks, or run.")   \
	X(sig_cache_misses, COUNTER, "beacond_tls_signature_cache_total", "result=\"miss\"",       \
	  "ECDSA certificate signature checks: answered by the cache of passed checks, or run.")   \
	X(reload_successes, COUNTER, "beacond_reload_successes_total", "",                         \
	  "Trust reloads that took effect (control socket, SIGHUP or file watch).")                \
	X(reload_failures, COUNTER, "beacond_reload_failures_total", "",                           \
	  "Trust reloads refused, the running trust left in force.")                               \
	X(trust_kv_applied, COUNTER, "beacond_trust_kv_changes_total", "result=\"applied\"",       \
	  "Changes of the [trust] kv_bucket built into the trust (also counted as reloads).")      \
	X(trust_kv_refused, COUNTER, "beacond_trust_kv_changes_total", "result=\"refused\"",       \
	  "Changes of the [trust] kv_bucket built into the trust (also counted as reloads).")      \
	X(trust_kv_connected, GAUGE, "beacond_trust_kv_connected", "",                             \
	  "1 while the [trust] kv_bucket is watched; 0 when off or out of reach.")                 \
	X(store_commits, COUNTER, "beacond_store_commits_total", "",                               \
	  "Index commits by the store.")                                                           \
	X(store_fdatasyncs, COUNTER, "beacond_store_fdatasyncs_total", "",                         \
	  "fdatasync calls by the store.")                                                         \
	X(store_uploads_committed, COUNTER, "beacond_store_uploads_committed_total", "",           \
	  "Uploads the store made durable.")                                                       \
	X(store_uploads_expired, COUNTER, "beacond_store_uploads_expired_total", "",               \
	  "Uploads the store removed by retention.")                                               \
	X(store_uploads_deduplicated, COUNTER, "beacond_store_uploads_deduplicated_total", "",     \
	  "Agents' retries of a committed upload, answered with its id and not stored again.")     \
	X(store_recovered_bad_headers, COUNTER, "beacond_store_recovered_bad_headers_total", "",   \
	  "Indexed spool records whose header did not match, found at start-up.")                  \
	X(store_recovered_truncated_bytes, COUNTER,                                                \
	  "beacond_store_recovered_truncated_bytes_total", "",                                     \
	  "Uncommitted spool bytes cut off at start-up.")                                          \
	X(store_disk_free_bytes, GAUGE, "beacond_store_disk_free_bytes", "",                       \
	  "Bytes free to beacond on the data directory's filesystem.")                             \
	X(store_disk_size_bytes, GAUGE, "beacond_store_disk_size_bytes", "",                       \
	  "Size of the data directory's filesystem in bytes.")                                     \
	X(store_spool_bytes, GAUGE, "beacond_store_spool_bytes", "",                               \
	  "Bytes of the spool's segment files.")                                                   \
	X(store_map_used_bytes, GAUGE, "beacond_store_map_used_bytes", "",                         \
	  "Bytes of the LMDB index map in use.")                                                   \
	X(store_map_size_bytes, GAUGE, "beacond_store_map_size_bytes", "",                         \
	  "Size of the LMDB index map in bytes (it doubles when full).")                           \
	X(store_uploads_open, GAUGE, "beacond_store_uploads_open", "",                             \
	  "Uploads streaming into the store now.")                                                 \
	X(store_uploads_open_max, GAUGE, "beacond_store_uploads_open_max", "",                     \
	  "Uploads the store takes at once: max_open_uploads per worker times workers.")           \
	X(drain_uploads_published, COUNTER, "beacond_drain_uploads_total", "result=\"published\"", \
	  "Uploads the drain published, acknowledged by the sink, or failed to publish.")          \
	X(drain_uploads_acked, COUNTER, "beacond_drain_uploads_total", "result=\"acknowledged\"",  \
	  "Uploads the drain published, acknowledged by the sink, or failed to publish.")          \
	X(drain_uploads_failed, COUNTER, "beacond_drain_uploads_total", "result=\"failed\"",       \
	  "Uploads the drain published, acknowledged by the sink, or failed to publish.")          \
	X(drain_bytes_published, COUNTER, "beacond_drain_bytes_total", "result=\"published\"",     \
	  "Body bytes the drain published, acknowledged by the sink, or failed to publish.")       \
	X(drain_bytes_acked, COUNTER, "beacond_drain_bytes_total", "result=\"acknowledged\"",      \
	  "Body bytes the drain published, acknowledged by the sink, or failed to publish.")       \
	X(drain_bytes_failed, COUNTER, "beacond_drain_bytes_total", "result=\"failed\"",           \
	  "Body bytes the drain published, acknowledged by the sink, or failed to publish.")       \
	X(drain_connected, GAUGE, "beacond_drain_connected", "",                                   \
	  "1 while the drain's sink is connected and publishing; 0 when off, down or paused.")     \
	X(drain_lag_uploads, GAUGE, "beacond_drain_lag_uploads", "",                               \
	  "Committed uploads the drain's sink has not acknowledged.")                              \
	X(drain_lag_bytes, GAUGE, "beacond_drain_lag_bytes", "",                                   \
	  "Body bytes of the uploads the drain's sink has not acknowledged.")                      \
	X(drain_lag_oldest_s, GAUGE, "beacond_drain_lag_oldest_seconds", "",                       \
	  "Age of the oldest upload the drain's sink has not acknowledged.")                       \
	X(upstream_uploads_published, COUNTER, "beacond_upstream_uploads_total",                   \
	  "result=\"published\"",                                                                  \
	  "Uploads forwarded to the parent beacon, acknowledged by it, or failed (refused for "    \
	  "good or not sent).")                                                                    \
	X(upstream_uploads_acked, COUNTER, "beacond_upstream_uploads_total",                       \
	  "result=\"acknowledged\"",                                                               \
	  "Uploads forwarded to the parent beacon, acknowledged by it, or failed (refused for "    \
	  "good or not sent).")                                                                    \
	X(upstream_uploads_failed, COUNTER, "beacond_upstream_uploads_total", "result=\"failed\"", \
	  "Uploads forwarded to the parent beacon, acknowledged by it, or failed (refused for "    \
	  "good or not sent).")                                                                    \
	X(upstream_connected, GAUGE, "beacond_upstream_connected", "",                             \
	  "1 while the parent beacon is reachable and taking uploads; 0 when off or down.")        \
	X(upstream_lag_uploads, GAUGE, "beacond_upstream_lag_uploads", "",                         \
	  "Committed uploads not yet forwarded to the parent beacon.")                             \
	X(upstream_lag_bytes, GAUGE, "beacond_upstream_lag_bytes", "",                             \
	  "Body bytes of the uploads not yet forwarded to the parent beacon.")                     \
	X(upstream_lag_oldest_s, GAUGE, "beacond_upstream_lag_oldest_seconds", "",                 \
	  "Age of the oldest upload not yet forwarded to the parent beacon.")                      \
	X(mirror_files_synced, COUNTER, "beacond_mirror_files_total", "result=\"synced\"",         \
	  "Files the mirror fetched from the parent beacon, or removed as gone from it.")          \
	X(mirror_files_removed, COUNTER, "beacond_mirror_files_total", "result=\"removed\"",       \
	  "Files the mirror fetched from the parent beacon, or removed as gone from it.")          \
	X(mirror_bytes, COUNTER, "beacond_mirror_bytes_total", "",                                 \
	  "Body bytes the mirror fetched from the parent beacon.")                                 \
	X(mirror_rounds_ok, COUNTER, "beacond_mirror_rounds_total", "result=\"ok\"",               \
	  "The mirror's sync rounds, by result.")                                                  \
	X(mirror_rounds_failed, COUNTER, "beacond_mirror_rounds_total", "result=\"failed\"",       \
	  "The mirror's sync rounds, by result.")                                                  \
	X(mirror_last_success_age_s, GAUGE, "beacond_mirror_last_success_age_seconds", "",         \
	  "Seconds since the mirror's last good round (since start while none); 0 when off.")

/* The members a row gives a worker's counters (T: _Atomic uint64_t). A
 * histogram counts each value once, in its own bucket. */
#define COUNTERS_WORKER_MEMBERS(T, field, type) COUNTERS_WORKER_MEMBERS_##type(T, field)
#define COUNTERS_WORKER_MEMBERS_COUNTER(T, f) T f;
#define COUNTERS_WORKER_MEMBERS_GAUGE(T, f) T f;
#define COUNTERS_WORKER_MEMBERS_COUNTER_BY_RESULT(T, f) T f[AUTH_RESULT_COUNT];
#define COUNTERS_WORKER_MEMBERS_HISTOGRAM(T, f)                                                    \
	T f##_bucket[COMMIT_LATENCY_BUCKETS];                                                      \
	T f##_sum_us;
#define COUNTERS_WORKER_MEMBERS_ALSO_COUNTER(T, f)

/* The members a row gives the totals (T: uint64_t). A histogram's buckets
 * are cumulative there, as Prometheus wants (a value counts in its own
 * bucket and every wider one), and it has a count (the +Inf bucket). */
#define COUNTERS_TOTAL_MEMBERS(T, field, type) COUNTERS_TOTAL_MEMBERS_##type(T, field)
#define COUNTERS_TOTAL_MEMBERS_COUNTER(T, f) T f;
#define COUNTERS_TOTAL_MEMBERS_GAUGE(T, f) T f;
#define COUNTERS_TOTAL_MEMBERS_COUNTER_BY_RESULT(T, f) T f[AUTH_RESULT_COUNT];
#define COUNTERS_TOTAL_MEMBERS_HISTOGRAM(T, f)                                                     \
	T f##_bucket[COMMIT_LATENCY_BUCKETS];                                                      \
	T f##_sum_us;                                                                              \
	T f##_count;
#define COUNTERS_TOTAL_MEMBERS_ALSO_COUNTER(T, f)

#endif
