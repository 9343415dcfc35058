/*
 * config-internal: what config.c (the key table and the loader) takes from
 * values.c (the forms of a value). Private to control/config.
 */
#ifndef BEACON_CONFIG_INTERNAL_H
#define BEACON_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/* The leading decimal digits of s (at least one, no overflow); *end
 * points past them. 0 or -1. */
int config_parse_digits(const char *s, uint64_t *out, const char **end);

/* A duration in microseconds; "us" is accepted only when `micro`. 0 or -1. */
int config_parse_duration_us(const char *s, bool micro, uint64_t *out);

/* Edit distance of two short names (insertions, deletions, substitutions
 * and swaps of neighbours, case ignored); names over 63 bytes are far. */
unsigned config_name_distance(const char *a, const char *b);
/* A near miss: at most a third of the typed name away (one edit below 6). */
bool config_near_miss(const char *typed, const char *known);

#endif
