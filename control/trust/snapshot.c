/*
 * snapshot: building a trust snapshot from the configuration (issuers, the
 * CRL index, the block list and the devices the store blocks) and the
 * read-only questions the data plane asks of one (beacon/snapshot.h).
 */
#include "beacon/config.h"
#include "beacon/revocation.h"
#include "beacon/trust.h"
#include "trust-internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* The issuers' DER as the CRL index takes them (borrowed for the build). */
static int revocation_build(struct trust_snapshot *t, const struct config *cfg,
			    const struct trust_kv_set *kv, char *err, size_t errlen)
{
	struct revocation_issuer *issuers = calloc(t->n_ca ? t->n_ca : 1, sizeof *issuers);
	struct revocation_blob blobs[TRUST_KV_MAX_CRLS];
	size_t n_blobs = kv ? kv->n_crls : 0;
	if (!issuers) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < t->n_ca; i++)
		issuers[i] = (struct revocation_issuer){t->ca[i].der, t->ca[i].der_len};
	for (size_t i = 0; i < n_blobs; i++)
		blobs[i] = (struct revocation_blob){kv->crls[i].key, kv->crls[i].data,
						    kv->crls[i].len};
	int rc = revocation_index_build_with(cfg->crl_dir[0] ? cfg->crl_dir : NULL, blobs, n_blobs,
					     issuers, t->n_ca, cfg->crl_stale, &t->revocation, err,
					     errlen);
	free(issuers);
	return rc;
}

/* The file's block list, then the bucket's beside it. */
static int blocklist_build(struct trust_snapshot *t, const struct config *cfg,
			   const struct trust_kv_set *kv, char *err, size_t errlen)
{
	if (cfg->blocklist[0] && blocklist_load(&t->blocked, cfg->blocklist, err, errlen) != 0)
		return -1;
	if (kv && kv->has_blocklist)
		return blocklist_add_text(&t->blocked, kv->blocklist.key,
					  (const char *)kv->blocklist.data, kv->blocklist.len, err,
					  errlen);
	return 0;
}

int trust_snapshot_build(const struct config *cfg, const char *const *devices, size_t n_devices,
			 struct trust_snapshot **out, char *err, size_t errlen)
{
	return trust_snapshot_build_with(cfg, NULL, devices, n_devices, out, err, errlen);
}

int trust_snapshot_build_with(const struct config *cfg, const struct trust_kv_set *kv,
			      const char *const *devices, size_t n_devices,
			      struct trust_snapshot **out, char *err, size_t errlen)
{
	struct trust_snapshot *t = calloc(1, sizeof *t);
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	static _Atomic uint64_t generations;
	t->generation = atomic_fetch_add(&generations, 1) + 1;
	t->loaded = time(NULL);
	t->policy = (struct trust_policy){
		.require_eku = cfg->require_client_auth_eku,
		.require_digital_signature = cfg->require_digital_signature,
		.identity = cfg->identity,
		.ticket_lifetime_s = cfg->ticket_lifetime_s,
		.max_session_age_s = cfg->max_session_age_s,
	};
	if (issuers_load(t, cfg, err, errlen) != 0 ||
	    revocation_build(t, cfg, kv, err, errlen) != 0 ||
	    blocklist_build(t, cfg, kv, err, errlen) != 0 ||
	    blocklist_add_devices(&t->blocked, devices, n_devices, err, errlen) != 0) {
		trust_snapshot_free(t);
		return -1;
	}
	*out = t;
	return 0;
}

void trust_snapshot_free(struct trust_snapshot *t)
{
	if (!t)
		return;
	revocation_index_free(t->revocation);
	blocklist_free(&t->blocked);
	for (size_t i = 0; i < t->n_ca; i++)
		free((void *)t->ca[i].der);
	free(t);
}

void trust_snapshot_info(const struct trust_snapshot *t, struct tls_server_info *out)
{
	struct revocation_stats rs = {0};
	if (t->revocation)
		revocation_index_stats(t->revocation, &rs);
	*out = (struct tls_server_info){
		.generation = t->generation,
		.loaded_unix_s = (uint64_t)t->loaded,
		.issuers = (unsigned)t->n_ca,
		.revoked_serials = rs.serials,
		.crls = rs.crls,
		.blocked_entries = (unsigned)(t->blocked.n_fingerprints + t->blocked.n_devices),
	};
}

/* ---- what the data plane asks ---- */

const struct trust_policy *trust_snapshot_policy(const struct trust_snapshot *t)
{
	return &t->policy;
}

size_t trust_snapshot_ca_count(const struct trust_snapshot *t)
{
	return t->n_ca;
}

const struct trust_ca *trust_snapshot_ca(const struct trust_snapshot *t, size_t i)
{
	return &t->ca[i];
}

enum revocation_status trust_snapshot_revocation(const struct trust_snapshot *t,
						 const uint8_t issuer_sha256[32],
						 const uint8_t *serial, size_t serial_len)
{
	return revocation_lookup(t->revocation, issuer_sha256, serial, serial_len);
}

bool trust_snapshot_blocked(const struct trust_snapshot *t, const uint8_t cert_sha256[32],
			    const char *device)
{
	return blocklist_has(&t->blocked, cert_sha256, device);
}

void trust_snapshot_dates(const struct trust_snapshot *t,
			  void (*fn)(const struct trust_date *d, void *arg), void *arg)
{
	if (t->server.name[0])
		fn(&(struct trust_date){TRUST_DATE_SERVER_CERT, t->server.name,
					t->server.not_after},
		   arg);
	for (size_t i = 0; i < t->n_ca; i++)
		fn(&(struct trust_date){TRUST_DATE_ISSUER_CERT, t->ca[i].name, t->ca[i].not_after},
		   arg);
	size_t n = t->revocation ? revocation_index_issuer_count(t->revocation) : 0;
	for (size_t i = 0; i < n; i++) {
		struct revocation_issuer_info is;
		revocation_index_issuer(t->revocation, i, &is);
		if (is.crls && is.next_update)
			fn(&(struct trust_date){TRUST_DATE_CRL, is.name, (int64_t)is.next_update},
			   arg);
	}
}
