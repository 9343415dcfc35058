/*
 * beaconctl: what its files share. beaconctl.c holds the command table, the
 * usage line and manual, the global options and main; uploads.c and
 * devices.c the store's read side; client.c the control side (the control
 * socket client and the commands that go through it); output.c the printing
 * helpers both sides use.
 *
 * Exit codes: 0 ok, 1 not found or failed, 2 usage, 3 cannot connect to
 * beacond.
 */
#ifndef BEACON_BEACONCTL_H
#define BEACON_BEACONCTL_H

#include "beacon/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EXIT_NOTFOUND 1
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_NOCONNECT 3
/* A usage refusal that has said why already: exit 2 without the usage line. */
#define EXIT_REFUSED 102

/* Rows copied out of one read transaction. */
#define BATCH_ROWS 512

struct ctl {
	const char *data_dir;
	const char *socket_path;
	bool json;
	bool debug; /* on stderr at exit: index entries read */
	struct store_reader *reader;
};

/* The command handlers: argv starts at the verb (at the noun when the
 * command has no verb), getopt style. */
int cmd_uploads_list(struct ctl *ctl, int argc, char **argv);
int cmd_uploads_follow(struct ctl *ctl, int argc, char **argv);
int cmd_uploads_show(struct ctl *ctl, int argc, char **argv);
int cmd_uploads_get(struct ctl *ctl, int argc, char **argv);
int cmd_devices_list(struct ctl *ctl, int argc, char **argv);
int cmd_devices_show(struct ctl *ctl, int argc, char **argv);
int cmd_status(struct ctl *ctl, int argc, char **argv);
int cmd_stats(struct ctl *ctl, int argc, char **argv);
int cmd_reload(struct ctl *ctl, int argc, char **argv);
int cmd_tickets_rotate(struct ctl *ctl, int argc, char **argv);
int cmd_devices_approve(struct ctl *ctl, int argc, char **argv);
int cmd_drain_pause(struct ctl *ctl, int argc, char **argv);
int cmd_drain_resume(struct ctl *ctl, int argc, char **argv);
int cmd_drain_replay(struct ctl *ctl, int argc, char **argv);
int cmd_upstream_sync(struct ctl *ctl, int argc, char **argv);
int cmd_devices_block(struct ctl *ctl, int argc, char **argv);
int cmd_devices_unblock(struct ctl *ctl, int argc, char **argv);

/* output.c */
void json_string(FILE *out, const char *s);
void text_safe(char *dst, size_t len, const char *src);
void time_text(char *buf, size_t len, uint64_t ms);
void hex_text(char *buf, const uint8_t *b, size_t n);
int store_failure(const char *what, int rc);
/* "beaconctl: WHAT 'VALUE': EXPECT" on stderr; returns EXIT_USAGE. */
int bad_option(const char *what, const char *value, const char *expect);

#endif
