/*
 * A fault for beacond's store, preloaded (LD_PRELOAD) by
 * tests/integration/test_io_error.py: while the file named by
 * BEACON_FAULT_EIO_FLAG exists, every fdatasync of a spool segment reports
 * EIO (a failing disk), through the store's test seam (store-probe.h: a
 * weak reference only a preloaded or linked-in definition binds). The
 * sync itself still runs; only its result is replaced, as the kernel does
 * when writeback failed.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "store-probe.h"

int store_io_probe(struct store_sync_event *ev)
{
	if (ev->phase != STORE_PROBE_DONE || ev->what != STORE_SYNC_SEGMENT)
		return ev->res;
	const char *flag = getenv("BEACON_FAULT_EIO_FLAG");
	if (flag && access(flag, F_OK) == 0)
		return -EIO;
	return ev->res;
}
