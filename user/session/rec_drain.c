// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The drain of the in-target recorder's ring (see rec_drain.h).
 *
 * Order. The ring gives one process's events in the order of their
 * positions, which for any one block is the order they happened (ring.c).
 * A free that found the ring full went BPF's way as a tombstone with its
 * number, the ring's head right after the ring refused it: every
 * ring event numbered before it has a position below the ring's head as
 * read once the tombstone is seen. So a tombstone waits until the drain
 * has passed that head, then frees the block at its address if that one
 * was allocated before it (numbered below it); a block allocated after
 * it at the same address is another, and stays.
 *
 * Code objects. A frame names its code object by address; the table
 * gives it a session id (BPF's counter, so that ids are one space) the
 * first time the ring shows it, and the resolver reads it then (its frame
 * runs: it is alive). Its free takes it out of the table: the same
 * address is another code object afterwards.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>
#include "hash.h"
#include "htab.h"
#include "rec_drain.h"
#include "recorder.h"	/* page/: the ring's events */
#include "ring.h"
#include "resolve.h"
#include "util.h"

#define BATCH		4096		/* events per hold of the lock */
#define IDLE_MIN_NS	200000		/* the ring was empty: look again after, */
#define IDLE_MAX_NS	4000000		/* twice as long each time up to this (a
					 * ring of 8 MiB takes longer to fill) */
#define RETRY_NS	20000000	/* between two retries (recorder_opts) */
#define RELEASE_RUN	256		/* slots read before the tail moves */

struct tomb {
	uint64_t addr, clock, head;
};

/* Values stored in a table: index + 1 into an array, with a free list. */
struct pool {
	void *items;
	size_t size, n, cap;
	uint32_t *free;
	size_t nfree, free_cap;
};

struct code_ent {
	uint64_t addr;			/* first: see find_addr */
	uint32_t id;
	uint32_t pad;
};

struct recorder {
	struct recorder_opts o;
	struct pytm_ring_hdr *h;
	uint8_t *slots;
	pthread_t thread;
	bool started;
	volatile int stop;
	pthread_mutex_t lock;
	pthread_mutex_t r_lock;		/* innermost: around the resolver */
	uint64_t seed;
	struct htab live;		/* hash(addr) -> block index + 1 */
	struct pool blocks;
	struct htab codes;		/* hash(addr) -> code index + 1 */
	struct pool code_ents;
	struct htab stack_idx;		/* hash(frames) -> stack index + 1 */
	struct pytm_stack **stacks;
	size_t nstacks, stacks_cap;
	struct tomb *tombs;		/* waiting, in the order they came: their */
	size_t tomb0, ntombs, tombs_cap;	/* heads never decrease */
	uint64_t frozen;		/* the freeze's number + 1; 0: not frozen */
	bool retrying;			/* o.retry still to be asked */
	double next_retry;
	int64_t current, peak, bpf_current;
	uint64_t now;			/* CLOCK_MONOTONIC ns of this drain batch */
	uint32_t last_stack;		/* the stack interned last (index + 1) */
	struct { uint64_t addr; uint32_t id; } code_cache[256];	/* code_id's */
	uint64_t events, ncodes, ntombs_seen, nblocks;
	struct pytm_stack *scratch;
};

static void *pool_at(const struct pool *p, uint32_t idx1)
{
	return (char *)p->items + (size_t)(idx1 - 1) * p->size;
}

static uint32_t pool_get(struct pool *p)
{
	void *n;

	if (p->nfree)
		return p->free[--p->nfree];
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 1024;

		n = realloc(p->items, cap * p->size);
		if (!n)
			return 0;
		p->items = n;
		p->cap = cap;
	}
	return (uint32_t)++p->n;
}

static void pool_put(struct pool *p, uint32_t idx1)
{
	uint32_t *n;

	if (p->nfree == p->free_cap) {
		size_t cap = p->free_cap ? p->free_cap * 2 : 64;

		n = realloc(p->free, cap * sizeof(*n));
		if (!n)
			return;		/* leaks one slot: no harm */
		p->free = n;
		p->free_cap = cap;
	}
	p->free[p->nfree++] = idx1;
}

static void pool_free(struct pool *p)
{
	free(p->items);
	free(p->free);
	memset(p, 0, sizeof(*p));
}

static uint64_t addr_hash(const struct recorder *rec, uint64_t addr)
{
	return hash__mix64(addr ^ rec->seed);
}

/* ---- the tables ---- */

/* ADDR's item in table T of pool P (items start with their address); 0: none. */
static uint32_t find_addr(const struct recorder *rec, const struct htab *t,
			  const struct pool *p, uint64_t addr)
{
	size_t cur = 0;
	uint64_t v;

	while ((v = htab__next(t, addr_hash(rec, addr), &cur)))
		if (*(const uint64_t *)pool_at(p, (uint32_t)v) == addr)
			return (uint32_t)v;
	return 0;
}

static uint32_t block_find(const struct recorder *rec, uint64_t addr)
{
	return find_addr(rec, &rec->live, &rec->blocks, addr);
}

static void account(struct recorder *rec, int64_t delta)
{
	rec->current += delta;
	if (rec->current + rec->bpf_current > rec->peak)
		rec->peak = rec->current + rec->bpf_current;
}

static void block_drop(struct recorder *rec, uint32_t v)
{
	struct recorder_block *b = pool_at(&rec->blocks, v);

	if (!(b->flags & PYTM_DOMAIN_GONE))
		account(rec, -(int64_t)b->size);
	htab__remove(&rec->live, addr_hash(rec, b->addr), v);
	pool_put(&rec->blocks, v);
	rec->nblocks--;
}

static uint32_t code_find(const struct recorder *rec, uint64_t addr)
{
	return find_addr(rec, &rec->codes, &rec->code_ents, addr);
}

/* The session id of the code object at ADDR, read now if new (0: none). */
static uint32_t code_id(struct recorder *rec, uint64_t addr)
{
	typeof(rec->code_cache[0]) *slot = &rec->code_cache[(addr >> 4) & 255];
	struct code_ent *c;
	uint32_t v, id;

	if (slot->addr == addr && addr)
		return slot->id;
	v = code_find(rec, addr);
	if (v) {
		id = ((struct code_ent *)pool_at(&rec->code_ents, v))->id;
		slot->addr = addr;
		slot->id = id;
		return id;
	}
	v = pool_get(&rec->code_ents);
	if (!v)
		return 0;
	id = __atomic_add_fetch(rec->o.next_code_id, 1, __ATOMIC_RELAXED);
	if (htab__add(&rec->codes, addr_hash(rec, addr), v)) {
		pool_put(&rec->code_ents, v);
		return 0;
	}
	c = pool_at(&rec->code_ents, v);
	c->addr = addr;
	c->id = id;
	pthread_mutex_lock(&rec->r_lock);
	resolver__add_code(rec->o.r, id, addr);
	pthread_mutex_unlock(&rec->r_lock);
	rec->ncodes++;
	return id;
}

static void code_gone(struct recorder *rec, uint64_t addr)
{
	uint32_t v;

	if (rec->code_cache[(addr >> 4) & 255].addr == addr)
		rec->code_cache[(addr >> 4) & 255].addr = 0;
	v = code_find(rec, addr);

	if (v) {
		htab__remove(&rec->codes, addr_hash(rec, addr), v);
		pool_put(&rec->code_ents, v);
	}
}

/* Is the interned A the stack ST (LEN bytes)? A is only as long as its own. */
static bool same_stack(const struct pytm_stack *a, const struct pytm_stack *st, size_t len)
{
	return a->nframe == st->nframe && !memcmp(a, st, len);
}

/* The stack of EV, interned: index + 1, or 0 for none. */
static uint32_t intern(struct recorder *rec, const struct pytm_rec_event *ev)
{
	struct pytm_stack *st = rec->scratch, *copy;
	size_t len, cur = 0;
	uint64_t h, v;
	uint32_t i;

	st->nframe = ev->nframe > PYTM_MAX_FRAMES ? PYTM_MAX_FRAMES : ev->nframe;
	st->total_nframe = ev->total;
	for (i = 0; i < st->nframe; i++)
		st->frames[i] = PYTM_FRAME(code_id(rec, ev->frames[i].code),
					   ev->frames[i].lasti);
	len = offsetof(struct pytm_stack, frames) + st->nframe * sizeof(st->frames[0]);
	/* Events come in runs from the same place. */
	if (rec->last_stack && same_stack(rec->stacks[rec->last_stack - 1], st, len))
		return rec->last_stack;
	h = hash__bytes(rec->seed, st, len);
	while ((v = htab__next(&rec->stack_idx, h, &cur)))
		if (same_stack(rec->stacks[v - 1], st, len))
			return rec->last_stack = (uint32_t)v;
	if (rec->nstacks == rec->stacks_cap) {
		size_t cap = rec->stacks_cap ? rec->stacks_cap * 2 : 1024;
		struct pytm_stack **n = realloc(rec->stacks, cap * sizeof(*n));

		if (!n)
			return 0;
		rec->stacks = n;
		rec->stacks_cap = cap;
	}
	copy = malloc(len);
	if (!copy)
		return 0;
	memcpy(copy, st, len);
	if (htab__add(&rec->stack_idx, h, rec->nstacks + 1)) {
		free(copy);
		return 0;
	}
	rec->stacks[rec->nstacks++] = copy;
	return rec->last_stack = (uint32_t)rec->nstacks;
}

/* ---- applying events ---- */

static bool is_late(const struct recorder *rec, uint64_t clock)
{
	return rec->frozen && clock + 1 >= rec->frozen;
}

static void on_alloc(struct recorder *rec, const struct pytm_rec_event *ev, uint64_t clock)
{
	struct recorder_block *b;
	uint32_t v;

	v = block_find(rec, ev->ptr);
	if (v) {
		/* Already tracked (tracemalloc_add_trace does the same). */
		block_drop(rec, v);
	}
	v = pool_get(&rec->blocks);
	if (!v || htab__add(&rec->live, addr_hash(rec, ev->ptr), v)) {
		if (v)
			pool_put(&rec->blocks, v);
		return;
	}
	b = pool_at(&rec->blocks, v);
	b->addr = ev->ptr;
	b->size = ev->size;
	b->born = rec->now;
	b->clock = clock;
	b->flags = is_late(rec, clock) ? PYTM_DOMAIN_LATE : 0;
	b->stack = b->flags ? 0 : intern(rec, ev);
	rec->nblocks++;
	account(rec, (int64_t)ev->size);
}

static void on_free(struct recorder *rec, uint64_t addr, uint64_t clock)
{
	struct recorder_block *b;
	uint32_t v;

	code_gone(rec, addr);
	v = block_find(rec, addr);
	if (!v)
		return;
	b = pool_at(&rec->blocks, v);
	if (is_late(rec, clock) && !(b->flags & (PYTM_DOMAIN_LATE | PYTM_DOMAIN_GONE))) {
		/* Of the frozen set: it stays in it, no longer counted. */
		b->flags |= PYTM_DOMAIN_GONE;
		account(rec, -(int64_t)b->size);
		return;
	}
	block_drop(rec, v);
}

static void on_restamp(struct recorder *rec, const struct pytm_rec_event *ev, uint64_t clock)
{
	struct recorder_block *b;
	uint32_t v = block_find(rec, ev->ptr);

	if (!v || is_late(rec, clock))
		return;
	b = pool_at(&rec->blocks, v);
	if (b->flags)
		return;
	b->stack = intern(rec, ev);
	b->born = rec->now;
}

static void apply(struct recorder *rec, const struct pytm_ring_slot *s)
{
	const struct pytm_rec_event *ev = (const struct pytm_rec_event *)s->data;

	switch (ev->kind) {
	case PYTM_REC_ALLOC:
		on_alloc(rec, ev, s->clock);
		break;
	case PYTM_REC_FREE:
		on_free(rec, ev->ptr, s->clock);
		break;
	case PYTM_REC_RESTAMP:
		on_restamp(rec, ev, s->clock);
		break;
	}
	rec->events++;
}

/*
 * Tombstones whose head the drain has passed: every ring event numbered
 * before them is applied, so each is the free of the block at its address
 * if that block was allocated before it (a later one is not its block).
 */
static void tombs_apply(struct recorder *rec)
{
	uint64_t tail = __atomic_load_n(&rec->h->tail, __ATOMIC_RELAXED);
	struct recorder_block *b;
	struct tomb t;
	uint32_t v;

	while (rec->tomb0 < rec->ntombs && rec->tombs[rec->tomb0].head <= tail) {
		t = rec->tombs[rec->tomb0++];
		v = block_find(rec, t.addr);
		b = v ? pool_at(&rec->blocks, v) : NULL;
		if (b && b->clock < t.clock)
			on_free(rec, t.addr, t.clock);
	}
}

/* Up to MAX published events, under the lock. */
static size_t drain(struct recorder *rec, size_t max)
{
	const struct pytm_ring_slot *s;
	uint64_t pos = __atomic_load_n(&rec->h->tail, __ATOMIC_RELAXED);
	size_t n = 0;

	rec->now = (uint64_t)(mono_now() * 1e9);
	while (n < max && (s = pytm_ring_peek_at(rec->h, rec->slots, pos))) {
		apply(rec, s);
		pos++;
		/* The tail a run at a time: producers read it at every claim. */
		if (!(++n & (RELEASE_RUN - 1)))
			pytm_ring_release_to(rec->h, pos);
	}
	if (n & (RELEASE_RUN - 1))
		pytm_ring_release_to(rec->h, pos);
	if (rec->tomb0 < rec->ntombs)
		tombs_apply(rec);
	return n;
}

/* BPF's view of the process: the freeze, and its own blocks' bytes. */
static void read_proc(struct recorder *rec)
{
	struct pytm_proc p;
	__u32 pid = rec->o.pid;

	if (rec->o.procs_fd < 0 || bpf_map_lookup_elem(rec->o.procs_fd, &pid, &p))
		return;
	rec->bpf_current = p.current;
	if (!rec->frozen && p.rec_frozen)
		rec->frozen = p.rec_frozen;
}

static void *drain_thread(void *arg)
{
	struct recorder *rec = arg;
	struct timespec idle = { 0, IDLE_MIN_NS };
	size_t n;

	while (!rec->stop) {
		pthread_mutex_lock(&rec->lock);
		read_proc(rec);
		n = drain(rec, BATCH);
		if (rec->retrying && mono_now() >= rec->next_retry) {
			int err = rec->o.retry(rec->o.retry_arg);

			rec->retrying = err == -EAGAIN;
			rec->next_retry = mono_now() + RETRY_NS * 1e-9;
		}
		pthread_mutex_unlock(&rec->lock);
		if (n) {
			idle.tv_nsec = IDLE_MIN_NS;
			continue;
		}
		nanosleep(&idle, NULL);
		if (idle.tv_nsec < IDLE_MAX_NS)
			idle.tv_nsec *= 2;
	}
	return NULL;
}

int recorder__start(struct recorder **out, const struct recorder_opts *o)
{
	struct recorder *rec = calloc(1, sizeof(*rec));
	int err = -ENOMEM;

	*out = NULL;
	if (!rec)
		return -ENOMEM;
	rec->o = *o;
	rec->h = o->ring;
	rec->slots = (uint8_t *)o->ring + PYTM_RING_SLOTS_OFF;
	rec->seed = hash__seed();
	rec->blocks.size = sizeof(struct recorder_block);
	rec->code_ents.size = sizeof(struct code_ent);
	rec->retrying = o->retry != NULL;
	rec->scratch = calloc(1, sizeof(*rec->scratch));
	pthread_mutex_init(&rec->lock, NULL);
	pthread_mutex_init(&rec->r_lock, NULL);
	if (!rec->scratch || htab__init(&rec->live, 1024) || htab__init(&rec->codes, 1024) ||
	    htab__init(&rec->stack_idx, 1024))
		goto fail;
	err = -pthread_create(&rec->thread, NULL, drain_thread, rec);
	if (err)
		goto fail;
	rec->started = true;
	*out = rec;
	return 0;
fail:
	recorder__stop(rec);
	return err;
}

void recorder__stop(struct recorder *rec)
{
	size_t i;

	if (!rec)
		return;
	if (rec->started) {
		rec->stop = 1;
		pthread_join(rec->thread, NULL);
	}
	for (i = 0; i < rec->nstacks; i++)
		free(rec->stacks[i]);
	free(rec->stacks);
	free(rec->tombs);
	free(rec->scratch);
	htab__free(&rec->live);
	htab__free(&rec->codes);
	htab__free(&rec->stack_idx);
	pool_free(&rec->blocks);
	pool_free(&rec->code_ents);
	pthread_mutex_destroy(&rec->lock);
	pthread_mutex_destroy(&rec->r_lock);
	free(rec);
}

void recorder__quiesce(struct recorder *rec)
{
	if (!rec)
		return;
	pthread_mutex_lock(&rec->lock);
	rec->retrying = false;
	pthread_mutex_unlock(&rec->lock);
}

void recorder__tomb(struct recorder *rec, uint64_t addr, uint64_t clock)
{
	struct tomb *n;

	pthread_mutex_lock(&rec->lock);
	rec->ntombs_seen++;
	if (rec->tomb0 == rec->ntombs)
		rec->tomb0 = rec->ntombs = 0;	/* none waiting: start over */
	if (rec->ntombs == rec->tombs_cap && rec->tomb0) {
		memmove(rec->tombs, rec->tombs + rec->tomb0,
			(rec->ntombs - rec->tomb0) * sizeof(*rec->tombs));
		rec->ntombs -= rec->tomb0;
		rec->tomb0 = 0;
	}
	if (rec->ntombs == rec->tombs_cap) {
		size_t cap = rec->tombs_cap ? rec->tombs_cap * 2 : 64;

		n = realloc(rec->tombs, cap * sizeof(*n));
		if (!n)
			goto out;
		rec->tombs = n;
		rec->tombs_cap = cap;
	}
	/* Applied once the drain has passed the head as it is now: see the top. */
	rec->tombs[rec->ntombs++] = (struct tomb){
		.addr = addr, .clock = clock,
		.head = __atomic_load_n(&rec->h->head, __ATOMIC_SEQ_CST),
	};
	tombs_apply(rec);
out:
	pthread_mutex_unlock(&rec->lock);
}

void recorder__sync(struct recorder *rec)
{
	if (!rec)
		return;
	pthread_mutex_lock(&rec->lock);
	read_proc(rec);
	while (drain(rec, BATCH))
		;
	pthread_mutex_unlock(&rec->lock);
}

void recorder__lock(struct recorder *rec)
{
	pthread_mutex_lock(&rec->lock);
}

void recorder__unlock(struct recorder *rec)
{
	pthread_mutex_unlock(&rec->lock);
}

void recorder__lock_resolver(struct recorder *rec)
{
	if (rec)
		pthread_mutex_lock(&rec->r_lock);
}

void recorder__unlock_resolver(struct recorder *rec)
{
	if (rec)
		pthread_mutex_unlock(&rec->r_lock);
}

int recorder__each(struct recorder *rec,
		   int (*fn)(void *arg, const struct recorder_block *b,
			     const struct pytm_stack *st, uint32_t stack),
		   void *arg)
{
	const struct recorder_block *b;
	size_t i;
	int err = 0;

	for (i = 0; i <= rec->live.mask && !err; i++) {
		if (!rec->live.slots[i].val)
			continue;
		b = pool_at(&rec->blocks, (uint32_t)rec->live.slots[i].val);
		if (b->flags & PYTM_DOMAIN_LATE)
			continue;	/* born while finalizing: not in the frozen set */
		err = fn(arg, b, b->stack ? rec->stacks[b->stack - 1] : NULL, b->stack);
	}
	return err;
}

void recorder__stats(struct recorder *rec, int64_t bpf_current, struct recorder_stats *out)
{
	struct timespec ts;
	clockid_t cid;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&rec->lock);
	out->current = rec->current;
	out->peak = rec->peak > rec->current + bpf_current ? rec->peak :
		    rec->current + bpf_current;
	out->events = rec->events;
	out->codes = rec->ncodes;
	out->tombs = rec->ntombs_seen;
	out->blocks = rec->nblocks;
	out->full = __atomic_load_n(&rec->h->full, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&rec->lock);
	if (rec->started && !pthread_getcpuclockid(rec->thread, &cid) &&
	    !clock_gettime(cid, &ts))
		out->cpu = ts.tv_sec + ts.tv_nsec * 1e-9;
}

void recorder__clear(struct recorder *rec)
{
	size_t i;

	pthread_mutex_lock(&rec->lock);
	for (i = 0; i <= rec->live.mask; i++)
		rec->live.slots[i].val = rec->live.slots[i].hash = 0;
	rec->live.count = 0;
	rec->blocks.n = rec->blocks.nfree = 0;
	rec->nblocks = 0;
	rec->current = 0;
	rec->peak = 0;
	pthread_mutex_unlock(&rec->lock);
}

void recorder__reset_peak(struct recorder *rec, int64_t bpf_current)
{
	pthread_mutex_lock(&rec->lock);
	rec->bpf_current = bpf_current;
	rec->peak = rec->current + bpf_current;
	pthread_mutex_unlock(&rec->lock);
}
