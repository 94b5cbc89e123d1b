/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Hashing for the tool's tables. Keys may come from files and targets
 * (file names are untrusted): tables seed their hashes with hash__seed().
 */
#ifndef __PYTM_HASH_H
#define __PYTM_HASH_H

#include <stddef.h>
#include <stdint.h>

/* A 64-bit finalizer (MurmurHash3's fmix64): every input bit moves every output bit. */
static inline uint64_t hash__mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* LEN bytes at P, from SEED (or from a previous hash, to chain). */
uint64_t hash__bytes(uint64_t seed, const void *p, size_t len);
/* The same for a NUL-terminated string. */
uint64_t hash__str(uint64_t seed, const char *s);
/* A random seed (getrandom; without entropy yet, still per process and run). */
uint64_t hash__seed(void);

#endif /* __PYTM_HASH_H */
