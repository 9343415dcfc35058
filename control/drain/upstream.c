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

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#define IO_TIMEOUT_S 15
#define BODY_BUF 65536u
#define HEAD_MAX 8192u

struct upstream_sink {
	struct drain *drain;
	char host[256], port[8];
	char cert[CONFIG_PATH_MAX], key[CONFIG_PATH_MAX], ca[CONFIG_PATH_MAX];
	char beacon_id[64];
	WOLFSSL_CTX *ctx;
	WOLFSSL *ssl;
	int fd;
};

static bool url_split(const char *url, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *h = url + strlen("https://");
	const char *colon = strrchr(h, ':');
	if (h[0] == '[') /* [v6]:port */
		colon = strstr(h, "]:") ? strstr(h, "]:") + 1 : NULL;
	size_t n = colon ? (size_t)(colon - h) : strlen(h);
	if (h[0] == '[' && n >= 2) {
		h++;
		n -= 2;
	}
	if (n == 0 || n >= hostlen)
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	snprintf(port, portlen, "%s", colon ? colon + 1 : "443");
	return port[0] != '\0';
}

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
	u->fd = -1;
	if (!url_split(cfg->upstream_url, u->host, sizeof u->host, u->port, sizeof u->port)) {
		snprintf(err, errlen, "[upstream] url: '%s' has no host", cfg->upstream_url);
		free(u);
		return NULL;
	}
	snprintf(u->cert, sizeof u->cert, "%s", cfg->upstream_cert);
	snprintf(u->key, sizeof u->key, "%s", cfg->upstream_key);
	snprintf(u->ca, sizeof u->ca, "%s", cfg->upstream_ca);
	if (cfg->upstream_beacon_id[0])
		snprintf(u->beacon_id, sizeof u->beacon_id, "%s", cfg->upstream_beacon_id);
	else if (cfg->drain_beacon_id[0])
		snprintf(u->beacon_id, sizeof u->beacon_id, "%s", cfg->drain_beacon_id);
	else
		default_beacon_id(u->beacon_id, sizeof u->beacon_id);
	log_info("drain upstream: beacon id %s, parent %s", u->beacon_id, cfg->upstream_url);
	return u;
}

static void disconnect(struct upstream_sink *u)
{
	if (u->ssl)
		wolfSSL_free(u->ssl);
	u->ssl = NULL;
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
}

/* The credentials are read on each new context, so a renewed certificate
 * is picked up at the next reconnect. */
static int make_ctx(struct upstream_sink *u, char *err, size_t errlen)
{
	if (u->ctx)
		return 0;
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLS_client_method());
	const char *what = NULL;
	if (!ctx)
		what = "context";
	else if (wolfSSL_CTX_load_verify_locations(ctx, u->ca, NULL) != WOLFSSL_SUCCESS)
		what = u->ca;
	else if (wolfSSL_CTX_use_certificate_chain_file(ctx, u->cert) != WOLFSSL_SUCCESS)
		what = u->cert;
	else if (wolfSSL_CTX_use_PrivateKey_file(ctx, u->key, WOLFSSL_FILETYPE_PEM) !=
		 WOLFSSL_SUCCESS)
		what = u->key;
	if (what) {
		snprintf(err, errlen, "upstream: load %s", what);
		wolfSSL_CTX_free(ctx);
		return -1;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	u->ctx = ctx;
	return 0;
}

static int tcp_connect(struct upstream_sink *u, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int e = getaddrinfo(u->host, u->port, &hints, &res);
	if (e) {
		snprintf(err, errlen, "resolve %s: %s", u->host, gai_strerror(e));
		return -1;
	}
	int fd = -1, saved = 0;
	for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
			saved = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, errlen, "connect %s:%s: %s", u->host, u->port, strerror(saved));
		return -1;
	}
	u->fd = fd;
	return 0;
}

static void ssl_error(struct upstream_sink *u, int rc, const char *what, char *err, size_t errlen)
{
	char buf[WOLFSSL_MAX_ERROR_SZ];
	int e = wolfSSL_get_error(u->ssl, rc);
	snprintf(err, errlen, "%s %s:%s: %s", what, u->host, u->port,
		 wolfSSL_ERR_error_string((unsigned long)e, buf));
}

static int upstream_connect(void *sink, char *err, size_t errlen)
{
	struct upstream_sink *u = sink;
	if (u->ssl)
		return 0;
	if (make_ctx(u, err, errlen) || tcp_connect(u, err, errlen))
		return -1;
	u->ssl = wolfSSL_new(u->ctx);
	if (!u->ssl || wolfSSL_set_fd(u->ssl, u->fd) != WOLFSSL_SUCCESS ||
	    wolfSSL_check_domain_name(u->ssl, u->host) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "upstream: TLS session: out of memory");
		disconnect(u);
		return -1;
	}
	int rc = wolfSSL_connect(u->ssl);
	if (rc != WOLFSSL_SUCCESS) {
		ssl_error(u, rc, "TLS handshake with", err, errlen);
		disconnect(u);
		return -1;
	}
	return 0;
}

static int write_all(struct upstream_sink *u, const void *buf, size_t len, char *err, size_t errlen)
{
	const char *p = buf;
	while (len) {
		int n = wolfSSL_write(u->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
		if (n <= 0) {
			ssl_error(u, n, "send to", err, errlen);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Percent-encodes all but the unreserved characters (RFC 3986 2.3). */
static void pct_encode(char *out, size_t len, const char *in)
{
	static const char digits[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < len; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p)) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = digits[*p >> 4];
			out[o++] = digits[*p & 15];
		}
	}
	out[o] = '\0';
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
	pct_encode(cat, sizeof cat, rec->meta.category);
	pct_encode(name, sizeof name, rec->meta.name);
	clean(device, sizeof device, rec->meta.device);
	for (int i = 0; i < 32; i++)
		snprintf(sha + 2 * i, 3, "%02x", rec->meta.cert_sha256[i]);
	bool v6 = strchr(u->host, ':') != NULL;
	char head[HEAD_MAX];
	int n = snprintf(head, sizeof head,
			 "PUT /ManageSoftRL/%s/%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n"
			 "Content-Length: %" PRIu64 "\r\nBeacon-Origin: %s\r\n"
			 "Beacon-Upload-Id: %" PRIu64 "\r\nBeacon-Device: %s\r\n"
			 "Beacon-Cert-SHA256: %s\r\n\r\n",
			 cat, name, v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, rec->length,
			 u->beacon_id, rec->id, device, sha);
	if (n < 0 || (size_t)n >= sizeof head) {
		snprintf(err, errlen, "upload %" PRIu64 ": request head too long", rec->id);
		return -1;
	}
	return write_all(u, head, (size_t)n, err, errlen);
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
		if (write_all(u, buf, (size_t)r, err, errlen))
			return -1;
		off += (uint64_t)r;
	}
	return 0;
}

struct answer {
	int status;
	long long content_length;
	bool close;
	char reason[128];
};

/* "HTTP/1.x NNN ...": the three-digit status, or -1 when the line is not
 * an HTTP/1 status line. */
static int status_of(const char *head)
{
	if (strncmp(head, "HTTP/1.", 7) != 0 || head[7] < '0' || head[7] > '9' || head[8] != ' ')
		return -1;
	int status = 0;
	for (int i = 9; i < 12; i++) {
		if (head[i] < '0' || head[i] > '9')
			return -1;
		status = status * 10 + (head[i] - '0');
	}
	return head[12] == ' ' || head[12] == '\r' ? status : -1;
}

static bool field_is(const char *line, const char *name)
{
	return strncasecmp(line, name, strlen(name)) == 0;
}

/* Reads the answer's head and body (the body is only a message). */
static int read_answer(struct upstream_sink *u, struct answer *a, char *err, size_t errlen)
{
	char head[HEAD_MAX];
	size_t n = 0;
	*a = (struct answer){.content_length = -1};
	while (!(n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)) {
		if (n + 1 >= sizeof head) {
			snprintf(err, errlen, "answer from %s: head too long", u->host);
			return -1;
		}
		int r = wolfSSL_read(u->ssl, head + n, 1);
		if (r <= 0) {
			ssl_error(u, r, "answer from", err, errlen);
			return -1;
		}
		n++;
	}
	head[n] = '\0';
	a->status = status_of(head);
	if (a->status < 0) {
		snprintf(err, errlen, "answer from %s: not HTTP", u->host);
		return -1;
	}
	const char *sp = strchr(head + 9, ' ');
	if (sp)
		snprintf(a->reason, sizeof a->reason, "%.*s", (int)strcspn(sp + 1, "\r"), sp + 1);
	for (char *line = strstr(head, "\r\n"); line && line[2] != '\r';
	     line = strstr(line + 2, "\r\n")) {
		const char *f = line + 2;
		if (field_is(f, "content-length:"))
			a->content_length = strtoll(f + 15, NULL, 10);
		else if (field_is(f, "connection:") && strstr(f, "close") &&
			 strstr(f, "close") < strstr(f, "\r\n"))
			a->close = true;
	}
	if (a->content_length < 0) {
		a->close = true; /* no framing we can trust: read no further */
		return 0;
	}
	for (long long left = a->content_length; left > 0;) {
		char sink[1024];
		int r = wolfSSL_read(u->ssl, sink,
				     left < (long long)sizeof sink ? (int)left : (int)sizeof sink);
		if (r <= 0) {
			ssl_error(u, r, "answer body from", err, errlen);
			return -1;
		}
		left -= r;
	}
	return 0;
}

static int upstream_publish(void *sink, const struct upload_record *rec, int fd, unsigned *queued,
			    char *err, size_t errlen)
{
	struct upstream_sink *u = sink;
	*queued = 0;
	/* A kept-alive connection the parent closed while idle fails the
	 * first request on it: that one is sent again on a fresh connection
	 * (a copy the parent did store is de-duplicated there). */
	bool reused = u->ssl != NULL;
	struct answer a;
	for (;;) {
		if (!u->ssl && upstream_connect(u, err, errlen))
			return -1;
		if (!send_head(u, rec, err, errlen) && !send_body(u, rec, fd, err, errlen) &&
		    !read_answer(u, &a, err, errlen))
			break;
		disconnect(u);
		if (!reused)
			return -1;
		reused = false;
	}
	if (a.close)
		disconnect(u);
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
	disconnect(u);
	if (u->ctx)
		wolfSSL_CTX_free(u->ctx);
	free(u);
}

const struct drain_sink_ops upstream_sink_ops = {
	.name = "upstream",
	.connect = upstream_connect,
	.publish = upstream_publish,
	.flush = upstream_flush,
	.destroy = upstream_destroy,
};
