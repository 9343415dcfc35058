/*
 * http: the HTTP/1.1 request side of beacond, as pure functions over bytes.
 * No I/O and no allocation: the connection owns the buffers, these functions
 * only read them. That keeps them easy to unit-test and to fuzz.
 *
 * A request head is parsed once it is whole (the connection collects it up to
 * its header limit); a body is either Content-Length bytes or chunked, and
 * the chunked decoder is incremental so a body streams through any buffer
 * size. Every error is an HTTP status the caller sends as it is.
 */
#ifndef BEACON_HTTP_H
#define BEACON_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum http_method { HTTP_GET, HTTP_HEAD, HTTP_PUT, HTTP_POST, HTTP_OTHER };

struct http_slice {
	const char *p;
	size_t n;
};

struct http_request {
	enum http_method method;
	struct http_slice method_name;
	struct http_slice target; /* as sent, e.g. "/ManageSoftRL/Inventories/a.ndi" */
	int version_minor;	  /* HTTP/1.0 = 0, HTTP/1.1 = 1 */
	int64_t content_length;	  /* -1 when absent */
	bool chunked;		  /* Transfer-Encoding: chunked */
	bool expect_continue;	  /* Expect: 100-continue */
	bool keep_alive;	  /* after the version's default and Connection */
	unsigned header_count;
};

struct http_limits {
	size_t max_target;    /* longest request-target; longer: 414 */
	unsigned max_headers; /* most header fields; more: 431 */
};

/*
 * Parses a request head in buf[0..len). Returns:
 *   > 0  the head is whole and took that many bytes (through the blank line);
 *        req is filled, its slices point into buf;
 *     0  the head is not whole yet: read more (the caller enforces its byte
 *        limit and answers 431 past it);
 *   < 0  minus the status to answer: 400 malformed, 414 target too long,
 *        431 too many headers, 501 unknown transfer coding, 505 version,
 *        417 an Expect other than 100-continue,
 *        400 for both Content-Length and chunked, or a bad Content-Length.
 *        Bytes that are already wrong are refused before the head is whole.
 */
int http_request_parse(const char *buf, size_t len, const struct http_limits *lim,
		       struct http_request *req);

/* Incremental chunked-body decoder (RFC 9112 section 7.1); trailers are
 * read and ignored. */
struct http_chunked {
	int state;
	uint64_t remaining; /* data bytes left in the current chunk */
	uint64_t total;	    /* data bytes decoded so far */
	unsigned line_len;  /* bytes of the current size/trailer line */
};

void http_chunked_init(struct http_chunked *c);

/*
 * Decodes from in[0..len). Returns the number of input bytes consumed (>= 0)
 * or -400 on malformed framing. When data is found, *data and *data_len point at
 * one run of body bytes inside `in` (already counted as consumed) and the
 * function returns right after it, so the caller handles one run at a time.
 * *done becomes true once the last chunk and trailers are consumed; bytes
 * after that belong to the next request.
 */
long http_chunked_decode(struct http_chunked *c, const char *in, size_t len, const char **data,
			 size_t *data_len, bool *done);

/* Where a request goes, after checking its target. */
enum http_route_kind { ROUTE_UPLOAD, ROUTE_DOWNLOAD };

struct http_route {
	enum http_route_kind kind;
	char category[64]; /* ROUTE_UPLOAD: percent-decoded, [A-Za-z0-9._-]+ */
	char name[256];	   /* ROUTE_UPLOAD: percent-decoded file name */
	char path[1024];   /* ROUTE_DOWNLOAD: decoded path below /ManageSoftDL/ */
};

/*
 * Maps a request target to a route: `/ManageSoftRL/<category>/<name>` for
 * uploads, `/ManageSoftDL/<path>` for downloads (subdirectories allowed, each
 * component checked like a name). Query strings are ignored. Returns 0 or
 * minus the status: 404 outside both trees or a missing part, 400 for a bad
 * escape or a refused name.
 */
int http_route_parse(const struct http_slice *target, struct http_route *out);

/* True when `name` (n bytes, decoded) is acceptable as a stored or served
 * file name: non-empty, at most 255 bytes, not "." or "..", no "..", no '/'
 * or '\\', no NUL, no control characters (< 0x20, 0x7f), no trailing '.' or
 * ' ' (Windows drops them, so "a." and "a" would alias). */
bool http_name_valid(const char *name, size_t n);

/* The reason phrase for a status code ("Created", "Payload Too Large"...). */
const char *http_reason(int status);

#endif
