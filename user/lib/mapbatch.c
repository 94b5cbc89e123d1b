// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include "mapbatch.h"

int map_batch__init(struct map_batch *b, int fd, size_t ksz, size_t vsz, uint32_t cap)
{
	memset(b, 0, sizeof(*b));
	b->fd = fd;
	b->cap = cap;
	b->keys = calloc(cap, ksz);
	b->vals = calloc(cap, vsz);
	/* A hash map's position is a bucket index; a key's room is more than enough. */
	b->pos = calloc(1, ksz < 8 ? 8 : ksz);
	if (!b->keys || !b->vals || !b->pos) {
		map_batch__free(b);
		b->err = -ENOMEM;
		b->done = true;
		return -ENOMEM;
	}
	return 0;
}

bool map_batch__next(struct map_batch *b)
{
	int err;

	if (b->done)
		return false;
	b->count = b->cap;
	/* In and out may be the same: the kernel reads one before it writes the other. */
	err = bpf_map_lookup_batch(b->fd, b->started ? b->pos : NULL, b->pos, b->keys,
				   b->vals, &b->count, NULL);
	b->started = true;
	if (err && errno != ENOENT) {
		b->err = -errno;
		b->count = 0;
		b->done = true;
		return false;
	}
	if (err)		/* ENOENT: this is the last batch */
		b->done = true;
	return b->count > 0 || !b->done;
}

void map_batch__free(struct map_batch *b)
{
	free(b->keys);
	free(b->vals);
	free(b->pos);
	b->keys = b->vals = b->pos = NULL;
}
