/*
 * parentconn: one HTTPS connection to the parent beacon ([upstream] url),
 * shared by the two halves of a hierarchy: the drain's upstream sink
 * (uploads up, control/drain/upstream.c) and the mirror (content down,
 * control/mirror). Mutual TLS with wolfSSL: this beacon's own client
 * certificate and key, the parent's certificate chained to [upstream] ca
 * and matching the URL's host. Requests and answers are HTTP/1.1 on one
 * keep-alive connection, one at a time.
 *
 * Model: a connection belongs to one thread (the drain's or the mirror's);
 * nothing here locks. Every call that fails leaves a message naming the
 * parent in err; after a failed read or write the caller closes the
 * connection (parent_conn_close) and may open it again. The credentials
 * are read when the first connection is made and again after
 * parent_conn_reset_credentials, so a renewed certificate is picked up.
 */
#ifndef BEACON_PARENTCONN_H
#define BEACON_PARENTCONN_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct parent_conn;

/* A connection, not yet open, to cfg's [upstream] url with its cert, key
 * and ca. NULL with the reason in err (a URL without a host). */
struct parent_conn *parent_conn_new(const struct config *cfg, char *err, size_t errlen);
void parent_conn_free(struct parent_conn *p);

/* Opens the TCP connection and completes the TLS handshake; 0 at once
 * when already open. 0, or -1 with the reason ("connect ...", "TLS
 * handshake with ..."). */
int parent_conn_open(struct parent_conn *p, char *err, size_t errlen);
bool parent_conn_is_open(const struct parent_conn *p);
void parent_conn_close(struct parent_conn *p);

/* The parent's "host:port" for a Host field (an IPv6 host in brackets). */
const char *parent_conn_authority(const struct parent_conn *p);
const char *parent_conn_host(const struct parent_conn *p);

/* All of buf, or -1. */
int parent_conn_write(struct parent_conn *p, const void *buf, size_t len, char *err, size_t errlen);
/* Up to len bytes: how many (> 0), or -1 (the connection ended or broke). */
long parent_conn_read(struct parent_conn *p, void *buf, size_t len, char *err, size_t errlen);

/* An answer's head. content_length -1: none (the body then runs to the
 * connection's end, which the caller must not trust as a whole body). */
struct parent_answer {
	int status;
	long long content_length;
	bool close; /* Connection: close, or no framing to go on */
	char reason[128];
	char etag[96]; /* "" when none, or one too long to keep */
};

/* Reads the head (at most 8 KiB). 0, or -1 (not HTTP, too long, broken). */
int parent_conn_read_head(struct parent_conn *p, struct parent_answer *a, char *err, size_t errlen);
/* Reads and drops the body a head announced. 0 or -1. */
int parent_conn_skip_body(struct parent_conn *p, const struct parent_answer *a, char *err,
			  size_t errlen);
/* True when the parent sent bytes past the answer just read: it framed
 * the body wrong (a body longer than its Content-Length), and nothing
 * after it can be trusted. Only bytes that already arrived are seen. */
bool parent_conn_has_extra(struct parent_conn *p);

/* Percent-encodes all but the unreserved characters (RFC 3986 2.3), and
 * '/' too unless keep_slash; cut short rather than overflow out. */
void parent_pct_encode(char *out, size_t len, const char *in, bool keep_slash);

#endif
