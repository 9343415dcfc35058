/*
 * store-t: the store's options as a type and one table, apart from the
 * store's functions (beacon/store.h), so that the configuration can hold,
 * default and check them without including or linking the store.
 *
 * STORE_OPTIONS is the one list of each option's facts: the field, its key
 * in beacond.conf's [store] section, the form its value is written in
 * (COUNT: a number; SIZE: bytes with k/M/G/T; US and SECONDS: a duration
 * kept in microseconds or seconds), its default and its accepted range.
 * The configuration takes its [store] keys, defaults and range checks from
 * it, so a value out of range is refused with the file and line; beyond
 * the ranges it checks that upload_buffer is at most segment_bytes.
 * store_open trusts its options: it asserts these same rules and checks
 * nothing else.
 */
#ifndef BEACON_STORE_T_H
#define BEACON_STORE_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* X(type, field, key, form, default, min, max) */
#define STORE_OPTIONS(X)                                                                           \
	/* most uploads in one commit (one fdatasync round, one LMDB txn) */                       \
	X(unsigned, group_max, "group_max", COUNT, 256, 1, 65536)                                  \
	/* longest a commit waits to fill */                                                       \
	X(unsigned, group_wait_us, "group_wait", US, 1000, 0, 1000000)                             \
	/* roll a segment past this size: 256 MiB, at least 1 MiB */                               \
	X(uint64_t, segment_bytes, "segment_size", SIZE, 256ull << 20, 1ull << 20, UINT64_MAX)     \
	/* uploads in flight per worker; past it store_upload_begin says BUSY */                   \
	X(unsigned, max_open_uploads, "max_open_uploads", COUNT, 256, 1, 65536)                    \
	/* body bytes buffered per upload: 256 KiB, 8 KiB to 1 GiB (each half holds the     \
	 * 48-byte record header and some body) */      \
	X(size_t, upload_buffer, "upload_buffer", SIZE, 256ull << 10, 8ull << 10, 1ull << 30)      \
	/* LMDB map size: 16 GiB, at least 1 MiB (it grows when full) */                           \
	X(uint64_t, map_bytes, "map_size", SIZE, 16ull << 30, 1ull << 20, UINT64_MAX)              \
	/* drop uploads older than this; 0 = keep */                                               \
	X(uint64_t, retain_seconds, "retain_age", SECONDS, 0, 0, UINT64_MAX)                       \
	/* drop the oldest past this many spool bytes; 0 = no cap */                               \
	X(uint64_t, retain_bytes, "retain_bytes", SIZE, 0, 0, UINT64_MAX)                          \
	/* an agent's retry of the same upload (device, category, name, body SHA-256)         \
	 * within this many seconds gets the first one's id; 0 = off; at most 10 years */    \
	X(uint64_t, dedupe_window_s, "dedupe_window", SECONDS, 86400, 0, 3650ull * 86400)

#define STORE_DRAIN_SINKS_MAX 4
#define STORE_DRAIN_SINK_NAME_MAX 16

struct store_options {
#define STORE_OPTION_FIELD_(type, field, key, form, def, min, max) type field;
	STORE_OPTIONS(STORE_OPTION_FIELD_)
#undef STORE_OPTION_FIELD_
	/* new devices start unapproved: [server] approval = require */
	bool require_approval;
	/* The drain's sinks ([drain]): each committed upload is pending for
	 * each of them until it acknowledged it, and retention keeps every
	 * pending upload (store_drain_* in beacon/store.h). */
	char drain_sinks[STORE_DRAIN_SINKS_MAX][STORE_DRAIN_SINK_NAME_MAX];
	unsigned n_drain_sinks;
};

/* An initializer with every default:
 *     struct store_options o = STORE_OPTIONS_DEFAULT; */
#define STORE_OPTION_DEFAULT_(type, field, key, form, def, min, max) .field = (def),
#define STORE_OPTIONS_DEFAULT                                                                      \
	{                                                                                          \
		STORE_OPTIONS(STORE_OPTION_DEFAULT_).require_approval = false                      \
	}

#endif
