/*
 * upstream: the parent beacon sink. Each upload is PUT to
 * <url>/ManageSoftRL/<category>/<name> over mutual TLS (wolfSSL, this
 * beacon's own client certificate, the parent's chained to [upstream] ca
 * and matching the URL's host), one at a time on one keep-alive
 * connection. Headers tell the parent where the upload came from:
 *
 *   Beacon-Origin       this beacon's id
 *   Beacon-Upload-Id    the upload's id here
 *   Beacon-Device       the device that sent it
 *   Beacon-Cert-SHA256  that device's certificate fingerprint
 *
 * A beacond parent honours them only from a certificate listed in its
 * [upstream] children and de-duplicates the re-sends a crash or a lost
 * answer causes. 2xx acknowledges; 5xx or a broken connection fails the
 * round (the drain retries with backoff), and so do 408, 429 and a 3xx;
 * any other 4xx refuses the upload for good (drain_message_refused:
 * logged, counted failed, left behind so that the queue moves on).
 */
#include "drain-internal.h"

#include "beacon/config.h"
#include "beacon/log.h"
#include "beacon/parentconn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY_BUF 65536u
#define HEAD_MAX 8192u

struct upstream_sink {
	struct drain *drain;
	struct parent_conn *conn;
	char beacon_id[64];
};

static void default_beacon_id(char *out, size_t len)
{
	char host[256] = "";
	if (gethostname(host, sizeof host - 1) != 0 || !host[0])
		snprintf(host, sizeof host, "beacon");
	snprintf(out, len, "%s", host);
}

void *upstream_sink_create(const struct config *cfg, struct drain *d, char *err, size_t errlen)
{
	struct upstream_sink *u = calloc(1, sizeof *u);
	if (!u) {
		snprintf(err, errlen, "upstream: out of memory");
		return NULL;
	}
	u->drain = d;
	u->conn = parent_conn_new(cfg, err, errlen);
	if (!u->conn) {
		free(u);
		return NULL;
	}
	if (cfg->upstream_beacon_id[0])
		snprintf(u->beacon_id, sizeof u->beacon_id, "%s", cfg->upstream_beacon_id);
	else if (cfg->drain_beacon_id[0])
		snprintf(u->beacon_id, sizeof u->beacon_id, "%s", cfg->drain_beacon_id);
	else
		default_beacon_id(u->beacon_id, sizeof u->beacon_id);
	log_info("drain upstream: beacon id %s, parent %s", u->beacon_id, cfg->upstream_url);
	return u;
}

static int upstream_connect(void *sink, char *err, size_t errlen)
{
	struct upstream_sink *u = sink;
	return parent_conn_open(u->conn, err, errlen);
}

/* A header value: no control characters (they would break the framing). */
static void clean(char *out, size_t len, const char *in)
{
	snprintf(out, len, "%s", in);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static int send_head(struct upstream_sink *u, const struct upload_record *rec, char *err,
		     size_t errlen)
{
	char cat[3 * STORE_CATEGORY_MAX + 1], name[3 * STORE_NAME_MAX + 1];
	char device[STORE_DEVICE_MAX], sha[65];
	parent_pct_encode(cat, sizeof cat, rec->meta.category, false);
	parent_pct_encode(name, sizeof name, rec->meta.name, false);
	clean(device, sizeof device, rec->meta.device);
	for (int i = 0; i < 32; i++)
		snprintf(sha + 2 * i, 3, "%02x", rec->meta.cert_sha256[i]);
	char head[HEAD_MAX];
	int n = snprintf(head, sizeof head,
			 "PUT /ManageSoftRL/%s/%s HTTP/1.1\r\nHost: %s\r\n"
			 "Content-Length: %" PRIu64 "\r\nBeacon-Origin: %s\r\n"
			 "Beacon-Upload-Id: %" PRIu64 "\r\nBeacon-Device: %s\r\n"
			 "Beacon-Cert-SHA256: %s\r\n\r\n",
			 cat, name, parent_conn_authority(u->conn), rec->length, u->beacon_id,
			 rec->id, device, sha);
	if (n < 0 || (size_t)n >= sizeof head) {
		snprintf(err, errlen, "upload %" PRIu64 ": request head too long", rec->id);
		return -1;
	}
	return parent_conn_write(u->conn, head, (size_t)n, err, errlen);
}

static int send_body(struct upstream_sink *u, const struct upload_record *rec, int fd, char *err,
		     size_t errlen)
{
	static _Thread_local uint8_t buf[BODY_BUF];
	for (uint64_t off = 0; off < rec->length;) {
		size_t want = rec->length - off < BODY_BUF ? (size_t)(rec->length - off) : BODY_BUF;
		ssize_t r = pread(fd, buf, want, (off_t)(rec->offset + off));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "upload %" PRIu64 ": read its body: %s", rec->id,
				 r < 0 ? strerror(errno) : "short");
			return -1;
		}
		if (parent_conn_write(u->conn, buf, (size_t)r, err, errlen))
			return -1;
		off += (uint64_t)r;
	}
	return 0;
}

/* Reads the answer's head and body (the body is only a message). */
static int read_answer(struct upstream_sink *u, struct parent_answer *a, char *err, size_t errlen)
{
	if (parent_conn_read_head(u->conn, a, err, errlen))
		return -1;
	return a->content_length < 0 ? 0 : parent_conn_skip_body(u->conn, a, err, errlen);
}

static int upstream_publish(void *sink, const struct upload_record *rec, int fd, unsigned *queued,
			    char *err, size_t errlen)
{
	struct upstream_sink *u = sink;
	*queued = 0;
	/* A kept-alive connection the parent closed while idle fails the
	 * first request on it: that one is sent again on a fresh connection
	 * (a copy the parent did store is de-duplicated there). */
	bool reused = parent_conn_is_open(u->conn);
	struct parent_answer a;
	for (;;) {
		if (parent_conn_open(u->conn, err, errlen))
			return -1;
		if (!send_head(u, rec, err, errlen) && !send_body(u, rec, fd, err, errlen) &&
		    !read_answer(u, &a, err, errlen))
			break;
		parent_conn_close(u->conn);
		if (!reused)
			return -1;
		reused = false;
	}
	if (a.close)
		parent_conn_close(u->conn);
	char why[256];
	snprintf(why, sizeof why, "parent answered %d %s", a.status, a.reason);
	/* 408 and 429 say "later", like a 5xx; a 3xx is a parent set up
	 * wrong, and retrying keeps the uploads until it is put right. */
	if (a.status >= 500 || a.status < 200 || (a.status >= 300 && a.status < 400) ||
	    a.status == 408 || a.status == 429) {
		snprintf(err, errlen, "upload %" PRIu64 ": %s", rec->id, why);
		return -1;
	}
	*queued = 1;
	if (a.status >= 400)
		drain_message_refused(u->drain, rec->id, why);
	else
		drain_message_done(u->drain, rec->id, true, NULL);
	return 0;
}

/* Each answer is read before publish returns: nothing is ever in flight. */
static void upstream_flush(void *sink, unsigned timeout_ms)
{
	(void)sink;
	(void)timeout_ms;
}

static void upstream_destroy(void *sink)
{
	struct upstream_sink *u = sink;
	parent_conn_free(u->conn);
	free(u);
}

const struct drain_sink_ops upstream_sink_ops = {
	.name = "upstream",
	.connect = upstream_connect,
	.publish = upstream_publish,
	.flush = upstream_flush,
	.destroy = upstream_destroy,
};
