/*
 * beacon-consume's two halves: consume.c talks to JetStream (a durable pull
 * consumer, acks, reassembly of chunked uploads); files.c puts bytes under
 * the output directory. files.c never trusts a name: every component comes
 * from an agent (or from whoever can publish to the stream) and is checked
 * here before it touches the file system, and every open below the output
 * directory refuses symbolic links, so a link planted in it cannot redirect
 * a write outside.
 */
#ifndef BEACON_CONSUME_H
#define BEACON_CONSUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Why a file could not be put in place. */
enum put_result {
	PUT_WRITTEN,
	PUT_OLDER,     /* the file there is newer: this upload is skipped */
	PUT_REFUSED,   /* a hostile name or a link in the way: never retried */
	PUT_TRANSIENT, /* an I/O error (a full disk): worth retrying */
};

/* NULL when s is usable as one path component, else why not. */
const char *component_refusal(const char *s);

/* An unnamed temporary file on the output directory's file system
 * (O_TMPFILE: a crash leaves nothing behind). -1 with errno on failure. */
int temp_file(int root_fd);

/* Writes all len bytes at the file's current offset. */
int write_all(int fd, const void *buf, size_t len);

/*
 * Puts the temporary file tmp_fd (length bytes, already written) in place as
 * root/device/category/name with mtime `received`: fsync, link it into the
 * directory under a name of its own, rename over the target, fsync the
 * directory. The directories are made as needed. A file already there with
 * a later mtime wins (PUT_OLDER, nothing changed). why gets the reason for
 * anything but PUT_WRITTEN.
 */
enum put_result put_file(int root_fd, int tmp_fd, const char *device, const char *category,
			 const char *name, uint64_t upload_id, struct timespec received, char *why,
			 size_t whylen);

/* The file there already holds exactly this upload (same mtime, length and
 * CRC32): a redelivered final message whose chunks were acknowledged. */
bool already_in_place(int root_fd, const char *device, const char *category, const char *name,
		      struct timespec received, uint64_t length, uint32_t crc);

#endif
