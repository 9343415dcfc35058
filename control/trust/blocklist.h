/* Private to control/trust: the block list of a trust snapshot (the data
 * plane asks it through trust_snapshot_blocked). */
#ifndef BEACON_BLOCKLIST_H
#define BEACON_BLOCKLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sorted arrays: built once per snapshot, looked up on every handshake with
 * a binary search (the list is operator-made: thousands, not millions). */
struct blocklist {
	uint8_t (*fingerprints)[32];
	size_t n_fingerprints;
	char **devices;
	size_t n_devices;
};

/*
 * Reads `path`: one entry a line, "sha256:<64 hex digits>" (a certificate
 * fingerprint, colons between bytes allowed) or "device:<identity>"; blank
 * lines and lines starting with '#' are skipped. Errors name the file and
 * line. 0, or -1 with err set (bl is then empty).
 */
int blocklist_load(struct blocklist *bl, const char *path, char *err, size_t errlen);
/* Adds the entries of a block list held in memory (the file's format),
 * errors naming `label` and the line; bl keeps what it had. 0, or -1 with
 * err set (the caller frees bl). */
int blocklist_add_text(struct blocklist *bl, const char *label, const char *text, size_t len,
		       char *err, size_t errlen);
/* Adds device identities (kept sorted). 0, or -1 with err set. */
int blocklist_add_devices(struct blocklist *bl, const char *const *devices, size_t n, char *err,
			  size_t errlen);
bool blocklist_has(const struct blocklist *bl, const uint8_t sha256[32], const char *device);
void blocklist_free(struct blocklist *bl);

#endif
