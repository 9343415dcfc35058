/*
 * http1: HTTP/1.1 framing over one connection's plaintext, the middle
 * layer between the connection (conn/conn.h: bytes, TLS, back-pressure)
 * and the handlers (handlers/handler.h), as h2o's lib/http1.c.
 *
 * It reads a request head out of the connection's buffer (beacon/http.h
 * parses it), routes it to a handler, frames the body (Content-Length or
 * chunked) into the handler's body callbacks, and writes every response
 * head, interim or final, through one writer (http1_write_head) so each
 * carries the same headers. Errors are answered here with a status and a
 * reason; the connection closes after any request whose body was not read.
 *
 * Private to the worker part; runs on the connection's worker only.
 */
#ifndef BEACON_HTTP1_H
#define BEACON_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "beacon/http.h"

struct conn;

enum http1_framing { HTTP1_LENGTH, HTTP1_CHUNKED };

/* What the access log line of the request in progress says; path is cut
 * to its first 95 bytes (the bound on per-connection memory). */
struct http1_access {
	bool open; /* a request was read and has no line yet */
	enum http_method method;
	int status;	    /* the final answer's, 0 until one is written */
	uint64_t out_bytes; /* the final answer's body length */
	uint64_t upload_id; /* a 201's, else 0 */
	uint64_t started_us;
	char path[96];
};

/* The request in progress, as framing sees it. */
struct http1 {
	bool keep_alive; /* after the version's default and Connection */
	bool head_only;	 /* a HEAD: answers carry no body */
	enum http1_framing framing;
	uint64_t body_left;  /* HTTP1_LENGTH: bytes still to come */
	uint64_t body_total; /* body bytes the handler took */
	struct http_chunked chunk;
	const uint8_t *held; /* chunk data the handler has not taken yet (in buf) */
	size_t held_len;
	struct http1_access access;
};

/* Steps of the connection's state machine; each returns true when the
 * state changed and the connection should step again. */
bool http1_step_head(struct conn *c); /* CONN_IDLE, CONN_HEAD */
bool http1_step_body(struct conn *c); /* CONN_BODY */
/* The head or body timer fired: 408. */
void http1_timed_out(struct conn *c);

/* One response head. Status < 200 is interim: the status line only. */
struct http1_response {
	int status;
	const char *content_type;
	uint64_t content_length;
	const char *extra; /* more header lines, each ending "\r\n", or NULL */
	bool close;	   /* sends Connection: close */
	/* Cache-Control's value; NULL: no-store. A 304 has no Content-Type
	 * or Content-Length (content_length is then ignored). */
	const char *cache_control;
};
/* Queues the head; false when it could not (the caller closes). Counts
 * 4xx and 5xx answers. */
bool http1_write_head(struct conn *c, const struct http1_response *r);

/* A complete response with a short text body. `close` ends the connection
 * after it (any request whose body was not read must). */
void http1_respond(struct conn *c, int status, const char *extra, const char *body, bool close);
/* An error answer, logged, closing the connection; 503 and 507 carry
 * Retry-After. */
void http1_respond_error(struct conn *c, int status, const char *why);

/* The handler takes the request's body: answers Expect: 100-continue and
 * starts reading it (an empty body is done at once). */
void http1_read_body(struct conn *c, const struct http_request *req);
/* The handler, full before, has room for body bytes again. */
void http1_body_wake(struct conn *c);
/* The request is answered: read the next one, or close. */
void http1_request_done(struct conn *c);
/* The access log line of the request in progress, if it has none yet
 * (the request ended, or its connection is closing). */
void http1_access_log(struct conn *c);

#endif
