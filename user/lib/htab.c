// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "htab.h"

int htab__init(struct htab *t, size_t slots)
{
	memset(t, 0, sizeof(*t));
	if (slots < 2 || (slots & (slots - 1)))
		return -EINVAL;
	t->slots = calloc(slots, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->mask = slots - 1;
	return 0;
}

void htab__free(struct htab *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

uint64_t htab__next(const struct htab *t, uint64_t hash, size_t *cur)
{
	const struct htab_slot *s;
	size_t k;

	if (!t->slots)
		return 0;
	for (k = *cur;; k++) {
		s = &t->slots[(hash + k) & t->mask];
		if (!s->val) {
			*cur = k;
			return 0;
		}
		if (s->hash == hash) {
			*cur = k + 1;
			return s->val;
		}
	}
}

static void put(struct htab_slot *slots, size_t mask, uint64_t hash, uint64_t val)
{
	size_t i;

	for (i = hash & mask; slots[i].val; i = (i + 1) & mask)
		;
	slots[i].hash = hash;
	slots[i].val = val;
}

int htab__add(struct htab *t, uint64_t hash, uint64_t val)
{
	struct htab_slot *slots;
	size_t size, i;

	if (!val)
		return -EINVAL;
	if (!t->slots && htab__init(t, 16))
		return -ENOMEM;
	if ((t->count + 1) * 2 > t->mask + 1) {
		size = (t->mask + 1) * 2;
		if (!size || size > SIZE_MAX / sizeof(*slots))
			return -ENOMEM;
		slots = calloc(size, sizeof(*slots));
		if (!slots)
			return -ENOMEM;
		for (i = 0; i <= t->mask; i++)
			if (t->slots[i].val)
				put(slots, size - 1, t->slots[i].hash, t->slots[i].val);
		free(t->slots);
		t->slots = slots;
		t->mask = size - 1;
	}
	put(t->slots, t->mask, hash, val);
	t->count++;
	return 0;
}

int htab__remove(struct htab *t, uint64_t hash, uint64_t val)
{
	size_t i, j, home;

	if (!t->slots)
		return -ENOENT;
	for (i = hash & t->mask; t->slots[i].val; i = (i + 1) & t->mask)
		if (t->slots[i].hash == hash && t->slots[i].val == val)
			break;
	if (!t->slots[i].val)
		return -ENOENT;
	/* Backward shift: move up each later entry whose probe passed the hole. */
	for (j = (i + 1) & t->mask; t->slots[j].val; j = (j + 1) & t->mask) {
		home = t->slots[j].hash & t->mask;
		if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
			t->slots[i] = t->slots[j];
			i = j;
		}
	}
	t->slots[i].val = 0;
	t->slots[i].hash = 0;
	t->count--;
	return 0;
}
