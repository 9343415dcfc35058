/*
 * The control socket: a Unix stream socket, mode 0600, one JSON object per
 * line each way. This file binds it and answers request lines; control.c
 * moves the bytes.
 */
#include "control_internal.h"
#include "beacon/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MSG_MAX 1024

/* ---- binding ---- */

static int unix_address(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof sa->sun_path) {
		snprintf(err, errlen, "control socket path '%s' is empty or longer than %zu bytes",
			 path, sizeof sa->sun_path - 1);
		return -1;
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

/* A socket file left by a beacond that died is replaced; one that answers
 * belongs to a running beacond, and two servers on one socket would split
 * the operators' commands between them. */
static int check_existing(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "control socket %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen,
			 "control socket %s exists and is not a socket; remove it or "
			 "choose another path",
			 path);
		return -1;
	}
	struct sockaddr_un sa;
	if (unix_address(path, &sa, err, errlen))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	int saved = errno;
	close(fd);
	if (rc == 0) {
		snprintf(err, errlen, "another beacond is using %s", path);
		return -1;
	}
	if (saved != ECONNREFUSED) {
		snprintf(err, errlen, "control socket %s: %s", path, strerror(saved));
		return -1;
	}
	return 0;
}

/* Binds a temporary name, sets 0600, then renames it into place: the
 * socket is never reachable with a wider mode, and no process-wide umask
 * changes under the other threads. The rename also replaces a stale file. */
static int bind_private(int fd, const char *path, char *err, size_t errlen)
{
	char tmp[sizeof((struct sockaddr_un *)0)->sun_path + 32];
	snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
	struct sockaddr_un sa;
	if (unix_address(tmp, &sa, err, errlen))
		return -1;
	if (unlink(tmp) != 0 && errno != ENOENT) {
		snprintf(err, errlen, "remove %s: %s", tmp, strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		snprintf(err, errlen,
			 "bind control socket %s: %s (does its directory exist and "
			 "belong to beacond?)",
			 tmp, strerror(errno));
		return -1;
	}
	if (chmod(tmp, 0600) != 0 || listen(fd, 16) != 0 || rename(tmp, path) != 0) {
		snprintf(err, errlen, "set up control socket %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

int control_socket_listen(const char *path, char *err, size_t errlen)
{
	if (check_existing(path, err, errlen))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind_private(fd, path, err, errlen)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- replies ---- */

/* Counters go out as exact integers: cJSON's numbers are doubles. */
static void add_u64(cJSON *o, const char *name, uint64_t v)
{
	char text[24];
	snprintf(text, sizeof text, "%" PRIu64, v);
	cJSON_AddRawToObject(o, name, text);
}

static cJSON *reply_new(bool ok)
{
	cJSON *o = cJSON_CreateObject();
	if (o)
		cJSON_AddBoolToObject(o, "ok", ok);
	return o;
}

static cJSON *reply_error(const char *error)
{
	cJSON *o = reply_new(false);
	if (o)
		cJSON_AddStringToObject(o, "error", error);
	return o;
}

static cJSON *reply_message(int rc, const char *msg)
{
	if (rc != 0)
		return reply_error(*msg ? msg : "failed (no reason given)");
	cJSON *o = reply_new(true);
	if (o)
		cJSON_AddStringToObject(o, "message", msg);
	return o;
}

static void reply_write(struct control_buf *reply, cJSON *o)
{
	char *text = o ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (!text) {
		/* Out of memory: a fixed line still tells the client why. */
		static const char oom[] = "{\"ok\":false,\"error\":\"out of memory\"}\n";
		control_buf_append(reply, oom, sizeof oom - 1);
		return;
	}
	control_buf_append(reply, text, strlen(text));
	control_buf_append(reply, "\n", 1);
	cJSON_free(text);
}

void control_reply_error(struct control_buf *reply, const char *error)
{
	reply_write(reply, reply_error(error));
}

/* ---- commands ---- */

typedef cJSON *(*command_fn)(const struct control_handlers *h, const cJSON *req);

static bool stats_get(const struct control_handlers *h, struct control_stats *st)
{
	memset(st, 0, sizeof *st);
	if (!h->stats)
		return false;
	h->stats(h->arg, st);
	return true;
}

/* What the index holds, beside the counters since start. */
static void add_store_totals(const struct control_handlers *h, cJSON *o)
{
	uint64_t uploads, bytes;
	if (h->store_totals && h->store_totals(h->arg, &uploads, &bytes) == 0) {
		add_u64(o, "store_uploads", uploads);
		add_u64(o, "store_bytes", bytes);
	}
}

/* The drain: its state, why it is down, and how far behind it is. */
static void add_drain(const struct control_handlers *h, cJSON *o, const char *key,
		      void (*get)(void *arg, struct drain_status *out))
{
	struct drain_status ds = {.state = DRAIN_OFF};
	if (get)
		get(h->arg, &ds);
	cJSON *d = cJSON_AddObjectToObject(o, key);
	if (!d)
		return;
	cJSON_AddStringToObject(d, "state", drain_state_name(ds.state));
	if (ds.state == DRAIN_OFF)
		return;
	cJSON_AddStringToObject(d, "sink", ds.sink);
	cJSON_AddStringToObject(d, "last_error", ds.last_error);
	add_u64(d, "lag_uploads", ds.lag_uploads);
	add_u64(d, "lag_bytes", ds.lag_bytes);
	add_u64(d, "lag_oldest_s", ds.lag_oldest_s);
	add_u64(d, "drained_before", ds.drained_before);
	add_u64(d, "uploads_published", ds.uploads_published);
	add_u64(d, "uploads_acked", ds.uploads_acked);
	add_u64(d, "uploads_failed", ds.uploads_failed);
}

/* The mirror ([upstream] sync): "state" off, syncing, ok or failing. */
static void add_mirror(const struct control_handlers *h, cJSON *o)
{
	struct mirror_status ms = {0};
	if (h->mirror_status)
		h->mirror_status(h->arg, &ms);
	cJSON *d = cJSON_AddObjectToObject(o, "mirror");
	if (!d)
		return;
	const char *state = !ms.on	       ? "off"
			    : ms.syncing       ? "syncing"
			    : ms.last_error[0] ? "failing"
					       : "ok";
	cJSON_AddStringToObject(d, "state", state);
	if (!ms.on)
		return;
	cJSON_AddStringToObject(d, "last_error", ms.last_error);
	add_u64(d, "rounds_ok", ms.rounds_ok);
	add_u64(d, "rounds_failed", ms.rounds_failed);
	add_u64(d, "files", ms.files);
	add_u64(d, "files_synced", ms.files_synced);
	add_u64(d, "bytes_synced", ms.bytes_synced);
	add_u64(d, "files_removed", ms.files_removed);
	add_u64(d, "last_success_unix_s", (uint64_t)ms.last_success_unix_s);
}

static cJSON *cmd_status(const struct control_handlers *h, const cJSON *req)
{
	struct control_stats st;
	if (!stats_get(h, &st))
		return reply_error("this server reports no statistics");
	cJSON *o = reply_new(true);
	if (!o)
		return NULL;
	add_u64(o, "uptime_s", st.uptime_s);
	add_u64(o, "workers", st.workers);
	add_u64(o, "connections_open", st.connections_open);
	add_u64(o, "snapshot_generation", st.snapshot_generation);
	add_u64(o, "snapshot_loaded_unix_s", st.snapshot_loaded_unix_s);
	add_u64(o, "issuers", st.issuers);
	add_u64(o, "revoked_serials", st.revoked_serials);
	add_u64(o, "blocked_entries", st.blocked_entries);
	add_u64(o, "uploads", st.uploads);
	add_store_totals(h, o);
	add_drain(h, o, "drain", h->drain_status);
	add_drain(h, o, "upstream", h->upstream_status);
	add_mirror(h, o);
	return o;
}

static void add_u64_array(cJSON *o, const char *name, const uint64_t *v, size_t n)
{
	cJSON *a = cJSON_AddArrayToObject(o, name);
	for (size_t i = 0; a && i < n; i++) {
		char text[24];
		snprintf(text, sizeof text, "%" PRIu64, v[i]);
		cJSON_AddItemToArray(a, cJSON_CreateRaw(text));
	}
}

static void add_by_result(cJSON *o, const char *name, const uint64_t *v)
{
	cJSON *by = cJSON_AddObjectToObject(o, name);
	for (unsigned r = 0; by && r < AUTH_RESULT_COUNT; r++)
		add_u64(by, auth_result_name((enum auth_result)r), v[r]);
}

/* "<f>_bucket" (cumulative), "<f>_le_us" (their bounds), "<f>_sum_us",
 * "<f>_count". */
static void add_histogram(cJSON *o, const char *f, const uint64_t *bucket, uint64_t sum_us,
			  uint64_t count)
{
	char name[64];
	snprintf(name, sizeof name, "%s_bucket", f);
	add_u64_array(o, name, bucket, COMMIT_LATENCY_BUCKETS);
	snprintf(name, sizeof name, "%s_le_us", f);
	add_u64_array(o, name, control_commit_latency_le_us, COMMIT_LATENCY_BOUNDS);
	snprintf(name, sizeof name, "%s_sum_us", f);
	add_u64(o, name, sum_us);
	snprintf(name, sizeof name, "%s_count", f);
	add_u64(o, name, count);
}

/* One key per row of the counter table (beacon/counters.h), by its type. */
#define JSON_COUNTER(f) add_u64(o, #f, st->f);
#define JSON_GAUGE(f) add_u64(o, #f, st->f);
#define JSON_COUNTER_BY_RESULT(f) add_by_result(o, #f, st->f);
#define JSON_HISTOGRAM(f) add_histogram(o, #f, st->f##_bucket, st->f##_sum_us, st->f##_count);
#define JSON_ALSO_COUNTER(f) /* its key comes from its first row */

static void add_counters(cJSON *o, const struct control_stats *st)
{
#define JSON_ROW(field, type, metric, labels, help) JSON_##type(field)
	COUNTERS_PROCESS(JSON_ROW)
	COUNTERS_WORKER(JSON_ROW)
#undef JSON_ROW
}

/* The DPDK stack's counters (beacon/transport.h) under "net"; none with
 * the kernel transport, whose TCP counts for itself. */
static void add_net(cJSON *o, const struct control_stats *st)
{
	if (!st->net_stack)
		return;
	cJSON *net = cJSON_AddObjectToObject(o, "net");
	if (!net)
		return;
#define JSON_NET(name, help) add_u64(net, #name, st->net.name);
	TRANSPORT_NET_COUNTERS(JSON_NET)
#undef JSON_NET
}

/* The labelled series of /metrics: "certificate_expiry" [{role, subject,
 * not_after_unix_s}], "crl_next_update" [{issuer, next_update_unix_s}] and
 * "worker_busy_ns" and "worker_work_ns" [per worker]. */
static void add_dates(cJSON *o, const struct control_stats *st)
{
	cJSON *certs = cJSON_AddArrayToObject(o, "certificate_expiry");
	cJSON *crls = cJSON_AddArrayToObject(o, "crl_next_update");
	for (unsigned i = 0; certs && crls && i < st->n_dates; i++) {
		const struct control_date *d = &st->dates[i];
		cJSON *e = cJSON_CreateObject();
		if (!e)
			return;
		if (d->kind == CONTROL_DATE_CRL) {
			cJSON_AddStringToObject(e, "issuer", d->name);
			add_u64(e, "next_update_unix_s", (uint64_t)d->unix_s);
			cJSON_AddItemToArray(crls, e);
		} else {
			cJSON_AddStringToObject(e, "role",
						d->kind == CONTROL_DATE_SERVER_CERT ? "server"
										    : "issuer");
			cJSON_AddStringToObject(e, "subject", d->name);
			add_u64(e, "not_after_unix_s", (uint64_t)d->unix_s);
			cJSON_AddItemToArray(certs, e);
		}
	}
	add_u64_array(o, "worker_busy_ns", st->worker_busy_ns, st->n_worker_busy);
	add_u64_array(o, "worker_work_ns", st->worker_work_ns, st->n_worker_busy);
}

static cJSON *cmd_stats(const struct control_handlers *h, const cJSON *req)
{
	struct control_stats st;
	if (!stats_get(h, &st))
		return reply_error("this server reports no statistics");
	cJSON *o = reply_new(true);
	if (!o)
		return NULL;
	add_counters(o, &st);
	add_dates(o, &st);
	add_net(o, &st);
	return o;
}

static const char *const reload_targets[] = {"all", "issuers", "crl", "tickets", "blocklist"};

static cJSON *cmd_reload(const struct control_handlers *h, const cJSON *req)
{
	const cJSON *w = cJSON_GetObjectItemCaseSensitive(req, "what");
	const char *what = "all";
	if (w && !cJSON_IsString(w))
		return reply_error(
			"\"what\" must be a string: all, issuers, crl, tickets or blocklist");
	if (w)
		what = w->valuestring;
	bool known = false;
	for (size_t i = 0; i < sizeof reload_targets / sizeof *reload_targets; i++)
		known |= !strcmp(what, reload_targets[i]);
	if (!known)
		return reply_error(
			"unknown reload target: use all, issuers, crl, tickets or blocklist");
	if (!h->reload)
		return reply_error("this server cannot reload");
	char msg[MSG_MAX] = "";
	int rc = h->reload(h->arg, what, msg, sizeof msg);
	msg[sizeof msg - 1] = '\0';
	cJSON *o = reply_message(rc, msg);
	if (o && rc == 0)
		cJSON_AddStringToObject(o, "what", what);
	return o;
}

static cJSON *cmd_tickets_rotate(const struct control_handlers *h, const cJSON *req)
{
	if (!h->tickets_rotate)
		return reply_error("this server cannot rotate ticket keys");
	char msg[MSG_MAX] = "";
	int rc = h->tickets_rotate(h->arg, msg, sizeof msg);
	msg[sizeof msg - 1] = '\0';
	return reply_message(rc, msg);
}

/* Device names come from certificates and end up in logs and terminals. */
static bool device_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= STORE_DEVICE_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static const char *device_state_text(enum device_state state)
{
	return state == DEVICE_BLOCKED	  ? "blocked"
	       : state == DEVICE_APPROVED ? "approved"
					  : "unapproved";
}

/* A device's state before an operator changes it. Only this thread
 * changes states (handlers run one at a time on it; handshakes and uploads
 * never touch the state), so nothing changes it between this look and the
 * write. False when it cannot tell: the change then goes ahead unchecked. */
struct device_before {
	bool known; /* the store has a record */
	bool seen;  /* the device has ever connected */
	enum device_state state;
};

static bool device_before(const struct control_handlers *h, const char *device,
			  struct device_before *b)
{
	*b = (struct device_before){.state = DEVICE_UNAPPROVED};
	if (!h->device_lookup)
		return false;
	int rc = h->device_lookup(h->arg, device, &b->state, &b->seen);
	b->known = rc == 1;
	return rc == 0 || rc == 1;
}

enum device_action { ACT_APPROVE, ACT_BLOCK, ACT_UNBLOCK };

/* The answer when the action would change nothing: NULL when it would. */
static cJSON *device_unchanged(const char *device, enum device_action act,
			       const struct device_before *b)
{
	const char *msg;
	if (act == ACT_UNBLOCK && b->known && b->state == DEVICE_UNAPPROVED)
		msg = "not blocked (unapproved: use devices approve)";
	else if (act == ACT_UNBLOCK && (!b->known || b->state != DEVICE_BLOCKED))
		msg = "not blocked";
	else if (act == ACT_BLOCK && b->known && b->state == DEVICE_BLOCKED)
		msg = "already blocked";
	else if (act == ACT_APPROVE && b->known && b->state == DEVICE_APPROVED)
		msg = "already approved";
	else
		return NULL;
	cJSON *o = reply_message(0, msg);
	if (o) {
		cJSON_AddStringToObject(o, "device", device);
		cJSON_AddBoolToObject(o, "changed", false);
		cJSON_AddStringToObject(o, "state",
					b->known ? device_state_text(b->state) : "unknown");
	}
	return o;
}

static cJSON *device_set(const struct control_handlers *h, const cJSON *req, enum device_action act)
{
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(req, "device");
	if (!cJSON_IsString(d) || !device_name_ok(d->valuestring))
		return reply_error("\"device\" must be a device identity: 1 to 255 bytes, no "
				   "control characters");
	if (!h->device_set_state)
		return reply_error("this server cannot change device states");
	struct device_before before;
	bool checked = device_before(h, d->valuestring, &before);
	cJSON *same = checked ? device_unchanged(d->valuestring, act, &before) : NULL;
	if (same)
		return same;
	enum device_state state = act == ACT_BLOCK ? DEVICE_BLOCKED : DEVICE_APPROVED;
	char msg[MSG_MAX] = "";
	int rc = h->device_set_state(h->arg, d->valuestring, state, msg, sizeof msg);
	msg[sizeof msg - 1] = '\0';
	cJSON *o = reply_message(rc, msg);
	if (!o || rc != 0)
		return o;
	cJSON_AddStringToObject(o, "device", d->valuestring);
	cJSON_AddBoolToObject(o, "changed", true);
	cJSON_AddStringToObject(o, "state", device_state_text(state));
	/* Nothing with this name has connected: a block planned ahead, or a
	 * mistyped name that leaves the real device admitted. (Approving ahead
	 * is routine with approval = require, and a mistyped approval shows:
	 * the device stays out.) */
	if (act == ACT_BLOCK && checked && !before.seen)
		cJSON_AddStringToObject(o, "warning",
					"no device with this name has connected to this beacon: "
					"the change applies from its first visit (check the name)");
	return o;
}

static cJSON *cmd_device_approve(const struct control_handlers *h, const cJSON *req)
{
	return device_set(h, req, ACT_APPROVE);
}

static cJSON *cmd_device_block(const struct control_handlers *h, const cJSON *req)
{
	return device_set(h, req, ACT_BLOCK);
}

/* Unblocking admits the device again: it was approved before it was blocked,
 * or an operator would not be unblocking it. A device that is not blocked
 * is left as it is: unblock never approves an unapproved device. */
static cJSON *cmd_device_unblock(const struct control_handlers *h, const cJSON *req)
{
	return device_set(h, req, ACT_UNBLOCK);
}

static cJSON *drain_command(const struct control_handlers *h, const char *action, uint64_t from_id)
{
	if (!h->drain_control)
		return reply_error("this server has no drain");
	char msg[MSG_MAX] = "";
	int rc = h->drain_control(h->arg, action, from_id, msg, sizeof msg);
	msg[sizeof msg - 1] = '\0';
	return reply_message(rc, msg);
}

static cJSON *cmd_drain_pause(const struct control_handlers *h, const cJSON *req)
{
	return drain_command(h, "pause", 0);
}

static cJSON *cmd_drain_resume(const struct control_handlers *h, const cJSON *req)
{
	return drain_command(h, "resume", 0);
}

static cJSON *cmd_drain_replay(const struct control_handlers *h, const cJSON *req)
{
	const cJSON *from = cJSON_GetObjectItemCaseSensitive(req, "from");
	if (!cJSON_IsNumber(from) || from->valuedouble < 0 ||
	    from->valuedouble > 9007199254740991.0 ||
	    from->valuedouble != (double)(uint64_t)from->valuedouble)
		return reply_error("\"from\" must be an upload id (a whole number, 0 or more)");
	return drain_command(h, "replay", (uint64_t)from->valuedouble);
}

static cJSON *cmd_upstream_sync(const struct control_handlers *h, const cJSON *req)
{
	if (!h->upstream_sync)
		return reply_error("this server has no upstream sync");
	char msg[MSG_MAX] = "";
	int rc = h->upstream_sync(h->arg, msg, sizeof msg);
	msg[sizeof msg - 1] = '\0';
	return reply_message(rc, msg);
}

/* audited: the command changes what beacond does, so who asked for it and
 * what came of it goes to the log (the argument is the request's key of
 * that name, when it has one). */
static const struct {
	const char *name;
	command_fn run;
	bool audited;
	const char *argument;
} commands[] = {
	{"status", cmd_status, false, NULL},
	{"stats", cmd_stats, false, NULL},
	{"reload", cmd_reload, true, "what"},
	{"tickets_rotate", cmd_tickets_rotate, true, NULL},
	{"device_approve", cmd_device_approve, true, "device"},
	{"device_block", cmd_device_block, true, "device"},
	{"device_unblock", cmd_device_unblock, true, "device"},
	{"drain_pause", cmd_drain_pause, true, NULL},
	{"drain_resume", cmd_drain_resume, true, NULL},
	{"drain_replay", cmd_drain_replay, true, NULL},
	{"upstream_sync", cmd_upstream_sync, true, NULL},
};

static const char *reply_text(const cJSON *o, const char *key)
{
	const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
	return v && cJSON_IsString(v) ? v->valuestring : NULL;
}

/* One line per change or refused change (not for a no-op such as blocking
 * a blocked device): "audit: device_block agent2.example by uid 0
 * (pid 4242): ok: blocked; trust snapshot 7: ..." */
static void audit(const struct control_peer *who, const char *cmd, const cJSON *req,
		  const char *argument, const cJSON *reply)
{
	const cJSON *arg = argument ? cJSON_GetObjectItemCaseSensitive(req, argument) : NULL;
	char by[64] = "by an unknown peer";
	if (who && who->known)
		snprintf(by, sizeof by, "by uid %u (pid %d)", who->uid, who->pid);
	const char *error = reply_text(reply, "error");
	const char *message = reply_text(reply, "message");
	const char *state = reply_text(reply, "state"); /* a device's, once changed */
	const char *what = arg && cJSON_IsString(arg) ? arg->valuestring : NULL;
	log_info("audit: %s%s%s %s: %s: %s%s%s", cmd, what ? " " : "", what ? what : "", by,
		 error ? "refused" : "ok", state && !error ? state : "",
		 state && !error ? "; " : "",
		 error	   ? error
		 : message ? message
			   : "");
}

static cJSON *dispatch(const struct control_handlers *h, const struct control_peer *who,
		       const cJSON *req)
{
	const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");
	if (!cJSON_IsString(cmd))
		return reply_error("request has no \"cmd\" string");
	for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
		if (strcmp(cmd->valuestring, commands[i].name) != 0)
			continue;
		cJSON *reply = commands[i].run(h, req);
		const cJSON *changed =
			reply ? cJSON_GetObjectItemCaseSensitive(reply, "changed") : NULL;
		if (commands[i].audited && !cJSON_IsFalse(changed))
			audit(who, commands[i].name, req, commands[i].argument, reply);
		return reply;
	}
	return reply_error("unknown command: use status, stats, reload, tickets_rotate, "
			   "device_approve, device_block, device_unblock, drain_pause, "
			   "drain_resume or drain_replay");
}

void control_request(const struct control_handlers *h, const struct control_peer *who,
		     const char *line, size_t len, struct control_buf *reply)
{
	if (strlen(line) != len) {
		control_reply_error(reply, "request line contains a NUL byte");
		return;
	}
	const char *end = NULL;
	cJSON *req = cJSON_ParseWithOpts(line, &end, true);
	if (!req || !cJSON_IsObject(req)) {
		char why[96];
		if (req)
			snprintf(why, sizeof why, "request is not a JSON object");
		else
			snprintf(why, sizeof why, "bad JSON at byte %zu of the request line",
				 end && end >= line ? (size_t)(end - line) : 0);
		cJSON_Delete(req);
		control_reply_error(reply, why);
		return;
	}
	reply_write(reply, dispatch(h, who, req));
	cJSON_Delete(req);
}
