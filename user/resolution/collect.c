// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include "pytm.h"
#include "collect.h"
#include "rec_drain.h"
#include "hash.h"
#include "mapbatch.h"
#include "resolve.h"

#define BATCH 4096

/* stack id -> interned traceback, open addressing. */
struct tb_cache {
	uint64_t *ids;
	const struct pytm_traceback **tbs;
	size_t cap, n;
};

static int cache_grow(struct tb_cache *c)
{
	struct tb_cache nc = { .cap = c->cap ? c->cap * 2 : 1024 };
	size_t i, j;

	nc.ids = calloc(nc.cap, sizeof(*nc.ids));
	nc.tbs = calloc(nc.cap, sizeof(*nc.tbs));
	if (!nc.ids || !nc.tbs) {
		free(nc.ids);
		free(nc.tbs);
		return -ENOMEM;
	}
	for (i = 0; i < c->cap; i++) {
		if (!c->ids[i])
			continue;
		for (j = c->ids[i] & (nc.cap - 1); nc.ids[j]; j = (j + 1) & (nc.cap - 1))
			;
		nc.ids[j] = c->ids[i];
		nc.tbs[j] = c->tbs[i];
	}
	nc.n = c->n;
	free(c->ids);
	free(c->tbs);
	*c = nc;
	return 0;
}

/* Slot of ID (found or free). */
static size_t cache_slot(const struct tb_cache *c, uint64_t id)
{
	size_t j;

	for (j = id & (c->cap - 1); c->ids[j] && c->ids[j] != id; j = (j + 1) & (c->cap - 1))
		;
	return j;
}

/* What turning stack ids into tracebacks needs: a cache and scratch space. */
struct tb_ctx {
	struct tb_cache cache;
	struct pytm_stack *st;
	struct pytm_frame_info *fi;
};

static int tb_ctx__init(struct tb_ctx *c)
{
	memset(c, 0, sizeof(*c));
	c->st = calloc(1, sizeof(*c->st));
	c->fi = calloc(PYTM_MAX_FRAMES, sizeof(*c->fi));
	return c->st && c->fi && !cache_grow(&c->cache) ? 0 : -ENOMEM;
}

static void tb_ctx__free(struct tb_ctx *c)
{
	free(c->st);
	free(c->fi);
	free(c->cache.ids);
	free(c->cache.tbs);
}

/* The recorder's stacks in the cache: ids that BPF's (hashes) do not take. */
#define REC_STACK	(1ULL << 63)

/*
 * The traceback of stack ID: BPF's from the stacks map, or with GIVEN (a
 * recorder's, ID | REC_STACK) that one.
 */
static const struct pytm_traceback *traceback_of(struct tb_ctx *ctx, int stacks_fd,
		uint64_t id, const struct pytm_stack *given, struct snapshot *s,
		struct resolver *r, int frames)
{
	struct tb_cache *c = &ctx->cache;
	const struct pytm_stack *st = given ?: ctx->st;
	struct pytm_frame_info *fi = ctx->fi;
	const struct pytm_traceback *tb;
	unsigned int i, n;
	size_t j = 0;

	if (id) {
		if (c->n * 2 >= c->cap && cache_grow(c))
			return NULL;
		j = cache_slot(c, id);
		if (c->ids[j])
			return c->tbs[j];
	}
	if (!id || (!given && bpf_map_lookup_elem(stacks_fd, &id, ctx->st))) {
		/* tracemalloc's empty traceback: one unknown frame. */
		fi[0] = (struct pytm_frame_info){ .filename = snapshot__intern(s, "<unknown>") };
		return snapshot__traceback(s, fi, 1, 1);
	}
	n = st->nframe > (unsigned int)frames ? (unsigned int)frames : st->nframe;
	for (i = 0; i < n; i++)
		resolver__frame(r, st->frames[i], s, &fi[i]);
	tb = snapshot__traceback(s, fi, n, st->total_nframe);
	if (tb) {
		c->ids[j] = id;
		c->tbs[j] = tb;
		c->n++;
	}
	return tb;
}

/*
 * How many blocks a block record stands for: 1, or for a sample
 * weight / size = 1 / (1 - exp(-size/R)), rounded up or down at random
 * with the odds that keep it unbiased (deterministic per block, from its
 * address). A sample of size 0 cannot be (its probability is 0).
 */
static uint64_t blocks_of(const struct pytm_block_key *k, const struct pytm_block *b)
{
	double c, frac;
	uint64_t whole;

	if (b->weight == b->size || !b->size)
		return 1;
	c = (double)b->weight / (double)b->size;
	whole = (uint64_t)c;
	frac = c - (double)whole;
	return whole + ((double)(hash__mix64(k->addr ^ (uint64_t)k->pid << 48) >> 11) *
			0x1p-53 < frac);
}

/* One live block into S. */
static int add_block(struct snapshot *s, struct tb_ctx *c, int stacks_fd,
		     const struct pytm_block_key *key, const struct pytm_block *b,
		     struct resolver *r, int frames)
{
	const struct pytm_traceback *tb;

	tb = traceback_of(c, stacks_fd, b->stack_id, NULL, s, r, frames);
	if (!tb || snapshot__add_block(s, key->domain & PYTM_DOMAIN_MASK, b->weight,
				       blocks_of(key, b), b->born, tb))
		return -ENOMEM;
	return 0;
}

/* One of the recorder's blocks into a snapshot. */
struct rec_add {
	struct snapshot *s;
	struct tb_ctx *c;
	struct resolver *r;
	int frames;
};

static int add_recorded(void *arg, const struct recorder_block *b, const struct pytm_stack *st,
			uint32_t stack)
{
	struct rec_add *a = arg;
	const struct pytm_traceback *tb;

	tb = traceback_of(a->c, -1, st ? stack | REC_STACK : 0, st, a->s, a->r, a->frames);
	if (!tb || snapshot__add_block(a->s, 0, b->size, 1, b->born, tb))
		return -ENOMEM;
	return 0;
}

/* The live blocks of PID in the map BLOCKS_FD (see collect) into S. */
static int collect_map(struct snapshot *s, struct tb_ctx *c, int blocks_fd, int stacks_fd,
		       pid_t pid, uint64_t peak_ns, int frames, struct resolver *r)
{
	struct map_batch b = { 0 };
	__u32 i;
	int err = 0;

	if (map_batch__init(&b, blocks_fd, sizeof(struct pytm_block_key),
			    sizeof(struct pytm_block), BATCH))
		return -ENOMEM;
	while (!err && map_batch__next(&b)) {
		const struct pytm_block_key *keys = b.keys;
		const struct pytm_block *vals = b.vals;

		for (i = 0; i < b.count && !err; i++) {
			/*
			 * Blocks born while finalizing are not in the frozen set;
			 * tombstones are no blocks (see pytm_proc.inheriting).
			 */
			if (keys[i].pid != (__u32)pid ||
			    (keys[i].domain & (PYTM_DOMAIN_LATE | PYTM_DOMAIN_TOMB)) ||
			    (peak_ns && vals[i].born > peak_ns))
				continue;
			if (add_block(s, c, stacks_fd, &keys[i], &vals[i], r, frames))
				err = -ENOMEM;
		}
	}
	err = err ?: b.err;
	map_batch__free(&b);
	return err;
}

/*
 * The live blocks of PID in BLOCKS_FDS (NBLOCKS maps); with PEAK_NS, only
 * those born by then, and those of FREED_FD (freed since, with when) that
 * were: its set at that moment.
 */
static struct snapshot *collect(const int *blocks_fds, int nblocks, int freed_fd, int stacks_fd,
				pid_t pid, uint64_t peak_ns, int frames, struct resolver *r,
				struct recorder *rec)
{
	struct map_batch f = { 0 };
	struct snapshot *s = NULL;
	struct tb_ctx c;
	__u32 i;
	int g, err = tb_ctx__init(&c);

	s = snapshot__new(frames);
	if (err || !s ||
	    (peak_ns && map_batch__init(&f, freed_fd, sizeof(struct pytm_block_key),
					sizeof(struct pytm_freed), BATCH))) {
		err = -ENOMEM;
		goto cleanup;
	}
	for (g = 0; g < nblocks && !err; g++)
		err = collect_map(s, &c, blocks_fds[g], stacks_fd, pid, peak_ns, frames, r);
	if (!err && rec)
		err = (peak_ns ? recorder__peak_each : recorder__each)(rec, add_recorded,
			&(struct rec_add){ .s = s, .c = &c, .r = r, .frames = frames });
	while (!err && peak_ns && map_batch__next(&f)) {
		const struct pytm_block_key *keys = f.keys;
		const struct pytm_freed *vals = f.vals;

		for (i = 0; i < f.count && !err; i++) {
			if (keys[i].pid != (__u32)pid || vals[i].b.born > peak_ns ||
			    vals[i].freed <= peak_ns)
				continue;
			if (add_block(s, &c, stacks_fd, &keys[i], &vals[i].b, r, frames))
				err = -ENOMEM;
		}
	}
	err = err ?: f.err;
cleanup:
	map_batch__free(&f);
	tb_ctx__free(&c);
	if (err) {
		snapshot__free(s);
		errno = -err;
		return NULL;
	}
	return s;
}

struct snapshot *collect__snapshot(const int *blocks_fds, int nblocks, int stacks_fd, pid_t pid,
				   int frames, struct resolver *r, struct recorder *rec)
{
	return collect(blocks_fds, nblocks, -1, stacks_fd, pid, 0, frames, r, rec);
}

struct snapshot *collect__peak(const int *blocks_fds, int nblocks, int freed_fd, int stacks_fd,
			       pid_t pid, uint64_t peak_ns, int frames, struct resolver *r)
{
	return collect(blocks_fds, nblocks, freed_fd, stacks_fd, pid, peak_ns ?: 1, frames, r,
		       NULL);
}

struct snapshot *collect__rec_peak(const int *blocks_fds, int nblocks, int freed_fd,
				   int stacks_fd, pid_t pid, uint64_t *peak_ns, int frames,
				   struct resolver *r, struct recorder *rec)
{
	*peak_ns = recorder__peak_mark(rec);
	if (!*peak_ns)
		return snapshot__new(frames);
	return collect(blocks_fds, nblocks, freed_fd, stacks_fd, pid, *peak_ns, frames, r, rec);
}

struct snapshot *collect__allocs(int allocs_fd, int stacks_fd, pid_t pid,
				 int frames, struct resolver *r)
{
	struct pytm_alloc_key key, next;
	struct snapshot *s = NULL;
	const struct pytm_traceback *tb;
	struct pytm_alloc a;
	struct tb_ctx c;
	bool first = true;
	uint64_t objs;
	int err = tb_ctx__init(&c);

	s = snapshot__new(frames);
	if (err || !s) {
		err = -ENOMEM;
		goto cleanup;
	}
	/* One entry per traceback, not per block: a plain walk is enough. */
	while (!bpf_map_get_next_key(allocs_fd, first ? NULL : &key, &next)) {
		first = false;
		key = next;
		if (key.pid != (__u32)pid || bpf_map_lookup_elem(allocs_fd, &key, &a))
			continue;
		/* Round the fixed-point count to the nearest object. */
		objs = (a.objects + (1ULL << (PYTM_ALLOC_OBJ_SHIFT - 1))) >> PYTM_ALLOC_OBJ_SHIFT;
		tb = traceback_of(&c, stacks_fd, key.stack_id, NULL, s, r, frames);
		if (!tb || snapshot__add_estimate(s, key.domain, a.bytes, objs ?: 1, tb)) {
			err = -ENOMEM;
			goto cleanup;
		}
	}
cleanup:
	tb_ctx__free(&c);
	if (err) {
		snapshot__free(s);
		errno = -err;
		return NULL;
	}
	return s;
}
