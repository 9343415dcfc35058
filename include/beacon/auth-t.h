/*
 * auth-t: the verdicts and states that several parts share, as types only
 * (HAProxy's *-t.h: a type header includes nothing of any part). tls gives
 * each handshake an auth_result; workers count them and the control plane
 * reports them by result; the store records a device's last result and the
 * approval state an operator sets. A header that needs only these includes
 * this one, so the TLS, worker and control headers do not pull in the
 * store's functions. Their names for logs and metrics: beacon/auth.h.
 */
#ifndef BEACON_AUTH_T_H
#define BEACON_AUTH_T_H

/* A device identity (taken from the client certificate) is shorter than
 * this, its NUL included: the store's records, the TLS peer and the control
 * socket's device commands all hold it in this many bytes. */
#define STORE_DEVICE_MAX 256

/* An operator's word on a device (beaconctl devices approve / block). */
enum device_state { DEVICE_APPROVED = 0, DEVICE_UNAPPROVED = 1, DEVICE_BLOCKED = 2 };

/* Authentication result of a connection attempt, for the devices database
 * and the handshake counters (one counter per value, AUTH_RESULT_COUNT of
 * them). The values are stored in the index: append, never renumber. */
enum auth_result {
	AUTH_OK,
	AUTH_NO_CERT,
	AUTH_UNKNOWN_ISSUER,
	AUTH_EXPIRED,
	AUTH_NOT_YET_VALID,
	AUTH_REVOKED,
	AUTH_BLOCKED,
	AUTH_UNAPPROVED,
	AUTH_WRONG_USAGE,
	AUTH_OTHER,
	AUTH_RESULT_COUNT,
};

#endif
