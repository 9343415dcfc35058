/*
 * auth: the names of the shared verdicts in beacon/auth-t.h, as logs,
 * beaconctl, the control socket's JSON and /metrics print them. Pure
 * functions over constant tables, safe from any thread; part of
 * beacon_common, so a part that prints a result links no store or TLS code.
 */
#ifndef BEACON_AUTH_H
#define BEACON_AUTH_H

#include "beacon/auth-t.h"

/* "ok", "no_certificate", "unknown_issuer", ...; "invalid" for a value
 * out of range. */
const char *auth_result_name(enum auth_result r);

#endif
