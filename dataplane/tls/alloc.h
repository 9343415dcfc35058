/*
 * Private to dataplane/tls: where wolfSSL's large allocations live.
 *
 * A handshake allocates objects of 3 to 8 KiB that die with it (wolfSSL's
 * Arrays, 3,368 bytes; an ecc_key, 4,232, for each signature check). On
 * glibc's heap they sit between the small objects that established
 * sessions keep, and when thousands of handshakes run at once the holes
 * they leave cannot be given back: idle connections then cost twice their
 * live bytes (perf/README.md, "Idle connections with an OpenSSL client").
 * So every wolfSSL allocation of TLS_ALLOC_MIN bytes up to 8 KiB takes a
 * block of 4 or 8 KiB from a reserved address range of its own instead;
 * smaller ones (and larger: record buffers) stay with malloc, unchanged.
 *
 * Blocks of a size are interchangeable: any thread may free any block
 * (the control thread frees contexts a worker's sessions held last). A
 * freed block goes to the freeing thread's spares, at most TLS_ALLOC_KEEP
 * of each size, reused without a lock or a system call; past that, its
 * pages go back to the system (madvise) and the block to a shared list.
 * The memory bound: what live allocations hold, plus TLS_ALLOC_KEEP
 * spares of 4 KiB and of 8 KiB for each thread that freed some
 * (TLS_ALLOC_KEEP * 12 KiB = 384 KiB at most a thread), whatever a burst
 * took. When the range is used up, allocations fall back to malloc.
 */
#ifndef BEACON_TLS_ALLOC_H
#define BEACON_TLS_ALLOC_H

#include <stddef.h>

/* Smaller allocations stay with malloc: long-lived ones (a WOLFSSL is
 * 1,456 bytes) would each waste most of a block. */
#define TLS_ALLOC_MIN 3000
/* Spare blocks a thread keeps of each size (4 and 8 KiB). */
#define TLS_ALLOC_KEEP 32
/* Blocks of each size in the reserved range: 128 MiB of 4 KiB, 256 MiB
 * of 8 KiB, address space only until used. */
#define TLS_ALLOC_BLOCKS 32768

/* Reserves the ranges and makes wolfSSL allocate through the functions
 * below. Once, before other threads use wolfSSL; idempotent. 0, or -1
 * (wolfSSL then keeps malloc). Pointers wolfSSL took from malloc before
 * are still freed correctly: a block is known by its address. */
int tls_alloc_install(void);

/* malloc, free and realloc with the rules above; any thread. */
void *tls_alloc_malloc(size_t size);
void tls_alloc_free(void *p);
void *tls_alloc_realloc(void *p, size_t size);

/* How many spare blocks of size `block` (4096 or 8192) this thread keeps. */
unsigned tls_alloc_spares(size_t block);

#endif
