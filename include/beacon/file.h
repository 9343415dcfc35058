/*
 * file: reading a whole file, for the parts that load PEM, DER and key
 * files (the trust part's issuers, CRLs and server key). One copy, so that
 * every such error reads the same way: "PATH: what errno says".
 *
 * Any thread; no state.
 */
#ifndef BEACON_FILE_H
#define BEACON_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Reads all of `path` into a new buffer (the caller frees it), with a NUL
 * one past the end so that text formats can be searched as strings; *len
 * excludes it. 0, or -1 with "PATH: reason" in err, *buf NULL and *len 0. */
int file_read(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen);

#endif
