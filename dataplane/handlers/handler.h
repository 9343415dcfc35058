/*
 * handler: what a routed request does, behind one small interface, as h2o's
 * lib/handler/ (one file per feature). HTTP/1 framing (http/http1.c) parses
 * and routes the head, then drives the handler: head once, body bytes as
 * they come, done when the body is complete, writable while the handler's
 * response leaves. A handler answers with http1_respond / http1_write_head
 * and conn_write; it never sees the transport or TLS.
 *
 * Private to the worker part; called on the connection's worker only.
 * A handler's per-request state lives in struct conn's `req` union, valid
 * from its head() until its request ends or drop() releases it.
 */
#ifndef BEACON_HANDLER_H
#define BEACON_HANDLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct conn;
struct http_request;
struct http_route;
struct store_upload;

struct handler {
	/* A routed request head. The handler answers it (http1_respond),
	 * reads its body (http1_read_body), or starts its response
	 * (CONN_RESPONSE). */
	void (*head)(struct conn *c, const struct http_request *req,
		     const struct http_route *route);
	/* Body bytes in order. Returns how many it took: fewer than offered
	 * when it is full (it calls http1_body_wake once it has room), or < 0
	 * once it has answered a failure. */
	ssize_t (*body)(struct conn *c, const uint8_t *data, size_t len);
	/* Optional: room to decrypt a Content-Length body straight into, one
	 * copy fewer. Returns its size, 0 when full (it wakes us, as body), or
	 * < 0 once it has answered a failure; body_wrote then takes the n
	 * bytes written there (< 0: answered a failure). */
	ssize_t (*body_window)(struct conn *c, uint8_t **at);
	int (*body_wrote)(struct conn *c, size_t n);
	/* The whole body arrived. */
	void (*body_done)(struct conn *c);
	/* In CONN_RESPONSE, output has room: queue more of the response.
	 * True once the request is done (http1_request_done called). */
	bool (*writable)(struct conn *c);
	/* The connection closes with the request unfinished: let go of what
	 * it holds. Safe to call more than once. */
	void (*drop)(struct conn *c);
};

/* PUT/POST /ManageSoftRL/<category>/<name>: a body streamed into the store,
 * answered 201 once durable. */
extern const struct handler upload_handler;
struct upload_state {
	struct store_upload *upload; /* NULL once finishing or dropped */
	uint64_t commit_started_us;
};

/* GET/HEAD /ManageSoftDL/<path>: a file of the download directory. */
extern const struct handler download_handler;
struct filecache_entry;
struct download_state {
	int fd;			       /* -1 when none is open */
	struct filecache_entry *entry; /* or the bytes from memory; NULL */
	uint64_t off;		       /* the next byte to send */
	uint64_t left;
};
/* The strong ETag an answer for v carries, "" while v has not settled
 * (download.c): the manifest lists the same one. */
struct file_version;
void download_etag(const struct file_version *v, char *out, size_t len);

/* GET/HEAD /ManageSoftDL-index: the download directory's file list, for
 * child beacons only (manifest.c). */
extern const struct handler manifest_handler;
struct manifest_state {
	char *buf; /* the whole manifest; NULL when none */
	size_t off, len;
};

#endif
