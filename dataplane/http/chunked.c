/*
 * Incremental chunked-body decoder (RFC 9112 section 7.1).
 *
 * A byte-at-a-time state machine for the framing, and whole runs for the
 * data, so the result is the same however the body is split across reads
 * (the unit tests feed it one byte at a time). Every line is bounded: a
 * client cannot make the decoder hold or scan without end.
 */
#include "beacon/http.h"

#include "http_chars.h"

#include <limits.h>
#include <string.h>

enum chunk_state {
	CH_SIZE,    /* hex digits of the chunk size */
	CH_SIZE_WS, /* BWS between the size and a ';' */
	CH_EXT,	    /* chunk extension: read and ignored up to CR */
	CH_SIZE_LF, /* LF ending the size line */
	CH_DATA,    /* `remaining` data bytes */
	CH_DATA_CR, /* CRLF after the data */
	CH_DATA_LF,
	CH_TRAILER_START, /* start of a trailer line or of the final CRLF */
	CH_TRAILER,	  /* inside a trailer line, ignored */
	CH_TRAILER_LF,
	CH_END_LF, /* LF of the final empty line */
	CH_DONE,
	CH_ERROR, /* sticky: framing is lost for good */
};

/* 15 hex digits keep a size below 2^60: no overflow in any sum. */
#define SIZE_DIGITS_MAX 15
/* A size line with extensions, or one trailer line. */
#define LINE_MAX_BYTES 4096
/* All trailer lines together: trailers are dropped, so keep them small. */
#define TRAILERS_MAX_BYTES 16384

void http_chunked_init(struct http_chunked *c)
{
	memset(c, 0, sizeof *c);
	c->state = CH_SIZE;
}

/* After the digits: BWS and an extension, or the end of the line. */
static int after_size(struct http_chunked *c, unsigned char ch)
{
	if (ch == ' ' || ch == '\t')
		c->state = CH_SIZE_WS;
	else if (ch == ';')
		c->state = CH_EXT;
	else if (ch == '\r')
		c->state = CH_SIZE_LF;
	else
		return -1;
	return 0;
}

static int size_digit(struct http_chunked *c, unsigned char ch)
{
	int d = http_hex_value(ch);
	if (d < 0) {
		if (c->line_len == 1)
			return -1; /* a size line must start with a digit */
		return after_size(c, ch);
	}
	/* In this state line_len counts only digits. */
	if (c->line_len > SIZE_DIGITS_MAX)
		return -1;
	c->remaining = c->remaining << 4 | (uint64_t)d;
	return 0;
}

/* The size line is done: a chunk of data follows, or the trailers. */
static void begin_chunk(struct http_chunked *c)
{
	c->line_len = 0;
	if (c->remaining) {
		c->state = CH_DATA;
	} else {
		c->state = CH_TRAILER_START;
		/* `remaining` now counts trailer bytes. */
	}
}

static int size_line_byte(struct http_chunked *c, unsigned char ch)
{
	if (++c->line_len > LINE_MAX_BYTES)
		return -1;
	switch (c->state) {
	case CH_SIZE:
		return size_digit(c, ch);
	case CH_SIZE_WS:
		if (ch == ' ' || ch == '\t')
			return 0;
		if (ch != ';')
			return -1;
		c->state = CH_EXT;
		return 0;
	case CH_EXT:
		/* Extensions are ignored, but a control byte in one is not
		 * HTTP and may be read differently by a proxy. */
		if (ch == '\r')
			c->state = CH_SIZE_LF;
		else if (!http_is_value_char(ch))
			return -1;
		return 0;
	default: /* CH_SIZE_LF */
		if (ch != '\n')
			return -1;
		begin_chunk(c);
		return 0;
	}
}

static int trailer_byte(struct http_chunked *c, unsigned char ch)
{
	if (++c->remaining > TRAILERS_MAX_BYTES || ++c->line_len > LINE_MAX_BYTES)
		return -1;
	switch (c->state) {
	case CH_TRAILER_START:
		if (ch == '\r')
			c->state = CH_END_LF;
		else if (http_is_tchar(ch)) /* a field name; no obs-fold */
			c->state = CH_TRAILER;
		else
			return -1;
		return 0;
	case CH_TRAILER:
		if (ch == '\r')
			c->state = CH_TRAILER_LF;
		else if (!http_is_value_char(ch))
			return -1;
		return 0;
	default: /* CH_TRAILER_LF */
		if (ch != '\n')
			return -1;
		c->state = CH_TRAILER_START;
		c->line_len = 0;
		return 0;
	}
}

/* Framing bytes other than data, one at a time. Returns 0 or -1. */
static int framing_byte(struct http_chunked *c, unsigned char ch)
{
	switch (c->state) {
	case CH_SIZE:
	case CH_SIZE_WS:
	case CH_EXT:
	case CH_SIZE_LF:
		return size_line_byte(c, ch);
	case CH_DATA_CR:
		if (ch != '\r')
			return -1;
		c->state = CH_DATA_LF;
		return 0;
	case CH_DATA_LF:
		if (ch != '\n')
			return -1;
		c->state = CH_SIZE;
		c->remaining = 0;
		c->line_len = 0;
		return 0;
	case CH_TRAILER_START:
	case CH_TRAILER:
	case CH_TRAILER_LF:
		return trailer_byte(c, ch);
	case CH_END_LF:
		if (ch != '\n')
			return -1;
		c->state = CH_DONE;
		return 0;
	default:
		return -1;
	}
}

/* Takes as much of the current chunk's data as `avail` holds. */
static size_t take_data(struct http_chunked *c, size_t avail)
{
	size_t run = c->remaining < avail ? (size_t)c->remaining : avail;
	c->remaining -= run;
	c->total += run;
	if (c->remaining == 0)
		c->state = CH_DATA_CR;
	return run;
}

long http_chunked_decode(struct http_chunked *c, const char *in, size_t len, const char **data,
			 size_t *data_len, bool *done)
{
	size_t i = 0;
	*data = NULL;
	*data_len = 0;
	if (len > LONG_MAX)
		len = LONG_MAX; /* the rest comes in the next call */
	while (i < len && c->state != CH_DONE && c->state != CH_ERROR) {
		if (c->state == CH_DATA) {
			*data = in + i;
			*data_len = take_data(c, len - i);
			i += *data_len;
			break;
		}
		if (framing_byte(c, (unsigned char)in[i]) < 0)
			c->state = CH_ERROR;
		else
			i++;
	}
	*done = c->state == CH_DONE;
	if (c->state == CH_ERROR)
		return -400;
	return (long)i;
}
