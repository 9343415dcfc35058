/*
 * One way to log in to NATS for the drain, the trust bucket and
 * beacon-consume (include/beacon/natsconn.h).
 */
#include "beacon/natsconn.h"

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

static natsStatus login_set(natsOptions *o, const struct nats_login *l)
{
	natsStatus st = NATS_OK;
	if (set(l->user))
		st = natsOptions_SetUserInfo(o, l->user, l->password ? l->password : "");
	if (st == NATS_OK && set(l->creds))
		st = natsOptions_SetUserCredentialsFromFiles(o, l->creds, NULL);
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
