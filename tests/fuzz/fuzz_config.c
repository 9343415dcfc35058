/*
 * libFuzzer target for the config file: the input is beacond.conf, written
 * to a file in a private temporary directory and loaded with config_load.
 * Besides "no crash, no leak, no bad read", it checks the contract of
 * config.h:
 *   - on error the message starts with the path and *cfg is untouched;
 *   - on success every string field is terminated, and the store's options
 *     keep the rules store_open asserts (beacon/store-t.h) with
 *     require_approval following [server] approval;
 *   - config_parse_size / config_parse_duration_ms / config_parse_endpoint
 *     on the input as a string (up to the first NUL or newline) either fail
 *     or give a value that parses the same way again.
 */
#include "fuzz_common.h"

#include "beacon/config.h"
#include "beacon/log.h"

#include <inttypes.h>
#include <string.h>

static struct config cfg, before;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_ERR);
	return 0;
}

static void check_strings(const struct config *c)
{
#define TERM(field) CHECK(fuzz_terminated(c->field, sizeof c->field))
	TERM(listen_addr);
	TERM(data_dir);
	TERM(download_dir);
	TERM(control_socket);
	TERM(user);
	TERM(metrics_listen);
	TERM(cert);
	TERM(key);
	TERM(issuers);
	TERM(advertise_list);
	TERM(crl_dir);
	TERM(blocklist);
	TERM(ticket_key_file);
#undef TERM
}

static bool in_range(uint64_t v, uint64_t min, uint64_t max)
{
	return v >= min && v <= max;
}

/* What config_load accepts, store_open's assertions hold for. */
static void check_store(const struct config *c)
{
#define IN_RANGE_(type, field, key, form, def, min, max) CHECK(in_range(c->store.field, min, max));
	STORE_OPTIONS(IN_RANGE_)
#undef IN_RANGE_
	CHECK(c->store.upload_buffer <= c->store.segment_bytes);
	CHECK(c->store.require_approval == (c->approval == APPROVAL_REQUIRE));
}

static void fuzz_endpoint(const char *s)
{
	struct config_endpoint ep, again;
	if (config_parse_endpoint(s, &ep) != 0)
		return;
	char text[80];
	snprintf(text, sizeof text, strchr(ep.addr, ':') ? "[%s]:%u" : "%s:%u", ep.addr,
		 (unsigned)ep.port);
	CHECK(config_parse_endpoint(text, &again) == 0 && again.port == ep.port &&
	      again.salen == ep.salen && memcmp(&again.sa, &ep.sa, ep.salen) == 0);
}

static void fuzz_values(const uint8_t *data, size_t size)
{
	char s[64];
	size_t n = 0;
	while (n < size && n < sizeof s - 1 && data[n] && data[n] != '\n')
		n++;
	memcpy(s, data, n);
	s[n] = '\0';
	uint64_t bytes, again;
	if (config_parse_size(s, &bytes) == 0) {
		char text[32];
		snprintf(text, sizeof text, "%" PRIu64, bytes);
		CHECK(config_parse_size(text, &again) == 0 && again == bytes);
	}
	unsigned ms, ms2;
	if (config_parse_duration_ms(s, &ms) == 0) {
		char text[32];
		snprintf(text, sizeof text, "%ums", ms);
		CHECK(config_parse_duration_ms(text, &ms2) == 0 && ms2 == ms);
	}
	fuzz_endpoint(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write_file("beacond.conf", data, size);
	char err[512];
	memset(&cfg, 0xa5, sizeof cfg);
	before = cfg;
	memset(err, 0, sizeof err);
	int rc = config_load(path, &cfg, err, sizeof err);
	CHECK(rc == 0 || rc == -1);
	if (rc < 0) {
		CHECK(memchr(err, '\0', sizeof err));
		CHECK(strncmp(err, path, strlen(path)) == 0);
		CHECK(err[strlen(path)] == ':');
		CHECK(memcmp(&cfg, &before, sizeof cfg) == 0);
	} else {
		check_strings(&cfg);
		check_store(&cfg);
	}
	fuzz_values(data, size);
	return 0;
}
