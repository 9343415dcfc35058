/*
 * Request targets to routes, and the file-name check every stored or served
 * name passes.
 *
 * The target is split on raw '/' first and each segment decoded after, so an
 * encoded slash (%2F) can never make a new path component; decoded names are
 * then checked whole, which catches "..", "%2e%2e" and the rest alike.
 */
#include "beacon/http.h"

#include "http_chars.h"

#include <string.h>

#define UPLOAD_PREFIX "/managesoftrl/"
#define DOWNLOAD_PREFIX "/managesoftdl/"
#define MANIFEST_PATH "/managesoftdl-index"
#define CATEGORY_MAX 63
#define NAME_MAX_BYTES 255

static bool slice_has_prefix_ci(struct http_slice s, const char *lit, size_t n)
{
	return s.n >= n && http_ieq_n(s.p, lit, n);
}

static struct http_slice slice_after(struct http_slice s, size_t n)
{
	return (struct http_slice){s.p + n, s.n - n};
}

/* Absolute form (RFC 9112 section 3.2.2): a proxy-style client may send
 * "http://host/path"; the authority is dropped, the path kept. */
static struct http_slice strip_absolute_form(struct http_slice t)
{
	size_t skip = 0;
	if (slice_has_prefix_ci(t, "http://", 7))
		skip = 7;
	else if (slice_has_prefix_ci(t, "https://", 8))
		skip = 8;
	else
		return t;
	while (skip < t.n && t.p[skip] != '/' && t.p[skip] != '?')
		skip++;
	return slice_after(t, skip);
}

/* The path of a target: no fragment (a client never sends one), query cut. */
static int target_path(const struct http_slice *target, struct http_slice *path)
{
	if (!target || !target->p)
		return -404;
	if (memchr(target->p, '#', target->n))
		return -400;
	struct http_slice t = strip_absolute_form(*target);
	const char *q = memchr(t.p, '?', t.n);
	if (q)
		t.n = (size_t)(q - t.p);
	if (t.n == 0 || t.p[0] != '/')
		return -404;
	*path = t;
	return 0;
}

/*
 * Decodes one path segment into dst (cap bytes, NUL included). Refuses a bad
 * escape, %00 (it would cut the name short in any C API) and %2F (a slash
 * that was not one when the target was split).
 */
static int percent_decode(struct http_slice seg, char *dst, size_t cap, size_t *out_n)
{
	size_t n = 0;
	for (size_t i = 0; i < seg.n; i++) {
		unsigned char ch = (unsigned char)seg.p[i];
		if (ch == '%') {
			if (seg.n - i < 3)
				return -400; /* "%" or "%4" at the end */
			int hi = http_hex_value((unsigned char)seg.p[i + 1]);
			int lo = http_hex_value((unsigned char)seg.p[i + 2]);
			if (hi < 0 || lo < 0)
				return -400;
			ch = (unsigned char)(hi << 4 | lo);
			if (ch == 0 || ch == '/')
				return -400;
			i += 2;
		}
		if (n + 1 >= cap)
			return -400;
		dst[n++] = (char)ch;
	}
	dst[n] = '\0';
	*out_n = n;
	return 0;
}

/* Categories name a bucket of uploads: a short plain word. */
static bool category_valid(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
			  (ch >= 'A' && ch <= 'Z') || ch == '.' || ch == '_' || ch == '-';
		if (!ok)
			return false;
	}
	/* The charset allows "." and "..": the name check refuses them. */
	return http_name_valid(s, n);
}

/* <category>/<name>, exactly two non-empty segments. */
static int route_upload(struct http_slice rest, struct http_route *out)
{
	const char *slash = memchr(rest.p, '/', rest.n);
	if (!slash)
		return -404;
	struct http_slice cat = {rest.p, (size_t)(slash - rest.p)};
	struct http_slice name = slice_after(rest, cat.n + 1);
	if (cat.n == 0 || name.n == 0 || memchr(name.p, '/', name.n))
		return -404;
	size_t n;
	if (percent_decode(cat, out->category, sizeof out->category, &n) < 0 ||
	    !category_valid(out->category, n))
		return -400;
	if (percent_decode(name, out->name, sizeof out->name, &n) < 0 ||
	    !http_name_valid(out->name, n))
		return -400;
	out->kind = ROUTE_UPLOAD;
	return 0;
}

/* Appends one checked component to out->path, '/'-separated. */
static int append_component(struct http_route *out, size_t *used, struct http_slice comp)
{
	char name[NAME_MAX_BYTES + 1];
	size_t n;
	if (comp.n == 0)
		return -400; /* "a//b" or a trailing slash */
	if (percent_decode(comp, name, sizeof name, &n) < 0 || !http_name_valid(name, n))
		return -400;
	size_t sep = *used ? 1 : 0;
	if (*used + sep + n + 1 > sizeof out->path)
		return -400;
	if (sep)
		out->path[(*used)++] = '/';
	memcpy(out->path + *used, name, n);
	*used += n;
	out->path[*used] = '\0';
	return 0;
}

/* <path...> below the download root, each component a valid name. */
static int route_download(struct http_slice rest, struct http_route *out)
{
	size_t used = 0;
	if (rest.n == 0)
		return -404;
	while (rest.p) {
		const char *slash = memchr(rest.p, '/', rest.n);
		struct http_slice comp = {rest.p, slash ? (size_t)(slash - rest.p) : rest.n};
		int rc = append_component(out, &used, comp);
		if (rc < 0)
			return rc;
		rest = slash ? slice_after(rest, comp.n + 1) : (struct http_slice){NULL, 0};
	}
	out->kind = ROUTE_DOWNLOAD;
	return 0;
}

int http_route_parse(const struct http_slice *target, struct http_route *out)
{
	struct http_slice path;
	memset(out, 0, sizeof *out);
	int rc = target_path(target, &path);
	if (rc < 0)
		return rc;
	/* Windows agents vary the case of the tree names. */
	if (slice_has_prefix_ci(path, UPLOAD_PREFIX, sizeof UPLOAD_PREFIX - 1))
		rc = route_upload(slice_after(path, sizeof UPLOAD_PREFIX - 1), out);
	else if (path.n == sizeof MANIFEST_PATH - 1 &&
		 slice_has_prefix_ci(path, MANIFEST_PATH, sizeof MANIFEST_PATH - 1))
		out->kind = ROUTE_MANIFEST;
	else if (slice_has_prefix_ci(path, DOWNLOAD_PREFIX, sizeof DOWNLOAD_PREFIX - 1))
		rc = route_download(slice_after(path, sizeof DOWNLOAD_PREFIX - 1), out);
	else
		rc = -404;
	if (rc < 0)
		memset(out, 0, sizeof *out); /* no half-filled route on failure */
	return rc;
}

bool http_name_valid(const char *name, size_t n)
{
	if (!name || n == 0 || n > NAME_MAX_BYTES)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch < 0x20 || ch == 0x7f || ch == '/' || ch == '\\')
			return false;
		/* Any "..", not only the whole name: cheaper to refuse than
		 * to prove harmless in every place a name ends up. */
		if (ch == '.' && i + 1 < n && name[i + 1] == '.')
			return false;
	}
	/* Windows drops a trailing dot or space: "a.ndi." and "a.ndi " would
	 * name the same file as "a.ndi" once exported to a Windows server.
	 * This also refuses ".". */
	if (name[n - 1] == '.' || name[n - 1] == ' ')
		return false;
	return true;
}
