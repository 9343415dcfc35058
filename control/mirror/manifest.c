/*
 * The parent's file list: GET /ManageSoftDL-index (dataplane/handlers/
 * manifest.c serves it), every line checked before any is used.
 */
#include "mirror-internal.h"

#include "beacon/parentconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char magic[] = "beacond-manifest 1\n";

/* For a log line: a hostile path is shown, not obeyed. */
static void printable(char *out, size_t len, const char *in)
{
	snprintf(out, len, "%s", in);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

static int get(struct mirror_round *r, struct parent_answer *a)
{
	char head[512];
	int n = snprintf(head, sizeof head, "GET /ManageSoftDL-index HTTP/1.1\r\nHost: %s\r\n\r\n",
			 parent_conn_authority(r->conn));
	char err[256];
	if (parent_conn_write(r->conn, head, (size_t)n, err, sizeof err) ||
	    parent_conn_read_head(r->conn, a, err, sizeof err)) {
		mirror_round_error(r, "manifest: %s", err);
		return -1;
	}
	if (a->status != 200) {
		mirror_round_error(r, "manifest: parent answered %d %s", a->status, a->reason);
		return -1;
	}
	if (a->content_length < 0 || a->content_length > (long long)MIRROR_MANIFEST_MAX) {
		mirror_round_error(r, "manifest: no Content-Length, or past %u bytes",
				   MIRROR_MANIFEST_MAX);
		return -1;
	}
	return 0;
}

static char *read_body(struct mirror_round *r, size_t len)
{
	char *buf = malloc(len + 1), err[256];
	for (size_t got = 0; buf && got < len;) {
		long n = parent_conn_read(r->conn, buf + got, len - got, err, sizeof err);
		if (n < 0) {
			mirror_round_error(r, "manifest: %s after %zu of %zu bytes", err, got, len);
			free(buf);
			return NULL;
		}
		got += (size_t)n;
	}
	if (!buf)
		mirror_round_error(r, "manifest: out of memory for %zu bytes", len);
	else
		buf[len] = '\0';
	return buf;
}

/* "<size> <mtime ns> <etag|-> <path>": split in place. */
static bool parse_line(char *line, struct mirror_entry *e)
{
	char *end, *sp;
	if (line[0] < '0' || line[0] > '9')
		return false;
	e->size = strtoull(line, &end, 10);
	if (*end != ' ')
		return false;
	e->mtime_ns = strtoll(end + 1, &sp, 10);
	if (sp == end + 1 || *sp != ' ')
		return false;
	char *etag = sp + 1;
	sp = strchr(etag, ' ');
	if (!sp || sp == etag || sp - etag >= 96)
		return false;
	*sp = '\0';
	e->etag = strcmp(etag, "-") != 0 ? etag : "";
	e->path = sp + 1;
	return mirror_path_ok(e->path);
}

static int by_path(const void *a, const void *b)
{
	return strcmp(((const struct mirror_entry *)a)->path,
		      ((const struct mirror_entry *)b)->path);
}

static int parse(struct mirror_round *r, struct mirror_manifest *m, size_t len)
{
	if (len < sizeof magic - 1 || memcmp(m->buf, magic, sizeof magic - 1) != 0 ||
	    m->buf[len - 1] != '\n' || memchr(m->buf, '\0', len)) {
		mirror_round_error(r, "manifest: not a beacond manifest");
		return -1;
	}
	size_t lines = 0;
	for (size_t i = sizeof magic - 1; i < len; i++)
		lines += m->buf[i] == '\n';
	m->e = calloc(lines ? lines : 1, sizeof *m->e);
	if (!m->e) {
		mirror_round_error(r, "manifest: out of memory for %zu lines", lines);
		return -1;
	}
	char *line = m->buf + sizeof magic - 1;
	for (size_t i = 0; i < lines; i++) {
		char *nl = strchr(line, '\n'), shown[128];
		*nl = '\0';
		if (!parse_line(line, &m->e[i])) {
			printable(shown, sizeof shown, m->e[i].path ? m->e[i].path : line);
			mirror_round_error(r,
					   "manifest line %zu refused: '%s' is not a path below "
					   "the download directory",
					   i + 2, shown);
			return -1;
		}
		line = nl + 1;
	}
	m->n = lines;
	qsort(m->e, m->n, sizeof *m->e, by_path);
	for (size_t i = 1; i < m->n; i++)
		if (!strcmp(m->e[i - 1].path, m->e[i].path)) {
			mirror_round_error(r, "manifest: a path twice");
			return -1;
		}
	return 0;
}

int mirror_manifest_fetch(struct mirror_round *r, struct mirror_manifest *m)
{
	*m = (struct mirror_manifest){0};
	struct parent_answer a;
	if (get(r, &a))
		return -1;
	m->buf = read_body(r, (size_t)a.content_length);
	if (!m->buf || parse(r, m, (size_t)a.content_length)) {
		mirror_manifest_free(m);
		return -1;
	}
	if (a.close)
		parent_conn_close(r->conn);
	return 0;
}

void mirror_manifest_free(struct mirror_manifest *m)
{
	free(m->buf);
	free(m->e);
	*m = (struct mirror_manifest){0};
}
