/* beaconctl's control-socket commands against control_start with fake
 * handlers: output for people, --json, and every exit code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "beacon/control.h"

static char tmpdir[64];
static char sock_path[100];
static struct control *ctl;
static char out[65536], err[4096];
static char last_device[256];
static enum device_state last_state = DEVICE_UNAPPROVED;
static int device_calls;

static void fake_stats(void *arg, struct control_stats *st)
{
	memset(st, 0, sizeof *st);
	st->uptime_s = 90061; /* 1d 01h 01m */
	st->workers = 4;
	st->connections_open = 12;
	st->handshakes[AUTH_OK] = 1000;
	st->handshakes[AUTH_REVOKED] = 7;
	st->snapshot_generation = 17;
	st->issuers = 3;
	st->revoked_serials = 1000000;
	st->uploads = 4321;
}

static int fake_reload(void *arg, const char *what, char *msg, size_t len)
{
	if (!strcmp(what, "crl")) {
		snprintf(msg, len, "crl/ca1.crl: signature does not verify against ca1");
		return -1;
	}
	snprintf(msg, len, "generation 18");
	return 0;
}

static int fake_rotate(void *arg, char *msg, size_t len)
{
	snprintf(msg, len, "ticket key 3 in use");
	return 0;
}

static int fake_device(void *arg, const char *device, enum device_state state, char *msg,
		       size_t len)
{
	snprintf(last_device, sizeof last_device, "%s", device);
	last_state = state;
	device_calls++;
	msg[0] = '\0';
	return 0;
}

static int fake_totals(void *arg, uint64_t *uploads, uint64_t *bytes)
{
	*uploads = 1000000;
	*bytes = 123456789;
	return 0;
}

/* The store knows the last device changed, and has seen it connect unless
 * its name starts with "ghost". */
static int fake_lookup(void *arg, const char *device, enum device_state *state, bool *seen)
{
	if (strcmp(device, last_device) != 0)
		return 0;
	*state = last_state;
	*seen = strncmp(device, "ghost", 5) != 0;
	return 1;
}

static const struct control_handlers handlers = {
	.stats = fake_stats,
	.reload = fake_reload,
	.tickets_rotate = fake_rotate,
	.device_set_state = fake_device,
	.store_totals = fake_totals,
	.device_lookup = fake_lookup,
};

static int setup(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/beacon-ctl-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir) || !getenv("BEACONCTL"))
		return -1;
	snprintf(sock_path, sizeof sock_path, "%s/control.sock", tmpdir);
	char e[512];
	if (control_start(sock_path, NULL, &handlers, &ctl, e, sizeof e)) {
		fprintf(stderr, "control_start: %s\n", e);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	control_stop(ctl);
	char path[200];
	snprintf(path, sizeof path, "%s/out", tmpdir);
	unlink(path);
	snprintf(path, sizeof path, "%s/err", tmpdir);
	unlink(path);
	rmdir(tmpdir);
	return 0;
}

static void slurp(const char *name, char *buf, size_t len)
{
	char path[200];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	assert_int_equal(fclose(f), 0);
}

/* Runs beaconctl ARGS (a shell word list); fills out and err; returns its
 * exit status. */
static int beaconctl(const char *args)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "BEACOND_SOCKET='%s' '%s' %s >'%s/out' 2>'%s/err'", sock_path,
		 getenv("BEACONCTL"), args, tmpdir, tmpdir);
	int status = system(cmd);
	assert_true(WIFEXITED(status));
	slurp("out", out, sizeof out);
	slurp("err", err, sizeof err);
	return WEXITSTATUS(status);
}

static void test_status_for_people(void **state)
{
	assert_int_equal(beaconctl("status"), 0);
	assert_non_null(strstr(out, "uptime:              1d 01h 01m (90061 s)\n"));
	assert_non_null(strstr(out, "connections:         12 open\n"));
	assert_non_null(strstr(out, "trust snapshot:      generation 17"));
	assert_non_null(strstr(out, "revoked serials:     1000000\n"));
	/* The workers' count is since start, beside what the store holds. */
	assert_non_null(strstr(out, "uploads since start: 4321\n"));
	assert_non_null(strstr(out, "store:               1000000 uploads, 123456789 bytes "
				    "(in the index)\n"));
	assert_string_equal(err, "");
}

static void test_status_json(void **state)
{
	assert_int_equal(beaconctl("--json status"), 0);
	assert_true(!strncmp(out, "{\"ok\":true,\"uptime_s\":90061,", 28));
	assert_non_null(strchr(out, '\n'));
	assert_int_equal(strchr(out, '\n')[1], '\0'); /* one line */
	/* Global options anywhere on the line. */
	assert_int_equal(beaconctl("status --json"), 0);
	assert_true(!strncmp(out, "{\"ok\":true,\"uptime_s\":90061,", 28));
}

static void test_stats_every_field(void **state)
{
	assert_int_equal(beaconctl("stats"), 0);
	assert_non_null(strstr(out, "handshakes.ok "));
	assert_non_null(strstr(out, "handshakes.revoked "));
	assert_non_null(strstr(out, "commit_latency_bucket[11] "));
	assert_non_null(strstr(out, "upload_bytes "));
}

static void test_reload(void **state)
{
	assert_int_equal(beaconctl("reload issuers"), 0);
	assert_string_equal(out, "reload issuers: generation 18\n");
	assert_int_equal(beaconctl("reload"), 0);
	assert_string_equal(out, "reload all: generation 18\n");
	assert_int_equal(beaconctl("reload crl"), 1);
	assert_string_equal(err, "beaconctl: crl/ca1.crl: signature does not verify against ca1\n");
	assert_int_equal(beaconctl("--json reload crl"), 1);
	assert_non_null(strstr(out, "\"ok\":false"));
	assert_int_equal(beaconctl("reload everything"), 2);
	assert_non_null(strstr(err, "usage: beaconctl reload [all|issuers|crl|tickets|blocklist]"));
}

static void test_tickets_and_devices(void **state)
{
	assert_int_equal(beaconctl("tickets rotate"), 0);
	assert_string_equal(out, "tickets rotate: ticket key 3 in use\n");
	assert_int_equal(beaconctl("devices block agent1.example"), 0);
	assert_string_equal(out, "device agent1.example: blocked\n");
	assert_string_equal(last_device, "agent1.example");
	assert_int_equal(last_state, DEVICE_BLOCKED);
	/* Again: nothing changes, and it says so. */
	int calls = device_calls;
	assert_int_equal(beaconctl("devices block agent1.example"), 0);
	assert_string_equal(out, "device agent1.example: already blocked\n");
	assert_string_equal(err, "");
	assert_int_equal(device_calls, calls);
	assert_int_equal(beaconctl("devices block ghost.example"), 0);
	assert_string_equal(out, "device ghost.example: blocked\n");
	assert_string_equal(err, "beaconctl: warning: no device with this name has connected to "
				 "this beacon: the change applies from its first visit (check the "
				 "name)\n");
	assert_int_equal(beaconctl("devices unblock unknown.example"), 0);
	assert_string_equal(out, "device unknown.example: not blocked\n");
	assert_string_equal(last_device, "ghost.example");
	assert_int_equal(beaconctl("devices approve agent2.example"), 0);
	assert_int_equal(last_state, DEVICE_APPROVED);
	assert_int_equal(beaconctl("devices unblock"), 2);
}

static void test_cannot_connect(void **state)
{
	char args[300];
	snprintf(args, sizeof args, "--socket '%s/none.sock' status", tmpdir);
	assert_int_equal(beaconctl(args), 3);
	char want[300];
	snprintf(want, sizeof want, "beaconctl: cannot connect to %s/none.sock: ", tmpdir);
	assert_true(!strncmp(err, want, strlen(want)));
	assert_non_null(strstr(err, "; is beacond running?\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_for_people),   cmocka_unit_test(test_status_json),
		cmocka_unit_test(test_stats_every_field),   cmocka_unit_test(test_reload),
		cmocka_unit_test(test_tickets_and_devices), cmocka_unit_test(test_cannot_connect),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
