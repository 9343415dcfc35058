/*
 * store-probe: the one test seam in the store's I/O.
 *
 * Every fsync and fdatasync the store itself makes (segments, the spool
 * directories, the parents of the directories it creates) is reported to
 * store_io_probe twice: just before it is issued (STORE_PROBE_BEFORE) and
 * once its result is known (STORE_PROBE_DONE, res = 0 or -errno). What the
 * probe returns at DONE is the result the store acts on, so a test can make
 * the Nth fdatasync of a segment fail with EIO (fault injection), count
 * directory syncs, or copy what a sync made durable (tests/powercut's shim,
 * which simulates a power cut). LMDB's own syncs go through libc and are not
 * reported here.
 *
 * Unreachable in production: store_io_probe is a weak, undefined reference.
 * Nothing in beacond or beaconctl defines it, so it is NULL and the store
 * skips it. Only a test program that defines the function
 * (tests/unit/store) or a library preloaded into the process with LD_PRELOAD
 * (tests/powercut) binds it, and whoever can preload a library into beacond
 * controls the process already. No configuration key, environment variable
 * or control command reaches it.
 *
 * Threads: called from the store's writer thread (segments, spool
 * directories) and from the thread in store_open; the probe must be
 * thread-safe if it keeps state.
 */
#ifndef BEACON_STORE_PROBE_H
#define BEACON_STORE_PROBE_H

#include <stdint.h>

enum store_sync_what {
	STORE_SYNC_SEGMENT, /* fdatasync of a spool segment */
	STORE_SYNC_DIR,	    /* fsync of a directory: a new entry in it becomes durable */
};

enum store_probe_phase { STORE_PROBE_BEFORE, STORE_PROBE_DONE };

struct store_sync_event {
	enum store_sync_what what;
	enum store_probe_phase phase;
	int fd;
	const char *path;
	unsigned worker; /* segments and spool/wN directories; UINT32_MAX otherwise */
	uint64_t seq;	 /* segments */
	int res;	 /* DONE: what the sync returned (0 or -errno) */
	void *cookie;	 /* the probe's own, from BEFORE to DONE of one sync */
};

/* Returns, at DONE, the result the store acts on (ev->res unless it
 * injects a fault); ignored at BEFORE. */
extern int store_io_probe(struct store_sync_event *ev) __attribute__((weak));

#endif
