/*
 * nats: the JetStream sink (cnats, libnats 3.4).
 *
 * Messages go to <subject>.<beacon id>.<category> (a category's characters
 * outside [A-Za-z0-9_-] become '_' there; the Category header keeps it
 * whole), published asynchronously with an ack timeout, so every message is
 * reported once: acknowledged, refused, or timed out. Nats-Msg-Id is
 * <beacon id>.<upload id>: JetStream drops a second copy within the
 * stream's duplicate window, which makes a re-publish after a failure or a
 * crash harmless.
 *
 * An upload whose body and headers do not fit the server's max_payload
 * (or [drain] max_chunk) goes as chunk messages, Nats-Msg-Id <beacon
 * id>.<upload id>.<n> with a Chunk: n header, in order, then a final
 * message without a body that carries every header of the upload plus
 * Chunks: N. One connection publishes in order and the stream stores in
 * order, so the chunks precede their final message in the stream.
 */
#include "drain-internal.h"

#include "beacon/config.h"
#include "beacon/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "beacon/natsconn.h"
#include <nats/nats.h>

#define ACK_TIMEOUT_MS 5000
/* Room for the headers within max_payload (they count against it). */
#define HEADER_ROOM 2048u

struct nats_sink {
	struct drain *drain;
	const struct config *cfg_unused;
	char urls[512];
	char user[128], password[128];
	char creds[CONFIG_PATH_MAX], tls_ca[CONFIG_PATH_MAX];
	char tls_cert[CONFIG_PATH_MAX], tls_key[CONFIG_PATH_MAX];
	char stream[64], subject[128], beacon_id[64];
	bool create_stream;
	unsigned replicas, duplicate_window_s, window;
	uint64_t max_chunk;

	natsConnection *nc;
	jsCtx *js;
	size_t chunk; /* body bytes per message */
	_Atomic long outstanding;
};

static natsStatus make_options(struct nats_sink *n, natsOptions **out)
{
	const struct nats_login l = {.urls = n->urls,
				     .user = n->user,
				     .password = n->password,
				     .creds = n->creds,
				     .tls_ca = n->tls_ca,
				     .tls_cert = n->tls_cert,
				     .tls_key = n->tls_key,
				     .connect_timeout_ms = 2000};
	return natsconn_options(&l, out);
}

static void status_text(char *err, size_t errlen, const char *what, natsStatus st)
{
	const char *last = nats_GetLastError(NULL);
	snprintf(err, errlen, "%s: %s%s%s", what, natsStatus_GetText(st), last ? ": " : "",
		 last ? last : "");
}

/* The host name as one subject token. */
static void default_beacon_id(char *out, size_t len)
{
	char host[256] = "";
	if (gethostname(host, sizeof host - 1) != 0 || !host[0])
		snprintf(host, sizeof host, "beacon");
	snprintf(out, len, "%s", host);
	for (char *p = out; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			*p = '_';
}

void *nats_sink_create(const struct config *cfg, struct drain *d, char *err, size_t errlen)
{
	struct nats_sink *n = calloc(1, sizeof *n);
	if (!n) {
		snprintf(err, errlen, "drain: out of memory");
		return NULL;
	}
	n->drain = d;
	snprintf(n->urls, sizeof n->urls, "%s", cfg->drain_nats);
	snprintf(n->user, sizeof n->user, "%s", cfg->drain_user);
	snprintf(n->password, sizeof n->password, "%s", cfg->drain_password);
	snprintf(n->creds, sizeof n->creds, "%s", cfg->drain_creds);
	snprintf(n->tls_ca, sizeof n->tls_ca, "%s", cfg->drain_tls_ca);
	snprintf(n->tls_cert, sizeof n->tls_cert, "%s", cfg->drain_tls_cert);
	snprintf(n->tls_key, sizeof n->tls_key, "%s", cfg->drain_tls_key);
	snprintf(n->stream, sizeof n->stream, "%s", cfg->drain_stream);
	snprintf(n->subject, sizeof n->subject, "%s", cfg->drain_subject);
	if (cfg->drain_beacon_id[0])
		snprintf(n->beacon_id, sizeof n->beacon_id, "%s", cfg->drain_beacon_id);
	else
		default_beacon_id(n->beacon_id, sizeof n->beacon_id);
	n->create_stream = cfg->drain_create_stream;
	n->replicas = cfg->drain_replicas;
	n->duplicate_window_s = cfg->drain_duplicate_window_s;
	n->window = cfg->drain_window;
	n->max_chunk = cfg->drain_max_chunk;
	log_info("drain nats: beacon id %s, stream %s, subjects %s.%s.<category>", n->beacon_id,
		 n->stream, n->subject, n->beacon_id);
	return n;
}

static uint64_t header_u64(natsMsg *m, const char *key)
{
	const char *v = NULL;
	if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v)
		return 0;
	return strtoull(v, NULL, 10);
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	struct nats_sink *n = closure;
	uint64_t id = header_u64(msg, "Upload-Id");
	char why[256] = "";
	if (pae)
		snprintf(why, sizeof why, "publish: %s%s%s", natsStatus_GetText(pae->Err),
			 pae->ErrText ? ": " : "", pae->ErrText ? pae->ErrText : "");
	atomic_fetch_sub(&n->outstanding, 1);
	drain_message_done(n->drain, id, pae == NULL, why);
	natsMsg_Destroy(msg);
}

static int open_connection(struct nats_sink *n, char *err, size_t errlen)
{
	natsOptions *o = NULL;
	natsStatus st = make_options(n, &o);
	if (st != NATS_OK) {
		status_text(err, errlen, "nats options", st);
		return -1;
	}
	st = natsConnection_Connect(&n->nc, o);
	natsOptions_Destroy(o);
	if (st != NATS_OK) {
		status_text(err, errlen, "connect", st);
		n->nc = NULL;
		return -1;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = ACK_TIMEOUT_MS;
	jo.PublishAsync.AckHandler = on_ack;
	jo.PublishAsync.AckHandlerClosure = n;
	/* The drain bounds what is in flight; a chunked upload may pass
	 * its window by its chunks, which publish waits out itself. */
	jo.PublishAsync.MaxPending = (int64_t)n->window * 2 + 64;
	st = natsConnection_JetStream(&n->js, n->nc, &jo);
	if (st != NATS_OK) {
		status_text(err, errlen, "jetstream", st);
		natsConnection_Destroy(n->nc);
		n->nc = NULL;
		return -1;
	}
	int64_t max_payload = natsConnection_GetMaxPayload(n->nc);
	uint64_t room = max_payload > (int64_t)HEADER_ROOM * 2 ? (uint64_t)max_payload - HEADER_ROOM
							       : HEADER_ROOM;
	n->chunk = n->max_chunk && n->max_chunk < room ? n->max_chunk : room;
	log_info("drain nats: connected, max_payload %" PRId64 ", %zu body bytes a message",
		 max_payload, n->chunk);
	return 0;
}

/* The stream exists, or is made when create_stream allows it. */
static int check_stream(struct nats_sink *n, char *err, size_t errlen)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus st = js_GetStreamInfo(&si, n->js, n->stream, NULL, &jerr);
	if (st == NATS_OK) {
		jsStreamInfo_Destroy(si);
		return 0;
	}
	if (jerr != JSStreamNotFoundErr) {
		status_text(err, errlen, "stream info", st);
		return -1;
	}
	if (!n->create_stream) {
		snprintf(err, errlen,
			 "stream %s does not exist and [drain] create_stream = no: create it, "
			 "with subjects %s.>",
			 n->stream, n->subject);
		return -1;
	}
	char subjects[160];
	snprintf(subjects, sizeof subjects, "%s.>", n->subject);
	const char *subj[] = {subjects};
	jsStreamConfig sc;
	jsStreamConfig_Init(&sc);
	sc.Name = n->stream;
	sc.Subjects = subj;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	sc.Replicas = n->replicas;
	sc.Duplicates = (int64_t)n->duplicate_window_s * 1000000000LL;
	st = js_AddStream(&si, n->js, &sc, NULL, &jerr);
	if (st != NATS_OK) {
		status_text(err, errlen, "create stream", st);
		return -1;
	}
	jsStreamInfo_Destroy(si);
	log_info("drain nats: created stream %s (subjects %s, %u replicas, duplicate window "
		 "%u s)",
		 n->stream, subjects, n->replicas, n->duplicate_window_s);
	return 0;
}

static int nats_connect(void *sink, char *err, size_t errlen)
{
	struct nats_sink *n = sink;
	if (n->nc && natsConnection_IsClosed(n->nc)) {
		jsCtx_Destroy(n->js);
		natsConnection_Destroy(n->nc);
		n->js = NULL;
		n->nc = NULL;
		/* Its acks will never come: none is outstanding any more. */
		atomic_store(&n->outstanding, 0);
	}
	if (!n->nc && open_connection(n, err, errlen) != 0)
		return -1;
	return check_stream(n, err, errlen);
}

/* ---- messages ---- */

static void hex(char *out, const uint8_t *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* A header value: no control characters (they would break the framing). */
static void clean(char *out, size_t len, const char *in)
{
	snprintf(out, len, "%s", in);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static void rfc3339(char *out, size_t len, uint64_t unix_ms)
{
	time_t t = (time_t)(unix_ms / 1000u);
	struct tm tm;
	gmtime_r(&t, &tm);
	char base[32];
	strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%s.%03uZ", base, (unsigned)(unix_ms % 1000u));
}

static void subject_of(const struct nats_sink *n, const struct upload_record *rec, char *out,
		       size_t len)
{
	char cat[STORE_CATEGORY_MAX];
	snprintf(cat, sizeof cat, "%s", rec->meta.category[0] ? rec->meta.category : "_");
	for (char *p = cat; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			*p = '_';
	snprintf(out, len, "%s.%s.%s", n->subject, n->beacon_id, cat);
}

static natsStatus set_header(natsMsg *m, const char *key, const char *value)
{
	return natsMsgHeader_Set(m, key, value);
}

static natsStatus set_header_u64(natsMsg *m, const char *key, uint64_t v)
{
	char b[24];
	snprintf(b, sizeof b, "%" PRIu64, v);
	return natsMsgHeader_Set(m, key, b);
}

/* Every header of the upload (the final message, or the only one). */
static natsStatus upload_headers(const struct nats_sink *n, natsMsg *m,
				 const struct upload_record *rec, unsigned chunks)
{
	char id[128], v[STORE_NAME_MAX], sha[65], crc[9], when[40];
	snprintf(id, sizeof id, "%s.%" PRIu64, n->beacon_id, rec->id);
	natsStatus st = set_header(m, "Nats-Msg-Id", id);
	if (st == NATS_OK)
		st = set_header(m, "Beacon-Id", n->beacon_id);
	if (st == NATS_OK)
		st = set_header_u64(m, "Upload-Id", rec->id);
	clean(v, sizeof v, rec->meta.device);
	if (st == NATS_OK)
		st = set_header(m, "Device", v);
	clean(v, sizeof v, rec->meta.category);
	if (st == NATS_OK)
		st = set_header(m, "Category", v);
	clean(v, sizeof v, rec->meta.name);
	if (st == NATS_OK)
		st = set_header(m, "Name", v);
	rfc3339(when, sizeof when, rec->received_unix_ms);
	if (st == NATS_OK)
		st = set_header(m, "Received", when);
	if (st == NATS_OK)
		st = set_header_u64(m, "Length", rec->length);
	snprintf(crc, sizeof crc, "%08" PRIx32, rec->crc32);
	if (st == NATS_OK)
		st = set_header(m, "CRC32", crc);
	hex(sha, rec->meta.cert_sha256, 32);
	if (st == NATS_OK)
		st = set_header(m, "Cert-SHA256", sha);
	if (st == NATS_OK && chunks)
		st = set_header_u64(m, "Chunks", chunks);
	return st;
}

static natsStatus chunk_headers(const struct nats_sink *n, natsMsg *m,
				const struct upload_record *rec, unsigned i)
{
	char id[128];
	snprintf(id, sizeof id, "%s.%" PRIu64 ".%u", n->beacon_id, rec->id, i);
	natsStatus st = set_header(m, "Nats-Msg-Id", id);
	if (st == NATS_OK)
		st = set_header(m, "Beacon-Id", n->beacon_id);
	if (st == NATS_OK)
		st = set_header_u64(m, "Upload-Id", rec->id);
	if (st == NATS_OK)
		st = set_header_u64(m, "Chunk", i);
	return st;
}

static int read_body(int fd, const struct upload_record *rec, uint64_t off, uint8_t *buf,
		     size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = pread(fd, buf + done, len - done, (off_t)(rec->offset + off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* Sends m (taking it). */
static int send_msg(struct nats_sink *n, natsMsg **m, unsigned *queued, char *err, size_t errlen)
{
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = ACK_TIMEOUT_MS;
	atomic_fetch_add(&n->outstanding, 1);
	natsStatus st = js_PublishMsgAsync(n->js, m, &po);
	if (st != NATS_OK) {
		atomic_fetch_sub(&n->outstanding, 1);
		natsMsg_Destroy(*m);
		*m = NULL;
		status_text(err, errlen, "publish", st);
		return -1;
	}
	(*queued)++;
	return 0;
}

static int publish_whole(struct nats_sink *n, const struct upload_record *rec, int fd,
			 const char *subject, unsigned *queued, char *err, size_t errlen)
{
	const uint8_t *checked = drain_verified_body(n->drain, rec);
	uint8_t *body = checked ? NULL : malloc(rec->length ? rec->length : 1);
	if (!checked && (!body || read_body(fd, rec, 0, body, rec->length))) {
		free(body);
		snprintf(err, errlen, "upload %" PRIu64 ": read its body: %s", rec->id,
			 strerror(errno));
		return -1;
	}
	natsMsg *m = NULL;
	natsStatus st = natsMsg_Create(&m, subject, NULL, (const char *)(checked ? checked : body),
				       (int)rec->length);
	free(body);
	if (st == NATS_OK)
		st = upload_headers(n, m, rec, 0);
	if (st != NATS_OK) {
		natsMsg_Destroy(m);
		status_text(err, errlen, "message", st);
		return -1;
	}
	return send_msg(n, &m, queued, err, errlen);
}

/* A chunked upload waits for acks past the window rather than queueing all
 * of a large body in the client. */
static int wait_for_room(struct nats_sink *n, char *err, size_t errlen)
{
	if (atomic_load(&n->outstanding) < (long)n->window)
		return 0;
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = ACK_TIMEOUT_MS * 2;
	natsStatus st = js_PublishAsyncComplete(n->js, &po);
	if (st != NATS_OK) {
		status_text(err, errlen, "waiting for acks", st);
		return -1;
	}
	return 0;
}

static int publish_chunked(struct nats_sink *n, const struct upload_record *rec, int fd,
			   const char *subject, unsigned *queued, char *err, size_t errlen)
{
	uint64_t nchunks = (rec->length + n->chunk - 1) / n->chunk;
	uint8_t *buf = malloc(n->chunk);
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int rc = 0;
	for (uint64_t i = 0; i < nchunks && !rc; i++) {
		uint64_t off = i * n->chunk;
		size_t len = rec->length - off < n->chunk ? (size_t)(rec->length - off) : n->chunk;
		natsMsg *m = NULL;
		rc = wait_for_room(n, err, errlen);
		if (!rc && read_body(fd, rec, off, buf, len)) {
			snprintf(err, errlen, "upload %" PRIu64 ": read its body: %s", rec->id,
				 strerror(errno));
			rc = -1;
		}
		natsStatus st = rc ? NATS_ERR
				   : natsMsg_Create(&m, subject, NULL, (const char *)buf, (int)len);
		if (!rc && st == NATS_OK)
			st = chunk_headers(n, m, rec, (unsigned)i);
		if (!rc && st != NATS_OK) {
			natsMsg_Destroy(m);
			status_text(err, errlen, "message", st);
			rc = -1;
		}
		if (!rc)
			rc = send_msg(n, &m, queued, err, errlen);
	}
	free(buf);
	if (rc)
		return rc;
	natsMsg *m = NULL;
	natsStatus st = natsMsg_Create(&m, subject, NULL, NULL, 0);
	if (st == NATS_OK)
		st = upload_headers(n, m, rec, (unsigned)nchunks);
	if (st != NATS_OK) {
		natsMsg_Destroy(m);
		status_text(err, errlen, "message", st);
		return -1;
	}
	return send_msg(n, &m, queued, err, errlen);
}

static int nats_publish(void *sink, const struct upload_record *rec, int fd, unsigned *queued,
			char *err, size_t errlen)
{
	struct nats_sink *n = sink;
	*queued = 0;
	if (!n->js) {
		snprintf(err, errlen, "not connected");
		return -1;
	}
	char subject[256];
	subject_of(n, rec, subject, sizeof subject);
	if (rec->length <= n->chunk)
		return publish_whole(n, rec, fd, subject, queued, err, errlen);
	return publish_chunked(n, rec, fd, subject, queued, err, errlen);
}

static void nats_flush(void *sink, unsigned timeout_ms)
{
	struct nats_sink *n = sink;
	/* A closed connection reports nothing more: do not wait on it. */
	if (!n->js || natsConnection_IsClosed(n->nc))
		return;
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = timeout_ms;
	js_PublishAsyncComplete(n->js, &po);
}

static bool nats_lost(void *sink, char *err, size_t errlen)
{
	struct nats_sink *n = sink;
	if (!n->nc || !natsConnection_IsClosed(n->nc))
		return false;
	const char *last = NULL;
	natsStatus st = natsConnection_GetLastError(n->nc, &last);
	snprintf(err, errlen, "connection closed: %s",
		 last && last[0] ? last : natsStatus_GetText(st));
	return true;
}

static void nats_destroy(void *sink)
{
	struct nats_sink *n = sink;
	if (n->js)
		jsCtx_Destroy(n->js);
	if (n->nc) {
		natsConnection_Close(n->nc);
		natsConnection_Destroy(n->nc);
	}
	free(n);
}

const struct drain_sink_ops nats_sink_ops = {
	.name = "nats",
	.connect = nats_connect,
	.publish = nats_publish,
	.flush = nats_flush,
	.lost = nats_lost,
	.destroy = nats_destroy,
};
