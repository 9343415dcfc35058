/*
 * watch: the trust files' fingerprint that trust_tick compares once a
 * second ([server] watch). Polling stat(2) rather than inotify: it sees a
 * CRL directory replaced by a rename as well as a file rewritten in place,
 * and costs a few system calls a second.
 */
#include "beacon/config.h"
#include "trust-internal.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

static uint64_t mix(uint64_t h, uint64_t v)
{
	return (h ^ v) * 0x100000001b3ull;
}

static uint64_t path_signature(uint64_t h, const char *path)
{
	struct stat st;
	if (!path[0] || stat(path, &st) != 0)
		return mix(h, 1);
	h = mix(mix(mix(h, (uint64_t)st.st_mtim.tv_sec), (uint64_t)st.st_mtim.tv_nsec),
		(uint64_t)st.st_size);
	if (!S_ISDIR(st.st_mode))
		return h;
	DIR *d = opendir(path);
	if (!d)
		return h;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char sub[CONFIG_PATH_MAX + 256];
		snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
		struct stat fs;
		if (stat(sub, &fs) == 0)
			h = mix(mix(h, (uint64_t)fs.st_mtim.tv_nsec ^ (uint64_t)fs.st_mtim.tv_sec),
				(uint64_t)fs.st_size ^ e->d_ino);
	}
	closedir(d);
	return h;
}

uint64_t trust_files_signature(const struct config *cfg)
{
	uint64_t h = 0xcbf29ce484222325ull;
	const char *paths[] = {cfg->cert,    cfg->key,	     cfg->issuers,
			       cfg->crl_dir, cfg->blocklist, cfg->ticket_key_file};
	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
		h = path_signature(h, paths[i]);
	return h;
}
