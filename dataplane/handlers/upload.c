/*
 * The upload handler (handlers/handler.h): PUT or POST
 * /ManageSoftRL/<category>/<name>, its body streamed into the store, and
 * 201 once the store has made it durable. With approval = require, only a
 * device an operator approved may upload.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "beacon/config.h"
#include "beacon/snapshot.h"
#include "beacon/store.h"
#include "beacon/tls.h"
#include "conn/conn.h"
#include "worker-internal.h"

/* A store failure: 507 when the disk is full (the client retries later),
 * 503 otherwise. */
static void respond_store_error(struct conn *c, int err)
{
	http1_respond_error(c, err == STORE_ERR_NOSPACE ? 507 : 503, store_strerror(err));
}

/* approval = require: only devices an operator approved may upload. */
static bool device_approved(struct conn *c, const char *device)
{
	if (c->w->cfg->approval != APPROVAL_REQUIRE)
		return true;
	struct device_record rec;
	int rc = store_reader_device(c->w->devices, device, &rec);
	if (rc == 0 && rec.state == DEVICE_APPROVED)
		return true;
	if (rc != 0 && rc != STORE_ERR_NOTFOUND) {
		http1_respond_error(c, 503, "device state unavailable");
		return false;
	}
	counter_add(&c->w->counters.handshakes[AUTH_UNAPPROVED], 1);
	http1_respond_error(c, 403,
			    "device awaiting approval by an operator (beaconctl devices approve)");
	return false;
}

/* Whether the client is a child beacon ([upstream] children). */
static bool peer_is_child(const struct config *cfg, const struct tls_peer *p)
{
	for (unsigned i = 0; i < cfg->upstream_n_children; i++)
		if (memcmp(cfg->upstream_child_sha256[i], p->cert_sha256, 32) == 0)
			return true;
	return false;
}

static bool slice_hex32(struct http_slice v, uint8_t out[32])
{
	if (v.n != 64)
		return false;
	for (size_t i = 0; i < 64; i++) {
		char ch = v.p[i];
		int d = ch >= '0' && ch <= '9'	 ? ch - '0'
			: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
			: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
						 : -1;
		if (d < 0)
			return false;
		out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | d) : d << 4);
	}
	return true;
}

static bool slice_printable(struct http_slice v, size_t max)
{
	if (!v.p || v.n == 0 || v.n >= max)
		return false;
	for (size_t i = 0; i < v.n; i++)
		if ((unsigned char)v.p[i] < 0x20 || (unsigned char)v.p[i] >= 0x7f)
			return false;
	return true;
}

static bool slice_decimal(struct http_slice v)
{
	if (!v.p || v.n == 0 || v.n > 20)
		return false;
	for (size_t i = 0; i < v.n; i++)
		if (v.p[i] < '0' || v.p[i] > '9')
			return false;
	return true;
}

/* This beacon's own word on the device a child forwards for: what it
 * blocks (by name or certificate) or has not approved stays out through a
 * child too, or a child would be a way around the parent's block list. */
static bool forwarded_device_admitted(struct conn *c, const struct upload_meta *meta)
{
	struct tls_server *newest = trust_acquire();
	bool blocked = newest && trust_snapshot_blocked(tls_server_trust(newest), meta->cert_sha256,
							meta->device);
	tls_server_unref(newest);
	if (blocked) {
		http1_respond_error(c, 403, "the forwarded device is blocked at this beacon");
		return false;
	}
	return device_approved(c, meta->device);
}

/* A child beacon's forwarded upload is recorded under the device that sent
 * it to the child, with that device's certificate fingerprint, so that the
 * store's retry de-duplication (same device, category, name and body)
 * makes a re-forward after a crash or a lost 201 one upload, answered with
 * the first id. From anyone else the Beacon-* fields are ignored: an agent
 * that sends them is recorded as itself. false: answered 400. */
static bool apply_forwarded(struct conn *c, const struct http_forwarded *fwd,
			    struct upload_meta *meta)
{
	if (!fwd->origin.p && !fwd->upload_id.p && !fwd->device.p && !fwd->cert_sha256.p)
		return true;
	if (!peer_is_child(c->w->cfg, conn_tls_peer(c)))
		return true;
	const char *why = NULL;
	if (fwd->repeated)
		why = "a Beacon-* field sent twice";
	else if (!slice_printable(fwd->origin, 64))
		why = "Beacon-Origin missing or not printable";
	else if (!slice_decimal(fwd->upload_id))
		why = "Beacon-Upload-Id missing or not a number";
	else if (!slice_printable(fwd->device, sizeof meta->device))
		why = "Beacon-Device missing, too long or not printable";
	else if (!slice_hex32(fwd->cert_sha256, meta->cert_sha256))
		why = "Beacon-Cert-SHA256 missing or not 64 hex digits";
	if (why) {
		http1_respond_error(c, 400, why);
		return false;
	}
	snprintf(meta->device, sizeof meta->device, "%.*s", (int)fwd->device.n, fwd->device.p);
	return forwarded_device_admitted(c, meta);
}

static void upload_head(struct conn *c, const struct http_request *req,
			const struct http_route *route)
{
	const struct config *cfg = c->w->cfg;
	c->req.upload = (struct upload_state){0};
	if (req->method != HTTP_PUT && req->method != HTTP_POST) {
		http1_respond(c, 405, "Allow: PUT, POST\r\n", "uploads take PUT or POST",
			      req->content_length > 0 || req->chunked);
		return;
	}
	if (!req->chunked && req->content_length < 0) {
		http1_respond_error(c, 411, "uploads need Content-Length or chunked encoding");
		return;
	}
	if (req->content_length > 0 && (uint64_t)req->content_length > cfg->max_body_bytes) {
		char why[96];
		snprintf(why, sizeof why, "body over %" PRIu64 " bytes", cfg->max_body_bytes);
		http1_respond_error(c, 413, why);
		return;
	}
	const struct tls_peer *p = conn_tls_peer(c);
	if (!device_approved(c, p->device))
		return;
	struct upload_meta meta = {0};
	snprintf(meta.device, sizeof meta.device, "%s", p->device);
	snprintf(meta.category, sizeof meta.category, "%s", route->category);
	snprintf(meta.name, sizeof meta.name, "%s", route->name);
	memcpy(meta.cert_sha256, p->cert_sha256, sizeof meta.cert_sha256);
	if (!apply_forwarded(c, &req->fwd, &meta))
		return;
	int rc = store_upload_begin(c->w->sw, &meta, &c->req.upload.upload);
	if (rc != 0) {
		c->req.upload.upload = NULL;
		respond_store_error(c, rc);
		return;
	}
	http1_read_body(c, req);
}

/* The store has room again. */
static void upload_wake(void *arg)
{
	http1_body_wake(arg);
}

static ssize_t upload_body(struct conn *c, const uint8_t *data, size_t len)
{
	ssize_t n = store_upload_write(c->req.upload.upload, data, len, upload_wake, c);
	if (n < 0)
		respond_store_error(c, (int)n);
	return n;
}

static ssize_t upload_window(struct conn *c, uint8_t **at)
{
	ssize_t room = store_upload_window(c->req.upload.upload, at, upload_wake, c);
	if (room < 0)
		respond_store_error(c, (int)room);
	return room;
}

static int upload_wrote(struct conn *c, size_t n)
{
	int rc = store_upload_wrote(c->req.upload.upload, n);
	if (rc < 0)
		respond_store_error(c, rc);
	return rc;
}

static void upload_committed(void *arg, int status, uint64_t id)
{
	struct conn *c = arg;
	conn_enter(c);
	c->callback_owed = false;
	worker_commit_latency(c->w, clock_us() - c->req.upload.commit_started_us);
	if (c->transport_gone || c->state == CONN_CLOSING) {
		conn_leave(c);
		return;
	}
	uint64_t bytes = c->h1.body_total;
	if (status == 0) {
		counter_add(&c->w->counters.uploads, 1);
		counter_add(&c->w->counters.upload_bytes, bytes);
		char extra[64], body[64];
		snprintf(extra, sizeof extra, "Location: /uploads/%" PRIu64 "\r\n", id);
		snprintf(body, sizeof body, "upload %" PRIu64 ", %" PRIu64 " bytes", id, bytes);
		c->h1.access.upload_id = id;
		http1_respond(c, 201, extra, body, false);
		if (c->state != CONN_CLOSING)
			http1_request_done(c);
	} else {
		c->h1.keep_alive = false;
		respond_store_error(c, status);
	}
	conn_run(c);
	conn_leave(c);
}

/* The body is whole: the store makes it durable (a group commit) and
 * answers in upload_committed; the client waits without a timer. */
static void upload_done(struct conn *c)
{
	conn_set_state(c, CONN_COMMIT);
	c->callback_owed = true;
	c->req.upload.commit_started_us = clock_us();
	struct store_upload *u = c->req.upload.upload;
	c->req.upload.upload = NULL;
	store_upload_finish(u, upload_committed, c);
}

static void upload_drop(struct conn *c)
{
	if (c->req.upload.upload) {
		store_upload_abort(c->req.upload.upload);
		c->req.upload.upload = NULL;
	}
}

const struct handler upload_handler = {
	.head = upload_head,
	.body = upload_body,
	.body_window = upload_window,
	.body_wrote = upload_wrote,
	.body_done = upload_done,
	.drop = upload_drop,
};
