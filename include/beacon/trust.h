/*
 * trust: the control side of the trust snapshot (control/trust). It owns
 * every step from the trust files to the snapshot the workers serve:
 *
 *   building   the server certificate and key, the issuer CAs and the CA
 *              names advertised, the CRL index, the block list (the file
 *              and the devices the store blocks), then the TLS layer's
 *              wolfSSL context over them (tls_server_new, tls_server_serve);
 *   checking   any bad input (a PEM that does not load, a bad CRL, no
 *              issuer certificate) fails the whole build with a message
 *              naming the file, and the running snapshot stays: never fail
 *              open, never half a snapshot;
 *   triggers   the control socket's `reload`, SIGHUP, the watch on the trust
 *              files (a change must hold still for a second), the ticket-key
 *              rotation timer;
 *   publishing the RCU swap (the workers' side is in beacon/snapshot.h).
 *
 * Threads: trust_reload, trust_tickets_rotate, trust_tick and
 * trust_set_serving may be called from any thread (the control thread, the
 * main thread's clock and signals); they serialise on the lock given at
 * trust_start. trust_publish from one thread at a time (the reload lock's
 * holder). Every failure leaves the running trust
 * in force and says why in msg/err.
 */
#ifndef BEACON_TRUST_H
#define BEACON_TRUST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "beacon/snapshot.h"

struct config;
struct store_reader;
struct tls_server;

/* ---- building ---- */

/* The snapshot's trust data from cfg: issuers, CRL index, block list, plus
 * `devices` (identities the store blocks). 0, or -1 with a reason naming
 * the file in err. */
int trust_snapshot_build(const struct config *cfg, const char *const *devices, size_t n_devices,
			 struct trust_snapshot **out, char *err, size_t errlen);
void trust_snapshot_info(const struct trust_snapshot *t, struct tls_server_info *out);
/* Its dates, as trust_current_dates (beacon/snapshot.h) gives them. */
void trust_snapshot_dates(const struct trust_snapshot *t,
			  void (*fn)(const struct trust_date *d, void *arg), void *arg);

/* A whole snapshot ready to publish: the server certificate and key, the
 * trust data (with the devices `reader` says are blocked; NULL: none) and
 * the TLS context over them. 0, or -1 with a reason naming the file. */
int trust_server_build(const struct config *cfg, struct store_reader *reader,
		       struct tls_server **out, char *err, size_t errlen);

/* Ticket keys at start-up: ticket_key_file's, when set (else the TLS layer
 * makes a first key with the first snapshot). 0, or -1 with err set. */
int trust_tickets_init(const struct config *cfg, char *err, size_t errlen);

/* ---- publishing ---- */

/* Sets up `nworkers` worker slots and publishes `first` (takes its
 * reference). 0 or -1. */
int trust_init(unsigned nworkers, struct tls_server *first);

/* Drops the current snapshot; after every worker has stopped. */
void trust_shutdown(void);

/* Makes `next` current (takes its reference); returns once no worker can
 * still pick up the old one. */
void trust_publish(struct tls_server *next);

/* ---- reloading ---- */

struct trust_options {
	const char *conf_path;	     /* re-read on reload; NULL: the embedded defaults */
	const struct config *cfg;    /* the running configuration; outlives the part */
	struct store_reader *reader; /* the devices the store blocks */
	/* Serialises reloads and rotations; whoever reads trust_current_info
	 * from another thread holds it too. */
	pthread_mutex_t *lock;
	/* The service manager: a reload is announced (`reloading`) and ends
	 * with notify("READY=1") while serving; trust_set_serving says
	 * "READY=1" or "STOPPING=1". */
	void (*notify)(const char *state);
	void (*reloading)(void);
};

struct trust_control;

/* Builds the first snapshot from o->cfg and publishes it for `nworkers`
 * workers; the watch and the rotation clock start now. 0, or -1 with err. */
int trust_start(const struct trust_options *o, unsigned nworkers, struct trust_control **out,
		char *err, size_t errlen);
/* After every worker has stopped: drops the snapshot. NULL is ignored. */
void trust_stop(struct trust_control *tc);

/* Ready (true) or stopping (false), in step with reloads: only a serving
 * process tells the service manager about reloads. */
void trust_set_serving(struct trust_control *tc, bool serving);

/* Rebuilds and publishes: `what` is all, issuers, crl, blocklist (one
 * snapshot: any of them rebuilds it whole) or tickets (ticket_key_file read
 * again). 0 with a summary in msg, or -1 with the reason (the running trust
 * stays). Logged either way. */
int trust_reload(struct trust_control *tc, const char *what, char *msg, size_t len);

/* Reloads (of a known target) since start that took effect and that were
 * refused, whatever asked for them (the control socket, SIGHUP, the file
 * watch). Any thread. */
void trust_reload_counts(uint64_t *succeeded, uint64_t *failed);

/* Of those, the [trust] kv_bucket's changes applied and refused, and
 * whether its watch is up now (1) or off or out of reach (0). Any thread. */
void trust_kv_counts(uint64_t *applied, uint64_t *refused, uint64_t *connected);

/* A new ticket key (keys made in memory only; refused with a key file). */
int trust_tickets_rotate(struct trust_control *tc, char *msg, size_t len);

/* The clocks, once a second: reloads when the trust files changed and then
 * held still for a tick ([server] watch), rotates ticket keys when
 * ticket_rotate is up. */
void trust_tick(struct trust_control *tc);

#endif
