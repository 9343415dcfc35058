/*
 * auth: the names of the shared verdicts (beacon/auth.h).
 */
#include "beacon/auth.h"

const char *auth_result_name(enum auth_result r)
{
	static const char *const names[AUTH_RESULT_COUNT] = {
		[AUTH_OK] = "ok",
		[AUTH_NO_CERT] = "no_certificate",
		[AUTH_UNKNOWN_ISSUER] = "unknown_issuer",
		[AUTH_EXPIRED] = "expired",
		[AUTH_NOT_YET_VALID] = "not_yet_valid",
		[AUTH_REVOKED] = "revoked",
		[AUTH_BLOCKED] = "blocked",
		[AUTH_UNAPPROVED] = "unapproved",
		[AUTH_WRONG_USAGE] = "wrong_usage",
		[AUTH_OTHER] = "other",
	};
	return (unsigned)r < AUTH_RESULT_COUNT ? names[r] : "invalid";
}
