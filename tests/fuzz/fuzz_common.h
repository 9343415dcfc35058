/*
 * What the fuzz targets share: CHECK, which aborts (libFuzzer reports it as
 * a crash with the input), and a private temporary directory per process
 * for the targets whose parser reads a file.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);  \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A directory under $TMPDIR (or /tmp) made once and removed at exit, with
 * what was written into it by fuzz_write_file. */
static char fuzz_dir[256];
static char fuzz_file_path[300];

static inline void fuzz_dir_remove(void)
{
	if (fuzz_file_path[0])
		unlink(fuzz_file_path);
	if (fuzz_dir[0])
		rmdir(fuzz_dir);
}

static inline const char *fuzz_dir_get(void)
{
	if (!fuzz_dir[0]) {
		const char *tmp = getenv("TMPDIR");
		snprintf(fuzz_dir, sizeof fuzz_dir, "%s/beacon-fuzz-XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(fuzz_dir)) {
			perror("mkdtemp");
			abort();
		}
		atexit(fuzz_dir_remove);
	}
	return fuzz_dir;
}

/* Writes data to DIR/name (replacing it) and returns the path. */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size)
{
	snprintf(fuzz_file_path, sizeof fuzz_file_path, "%s/%s", fuzz_dir_get(), name);
	FILE *f = fopen(fuzz_file_path, "wb");
	if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
		perror(fuzz_file_path);
		abort();
	}
	return fuzz_file_path;
}

/* True when s is a NUL-terminated string inside buf[0..cap). */
static inline int fuzz_terminated(const char *s, size_t cap)
{
	for (size_t i = 0; i < cap; i++)
		if (!s[i])
			return 1;
	return 0;
}

#endif
