/*
 * nkey: the public key of a NATS user nkey, from the text of a file that
 * holds its seed. Internal to natsconn.
 */
#ifndef BEACON_NATSCONN_NKEY_H
#define BEACON_NATSCONN_NKEY_H

/* A user public key: 'U' and 55 more base32 characters. */
#define NKEY_PUBLIC_CHARS 56

/* Finds a user seed ("SU...", bare or in nk's or nsc's decorated form) in
 * text and writes its public key to out. 0, or -1 when text holds no user
 * seed with a valid checksum. Keeps no copy of the seed. */
int nkey_user_public(const char *text, char out[NKEY_PUBLIC_CHARS + 1]);

#endif
