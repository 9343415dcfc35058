/*
 * server: a whole snapshot ready to publish. The control side reads and
 * checks every file (the server's certificate and key here, the trust data
 * in snapshot.c); the TLS layer builds its wolfSSL context over the bytes
 * (tls_server_new, tls_server_serve) and does no file I/O of its own.
 */
#include "beacon/config.h"
#include "beacon/file.h"
#include "beacon/store.h"
#include "beacon/tls.h"
#include "beacon/trust.h"
#include "trust-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A private key others can read (or anyone but its owner can change) is
 * refused: group read (0640, for a service group) is the most allowed. */
static bool key_file_exposed(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "key %s: %s", path, strerror(errno));
		return true;
	}
	if (st.st_mode & 0037) {
		snprintf(err, errlen,
			 "key %s: mode %04o lets other users read or change the private key; "
			 "chmod 600 (or 640 for a service group)",
			 path, (unsigned)(st.st_mode & 07777));
		return true;
	}
	return false;
}

/* "WHAT PATH: reason" for a file that cannot be read. */
static int read_pem(const char *what, const char *path, uint8_t **buf, size_t *len, char *err,
		    size_t errlen)
{
	char why[CONFIG_PATH_MAX + 320];
	if (file_read(path, buf, len, why, sizeof why) == 0)
		return 0;
	snprintf(err, errlen, "%s %s", what, why);
	return -1;
}

/* The TLS context with the server's own chain and key; the key's bytes are
 * wiped as soon as wolfSSL holds its copy. */
static int server_identity(const struct config *cfg, struct tls_server **out,
			   struct trust_snapshot_server *dates, char *err, size_t errlen)
{
	struct tls_server_keys keys = {.cert_path = cfg->cert, .key_path = cfg->key};
	uint8_t *cert = NULL, *key = NULL;
	int rc = -1;
	if (read_pem("cert", cfg->cert, &cert, &keys.cert_len, err, errlen) != 0 ||
	    key_file_exposed(cfg->key, err, errlen) ||
	    read_pem("key", cfg->key, &key, &keys.key_len, err, errlen) != 0)
		goto leave;
	keys.cert_pem = cert;
	keys.key_pem = key;
	/* For metrics only: tls_server_new judges the certificate itself. */
	if (cert_pem_dates(cert, keys.cert_len, dates->name, sizeof dates->name,
			   &dates->not_after) != 0)
		dates->name[0] = '\0';
	rc = tls_server_new(&keys, out, err, errlen);
leave:
	if (key)
		explicit_bzero(key, keys.key_len);
	free(key);
	free(cert);
	return rc;
}

struct device_list {
	char **names;
	size_t n;
	bool failed;
};

static int collect_blocked(const struct device_record *rec, void *arg)
{
	struct device_list *l = arg;
	if (rec->state != DEVICE_BLOCKED)
		return 0;
	char **grown = realloc(l->names, (l->n + 1) * sizeof *grown);
	if (!grown || !(grown[l->n] = strdup(rec->device))) {
		if (grown)
			l->names = grown;
		l->failed = true;
		return 1;
	}
	l->names = grown;
	l->n++;
	return 0;
}

static void device_list_free(struct device_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
}

int trust_server_build(const struct config *cfg, struct store_reader *reader,
		       struct tls_server **out, char *err, size_t errlen)
{
	return trust_server_build_with(cfg, NULL, reader, out, err, errlen);
}

int trust_server_build_with(const struct config *cfg, const struct trust_kv_set *kv,
			    struct store_reader *reader, struct tls_server **out, char *err,
			    size_t errlen)
{
	struct device_list blocked = {0};
	struct tls_server *srv = NULL;
	struct trust_snapshot *snap = NULL;
	struct trust_snapshot_server dates = {0};
	int rc = -1;
	/* beacond -t opens no reader: it changes nothing on disk. */
	int store_rc = reader ? store_reader_devices(reader, collect_blocked, &blocked) : 0;
	if (store_rc != 0 || blocked.failed) {
		snprintf(err, errlen, "reading blocked devices: %s",
			 store_rc ? store_strerror(store_rc) : "out of memory");
		goto leave;
	}
	if (server_identity(cfg, &srv, &dates, err, errlen) != 0 ||
	    trust_snapshot_build_with(cfg, kv, (const char *const *)blocked.names, blocked.n, &snap,
				      err, errlen) != 0)
		goto leave;
	snap->server = dates;
	rc = tls_server_serve(srv, snap, err, errlen); /* takes snap, whatever it answers */
	snap = NULL;
	if (rc == 0) {
		*out = srv;
		srv = NULL;
	}
leave:
	trust_snapshot_free(snap);
	tls_server_unref(srv);
	device_list_free(&blocked);
	return rc;
}

int trust_tickets_init(const struct config *cfg, char *err, size_t errlen)
{
	if (!cfg->ticket_key_file[0])
		return 0;
	return tls_tickets_load(cfg->ticket_key_file, err, errlen);
}
