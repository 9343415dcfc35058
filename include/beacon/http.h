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

/* The conditional and range fields of a request (RFC 9110 sections 13.1,
 * 14.2), as sent, for the download handler to weigh against its file with
 * the functions at the end of this header. Absent: p NULL. A field that
 * allows one value and came twice is void: If-Modified-Since and Range are
 * then absent (RFC 9110 13.1.3 and 14.2: ignored), If-Range is empty and
 * so never matches (the whole file, never a wrong part); a second
 * If-Unmodified-Since voids the first, as If-Modified-Since. If-None-Match
 * lines past HTTP_INM_LINES are not compared: such a client gets 200
 * rather than 304, a full answer either way; If-Match lines past it are
 * not compared either: 412 rather than a guess. */
#define HTTP_INM_LINES 4
struct http_conditional {
	struct http_slice if_match[HTTP_INM_LINES];
	unsigned if_match_lines;
	struct http_slice if_unmodified_since;
	struct http_slice if_none_match[HTTP_INM_LINES];
	unsigned if_none_match_lines;
	struct http_slice if_modified_since;
	struct http_slice range;
	struct http_slice if_range;
	unsigned seen; /* private to the parser: singletons already seen */
};

/* The Beacon-* fields a child beacon sends with a forwarded upload
 * (beacon/drain.h, [upstream]); absent: p NULL. The upload handler weighs
 * them only from a configured child. A field sent twice sets `repeated`. */
struct http_forwarded {
	struct http_slice origin, upload_id, device, cert_sha256;
	bool repeated;
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
	struct http_conditional cond;
	struct http_forwarded fwd;
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
enum http_route_kind { ROUTE_UPLOAD, ROUTE_DOWNLOAD, ROUTE_MANIFEST };

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
 * escape or a refused name. `/ManageSoftDL-index` (exactly, any case) is
 * the download manifest for child beacons (ROUTE_MANIFEST).
 */
int http_route_parse(const struct http_slice *target, struct http_route *out);

/* True when `name` (n bytes, decoded) is acceptable as a stored or served
 * file name: non-empty, at most 255 bytes, not "." or "..", no "..", no '/'
 * or '\\', no NUL, no control characters (< 0x20, 0x7f), no trailing '.' or
 * ' ' (Windows drops them, so "a." and "a" would alias). */
bool http_name_valid(const char *name, size_t n);

/* ---- conditional and range requests (RFC 9110 sections 5.6.7, 13, 14) ---- */

/* An HTTP-date in any of the three forms a recipient must accept
 * (IMF-fixdate, RFC 850, asctime) to seconds since the epoch. 0, or -1 for
 * anything else (RFC 9110 13.1.3: such a field is ignored). */
int http_date_parse(struct http_slice v, int64_t *out);

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT": 29 characters and a NUL. */
#define HTTP_DATE_LEN 29
void http_date_format(int64_t t, char out[HTTP_DATE_LEN + 1]);

/* Whether an If-None-Match value (a list of entity-tags, or "*") matches
 * `etag` (as sent in our ETag field, quotes and any W/ included) by weak
 * comparison (RFC 9110 8.8.3.2), as 13.1.2 asks. A malformed list matches
 * no further than where it broke. "*" matches even an empty `etag` (a
 * version that has none yet). */
bool http_etag_list_match(struct http_slice list, const char *etag);

/* Whether an If-Match value (a list of entity-tags, or "*") matches `etag`
 * by strong comparison (RFC 9110 13.1.1): a weak tag on either side never
 * matches. "*" matches any current version, even one without a tag. */
bool http_etag_list_match_strong(struct http_slice list, const char *etag);

/* Whether an If-Range value holds: an entity-tag that matches `etag` by
 * strong comparison (neither weak), or an HTTP-date equal to
 * `last_modified` when that date is strong (`date_strong`, RFC 9110
 * 13.1.5). Anything else does not. */
bool http_if_range_match(struct http_slice v, const char *etag, int64_t last_modified,
			 bool date_strong);

/* A Range value against a representation of `len` bytes, single range
 * only. HTTP_RANGE_NONE: serve the whole (no "bytes=" unit, bad syntax,
 * several ranges, or a suffix range of an empty file); HTTP_RANGE_PART:
 * *first..*last inclusive, clipped to the file; HTTP_RANGE_UNSATISFIABLE:
 * answer 416. */
enum http_range_result { HTTP_RANGE_NONE, HTTP_RANGE_PART, HTTP_RANGE_UNSATISFIABLE };
enum http_range_result http_range_parse(struct http_slice v, uint64_t len, uint64_t *first,
					uint64_t *last);

/* The reason phrase for a status code ("Created", "Payload Too Large"...). */
const char *http_reason(int status);

#endif
