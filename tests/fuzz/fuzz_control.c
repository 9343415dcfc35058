/*
 * libFuzzer target for the control socket's JSON lines (and the loopback
 * admin HTTP head beside it). The input is split at newlines like the
 * control thread splits what a client sends; each line goes to
 * control_request (control/ctl/socket.c) with fake handlers. Checks:
 *   - every line gets exactly one reply line: one '\n', at the end;
 *   - the reply is a JSON object with a boolean "ok", and an "error"
 *     string when ok is false;
 *   - a handler sees only what socket.c promises: a known reload target,
 *     a device name of 1 to 255 bytes without control characters;
 *   - the whole input as an HTTP request head gets a response that starts
 *     with a status line.
 */
#include "fuzz_common.h"

#include "../../control/ctl/control_internal.h"

#include <cjson/cJSON.h>
#include <string.h>

static unsigned calls; /* steers the fake handlers between success and failure */

static void fake_stats(void *arg, struct control_stats *out)
{
	memset(out, 0, sizeof *out);
	out->uptime_s = UINT64_MAX; /* the largest counters must go out exactly */
	out->workers = 4;
	out->uploads = calls;
	for (unsigned r = 0; r < AUTH_RESULT_COUNT; r++)
		out->handshakes[r] = r * 1000003u;
}

static int fake_reload(void *arg, const char *what, char *msg, size_t msglen)
{
	static const char *const known[] = {"all", "issuers", "crl", "tickets", "blocklist"};
	int ok = 0;
	for (size_t i = 0; i < sizeof known / sizeof *known; i++)
		ok |= !strcmp(what, known[i]);
	CHECK(ok);
	calls++;
	if (calls % 3 == 0) {
		/* A handler that fills msg to the brim, without terminating it. */
		memset(msg, 'x', msglen);
		return -1;
	}
	snprintf(msg, msglen, "reloaded %s", what);
	return calls % 3 == 1 ? 0 : -1;
}

static int fake_rotate(void *arg, char *msg, size_t msglen)
{
	calls++;
	if (calls & 1)
		msg[0] = '\0'; /* a failure with no reason */
	return (calls & 1) ? -1 : 0;
}

static int fake_device(void *arg, const char *device, enum device_state state, char *msg,
		       size_t msglen)
{
	size_t n = strlen(device);
	CHECK(n >= 1 && n < STORE_DEVICE_MAX);
	for (const char *p = device; *p; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
	CHECK(state == DEVICE_APPROVED || state == DEVICE_BLOCKED);
	calls++;
	snprintf(msg, msglen, "device %s", device);
	return calls % 4 == 0 ? -1 : 0;
}

static const struct control_handlers full = {
	.stats = fake_stats,
	.reload = fake_reload,
	.tickets_rotate = fake_rotate,
	.device_set_state = fake_device,
};
static const struct control_handlers none; /* a server that offers nothing */

static void check_reply(const struct control_buf *reply)
{
	CHECK(!reply->oom);
	CHECK(reply->len > 0 && reply->data[reply->len - 1] == '\n');
	CHECK(memchr(reply->data, '\n', reply->len) == reply->data + reply->len - 1);
	CHECK(strlen(reply->data) == reply->len);
	cJSON *o = cJSON_Parse(reply->data);
	CHECK(cJSON_IsObject(o));
	const cJSON *ok = cJSON_GetObjectItemCaseSensitive(o, "ok");
	CHECK(cJSON_IsBool(ok));
	if (cJSON_IsFalse(ok))
		CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "error")));
	cJSON_Delete(o);
}

static char line[CONTROL_LINE_MAX + 1];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	struct control_buf reply = {0};
	unsigned n = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (len <= CONTROL_LINE_MAX) {
			size_t n_line = len;
			memcpy(line, p, len);
			if (n_line && line[n_line - 1] == '\r') /* as control.c does */
				n_line--;
			line[n_line] = '\0';
			control_buf_reset(&reply);
			control_request(n++ % 2 ? &none : &full, NULL, line, n_line, &reply);
			check_reply(&reply);
		}
		p += len + 1;
	}

	/* The same bytes as an admin HTTP request head. */
	static struct control_history history;
	struct control_http_view view = {.h = &full, .history = &history};
	if (size <= CONTROL_HTTP_REQUEST_MAX) {
		control_buf_reset(&reply);
		control_http_respond(&view, (const char *)data, size, &reply);
		CHECK(!reply.oom);
		CHECK(reply.len >= 12 && memcmp(reply.data, "HTTP/1.", 7) == 0);
	}
	control_buf_free(&reply);
	return 0;
}
