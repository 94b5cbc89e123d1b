/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one hash table: open addressing with linear probing, a power-of-two
 * number of slots, kept at most half full (so that a probe always ends).
 * It stores (hash, value) pairs; value 0 marks an empty slot, so callers
 * store a pointer, or an index + 1 into an array of their own, and compare
 * keys themselves:
 *
 *	size_t cur = 0;
 *	while ((v = htab__next(&t, hash, &cur)))
 *		if (same_key(v, key))
 *			return v;
 *	htab__add(&t, hash, new_value);
 *
 * Hash with hash.h, seeded where keys come from outside.
 */
#ifndef __PYTM_HTAB_H
#define __PYTM_HTAB_H

#include <stddef.h>
#include <stdint.h>

struct htab_slot {
	uint64_t hash;
	uint64_t val;			/* 0: empty */
};

struct htab {
	struct htab_slot *slots;
	size_t mask;			/* slots - 1 */
	size_t count;			/* values stored */
};

/* SLOTS: the first size, a power of two >= 2. -ENOMEM. */
int htab__init(struct htab *t, size_t slots);
void htab__free(struct htab *t);	/* safe on a zeroed table */
/*
 * The next value stored under HASH, starting with *CUR = 0 (then pass the
 * same CUR again); 0 when there is none left.
 */
uint64_t htab__next(const struct htab *t, uint64_t hash, size_t *cur);
/* Store VAL (not 0) under HASH, growing the table as needed. -ENOMEM. */
int htab__add(struct htab *t, uint64_t hash, uint64_t val);
/* Remove VAL stored under HASH (the table never shrinks). -ENOENT. */
int htab__remove(struct htab *t, uint64_t hash, uint64_t val);

#endif /* __PYTM_HTAB_H */
