/*
 * natsconn: how every NATS client of beacond logs in and finds its servers
 * (the drain's JetStream sink, the trust bucket's watcher, beacon-consume),
 * so that the keys [drain] documents mean the same thing for each.
 */
#ifndef BEACON_NATSCONN_H
#define BEACON_NATSCONN_H

#include <nats/nats.h>

/* Most server URLs one list names. */
#define NATSCONN_URLS_MAX 16

/* NULL or "": not set. */
struct nats_login {
	const char *urls; /* comma- or blank-separated nats:// or tls:// URLs */
	const char *user, *password;
	const char *creds; /* a creds file: JWT and nkey seed */
	const char *tls_ca, *tls_cert, *tls_key;
	int connect_timeout_ms; /* 0: cnats' own */
};

/* New options for l: its servers, login and TLS (on with a CA, a client
 * certificate or a tls:// URL), reconnecting for ever every 500 ms. The
 * caller adds its own callbacks and destroys them. NATS_OK or cnats'
 * status, with nothing left to free. */
natsStatus natsconn_options(const struct nats_login *l, natsOptions **out);

/* How long natsconn_library_close waits for cnats' threads. */
#define NATSCONN_CLOSE_WAIT_MS 5000

/* Once every NATS object is destroyed, at the end of the process: waits
 * (at most NATSCONN_CLOSE_WAIT_MS) until cnats' own threads are gone. A
 * connection's reader thread finishes after natsConnection_Destroy
 * returns; left running, it can meet the exit handlers (OpenSSL's
 * cleanup) half way. NATS_OK, NATS_NOT_INITIALIZED (nothing ever used
 * NATS) or NATS_TIMEOUT. */
natsStatus natsconn_library_close(void);

#endif
