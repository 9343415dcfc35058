/*
 * Blocks of 4 and 8 KiB for wolfSSL's large, short-lived allocations, off
 * glibc's heap. See alloc.h for why and for the memory bound.
 *
 * Each size has one reserved range (PROT_NONE until used, so it costs no
 * commit charge) cut into blocks. A block is in one of three places: in
 * use; a spare on some thread's list (resident, reused at once); or free
 * with its pages given back, on the size's shared stack. New blocks are
 * taken from the range's unused end, which is made writable 64 blocks at a
 * time. Only the shared part takes a lock; a thread's spares need none.
 */
#include "alloc.h"

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/memory.h>

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* AddressSanitizer: gcc says so with __SANITIZE_ADDRESS__, clang (the fuzz
 * build) with __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define TLS_ALLOC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TLS_ALLOC_ASAN 1
#endif
#endif

#ifdef TLS_ALLOC_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
/* The leak checker scans malloc's chunks, stacks and globals, not mappings
 * of our own; blocks hold pointers to malloc's memory (a context's
 * certificates), which it would otherwise call leaked. */
#define SCAN_FOR_LEAKS(p, len) __lsan_register_root_region(p, len)
/* A block is not malloc's, so ASan knows nothing of its bounds: we say
 * them. Only the bytes asked for are addressable; the rest of the block,
 * and all of a block not in use, are poisoned, so an overflow or a use
 * after free inside the blocks (wolfSSL's Arrays hold the handshake's
 * secrets) is reported as it would be on malloc's heap. */
#define POISON(p, len) ASAN_POISON_MEMORY_REGION(p, len)
#define UNPOISON(p, len) ASAN_UNPOISON_MEMORY_REGION(p, len)
#else
#define SCAN_FOR_LEAKS(p, len) ((void)(p), (void)(len))
#define POISON(p, len) ((void)(p), (void)(len))
#define UNPOISON(p, len) ((void)(p), (void)(len))
#endif

#define NSIZES 2
#define GROW_BLOCKS 64

struct block_range {
	size_t block;	      /* bytes per block */
	uint8_t *base;	      /* the reserved range: TLS_ALLOC_BLOCKS blocks */
	pthread_mutex_t lock; /* guards the fields below */
	uint32_t writable;    /* blocks [0, writable) are read-write */
	uint32_t fresh;	      /* blocks [0, fresh) have been handed out */
	uint32_t nfree;	      /* given-back blocks on free_stack */
	uint32_t free_stack[TLS_ALLOC_BLOCKS];
};

static struct block_range ranges[NSIZES] = {
	{.block = 4096, .lock = PTHREAD_MUTEX_INITIALIZER},
	{.block = 8192, .lock = PTHREAD_MUTEX_INITIALIZER},
};

/* A thread's spares: a LIFO list threaded through the blocks themselves
 * (they are resident), so the most recently used is reused first. */
struct spares {
	void *head[NSIZES];
	unsigned n[NSIZES];
	bool registered;
};

static _Thread_local struct spares spares;
static pthread_key_t spares_key;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_rc = -1;

static int size_class(size_t size)
{
	if (size < TLS_ALLOC_MIN)
		return -1;
	for (int c = 0; c < NSIZES; c++)
		if (size <= ranges[c].block)
			return c;
	return -1;
}

/* The range p's block lies in, or -1 for malloc's memory. */
static int block_class(const void *p)
{
	for (int c = 0; c < NSIZES; c++) {
		const struct block_range *r = &ranges[c];
		if (r->base &&
		    (uintptr_t)p - (uintptr_t)r->base < (uintptr_t)TLS_ALLOC_BLOCKS * r->block)
			return c;
	}
	return -1;
}

/* ---- the shared part: blocks never used, or given back ---- */

static void *range_take(struct block_range *r)
{
	void *p = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->nfree > 0) {
		p = r->base + (size_t)r->free_stack[--r->nfree] * r->block;
	} else if (r->fresh < TLS_ALLOC_BLOCKS) {
		if (r->fresh == r->writable &&
		    mprotect(r->base + (size_t)r->writable * r->block, GROW_BLOCKS * r->block,
			     PROT_READ | PROT_WRITE) == 0)
			r->writable += GROW_BLOCKS;
		if (r->fresh < r->writable)
			p = r->base + (size_t)r->fresh++ * r->block;
	}
	pthread_mutex_unlock(&r->lock);
	return p;
}

/* The block's pages go back to the system now; the next user of the block
 * gets zeroed pages. */
static void range_give_back(struct block_range *r, void *p)
{
	madvise(p, r->block, MADV_DONTNEED);
	POISON(p, r->block);
	uint32_t i = (uint32_t)(((uint8_t *)p - r->base) / r->block);
	pthread_mutex_lock(&r->lock);
	r->free_stack[r->nfree++] = i;
	pthread_mutex_unlock(&r->lock);
}

/* ---- a thread's spares ---- */

static void *spares_pop(int c)
{
	void *p = spares.head[c];
	if (p) {
		UNPOISON(p, sizeof(void *)); /* the link to the next spare */
		memcpy(&spares.head[c], p, sizeof(void *));
		spares.n[c]--;
	}
	return p;
}

/* A thread that ends gives its spares back (pthread key destructor). */
static void spares_flush(void *arg)
{
	(void)arg;
	for (int c = 0; c < NSIZES; c++) {
		void *p;
		while ((p = spares_pop(c)))
			range_give_back(&ranges[c], p);
	}
	spares.registered = false;
}

static void spares_push(int c, void *p)
{
	if (spares.n[c] >= TLS_ALLOC_KEEP) {
		range_give_back(&ranges[c], p);
		return;
	}
	if (!spares.registered)
		spares.registered = pthread_setspecific(spares_key, &spares) == 0;
	UNPOISON(p, sizeof(void *));
	memcpy(p, &spares.head[c], sizeof(void *));
	POISON(p, ranges[c].block);
	spares.head[c] = p;
	spares.n[c]++;
}

/* p's block, as a user of `size` bytes sees it. */
static void *block_expose(int c, void *p, size_t size)
{
	UNPOISON(p, size);
	POISON((uint8_t *)p + size, ranges[c].block - size);
	return p;
}

/* The bytes of block p a move must keep: with ASan, those its user may
 * touch (the rest are poisoned); without, the whole block. */
static size_t block_in_use(int c, void *p)
{
#ifdef TLS_ALLOC_ASAN
	void *bad = __asan_region_is_poisoned(p, ranges[c].block);
	return bad ? (size_t)((uint8_t *)bad - (uint8_t *)p) : ranges[c].block;
#else
	(void)p;
	return ranges[c].block;
#endif
}

/* ---- malloc, free, realloc ---- */

void *tls_alloc_malloc(size_t size)
{
	int c = size_class(size);
	void *p = NULL;
	if (c >= 0 && install_rc == 0) {
		p = spares_pop(c);
		if (!p)
			p = range_take(&ranges[c]);
	}
	return p ? block_expose(c, p, size) : malloc(size);
}

void tls_alloc_free(void *p)
{
	int c = block_class(p);
	if (c < 0)
		free(p);
	else
		spares_push(c, p);
}

void *tls_alloc_realloc(void *p, size_t size)
{
	if (!p)
		return tls_alloc_malloc(size);
	if (size == 0) {
		tls_alloc_free(p);
		return NULL;
	}
	int from = block_class(p), to = size_class(size);
	if (from < 0 && to < 0)
		return realloc(p, size);
	if (from >= 0 && from == to)
		return block_expose(from, p, size);
	/* Across the threshold, or between block sizes: move. malloc's
	 * usable size covers what was asked. */
	size_t old = from >= 0 ? block_in_use(from, p) : malloc_usable_size(p);
	void *q = tls_alloc_malloc(size);
	if (!q)
		return NULL;
	memcpy(q, p, old < size ? old : size);
	tls_alloc_free(p);
	return q;
}

unsigned tls_alloc_spares(size_t block)
{
	for (int c = 0; c < NSIZES; c++)
		if (ranges[c].block == block)
			return spares.n[c];
	return 0;
}

/* ---- installation ---- */

static void install(void)
{
	if (pthread_key_create(&spares_key, spares_flush) != 0)
		return;
	for (int c = 0; c < NSIZES; c++) {
		void *base = mmap(NULL, (size_t)TLS_ALLOC_BLOCKS * ranges[c].block, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (base == MAP_FAILED)
			return;
		ranges[c].base = base;
		SCAN_FOR_LEAKS(base, (size_t)TLS_ALLOC_BLOCKS * ranges[c].block);
	}
	if (wolfSSL_SetAllocators(tls_alloc_malloc, tls_alloc_free, tls_alloc_realloc) == 0)
		install_rc = 0;
}

int tls_alloc_install(void)
{
	pthread_once(&install_once, install);
	return install_rc;
}
