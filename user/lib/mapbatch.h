/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one walk over a BPF hash map by batches (BPF_MAP_LOOKUP_BATCH):
 *
 *	struct map_batch b;
 *
 *	if (map_batch__init(&b, fd, sizeof(key), sizeof(val), 4096))
 *		return -ENOMEM;
 *	while (map_batch__next(&b))
 *		for (i = 0; i < b.count; i++)
 *			... ((struct key *)b.keys)[i], ((struct val *)b.vals)[i] ...
 *	err = b.err;
 *	map_batch__free(&b);
 *
 * Deleting entries behind the walk's position is safe in a hash map.
 */
#ifndef __PYTM_MAPBATCH_H
#define __PYTM_MAPBATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct map_batch {
	int fd;
	uint32_t cap;			/* entries per batch */
	uint32_t count;			/* entries in keys/vals now */
	void *keys, *vals;		/* cap entries each */
	void *pos;			/* the kernel's opaque position: a key's room */
	bool started, done;
	int err;			/* negative errno once the walk failed */
};

/* -ENOMEM, or 0; B is safe to free either way. */
int map_batch__init(struct map_batch *b, int fd, size_t ksz, size_t vsz, uint32_t cap);
/* The next batch (count may be 0); false at the end, or on error (b->err). */
bool map_batch__next(struct map_batch *b);
void map_batch__free(struct map_batch *b);

#endif /* __PYTM_MAPBATCH_H */
