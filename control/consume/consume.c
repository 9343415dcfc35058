/*
 * beacon-consume: the stream of uploads (see README, "The drain") as files,
 * DIR/<device>/<category>/<name>, for readers that want a directory.
 *
 * A durable pull consumer (AckExplicit, DeliverAll; made when missing) is
 * fetched in batches. A message is acknowledged only once its file is in
 * place and fsynced (files.c), so delivery is at least once; a redelivery
 * writes the same bytes again, and an upload older than the file already
 * there (by the Received header, kept as the file's mtime) is acknowledged
 * without touching it, so the newest upload of a path wins whatever the
 * order of delivery.
 *
 * A chunked upload's chunks are written to a temporary file as they come,
 * in order, and held unacknowledged (only their reply subjects are kept)
 * until the final message has been verified and the file is in place; then
 * all are acknowledged. A chunk out of order (its predecessors are still
 * with a consumer that died, or were published later) is nak'd with a
 * delay, and comes back. At most MAX_ASSEMBLIES uploads are gathered at
 * once, each holding at most --max-ack-pending reply subjects.
 *
 * Refusals are final and counted: a message that is not an upload, a name
 * that is not one path component, a symbolic link in the way, a Length or
 * CRC32 that does not match. They are terminated (+TERM), not nak'd: the
 * stream holds those bytes and will deliver the same ones again.
 */
#include "consume.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "beacon/natsconn.h"
#include <nats/nats.h>

#define MAX_ASSEMBLIES 4
#define FETCH_BATCH 64
#define FETCH_WAIT_MS 1000
#define NAK_DELAY_MS 1000
#define REPLY_MAX 256
#define REFUSED_MEMORY 16

struct options {
	const char *nats, *creds, *user, *password, *tls_ca, *tls_cert, *tls_key;
	const char *stream, *durable, *subject, *dir;
	int64_t ack_wait_s, max_ack_pending;
	bool once;
};

struct counts {
	uint64_t written, older, refused, bad_checksum, retried, failed;
};

/* One chunked upload being gathered. */
struct assembly {
	bool used;
	char beacon[64];
	uint64_t upload_id;
	int fd;
	uLong crc;
	uint64_t length;
	uint64_t next;	 /* the chunk expected next */
	char **replies;	 /* of chunks 0 .. next-1, to acknowledge at the end */
	time_t progress; /* when a chunk was last written */
	uint64_t order;	 /* when it began, among the others */
};

struct consumer {
	struct options opt;
	struct counts n;
	int root_fd;
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub;
	struct assembly asm_[MAX_ASSEMBLIES];
	uint64_t assemblies_begun;
	struct {
		char beacon[64];
		uint64_t upload_id;
	} refused[REFUSED_MEMORY]; /* uploads whose gathering was refused */
	unsigned refused_next;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

/* A header value for a log line: bytes outside printable ASCII as \xHH. */
static const char *printable(const char *s, char *out, size_t len)
{
	size_t o = 0;
	for (; s && *s && o + 5 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", c);
	}
	out[o] = '\0';
	return out;
}

static const char *header(natsMsg *m, const char *key)
{
	const char *v = NULL;
	if (natsMsgHeader_Get(m, key, &v) != NATS_OK)
		return NULL;
	return v;
}

static bool header_u64(natsMsg *m, const char *key, uint64_t *out)
{
	const char *v = header(m, key);
	char *end = NULL;
	if (!v || !*v || *v == '-')
		return false;
	errno = 0;
	*out = strtoull(v, &end, 10);
	return errno == 0 && *end == '\0';
}

static bool header_crc(natsMsg *m, uint32_t *out)
{
	const char *v = header(m, "CRC32");
	char *end = NULL;
	if (!v || strlen(v) != 8)
		return false;
	unsigned long c = strtoul(v, &end, 16);
	*out = (uint32_t)c;
	return *end == '\0';
}

/* n decimal digits at s, or -1. */
static int digits(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* Received, exactly as the drain writes it: 2026-12-04T08:44:36.662Z */
static bool header_time(natsMsg *m, struct timespec *out)
{
	const char *v = header(m, "Received");
	if (!v || strlen(v) != 24 || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' ||
	    v[16] != ':' || v[19] != '.' || v[23] != 'Z')
		return false;
	struct tm tm = {.tm_year = digits(v, 4) - 1900,
			.tm_mon = digits(v + 5, 2) - 1,
			.tm_mday = digits(v + 8, 2),
			.tm_hour = digits(v + 11, 2),
			.tm_min = digits(v + 14, 2),
			.tm_sec = digits(v + 17, 2)};
	int ms = digits(v + 20, 3);
	if (tm.tm_year < 70 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 ||
	    tm.tm_min > 59 || tm.tm_sec < 0 || tm.tm_sec > 60 || ms < 0)
		return false;
	out->tv_sec = timegm(&tm);
	out->tv_nsec = (long)ms * 1000000L;
	return out->tv_sec != (time_t)-1;
}

static const char *msg_id(natsMsg *m)
{
	const char *id = header(m, "Nats-Msg-Id");
	return id ? id : "(no Nats-Msg-Id)";
}

static void log_msg(natsMsg *m, const char *fmt, const char *detail)
{
	char id[256];
	fprintf(stderr, "beacon-consume: %s: ", printable(msg_id(m), id, sizeof id));
	fprintf(stderr, fmt, detail);
	fputc('\n', stderr);
}

/* Refused for good: logged, counted, terminated. */
static void refuse_as(natsMsg *m, const char *why, uint64_t *count)
{
	log_msg(m, "refused (terminated): %s", why);
	(*count)++;
	natsMsg_Term(m, NULL);
}

static void refuse(struct consumer *c, natsMsg *m, const char *why)
{
	refuse_as(m, why, &c->n.refused);
}

static void retry_later(struct consumer *c, natsMsg *m, const char *why)
{
	log_msg(m, "not yet (nak, redelivered in 1 s): %s", why);
	c->n.retried++;
	natsMsg_NakWithDelay(m, NAK_DELAY_MS, NULL);
}

/* An I/O error here (a full disk): nak'd for a later try; --once ends the
 * run with status 1 after this batch, so a script sees it. */
static void fail_here(struct consumer *c, natsMsg *m, const char *why)
{
	log_msg(m, "failed (nak, redelivered in 1 s): %s", why);
	c->n.failed++;
	natsMsg_NakWithDelay(m, NAK_DELAY_MS, NULL);
}

/* How often a final message may come back waiting for its chunks before it
 * is given up: enough for chunks held by a crashed run to be redelivered
 * (one ack wait) several times over. */
static bool waited_too_long(const struct consumer *c, natsMsg *m)
{
	jsMsgMetaData *meta = NULL;
	if (natsMsg_GetMetaData(&meta, m) != NATS_OK)
		return false;
	bool too_long = meta->NumDelivered > 60 + 4 * (uint64_t)c->opt.ack_wait_s;
	jsMsgMetaData_Destroy(meta);
	return too_long;
}

/* The rest of a refused chunked upload is refused at once, not nak'd. */
static void remember_refused(struct consumer *c, const struct assembly *a)
{
	unsigned i = c->refused_next++ % REFUSED_MEMORY;
	snprintf(c->refused[i].beacon, sizeof c->refused[i].beacon, "%s", a->beacon);
	c->refused[i].upload_id = a->upload_id;
}

static bool was_refused(const struct consumer *c, const char *beacon, uint64_t id)
{
	for (unsigned i = 0; i < REFUSED_MEMORY; i++)
		if (c->refused[i].upload_id == id && strcmp(c->refused[i].beacon, beacon) == 0)
			return true;
	return false;
}

static void assembly_free(struct assembly *a)
{
	if (a->fd >= 0)
		close(a->fd);
	for (uint64_t i = 0; i < a->next; i++)
		free(a->replies[i]);
	free(a->replies);
	memset(a, 0, sizeof *a);
	a->fd = -1;
}

/* Publishes verb (+ACK, +TERM) to every chunk held by a. */
static void reply_held(struct consumer *c, struct assembly *a, const char *verb)
{
	for (uint64_t i = 0; i < a->next; i++)
		if (a->replies[i][0])
			natsConnection_PublishString(c->nc, a->replies[i], verb);
}

static struct assembly *assembly_find(struct consumer *c, const char *beacon, uint64_t id)
{
	for (int i = 0; i < MAX_ASSEMBLIES; i++)
		if (c->asm_[i].used && c->asm_[i].upload_id == id &&
		    strcmp(c->asm_[i].beacon, beacon) == 0)
			return &c->asm_[i];
	return NULL;
}

/* A free slot; one whose upload made no progress for two ack waits is
 * given up (its chunks have been redelivered or will be). */
static struct assembly *assembly_slot(struct consumer *c)
{
	time_t now = time(NULL);
	for (int i = 0; i < MAX_ASSEMBLIES; i++)
		if (!c->asm_[i].used)
			return &c->asm_[i];
	for (int i = 0; i < MAX_ASSEMBLIES; i++)
		if (now - c->asm_[i].progress > 2 * c->opt.ack_wait_s) {
			assembly_free(&c->asm_[i]);
			return &c->asm_[i];
		}
	return NULL;
}

static int assembly_start(struct consumer *c, struct assembly *a, const char *beacon, uint64_t id)
{
	a->fd = temp_file(c->root_fd);
	if (a->fd < 0)
		return -1;
	a->replies = calloc((size_t)c->opt.max_ack_pending, sizeof *a->replies);
	if (!a->replies) {
		close(a->fd);
		a->fd = -1;
		return -1;
	}
	a->used = true;
	snprintf(a->beacon, sizeof a->beacon, "%s", beacon);
	a->upload_id = id;
	a->crc = crc32(0L, Z_NULL, 0);
	a->progress = time(NULL);
	a->order = ++c->assemblies_begun;
	return 0;
}

/* Unacknowledged chunks this process may hold: JetStream stops delivering
 * at --max-ack-pending, so one fetched batch is kept free. */
static uint64_t chunk_room(const struct consumer *c)
{
	return (uint64_t)(c->opt.max_ack_pending - FETCH_BATCH);
}

static uint64_t held_chunks(const struct consumer *c)
{
	uint64_t n = 0;
	for (int i = 0; i < MAX_ASSEMBLIES; i++)
		if (c->asm_[i].used)
			n += c->asm_[i].next;
	return n;
}

/* The uploads being gathered together hold too many chunks: the youngest is
 * dropped unacknowledged (its chunks come back after the ack wait, when the
 * older ones are done). True when that was `current`. */
static bool make_room(struct consumer *c, const struct assembly *current)
{
	struct assembly *young = NULL;
	for (int i = 0; i < MAX_ASSEMBLIES; i++)
		if (c->asm_[i].used && (!young || c->asm_[i].order > young->order))
			young = &c->asm_[i];
	fprintf(stderr,
		"beacon-consume: upload %" PRIu64 " of %s: %" PRIu64
		" chunks dropped unacknowledged to stay within --max-ack-pending\n",
		young->upload_id, young->beacon, young->next);
	bool was_current = young == current;
	assembly_free(young);
	return was_current;
}

static void on_chunk(struct consumer *c, natsMsg *m, const char *beacon, uint64_t id,
		     uint64_t chunk)
{
	struct assembly *a = assembly_find(c, beacon, id);
	const char *reply = natsMsg_GetReply(m);
	if (!reply || strlen(reply) >= REPLY_MAX)
		return refuse(c, m, "no usable reply subject");
	if (a && chunk < a->next && waited_too_long(c, m)) {
		/* Held through that many ack waits: its final is not coming
		 * (or went by while this was gathered again). */
		reply_held(c, a, "+TERM");
		remember_refused(c, a);
		assembly_free(a);
		return refuse(c, m, "held for too long without its final message (given up)");
	}
	if (a && chunk < a->next) { /* a redelivery of one already written */
		char *copy = strdup(reply);
		if (copy) {
			free(a->replies[chunk]);
			a->replies[chunk] = copy;
		}
		return;
	}
	if (!a && chunk == 0) {
		a = assembly_slot(c);
		if (!a)
			return retry_later(c, m, "every assembly slot is busy");
		if (assembly_start(c, a, beacon, id) != 0)
			return fail_here(c, m, strerror(errno));
	}
	if (!a && waited_too_long(c, m))
		return refuse(c, m, "the chunks before this one did not arrive (given up)");
	if (!a || chunk != a->next)
		return retry_later(c, m, "a chunk before this one has not arrived");
	if (a->next >= chunk_room(c)) {
		reply_held(c, a, "+TERM");
		remember_refused(c, a);
		assembly_free(a);
		return refuse(c, m, "more chunks than --max-ack-pending allows to hold");
	}
	if (held_chunks(c) >= chunk_room(c) && make_room(c, a))
		return retry_later(c, m,
				   "its chunks were dropped to make room for an older upload");
	const void *data = natsMsg_GetData(m);
	size_t len = (size_t)natsMsg_GetDataLength(m);
	char *copy = strdup(reply);
	if (!copy || write_all(a->fd, data, len) != 0) {
		free(copy);
		return fail_here(c, m, strerror(errno));
	}
	a->crc = crc32(a->crc, data, (uInt)len);
	a->length += len;
	a->replies[a->next++] = copy;
	a->progress = time(NULL);
}

/* The upload's identity, as the final (or only) message carries it. */
struct upload_head {
	const char *device, *category, *name;
	struct timespec received;
	uint64_t length, chunks, id;
	uint32_t crc;
	bool chunked;
};

static const char *parse_head(natsMsg *m, struct upload_head *h)
{
	h->device = header(m, "Device");
	h->category = header(m, "Category");
	h->name = header(m, "Name");
	if (!h->device || !h->category || !h->name)
		return "no Device, Category or Name header";
	if (!header_time(m, &h->received))
		return "no valid Received header";
	if (!header_u64(m, "Length", &h->length) || !header_crc(m, &h->crc))
		return "no valid Length or CRC32 header";
	h->chunked = header(m, "Chunks") != NULL;
	if (h->chunked && !header_u64(m, "Chunks", &h->chunks))
		return "a Chunks header that is not a number";
	return NULL;
}

/* Acknowledges the upload's messages: the chunks first, then the final one
 * synchronously, so every ack has reached the server when this returns. */
static void ack_upload(struct consumer *c, natsMsg *m, struct assembly *a)
{
	if (a)
		reply_held(c, a, "+ACK");
	jsErrCode jerr = 0;
	natsStatus st = natsMsg_AckSync(m, NULL, &jerr);
	if (st != NATS_OK)
		log_msg(m, "ack: %s (the message will come again)", natsStatus_GetText(st));
}

static enum put_result place(struct consumer *c, natsMsg *m, const struct upload_head *h, int fd,
			     struct assembly *a)
{
	char why[256], msg[512], d[96], k[96], nm[300];
	enum put_result r = put_file(c->root_fd, fd, h->device, h->category, h->name, h->id,
				     h->received, why, sizeof why);
	snprintf(msg, sizeof msg, "%s/%s/%s: %s", printable(h->device, d, sizeof d),
		 printable(h->category, k, sizeof k), printable(h->name, nm, sizeof nm), why);
	switch (r) {
	case PUT_WRITTEN:
		c->n.written++;
		ack_upload(c, m, a);
		break;
	case PUT_OLDER:
		c->n.older++;
		log_msg(m, "skipped (acknowledged): %s", msg);
		ack_upload(c, m, a);
		break;
	case PUT_REFUSED:
		if (a) {
			reply_held(c, a, "+TERM");
			remember_refused(c, a);
		}
		refuse(c, m, msg);
		break;
	case PUT_TRANSIENT:
		fail_here(c, m, msg);
		break;
	}
	return r;
}

static bool verify(struct consumer *c, natsMsg *m, const struct upload_head *h, uint64_t length,
		   uint32_t crc)
{
	char why[160];
	if (length == h->length && crc == h->crc)
		return true;
	snprintf(why, sizeof why,
		 "body is %" PRIu64 " bytes with CRC32 %08" PRIx32 ", headers say %" PRIu64
		 " and %08" PRIx32 "; nothing written",
		 length, crc, h->length, h->crc);
	refuse_as(m, why, &c->n.bad_checksum);
	return false;
}

static void on_single(struct consumer *c, natsMsg *m, const struct upload_head *h)
{
	const void *data = natsMsg_GetData(m);
	size_t len = (size_t)natsMsg_GetDataLength(m);
	uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), data, (uInt)len);
	if (!verify(c, m, h, len, crc))
		return;
	int fd = temp_file(c->root_fd);
	if (fd < 0)
		return fail_here(c, m, strerror(errno));
	if (write_all(fd, data, len) != 0)
		fail_here(c, m, strerror(errno));
	else
		place(c, m, h, fd, NULL);
	close(fd);
}

static void on_final(struct consumer *c, natsMsg *m, const struct upload_head *h,
		     const char *beacon)
{
	struct assembly *a = assembly_find(c, beacon, h->id);
	if (!a || a->next != h->chunks) {
		/* Its chunks were acknowledged with the file, and only this
		 * message's own ack was lost: the file is there. */
		if (!a && already_in_place(c->root_fd, h->device, h->category, h->name, h->received,
					   h->length, h->crc))
			return ack_upload(c, m, NULL);
		if (waited_too_long(c, m))
			return refuse(c, m, "its chunks did not all arrive (given up)");
		return retry_later(c, m, "its chunks have not all arrived");
	}
	if (!verify(c, m, h, a->length, (uint32_t)a->crc)) {
		reply_held(c, a, "+TERM");
		remember_refused(c, a);
		assembly_free(a);
		return;
	}
	/* After a transient failure the chunks stay held for the final's
	 * redelivery; anything else is the end of this upload. */
	if (place(c, m, h, a->fd, a) != PUT_TRANSIENT)
		assembly_free(a);
}

static void on_message(struct consumer *c, natsMsg *m)
{
	const char *beacon = header(m, "Beacon-Id");
	uint64_t id = 0, chunk = 0;
	if (!beacon || strlen(beacon) >= sizeof c->asm_[0].beacon ||
	    !header_u64(m, "Upload-Id", &id))
		return refuse(c, m, "not an upload (no Beacon-Id or Upload-Id header)");
	if (was_refused(c, beacon, id))
		return refuse(c, m, "an earlier part of this upload was refused");
	if (header(m, "Chunk")) {
		if (!header_u64(m, "Chunk", &chunk))
			return refuse(c, m, "a Chunk header that is not a number");
		return on_chunk(c, m, beacon, id, chunk);
	}
	struct upload_head h = {.id = id};
	const char *bad = parse_head(m, &h);
	if (bad)
		return refuse(c, m, bad);
	if (h.chunked)
		on_final(c, m, &h, beacon);
	else
		on_single(c, m, &h);
}

static natsStatus make_options(const struct options *opt, natsOptions **out)
{
	const struct nats_login l = {.urls = opt->nats,
				     .user = opt->user,
				     .password = opt->password,
				     .creds = opt->creds,
				     .tls_ca = opt->tls_ca,
				     .tls_cert = opt->tls_cert,
				     .tls_key = opt->tls_key};
	return natsconn_options(&l, out);
}

static int fail_nats(const char *what, natsStatus st, jsErrCode jerr)
{
	const char *last = nats_GetLastError(NULL);
	fprintf(stderr, "beacon-consume: %s: %s%s%s", what, natsStatus_GetText(st),
		last ? ": " : "", last ? last : "");
	if (jerr)
		fprintf(stderr, " (JetStream error %d)", (int)jerr);
	fputc('\n', stderr);
	return -1;
}

/* The durable consumer, made when missing with AckExplicit and DeliverAll. */
static int ensure_consumer(struct consumer *c)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	natsStatus st = js_GetConsumerInfo(&ci, c->js, c->opt.stream, c->opt.durable, NULL, &jerr);
	if (st == NATS_OK) {
		jsConsumerInfo_Destroy(ci);
		return 0;
	}
	if (st != NATS_NOT_FOUND)
		return fail_nats("consumer info", st, jerr);
	jsConsumerConfig cc;
	jsConsumerConfig_Init(&cc);
	cc.Durable = c->opt.durable;
	cc.AckPolicy = js_AckExplicit;
	cc.DeliverPolicy = js_DeliverAll;
	cc.AckWait = c->opt.ack_wait_s * 1000000000LL;
	cc.MaxAckPending = c->opt.max_ack_pending;
	cc.FilterSubject = c->opt.subject;
	st = js_AddConsumer(&ci, c->js, c->opt.stream, &cc, NULL, &jerr);
	if (st != NATS_OK)
		return fail_nats("creating the durable consumer", st, jerr);
	fprintf(stderr, "beacon-consume: made durable consumer %s on stream %s\n", c->opt.durable,
		c->opt.stream);
	jsConsumerInfo_Destroy(ci);
	return 0;
}

static int connect_nats(struct consumer *c)
{
	natsOptions *o = NULL;
	natsStatus st = make_options(&c->opt, &o);
	if (st != NATS_OK)
		return fail_nats("nats options", st, 0);
	st = natsConnection_Connect(&c->nc, o);
	natsOptions_Destroy(o);
	if (st != NATS_OK)
		return fail_nats("connect", st, 0);
	st = natsConnection_JetStream(&c->js, c->nc, NULL);
	if (st != NATS_OK)
		return fail_nats("jetstream", st, 0);
	if (ensure_consumer(c) != 0)
		return -1;
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = c->opt.stream;
	so.Consumer = c->opt.durable;
	jsErrCode jerr = 0;
	st = js_PullSubscribe(&c->sub, c->js, c->opt.subject, c->opt.durable, NULL, &so, &jerr);
	if (st != NATS_OK)
		return fail_nats("pull subscribe", st, jerr);
	return 0;
}

/* --once: nothing left to deliver, and nothing delivered but unacknowledged
 * except the chunks this process holds (those of a crashed run come back
 * after the ack wait, so they are waited for). */
static bool drained(struct consumer *c)
{
	jsConsumerInfo *ci = NULL;
	jsErrCode jerr = 0;
	natsStatus st = js_GetConsumerInfo(&ci, c->js, c->opt.stream, c->opt.durable, NULL, &jerr);
	if (st != NATS_OK) {
		fail_nats("consumer info", st, jerr);
		return false;
	}
	bool done = ci->NumPending == 0 && (uint64_t)ci->NumAckPending <= held_chunks(c);
	jsConsumerInfo_Destroy(ci);
	return done;
}

static void run(struct consumer *c)
{
	while (!stopping) {
		natsMsgList list = {0};
		jsErrCode jerr = 0;
		natsStatus st =
			natsSubscription_Fetch(&list, c->sub, FETCH_BATCH, FETCH_WAIT_MS, &jerr);
		if (st == NATS_TIMEOUT) {
			if (c->opt.once && drained(c))
				return;
			continue;
		}
		if (st != NATS_OK) {
			fail_nats("fetch", st, jerr);
			/* The library reconnects; wait for it rather than spin. */
			nats_Sleep(500);
			continue;
		}
		for (int i = 0; i < list.Count; i++)
			on_message(c, list.Msgs[i]);
		natsMsgList_Destroy(&list);
		if (c->opt.once && c->n.failed)
			return;
	}
}

static void disconnect(struct consumer *c)
{
	natsSubscription_Destroy(c->sub);
	jsCtx_Destroy(c->js);
	natsConnection_Destroy(c->nc);
	c->sub = NULL;
	c->js = NULL;
	c->nc = NULL;
}

/* --once gives up at the first failure (a script wants to know); a service
 * keeps trying every 2 s, as NATS may come up after it. */
static int connect_until_up(struct consumer *c)
{
	while (connect_nats(c) != 0) {
		disconnect(c);
		if (c->opt.once || stopping)
			return -1;
		nats_Sleep(2000);
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: beacon-consume --nats URL[,URL...] --dir DIR [--stream NAME] "
		   "[--durable NAME]\n"
		   "       [--subject FILTER] [--creds FILE | --user U --password P] [--tls-ca "
		   "FILE]\n"
		   "       [--tls-cert FILE --tls-key FILE] [--ack-wait SECONDS] "
		   "[--max-ack-pending N] [--once]\n");
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{"nats", required_argument, NULL, 'n'},
		{"creds", required_argument, NULL, 'c'},
		{"user", required_argument, NULL, 'u'},
		{"password", required_argument, NULL, 'p'},
		{"tls-ca", required_argument, NULL, 'a'},
		{"tls-cert", required_argument, NULL, 'C'},
		{"tls-key", required_argument, NULL, 'K'},
		{"stream", required_argument, NULL, 's'},
		{"durable", required_argument, NULL, 'd'},
		{"subject", required_argument, NULL, 'f'},
		{"dir", required_argument, NULL, 'D'},
		{"ack-wait", required_argument, NULL, 'w'},
		{"max-ack-pending", required_argument, NULL, 'm'},
		{"once", no_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	*o = (struct options){.stream = "BEACON_UPLOADS",
			      .durable = "beacon-consume",
			      .ack_wait_s = 30,
			      .max_ack_pending = 20000};
	int ch;
	char *end;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			o->nats = optarg;
			break;
		case 'c':
			o->creds = optarg;
			break;
		case 'u':
			o->user = optarg;
			break;
		case 'p':
			o->password = optarg;
			break;
		case 'a':
			o->tls_ca = optarg;
			break;
		case 'C':
			o->tls_cert = optarg;
			break;
		case 'K':
			o->tls_key = optarg;
			break;
		case 's':
			o->stream = optarg;
			break;
		case 'd':
			o->durable = optarg;
			break;
		case 'f':
			o->subject = optarg;
			break;
		case 'D':
			o->dir = optarg;
			break;
		case 'o':
			o->once = true;
			break;
		case 'w':
			o->ack_wait_s = strtoll(optarg, &end, 10);
			if (*end || o->ack_wait_s < 1 || o->ack_wait_s > 86400)
				return fprintf(stderr,
					       "beacon-consume: --ack-wait: 1 to 86400 seconds\n"),
				       -1;
			break;
		case 'm':
			o->max_ack_pending = strtoll(optarg, &end, 10);
			if (*end || o->max_ack_pending < 2 * FETCH_BATCH ||
			    o->max_ack_pending > 1000000)
				return fprintf(stderr, "beacon-consume: --max-ack-pending: 128 to "
						       "1000000\n"),
				       -1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
	}
	if (optind != argc || !o->nats || !o->dir) {
		fprintf(stderr, "beacon-consume: --nats and --dir are required\n");
		return -1;
	}
	if (!!o->tls_cert != !!o->tls_key) {
		fprintf(stderr, "beacon-consume: --tls-cert and --tls-key go together\n");
		return -1;
	}
	if (!o->durable || strchr(o->durable, '.') || strchr(o->durable, ' ') || !o->durable[0]) {
		fprintf(stderr, "beacon-consume: --durable: a name without '.' or spaces\n");
		return -1;
	}
	return 0;
}

static void shutdown_consumer(struct consumer *c)
{
	for (int i = 0; i < MAX_ASSEMBLIES; i++)
		if (c->asm_[i].used)
			assembly_free(&c->asm_[i]);
	if (c->nc)
		natsConnection_FlushTimeout(c->nc, 5000);
	disconnect(c);
	if (c->root_fd >= 0)
		close(c->root_fd);
	nats_Close();
}

int main(int argc, char **argv)
{
	struct consumer c = {.root_fd = -1};
	for (int i = 0; i < MAX_ASSEMBLIES; i++)
		c.asm_[i].fd = -1;
	if (parse_options(argc, argv, &c.opt) != 0) {
		usage(stderr);
		return 2;
	}
	c.root_fd = open(c.opt.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c.root_fd < 0) {
		fprintf(stderr, "beacon-consume: --dir %s: %s\n", c.opt.dir, strerror(errno));
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	int rc = 1;
	if (connect_until_up(&c) == 0) {
		run(&c);
		rc = c.n.failed && c.opt.once ? 1 : 0;
	}
	fprintf(stderr,
		"beacon-consume: %" PRIu64 " written, %" PRIu64 " older skipped, %" PRIu64
		" refused, %" PRIu64 " bad checksum, %" PRIu64 " retried, %" PRIu64 " failed\n",
		c.n.written, c.n.older, c.n.refused, c.n.bad_checksum, c.n.retried, c.n.failed);
	shutdown_consumer(&c);
	return rc;
}
