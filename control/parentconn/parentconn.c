/*
 * parentconn (beacon/parentconn.h): the HTTPS client to the parent beacon
 * that the upstream sink and the mirror share.
 */
#include "beacon/parentconn.h"

#include "beacon/config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#define IO_TIMEOUT_S 15
#define HEAD_MAX 8192u

struct parent_conn {
	char host[256], port[8], authority[272];
	char cert[CONFIG_PATH_MAX], key[CONFIG_PATH_MAX], ca[CONFIG_PATH_MAX];
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

struct parent_conn *parent_conn_new(const struct config *cfg, char *err, size_t errlen)
{
	struct parent_conn *p = calloc(1, sizeof *p);
	if (!p) {
		snprintf(err, errlen, "upstream: out of memory");
		return NULL;
	}
	p->fd = -1;
	if (strncmp(cfg->upstream_url, "https://", 8) != 0 ||
	    !url_split(cfg->upstream_url, p->host, sizeof p->host, p->port, sizeof p->port)) {
		snprintf(err, errlen, "[upstream] url: '%s' has no host", cfg->upstream_url);
		free(p);
		return NULL;
	}
	bool v6 = strchr(p->host, ':') != NULL;
	snprintf(p->authority, sizeof p->authority, "%s%s%s:%s", v6 ? "[" : "", p->host,
		 v6 ? "]" : "", p->port);
	snprintf(p->cert, sizeof p->cert, "%s", cfg->upstream_cert);
	snprintf(p->key, sizeof p->key, "%s", cfg->upstream_key);
	snprintf(p->ca, sizeof p->ca, "%s", cfg->upstream_ca);
	return p;
}

void parent_conn_close(struct parent_conn *p)
{
	if (p->ssl)
		wolfSSL_free(p->ssl);
	p->ssl = NULL;
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

void parent_conn_free(struct parent_conn *p)
{
	if (!p)
		return;
	parent_conn_close(p);
	if (p->ctx)
		wolfSSL_CTX_free(p->ctx);
	free(p);
}

bool parent_conn_is_open(const struct parent_conn *p)
{
	return p->ssl != NULL;
}

const char *parent_conn_authority(const struct parent_conn *p)
{
	return p->authority;
}

const char *parent_conn_host(const struct parent_conn *p)
{
	return p->host;
}

/* The credentials are read on each new context, so a renewed certificate
 * is picked up at the next reconnect. */
static int make_ctx(struct parent_conn *p, char *err, size_t errlen)
{
	if (p->ctx)
		return 0;
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLS_client_method());
	const char *what = NULL;
	if (!ctx)
		what = "context";
	else if (wolfSSL_CTX_load_verify_locations(ctx, p->ca, NULL) != WOLFSSL_SUCCESS)
		what = p->ca;
	else if (wolfSSL_CTX_use_certificate_chain_file(ctx, p->cert) != WOLFSSL_SUCCESS)
		what = p->cert;
	else if (wolfSSL_CTX_use_PrivateKey_file(ctx, p->key, WOLFSSL_FILETYPE_PEM) !=
		 WOLFSSL_SUCCESS)
		what = p->key;
	if (what) {
		snprintf(err, errlen, "upstream: load %s", what);
		wolfSSL_CTX_free(ctx);
		return -1;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	p->ctx = ctx;
	return 0;
}

static int tcp_connect(struct parent_conn *p, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int e = getaddrinfo(p->host, p->port, &hints, &res);
	if (e) {
		snprintf(err, errlen, "resolve %s: %s", p->host, gai_strerror(e));
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
		snprintf(err, errlen, "connect %s:%s: %s", p->host, p->port, strerror(saved));
		return -1;
	}
	p->fd = fd;
	return 0;
}

static void ssl_error(struct parent_conn *p, int rc, const char *what, char *err, size_t errlen)
{
	char buf[WOLFSSL_MAX_ERROR_SZ];
	int e = wolfSSL_get_error(p->ssl, rc);
	snprintf(err, errlen, "%s %s:%s: %s", what, p->host, p->port,
		 wolfSSL_ERR_error_string((unsigned long)e, buf));
}

int parent_conn_open(struct parent_conn *p, char *err, size_t errlen)
{
	if (p->ssl)
		return 0;
	if (make_ctx(p, err, errlen) || tcp_connect(p, err, errlen))
		return -1;
	p->ssl = wolfSSL_new(p->ctx);
	if (!p->ssl || wolfSSL_set_fd(p->ssl, p->fd) != WOLFSSL_SUCCESS ||
	    wolfSSL_check_domain_name(p->ssl, p->host) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "upstream: TLS session: out of memory");
		parent_conn_close(p);
		return -1;
	}
	int rc = wolfSSL_connect(p->ssl);
	if (rc != WOLFSSL_SUCCESS) {
		ssl_error(p, rc, "TLS handshake with", err, errlen);
		parent_conn_close(p);
		return -1;
	}
	return 0;
}

int parent_conn_write(struct parent_conn *p, const void *buf, size_t len, char *err, size_t errlen)
{
	const char *at = buf;
	while (len) {
		int n = wolfSSL_write(p->ssl, at, len > INT32_MAX ? INT32_MAX : (int)len);
		if (n <= 0) {
			ssl_error(p, n, "send to", err, errlen);
			return -1;
		}
		at += n;
		len -= (size_t)n;
	}
	return 0;
}

long parent_conn_read(struct parent_conn *p, void *buf, size_t len, char *err, size_t errlen)
{
	int r = wolfSSL_read(p->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (r <= 0) {
		ssl_error(p, r, "answer from", err, errlen);
		return -1;
	}
	return r;
}

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

/* A Content-Length of digits only: anything else (a sign, a list, junk)
 * is no framing at all. */
static long long content_length_of(const char *v)
{
	v += strspn(v, " \t");
	size_t n = strspn(v, "0123456789");
	if (n == 0 || n > 18 || (v[n] != '\r' && v[n] != ' ' && v[n] != '\t'))
		return -1;
	return strtoll(v, NULL, 10);
}

static void field_value(const char *f, size_t name_len, char *out, size_t len)
{
	const char *v = f + name_len;
	v += strspn(v, " \t");
	size_t n = strcspn(v, "\r");
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n < len)
		snprintf(out, len, "%.*s", (int)n, v);
}

static void parse_fields(char *head, struct parent_answer *a)
{
	for (char *line = strstr(head, "\r\n"); line && line[2] != '\r';
	     line = strstr(line + 2, "\r\n")) {
		const char *f = line + 2;
		if (field_is(f, "content-length:"))
			a->content_length = content_length_of(f + 15);
		else if (field_is(f, "etag:"))
			field_value(f, 5, a->etag, sizeof a->etag);
		else if (field_is(f, "connection:") && strstr(f, "close") &&
			 strstr(f, "close") < strstr(f, "\r\n"))
			a->close = true;
	}
}

int parent_conn_read_head(struct parent_conn *p, struct parent_answer *a, char *err, size_t errlen)
{
	char head[HEAD_MAX];
	size_t n = 0;
	*a = (struct parent_answer){.content_length = -1};
	while (!(n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)) {
		if (n + 1 >= sizeof head) {
			snprintf(err, errlen, "answer from %s: head too long", p->host);
			return -1;
		}
		int r = wolfSSL_read(p->ssl, head + n, 1);
		if (r <= 0) {
			ssl_error(p, r, "answer from", err, errlen);
			return -1;
		}
		n++;
	}
	head[n] = '\0';
	a->status = status_of(head);
	if (a->status < 0) {
		snprintf(err, errlen, "answer from %s: not HTTP", p->host);
		return -1;
	}
	const char *sp = strchr(head + 9, ' ');
	if (sp)
		snprintf(a->reason, sizeof a->reason, "%.*s", (int)strcspn(sp + 1, "\r"), sp + 1);
	parse_fields(head, a);
	/* A 304 or 204 has no body whatever its fields say (RFC 9112 6.3). */
	bool bodiless = a->status == 304 || a->status == 204;
	if (bodiless)
		a->content_length = 0;
	else if (a->content_length < 0)
		a->close = true; /* no framing we can trust: read no further */
	return 0;
}

int parent_conn_skip_body(struct parent_conn *p, const struct parent_answer *a, char *err,
			  size_t errlen)
{
	for (long long left = a->content_length; left > 0;) {
		char sink[1024];
		long r = parent_conn_read(
			p, sink, left < (long long)sizeof sink ? (size_t)left : sizeof sink, err,
			errlen);
		if (r < 0)
			return -1;
		left -= r;
	}
	return 0;
}

/* The socket is made non-blocking for the look, so that a TLS record
 * still on its way (or none at all) cannot hold the caller. */
bool parent_conn_has_extra(struct parent_conn *p)
{
	if (!p->ssl)
		return false;
	if (wolfSSL_pending(p->ssl) > 0)
		return true;
	struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
	if (poll(&pfd, 1, 0) != 1)
		return false;
	int flags = fcntl(p->fd, F_GETFL);
	if (flags < 0 || fcntl(p->fd, F_SETFL, flags | O_NONBLOCK) != 0)
		return false;
	char c;
	int r = wolfSSL_peek(p->ssl, &c, 1);
	fcntl(p->fd, F_SETFL, flags);
	return r > 0;
}

void parent_pct_encode(char *out, size_t len, const char *in, bool keep_slash)
{
	static const char digits[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *c = (const unsigned char *)in; *c && o + 4 < len; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || strchr("-._~", *c) || (keep_slash && *c == '/')) {
			out[o++] = (char)*c;
		} else {
			out[o++] = '%';
			out[o++] = digits[*c >> 4];
			out[o++] = digits[*c & 15];
		}
	}
	out[o] = '\0';
}
