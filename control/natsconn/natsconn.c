/*
 * One way to log in to NATS for the drain, the trust bucket and
 * beacon-consume (include/beacon/natsconn.h).
 */
#include "beacon/natsconn.h"

#include "nkey.h"

#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool set(const char *s)
{
	return s && s[0];
}

static natsStatus servers_set(natsOptions *o, const char *urls)
{
	char copy[1024];
	const char *list[NATSCONN_URLS_MAX];
	int count = 0;
	snprintf(copy, sizeof copy, "%s", urls ? urls : "");
	char *save = NULL;
	for (char *u = strtok_r(copy, ", ", &save); u && count < NATSCONN_URLS_MAX;
	     u = strtok_r(NULL, ", ", &save))
		list[count++] = u;
	/* cnats copies the strings: copy may go. */
	return natsOptions_SetServers(o, list, count);
}

/* creds names a .creds file (a user JWT and its nkey seed, as nsc writes
 * it) or an nkey seed file alone (nk -gen user), for servers that list
 * users by public nkey in their authorization block. A file that is
 * neither, or that cannot be read, goes to cnats as a .creds file, so that
 * the connection's error says what cnats found wrong with it. */
static natsStatus creds_set(natsOptions *o, const char *path)
{
	char text[16384] = "";
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(text, 1, sizeof text - 1, f);
		text[n] = '\0';
		fclose(f);
	}
	char pub[NKEY_PUBLIC_CHARS + 1];
	bool seed_only = !strstr(text, "BEGIN NATS USER JWT") && nkey_user_public(text, pub) == 0;
	OPENSSL_cleanse(text, sizeof text);
	if (seed_only)
		return natsOptions_SetNKeyFromSeed(o, pub, path);
	return natsOptions_SetUserCredentialsFromFiles(o, path, NULL);
}

static natsStatus login_set(natsOptions *o, const struct nats_login *l)
{
	natsStatus st = NATS_OK;
	if (set(l->user))
		st = natsOptions_SetUserInfo(o, l->user, l->password ? l->password : "");
	if (st == NATS_OK && set(l->creds))
		st = creds_set(o, l->creds);
	bool tls = set(l->tls_ca) || set(l->tls_cert) || (l->urls && strstr(l->urls, "tls://"));
	if (st == NATS_OK && tls)
		st = natsOptions_SetSecure(o, true);
	if (st == NATS_OK && set(l->tls_ca))
		st = natsOptions_LoadCATrustedCertificates(o, l->tls_ca);
	if (st == NATS_OK && set(l->tls_cert))
		st = natsOptions_LoadCertificatesChain(o, l->tls_cert, l->tls_key);
	return st;
}

natsStatus natsconn_options(const struct nats_login *l, natsOptions **out)
{
	natsOptions *o = NULL;
	natsStatus st = natsOptions_Create(&o);
	if (st == NATS_OK)
		st = servers_set(o, l->urls);
	if (st == NATS_OK)
		st = login_set(o, l);
	if (st == NATS_OK && l->connect_timeout_ms > 0)
		st = natsOptions_SetTimeout(o, l->connect_timeout_ms);
	if (st == NATS_OK)
		st = natsOptions_SetMaxReconnect(o, -1);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectWait(o, 500);
	if (st != NATS_OK) {
		natsOptions_Destroy(o);
		return st;
	}
	*out = o;
	return NATS_OK;
}

natsStatus natsconn_library_close(void)
{
	return nats_CloseAndWait(NATSCONN_CLOSE_WAIT_MS);
}
