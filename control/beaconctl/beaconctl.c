/*
 * beaconctl: the command line for a beacon. Two sides: the store's read
 * side (uploads.c, devices.c) and the control side, which talks to a
 * running beacond over its control socket (client.c). This file holds the
 * command table, the usage line and the manual, the global options and main.
 *
 * Global options (--json, --socket, --data-dir, --debug) go anywhere on the
 * line. main() is a table of subcommands (noun, verb, handler, side); a row
 * with no verb takes the words after its noun as arguments.
 */
#include "beaconctl.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DATA_DIR "/var/lib/beacond"
#define DEFAULT_SOCKET "/run/beacond/control.sock"

/* Where a command's answers come from. */
enum side { SIDE_STORE, SIDE_SOCKET };

struct command {
	const char *noun;
	const char *verb; /* NULL: the words after the noun are its arguments */
	const char *args;
	int (*run)(struct ctl *ctl, int argc, char **argv);
	enum side side;
};

static const struct command commands[] = {
	{"uploads", "list",
	 "[--limit N] [--after ID] [--since T] [--until T] [--category C] [--device D]",
	 cmd_uploads_list, SIDE_STORE},
	{"uploads", "follow", "[--after ID] [--category C] [--device D]", cmd_uploads_follow,
	 SIDE_STORE},
	{"uploads", "show", "ID", cmd_uploads_show, SIDE_STORE},
	{"uploads", "get", "ID [-o FILE]", cmd_uploads_get, SIDE_STORE},
	{"devices", "list", "[--state unapproved|approved|blocked|refused]", cmd_devices_list,
	 SIDE_STORE},
	{"devices", "show", "DEVICE", cmd_devices_show, SIDE_STORE},
	{"status", NULL, "", cmd_status, SIDE_SOCKET},
	{"stats", NULL, "", cmd_stats, SIDE_SOCKET},
	{"reload", NULL, "[all|issuers|crl|tickets|blocklist]", cmd_reload, SIDE_SOCKET},
	{"tickets", "rotate", "", cmd_tickets_rotate, SIDE_SOCKET},
	{"devices", "approve", "DEVICE", cmd_devices_approve, SIDE_SOCKET},
	{"devices", "block", "DEVICE", cmd_devices_block, SIDE_SOCKET},
	{"devices", "unblock", "DEVICE", cmd_devices_unblock, SIDE_SOCKET},
	{"drain", "pause", "", cmd_drain_pause, SIDE_SOCKET},
	{"drain", "resume", "", cmd_drain_resume, SIDE_SOCKET},
	{"drain", "replay", "--from ID", cmd_drain_replay, SIDE_SOCKET},
	{"upstream", "sync", "", cmd_upstream_sync, SIDE_SOCKET},
	{NULL, NULL, NULL, NULL, SIDE_STORE},
};

static void command_usage(FILE *out, const char *prefix, const struct command *c)
{
	fprintf(out, "%s%s%s%s %s\n", prefix, c->noun, c->verb ? " " : "", c->verb ? c->verb : "",
		c->args);
}

static int usage(FILE *out)
{
	fprintf(out, "usage: beaconctl [--data-dir DIR] [--socket PATH] [--json] COMMAND\n"
		     "       beaconctl --help | --version\n\n"
		     "commands:\n");
	for (const struct command *c = commands; c->noun; c++)
		command_usage(out, "  ", c);
	fprintf(out, "\n'beaconctl --help' describes each command.\n");
	return out == stdout ? 0 : EXIT_USAGE;
}

/* The manual: beaconctl --help. */
static const char manual_text[] =
	"NAME\n"
	"    beaconctl - operate a running beacond and read its store\n"
	"\n"
	"SYNOPSIS\n"
	"    beaconctl [OPTIONS] COMMAND [ARGUMENTS]\n"
	"    beaconctl --help | --version\n"
	"\n"
	"STORE COMMANDS (read DIR/index directly: LMDB read transactions, safe\n"
	"beside a running beacond, and they work while it is stopped)\n"
	"    uploads list [--limit N] [--after ID] [--since T] [--until T]\n"
	"                 [--category C] [--device D]\n"
	"        One page of uploads, in the order they were stored (with --device,\n"
	"        in id order). N defaults to 100; 0 lists every match. When more\n"
	"        remain, standard error gives the command for the next page: the same\n"
	"        filters and --after the last id shown. A page is a range scan from\n"
	"        that cursor, as fast at a million uploads as at ten. T is Unix\n"
	"        seconds or YYYY-MM-DD[THH:MM:SS[Z]], in UTC; both bounds are\n"
	"        included, and a date alone covers its whole day.\n"
	"    uploads follow [--after ID] [--category C] [--device D]\n"
	"        Prints each upload once as it is stored, until interrupted (SIGINT\n"
	"        or SIGTERM: exit 0). Starts after the uploads already stored, or\n"
	"        after upload ID. Polls the index twice a second.\n"
	"    uploads show ID\n"
	"        One upload's record: device, category, name, size, time, checksum.\n"
	"    uploads get ID [-o FILE]\n"
	"        The upload's bytes, checksum verified before the first byte is\n"
	"        written. -o FILE writes a temporary file beside FILE and renames it:\n"
	"        FILE appears whole or not at all. Without -o (or with -o -) the\n"
	"        bytes go to standard output, never to a terminal.\n"
	"    devices list [--state unapproved|approved|blocked|refused]\n"
	"        Devices with first/last seen, state, last result and upload count.\n"
	"        refused: the last attempt recorded for the device was refused (see\n"
	"        README: beacond records revoked and blocked certificates).\n"
	"    devices show DEVICE\n"
	"        One device, with its most recent certificate fingerprints.\n"
	"\n"
	"CONTROL COMMANDS (a running beacond, over its control socket)\n"
	"    status\n"
	"        Uptime, connections, the trust snapshot, the uploads since start,\n"
	"        the store's totals (uploads and bytes in the index) and the drain:\n"
	"        off, connecting, connected, disconnected (with its last error) or\n"
	"        paused, and its lag; with [upstream], the parent sink and the\n"
	"        download mirror (\"upstream sync\").\n"
	"    stats\n"
	"        Every counter, one per line.\n"
	"    reload [all|issuers|crl|tickets|blocklist]\n"
	"        Builds a new trust snapshot; a refused reload keeps the old one and\n"
	"        exits 1 with the reason.\n"
	"    tickets rotate\n"
	"        A new session-ticket key; the previous one is still accepted.\n"
	"    devices approve|block|unblock DEVICE\n"
	"        Changes a device's state. A repeated command changes nothing and says\n"
	"        so (\"already blocked\"). Blocking a name that never connected is\n"
	"        recorded, with a warning on standard error (a block planned ahead,\n"
	"        or a mistyped name). unblock leaves an unapproved device unapproved.\n"
	"    drain pause|resume\n"
	"        Stops or restarts the drain's publishing ([drain] in beacond.conf);\n"
	"        uploads keep being stored and the lag grows while it is paused.\n"
	"    drain replay --from ID\n"
	"        Publishes every stored upload from id ID on again. The stream drops\n"
	"        the ones it still holds within its duplicate window.\n"
	"    upstream sync\n"
	"        Starts a round of the download mirror ([upstream] sync) now, or\n"
	"        right after the one running; status shows how it went.\n"
	"\n"
	"OPTIONS (anywhere on the line)\n"
	"    --data-dir DIR   beacond's data directory (store commands)\n"
	"    --socket PATH    beacond's control socket (control commands)\n"
	"    --json           one JSON object per line on standard output\n"
	"    --debug          on standard error: how many index entries uploads list\n"
	"                     or follow read (a page costs its rows, not the store's\n"
	"                     size)\n"
	"    -h, --help       this text\n"
	"    -V, --version    beaconctl's version (the beacond release it belongs to)\n"
	"\n"
	"ENVIRONMENT\n"
	"    BEACOND_DATA_DIR  DIR when --data-dir is not given (else " DEFAULT_DATA_DIR ")\n"
	"    BEACOND_SOCKET    PATH when --socket is not given (else " DEFAULT_SOCKET ")\n"
	"\n"
	"EXIT STATUS\n"
	"    0 ok; 1 not found or failed (a refused reload, a damaged upload); 2 usage,\n"
	"    or an upload refused to a terminal; 3 cannot connect to beacond.\n"
	"\n"
	"EXAMPLES\n"
	"    beaconctl uploads list --since 2026-01-31 --category Inventories --limit 20\n"
	"    beaconctl uploads list --json --after 1234 --limit 1000\n"
	"    beaconctl uploads get 1234 -o inventory.ndi\n"
	"    beaconctl devices list --state refused\n"
	"    beaconctl --socket /run/beacond/control.sock devices block laptop-42\n";

static int manual(void)
{
	fputs(manual_text, stdout);
	return 0;
}

/* "noun verb" first, then a verbless row for the noun. */
static const struct command *command_find(const char *noun, const char *verb)
{
	for (const struct command *c = commands; c->noun; c++)
		if (verb && c->verb && !strcmp(c->noun, noun) && !strcmp(c->verb, verb))
			return c;
	for (const struct command *c = commands; c->noun; c++)
		if (!c->verb && !strcmp(c->noun, noun))
			return c;
	return NULL;
}

enum globals_result { GLOBALS_OK, GLOBALS_HELP, GLOBALS_VERSION, GLOBALS_BAD };

/* A command option that takes a value: its value is never read as a global
 * option (a device may be called "--json"). */
static bool takes_value(const char *a)
{
	static const char *const with_value[] = {"--device", "--category", "--after",
						 "--limit",  "--since",	   "--until",
						 "--state",  "-o",	   "--output"};
	for (size_t i = 0; i < sizeof with_value / sizeof *with_value; i++)
		if (!strcmp(a, with_value[i]))
			return true;
	return false;
}

/* "--name VALUE" or "--name=VALUE" (or the short form); NULL when a is not
 * that option. *i moves past a separate value. */
static const char *global_value(int argc, char **argv, int *i, const char *name, const char *shrt,
				bool *missing)
{
	const char *a = argv[*i];
	if (!a)
		return NULL;
	size_t n = strlen(name);
	if (!strncmp(a, name, n) && a[n] == '=')
		return a + n + 1;
	if (strcmp(a, name) != 0 && strcmp(a, shrt) != 0)
		return NULL;
	if (*i + 1 >= argc) {
		fprintf(stderr, "beaconctl: %s needs a value\n", name);
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

/* Takes the global options out of argv wherever they are; the other words
 * go to words[0..*n), in order, for the command. "--" ends the options:
 * every word after it is the command's. */
static enum globals_result parse_globals(struct ctl *ctl, int argc, char **argv, char **words,
					 int *n)
{
	enum globals_result res = GLOBALS_OK;
	*n = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		bool missing = false;
		if (!strcmp(a, "--")) {
			while (++i < argc)
				words[(*n)++] = argv[i];
			break;
		}
		if (!strcmp(a, "--json") || !strcmp(a, "-j"))
			ctl->json = true;
		else if (!strcmp(a, "--debug"))
			ctl->debug = true;
		else if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			res = res == GLOBALS_OK ? GLOBALS_HELP : res;
		else if (!strcmp(a, "--version") || !strcmp(a, "-V"))
			res = res == GLOBALS_OK ? GLOBALS_VERSION : res;
		else if ((v = global_value(argc, argv, &i, "--data-dir", "-D", &missing)))
			ctl->data_dir = v;
		else if ((v = global_value(argc, argv, &i, "--socket", "-S", &missing)))
			ctl->socket_path = v;
		else if (missing)
			return GLOBALS_BAD;
		else if (takes_value(a) && i + 1 < argc) {
			words[(*n)++] = argv[i++];
			words[(*n)++] = argv[i];
		} else
			words[(*n)++] = argv[i];
	}
	return res;
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);
	return v && *v ? v : fallback;
}

static int open_store(struct ctl *ctl)
{
	char err[512];
	int rc = store_reader_open(ctl->data_dir, &ctl->reader, err, sizeof err);
	if (rc)
		fprintf(stderr,
			"beaconctl: %s (data directory %s; set --data-dir or BEACOND_DATA_DIR)\n",
			err, ctl->data_dir);
	return rc ? EXIT_NOTFOUND : 0;
}

/* The command sees words from its verb on (from its noun when it has no
 * verb), getopt style. */
static int run_command(struct ctl *ctl, const struct command *cmd, int nwords, char **words)
{
	if (cmd->side == SIDE_STORE) {
		int rc = open_store(ctl);
		if (rc)
			return rc;
	}
	int skip = cmd->verb ? 1 : 0;
	optind = 1;
	int rc = cmd->run(ctl, nwords - skip, words + skip);
	if (ctl->reader && ctl->debug)
		fprintf(stderr, "beaconctl: debug: %" PRIu64 " index entries read\n",
			store_reader_entries_read(ctl->reader));
	if (ctl->reader)
		store_reader_close(ctl->reader);
	if (rc == EXIT_USAGE)
		command_usage(stderr, "usage: beaconctl ", cmd);
	return rc == EXIT_REFUSED ? EXIT_USAGE : rc;
}

int main(int argc, char **argv)
{
	struct ctl ctl = {.data_dir = env_or("BEACOND_DATA_DIR", DEFAULT_DATA_DIR),
			  .socket_path = env_or("BEACOND_SOCKET", DEFAULT_SOCKET)};
	char **words = calloc((size_t)argc + 1, sizeof *words);
	if (!words) {
		fprintf(stderr, "beaconctl: out of memory\n");
		return EXIT_FAILED;
	}
	int nwords;
	enum globals_result g = parse_globals(&ctl, argc, argv, words, &nwords);
	int rc;
	const struct command *cmd = NULL;
	const char *verb = nwords >= 2 ? words[1] : NULL;
	if (g == GLOBALS_HELP)
		rc = manual();
	else if (g == GLOBALS_VERSION)
		rc = printf("beaconctl %s\n", BEACON_VERSION) < 0 ? EXIT_FAILED : 0;
	else if (g == GLOBALS_BAD || nwords < 1)
		rc = usage(stderr);
	else if (!(cmd = command_find(words[0], verb))) {
		fprintf(stderr, "beaconctl: unknown command '%s%s%s'\n", words[0], verb ? " " : "",
			verb ? verb : "");
		rc = usage(stderr);
	} else {
		rc = run_command(&ctl, cmd, nwords, words);
	}
	free(words);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "beaconctl: write output: %s\n", strerror(errno));
		return EXIT_FAILED;
	}
	return rc;
}
