/*
 * harness: the store's tests run the real thing: a temporary data
 * directory, the writer thread, and a "worker" that is a ring plus a loop of
 * ring_run_once until the store's callbacks fire.
 */
#ifndef STORE_TEST_HARNESS_H
#define STORE_TEST_HARNESS_H

#include "beacon/auth.h"
#include "beacon/ring.h"
#include "beacon/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tw {
	struct ring ring;
	struct store_worker *w;
};

/* mkdtemp under /tmp; *dir must hold 64 bytes. */
void tmpdir_make(char *dir);
void tmpdir_remove(const char *dir);

struct store *open_store(const char *dir, const struct store_options *opts, unsigned nworkers);
void tw_attach(struct tw *t, struct store *s, unsigned id);
void tw_detach(struct tw *t);
/* Runs the worker's ring until *flag is true (fails the test after 60 s). */
void tw_run_until(struct tw *t, const bool *flag);

void fill_random(uint8_t *p, size_t len, uint64_t *seed);
uint64_t rnd(uint64_t *seed);

/* Streams data in random chunk sizes (1 .. max_chunk), waiting on the wake
 * callback when the store takes fewer bytes. Returns the done status and
 * sets *id. */
int put_upload(struct tw *t, const char *device, const void *data, size_t len, size_t max_chunk,
	       uint64_t *seed, uint64_t *id);

/* Reads an upload's bytes back through store_reader_copy; returns its
 * result, and on success the bytes (malloc'd) and their length. */
int read_back(const char *dir, uint64_t id, uint8_t **data, size_t *len);
/* read_back and compare. */
void assert_upload_equals(const char *dir, uint64_t id, const void *data, size_t len);

unsigned count_uploads(const char *dir, const char *device);
/* Number of DATA/spool/wN/ *.seg files. */
unsigned count_segments(const char *dir, unsigned worker);
/* Path of the segment holding upload id. */
void segment_path_of(const char *dir, uint64_t id, char *path, size_t len, uint64_t *body_off);

#endif
