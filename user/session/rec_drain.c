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
 * first time the ring shows it. Its free takes it out of the table: the
 * same address is another code object afterwards. The page flags a code
 * object it had not seen and passes its code site with the event's number
 * (page/sampler.c), where BPF copies what the resolver reads of it, while
 * its frame runs, into the process's own ring buffer (or, full, the event
 * thread's: recorder__code): the drain may come to the event after the
 * code object's free, or after an exec. The drain reads that ring buffer
 * before the event, takes the copy made for the event with that number,
 * and reads the code object itself only if no copy came.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
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
#define RETRY_NS	20000000	/* between two retries (recorder_opts), */
#define RETRY_BUSY_NS	1000000		/* or this while events go BPF's way meanwhile
					 * (until the page finds thread states) */
#define SPILL_WAIT_NS	50000000	/* at most, for the event thread's code records */
#define RELEASE_RUN	256		/* slots read before the tail moves, */
#define RELEASE_FULL	16		/* or this many when the ring is more than
					 * half full: producers may be waiting */

#define RECENT_STACKS	256		/* intern's cache: a power of two */

struct tomb {
	uint64_t addr, clock, head;
};

/* Items in the order they came: [first, n) of an array of cap. */
struct fifo {
	void *items;
	size_t first, n, cap;
};

/* Room for one more item of SIZE bytes at the end of Q; NULL: no memory. */
static void *fifo_push(struct fifo *q, size_t size)
{
	void *n;

	if (q->first == q->n)
		q->first = q->n = 0;	/* none waiting: start over */
	if (q->n == q->cap && q->first) {
		memmove(q->items, (char *)q->items + q->first * size, (q->n - q->first) * size);
		q->n -= q->first;
		q->first = 0;
	}
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;

		n = realloc(q->items, cap * size);
		if (!n)
			return NULL;
		q->items = n;
		q->cap = cap;
	}
	return (char *)q->items + q->n++ * size;
}

/* Values stored in a table: index + 1 into an array, with a free list. */
struct pool {
	void *items;
	size_t size, n, cap;
	uint32_t *free;
	size_t nfree, free_cap;
};


/*
 * ---- the live blocks ----
 *
 * Millions of them, with tracemalloc's own memory per trace as the bar,
 * and the drain may not pause to grow while producers wait on it: so not
 * the generic htab (16-byte slots, at most half full, rehashed at once).
 * Entries of 32 bytes in chunks that never move (a free one's `stack` links
 * the free list), found through an index of 4-byte slots: a 4-bit tag of
 * the hash above the entry's number + 1 in 28 bits. Linear probing; a
 * removed slot becomes GONE (probes go on past it, inserts reuse it). When
 * used and GONE slots pass 3/4, a new index sized for the live entries
 * takes the inserts, and the old one's slots move over a few per insert
 * (lookups look in both meanwhile): no insert pays for a whole rehash.
 */
#define LIVE_CHUNK_SHIFT	16
#define LIVE_CHUNK		(1u << LIVE_CHUNK_SHIFT)
#define LIVE_NUM_BITS		28
#define LIVE_NUM_MASK		((1u << LIVE_NUM_BITS) - 1)
#define LIVE_MAX		(LIVE_NUM_MASK - 1)	/* entries: GONE's number is not one */
#define LIVE_GONE		0xffffffffu
#define LIVE_MOVE		8		/* old slots moved per insert */
#define LIVE_MIN_SLOTS		1024

struct live_ent {
	uint64_t addr;			/* 0: free */
	uint64_t size;
	uint64_t clock : 62;		/* its event's number */
	uint64_t late : 1;		/* PYTM_DOMAIN_LATE */
	uint64_t gone : 1;		/* PYTM_DOMAIN_GONE */
	uint32_t stack;			/* index + 1 in the stacks; free: next free + 1 */
	uint32_t born_ms;		/* drained, ms after the recorder started */
};
_Static_assert(sizeof(struct live_ent) == 32, "live entries: 32 bytes");

/*
 * Blocks freed lately, in the order they went, with their free's number:
 * a forked child's copy of the set as it was at the fork needs those
 * freed since (recorder__inherit). The last FREED_KEEP always (the drain
 * sees BPF's `forking` once per batch: up to a batch late), all of them
 * while a child waits for its copy.
 */
#define FREED_KEEP	16384

struct freed_ent {
	struct live_ent e;
	uint64_t freed;
};

struct live {
	struct live_ent **chunks;
	size_t nchunks;
	uint32_t n;			/* entries handed out */
	uint32_t free;			/* first free entry + 1 */
	size_t count;			/* live entries */
	uint32_t *idx;			/* the index inserts go to */
	size_t mask, used;		/* its slots - 1; slots used or GONE */
	uint32_t *old;			/* the index being moved out; NULL: none */
	size_t old_mask, moved;		/* its slots - 1; slots moved so far */
};

struct code_ent {
	uint64_t addr;			/* first: see find_addr */
	uint32_t id;
	uint32_t pad;
};

/* A code object read from BPF's copy, taken at the page's code site. */
struct early_code {
	uint64_t addr;			/* 0: taken */
	uint64_t clock;			/* the event that flagged it */
	uint32_t id;
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
	pthread_mutex_t early_lock;	/* innermost: around early */
	struct ring_buffer *codes_rb;	/* o.codes_fd's; read by the drain */
	uint64_t spills;		/* code records the event thread handed over */
	uint64_t spill_stuck;		/* a wait for spills up to this was in vain */
	struct fifo early;		/* struct early_code, in their events' order */
	uint64_t seed;
	struct live live;
	uint64_t start_ns;		/* born_ms counts from this */
	struct htab codes;		/* hash(addr) -> code index + 1 */
	struct pool code_ents;
	struct htab stack_idx;		/* hash(frames) -> stack index + 1 */
	struct pytm_stack **stacks;
	size_t nstacks, stacks_cap;
	struct fifo tombs;		/* struct tomb waiting, in the order they
					 * came: their heads never decrease */
	uint64_t frozen;		/* the freeze's number + 1; 0: not frozen */
	bool retrying;			/* o.retry still to be asked */
	double last_retry;
	uint64_t bpf_events, retry_events;	/* BPF's count now, and at the last retry */
	int64_t current, peak, bpf_current;
	uint64_t now;			/* CLOCK_MONOTONIC ns of this drain batch */
	uint32_t recent[RECENT_STACKS];	/* stacks interned lately (index + 1), by
					 * their innermost frame */
	struct { uint64_t addr; uint32_t id; } code_cache[256];	/* code_id's */
	uint64_t events, ncodes, ncodes_early, ntombs_seen, lost;
	struct freed_ent *freed;		/* see FREED_KEEP */
	size_t nfreed, freed_cap;
	uint64_t freed_dropped;			/* the last dropped one's free + 1 */
	bool forking;				/* BPF's: a child waits for its copy */
	/* --peak (recorder_opts.peak_step): the last mark, and the blocks
	 * live then that went since (reset at each mark). */
	int64_t mark;
	uint64_t mark_clock;			/* the event that made it */
	uint64_t mark_ns;			/* 0: no mark yet */
	struct live_ent *pfreed;
	size_t npfreed, pfreed_cap;
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

static struct live_ent *live_at(const struct live *l, uint32_t num1)
{
	uint32_t i = num1 - 1;

	return &l->chunks[i >> LIVE_CHUNK_SHIFT][i & (LIVE_CHUNK - 1)];
}

static uint32_t live_tag(uint64_t h)
{
	return (uint32_t)(h >> 60) << LIVE_NUM_BITS;
}

/* ADDR's slot (hash H) in index IDX; NULL: none. */
static uint32_t *live_probe(const struct live *l, uint32_t *idx, size_t mask, uint64_t h,
			    uint64_t addr)
{
	uint32_t tag = live_tag(h), v;
	size_t i;

	/* It ends: an index is never more than 3/4 used. */
	for (i = h & mask; (v = idx[i]); i = (i + 1) & mask)
		if (v != LIVE_GONE && (v & ~LIVE_NUM_MASK) == tag &&
		    live_at(l, v & LIVE_NUM_MASK)->addr == addr)
			return &idx[i];
	return NULL;
}

static uint32_t *live_find(const struct recorder *rec, uint64_t addr)
{
	const struct live *l = &rec->live;
	uint64_t h = addr_hash(rec, addr);
	uint32_t *s = live_probe(l, l->idx, l->mask, h, addr);

	if (!s && l->old)
		s = live_probe(l, l->old, l->old_mask, h, addr);
	return s;
}

/* V into the first empty or GONE slot from H's (its key is in no index): 1 if empty. */
static int live_put(uint32_t *idx, size_t mask, uint64_t h, uint32_t v)
{
	size_t i;
	int was_empty;

	for (i = h & mask; idx[i] && idx[i] != LIVE_GONE; i = (i + 1) & mask)
		;
	was_empty = !idx[i];
	idx[i] = v;
	return was_empty;
}

/* Up to K of the old index's slots into the new one. */
static void live_move(const struct recorder *rec, struct live *l, size_t k)
{
	uint32_t v;

	for (; k && l->old; k--) {
		v = l->old[l->moved];
		if (v && v != LIVE_GONE) {
			l->used += live_put(l->idx, l->mask,
					    addr_hash(rec, live_at(l, v & LIVE_NUM_MASK)->addr), v);
			l->old[l->moved] = LIVE_GONE;	/* probes of the old go on past it */
		}
		if (l->moved++ == l->old_mask) {
			free(l->old);
			l->old = NULL;
		}
	}
}

/*
 * A new index at most half full with the live entries (and at least half
 * the old one's size): with LIVE_MOVE slots moved per insert, the old one
 * is gone before the new one is 5/8 used, so moves never overlap.
 */
static int live_grow(const struct recorder *rec, struct live *l)
{
	size_t slots = LIVE_MIN_SLOTS;
	uint32_t *n;

	live_move(rec, l, SIZE_MAX);
	while (slots / 2 < l->count + 1)
		slots *= 2;
	if (slots < (l->mask + 1) / 2)
		slots = (l->mask + 1) / 2;
	n = calloc(slots, sizeof(*n));
	if (!n)
		return -ENOMEM;
	l->old = l->idx;
	l->old_mask = l->mask;
	l->moved = 0;
	l->idx = n;
	l->mask = slots - 1;
	l->used = 0;
	return 0;
}

/* A free entry's number + 1; 0: none (out of memory, or LIVE_MAX). */
static uint32_t live_new(struct live *l)
{
	struct live_ent **c;
	uint32_t num1 = l->free;

	if (num1) {
		l->free = live_at(l, num1)->stack;
		return num1;
	}
	if (l->n >= LIVE_MAX)
		return 0;
	if ((l->n >> LIVE_CHUNK_SHIFT) == l->nchunks) {
		c = realloc(l->chunks, (l->nchunks + 1) * sizeof(*c));
		if (!c)
			return 0;
		l->chunks = c;
		c[l->nchunks] = malloc(LIVE_CHUNK * sizeof(**c));
		if (!c[l->nchunks])
			return 0;
		l->nchunks++;
	}
	return ++l->n;
}

/* A new entry for ADDR (in no index); NULL: no memory. */
static struct live_ent *live_insert(struct recorder *rec, uint64_t addr)
{
	struct live *l = &rec->live;
	uint64_t h = addr_hash(rec, addr);
	struct live_ent *e;
	uint32_t num1;

	if ((l->used + 1) * 4 > (l->mask + 1) * 3 && live_grow(rec, l))
		return NULL;
	num1 = live_new(l);
	if (!num1)
		return NULL;
	e = live_at(l, num1);
	e->addr = addr;
	l->used += live_put(l->idx, l->mask, h, live_tag(h) | num1);
	l->count++;
	live_move(rec, l, LIVE_MOVE);
	return e;
}

/* SLOT's entry is taken out: GONE, or empty when no probe needs to pass it. */
static void live_clear_slot(struct live *l, uint32_t *slot)
{
	uint32_t *idx = l->idx;
	size_t mask = l->mask, i;

	if (slot < idx || slot > idx + mask) {
		/* In the old index: a GONE there lets moves and probes go on. */
		*slot = LIVE_GONE;
		return;
	}
	i = (size_t)(slot - idx);
	if (idx[(i + 1) & mask]) {
		*slot = LIVE_GONE;	/* a probe may have to go on past it */
		return;
	}
	/*
	 * Followed by an empty slot: no probe needs to pass it, nor the GONE
	 * slots right before it. Emptied, they no longer lengthen probes or
	 * count towards the next rebuild.
	 */
	do {
		idx[i] = 0;
		l->used--;
		i = (i - 1) & mask;
	} while (idx[i] == LIVE_GONE);
}

static void live_remove(struct live *l, uint32_t *slot)
{
	uint32_t num1 = *slot & LIVE_NUM_MASK;
	struct live_ent *e = live_at(l, num1);

	live_clear_slot(l, slot);
	e->addr = 0;
	e->stack = l->free;
	l->free = num1;
	l->count--;
}

/* Empty, keeping its memory. */
static void live_clear(struct live *l)
{
	free(l->old);
	l->old = NULL;
	memset(l->idx, 0, (l->mask + 1) * sizeof(*l->idx));
	l->used = l->count = 0;
	l->n = l->free = 0;
}

static void live_free(struct live *l)
{
	size_t i;

	for (i = 0; i < l->nchunks; i++)
		free(l->chunks[i]);
	free(l->chunks);
	free(l->idx);
	free(l->old);
	memset(l, 0, sizeof(*l));
}

/* E as recorder__each and recorder__inherit show it. */
static struct recorder_block block_view(const struct recorder *rec, const struct live_ent *e)
{
	return (struct recorder_block){
		.addr = e->addr, .size = e->size, .clock = e->clock,
		.born = rec->start_ns + (uint64_t)e->born_ms * 1000000,
		.stack = e->stack, .flags = e->gone ? PYTM_DOMAIN_GONE : 0,
	};
}

/* ITEM's number + 1 in table T of pool P (items start with their address); 0: none. */
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

/*
 * Traced memory changes by DELTA at event CLOCK. --peak: a new mark when
 * it passes the last one by the step (as BPF's account does for its own).
 */
static void account(struct recorder *rec, int64_t delta, uint64_t clock)
{
	int64_t total;

	rec->current += delta;
	total = rec->current + rec->bpf_current;
	if (total <= rec->peak)
		return;
	rec->peak = total;
	if (!rec->o.peak_step || (uint64_t)total * 1000000 <=
				 (uint64_t)rec->mark * (1000000 + rec->o.peak_step))
		return;
	rec->mark = total;
	rec->mark_clock = clock;
	rec->mark_ns = rec->now;
	rec->npfreed = 0;	/* gone before this mark: not in its set */
	if (rec->o.peak_mark)
		rec->o.peak_mark(rec->o.peak_arg, rec->now);
}

/* E goes: kept if it was live at the peak mark. */
static void peak_keep(struct recorder *rec, const struct live_ent *e)
{
	struct live_ent *n;
	size_t cap;

	if (!rec->mark_ns || e->clock > rec->mark_clock || e->gone || e->late)
		return;
	if (rec->npfreed == rec->pfreed_cap) {
		cap = rec->pfreed_cap ? rec->pfreed_cap * 2 : 4096;
		n = realloc(rec->pfreed, cap * sizeof(*n));
		if (!n) {
			rec->lost++;
			return;
		}
		rec->pfreed = n;
		rec->pfreed_cap = cap;
	}
	rec->pfreed[rec->npfreed++] = *e;
}

/* E goes at event CLOCK: kept a while (see FREED_KEEP). */
static void freed_add(struct recorder *rec, const struct live_ent *e, uint64_t clock)
{
	struct freed_ent *n;
	size_t cap, i;

	if (!rec->forking && rec->nfreed >= 2 * FREED_KEEP) {
		/* Only the last FREED_KEEP (tombstones' numbers can be out of order). */
		for (i = 0; i < rec->nfreed - FREED_KEEP; i++)
			if (rec->freed[i].freed + 1 > rec->freed_dropped)
				rec->freed_dropped = rec->freed[i].freed + 1;
		memmove(rec->freed, rec->freed + rec->nfreed - FREED_KEEP,
			FREED_KEEP * sizeof(*rec->freed));
		rec->nfreed = FREED_KEEP;
	}
	if (rec->nfreed == rec->freed_cap) {
		cap = rec->freed_cap ? rec->freed_cap * 2 : 2 * FREED_KEEP;
		n = realloc(rec->freed, cap * sizeof(*n));
		if (!n) {
			rec->freed_dropped = clock + 1;	/* a copy now would miss it */
			return;
		}
		rec->freed = n;
		rec->freed_cap = cap;
	}
	rec->freed[rec->nfreed++] = (struct freed_ent){ .e = *e, .freed = clock };
}

static void block_drop(struct recorder *rec, uint32_t *slot, uint64_t clock)
{
	struct live_ent *e = live_at(&rec->live, *slot & LIVE_NUM_MASK);

	if (!e->gone)
		account(rec, -(int64_t)e->size, clock);
	peak_keep(rec, e);
	freed_add(rec, e, clock);
	live_remove(&rec->live, slot);
}

static uint32_t code_find(const struct recorder *rec, uint64_t addr)
{
	return find_addr(rec, &rec->codes, &rec->code_ents, addr);
}

/*
 * The session id of the code object at ADDR; if new, EARLY (read by the
 * event thread) or else one read now (0: none).
 */
static uint32_t code_id(struct recorder *rec, uint64_t addr, uint32_t early)
{
	typeof(rec->code_cache[0]) *slot = &rec->code_cache[(addr >> 4) & 255];
	struct code_ent *c;
	uint32_t v, id;

	if (slot->addr == addr && addr && !early)
		return slot->id;
	v = code_find(rec, addr);
	if (v) {
		c = pool_at(&rec->code_ents, v);
		if (early)
			c->id = early;	/* flagged again (the page's set was full) */
		slot->addr = addr;
		slot->id = c->id;
		return c->id;
	}
	v = pool_get(&rec->code_ents);
	if (!v)
		return 0;
	id = early ? early : __atomic_add_fetch(rec->o.next_code_id, 1, __ATOMIC_RELAXED);
	if (htab__add(&rec->codes, addr_hash(rec, addr), v)) {
		pool_put(&rec->code_ents, v);
		return 0;
	}
	c = pool_at(&rec->code_ents, v);
	c->addr = addr;
	c->id = id;
	if (!early && rec->o.r) {
		pthread_mutex_lock(&rec->r_lock);
		resolver__add_code(rec->o.r, id, addr);
		pthread_mutex_unlock(&rec->r_lock);
	}
	rec->ncodes++;
	rec->ncodes_early += early != 0;
	return id;
}

/*
 * BPF sent code records the event thread's way (the process's own ring
 * buffer was full) that it has not handed over yet: wait for them, at most
 * SPILL_WAIT_NS (it may wait for a snapshot that waits for us), and not
 * again after a wait in vain until it has caught up. 1 if they came.
 */
static bool spill_wait(struct recorder *rec)
{
	struct timespec pause = { 0, 20000 };
	struct pytm_proc p;
	__u32 pid = rec->o.pid;
	double until;

	if (rec->o.procs_fd < 0 || bpf_map_lookup_elem(rec->o.procs_fd, &pid, &p) ||
	    __atomic_load_n(&rec->spills, __ATOMIC_ACQUIRE) >= p.rec_codes_spilled ||
	    __atomic_load_n(&rec->spills, __ATOMIC_ACQUIRE) < rec->spill_stuck)
		return false;
	until = mono_now() + SPILL_WAIT_NS * 1e-9;
	while (__atomic_load_n(&rec->spills, __ATOMIC_ACQUIRE) < p.rec_codes_spilled) {
		if (mono_now() > until) {
			rec->spill_stuck = p.rec_codes_spilled;
			return false;
		}
		nanosleep(&pause, NULL);
	}
	return true;
}

/*
 * The id given code object ADDR as the event numbered CLOCK flagged it
 * (0: none came). Events are drained in their order: reads for events
 * before CLOCK came after the drain read them itself. BPF put the code
 * object's copy in the process's ring buffer before the page published the
 * event: it is there now, unless that ring buffer was full.
 */
static uint32_t early_id(struct recorder *rec, uint64_t addr, uint64_t clock, bool consumed)
{
	struct fifo *q = &rec->early;
	struct early_code *e;
	uint32_t id = 0;
	size_t i;

	pthread_mutex_lock(&rec->early_lock);
	e = q->items;
	while (q->first < q->n && e[q->first].clock < clock)
		q->first++;
	for (i = q->first; i < q->n && e[i].clock == clock; i++) {
		if (e[i].addr == addr) {
			e[i].addr = 0;
			id = e[i].id;
			break;
		}
	}
	pthread_mutex_unlock(&rec->early_lock);
	if (!id && !consumed) {
		/* In the process's ring buffer, or on the event thread's way. */
		if (rec->codes_rb)
			ring_buffer__consume(rec->codes_rb);
		id = early_id(rec, addr, clock, true);
		if (!id && spill_wait(rec))
			id = early_id(rec, addr, clock, true);
	}
	return id;
}

/* Read code object ADDR that the event numbered CLOCK showed first; its id for the drain. */
static void code_read(struct recorder *rec, uint64_t addr, uint64_t clock,
		      const struct resolver_mem *mem, size_t nmem)
{
	struct early_code *e;
	uint32_t id;
	int err;

	id = __atomic_add_fetch(rec->o.next_code_id, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&rec->r_lock);
	err = rec->o.r ? resolver__add_code_copied(rec->o.r, id, addr, mem, nmem) : 0;
	pthread_mutex_unlock(&rec->r_lock);
	if (err)
		return;		/* the drain tries when it comes to the event */
	pthread_mutex_lock(&rec->early_lock);
	e = fifo_push(&rec->early, sizeof(*e));
	if (e) {
		/*
		 * In their events' order (early_id relies on it): copies come
		 * in order from each of two ring buffers, the process's own
		 * and, spilled, the event thread's, one maybe before the other.
		 */
		struct early_code *first = (struct early_code *)rec->early.items + rec->early.first;

		while (e > first && e[-1].clock > clock) {
			e[0] = e[-1];
			e--;
		}
		*e = (struct early_code){ .addr = addr, .clock = clock, .id = id };
	}
	pthread_mutex_unlock(&rec->early_lock);
}

void recorder__code(struct recorder *rec, uint64_t addr, uint64_t clock,
		    const struct resolver_mem *mem, size_t nmem)
{
	if (!rec)
		return;
	code_read(rec, addr, clock, mem, nmem);
	__atomic_add_fetch(&rec->spills, 1, __ATOMIC_RELEASE);
}

/* A record of the process's code ring buffer (BPF's rec_code). */
static int on_code_record(void *arg, void *data, size_t size)
{
	const struct pytm_code_event *ce = data;
	struct resolver_mem mem[PYTM_CAP_N];
	size_t n = resolver__event_mem(data, size, mem);

	if (n)
		code_read(arg, ce->ev.code_addr, ce->ev.clock, mem, n);
	return 0;
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

/* Is the interned A the stack ST? A is only as long as its own. */
static bool same_stack(const struct pytm_stack *a, const struct pytm_stack *st)
{
	uint32_t i;

	/* Word by word: most are one to a few frames, a call costs more. */
	if (a->nframe != st->nframe || a->total_nframe != st->total_nframe)
		return false;
	for (i = 0; i < st->nframe; i++)
		if (a->frames[i] != st->frames[i])
			return false;
	return true;
}

/* The stack of EV (numbered CLOCK), interned: index + 1, or 0 for none. */
static uint32_t intern(struct recorder *rec, const struct pytm_rec_event *ev, uint64_t clock)
{
	struct pytm_stack *st = rec->scratch, *copy;
	size_t len, cur = 0;
	uint32_t i, *recent;
	uint64_t h, v;

	st->nframe = ev->nframe > PYTM_MAX_FRAMES ? PYTM_MAX_FRAMES : ev->nframe;
	st->total_nframe = ev->total;
	for (i = 0; i < st->nframe; i++)
		st->frames[i] = PYTM_FRAME(code_id(rec, ev->frames[i].code,
						   ev->frames[i].pad == PYTM_REC_NEW_CODE ?
						   early_id(rec, ev->frames[i].code, clock, false) :
						   0),
					   ev->frames[i].lasti);
	len = offsetof(struct pytm_stack, frames) + st->nframe * sizeof(st->frames[0]);
	/*
	 * Events come in runs from the same place, or from a few places in
	 * turn: the last stack with the same innermost frame, if it is this
	 * one, before the hash of them all.
	 */
	recent = &rec->recent[(st->nframe ? hash__mix64(st->frames[0] ^ st->total_nframe) : 0) &
			      (RECENT_STACKS - 1)];
	if (*recent && same_stack(rec->stacks[*recent - 1], st))
		return *recent;
	h = hash__bytes(rec->seed, st, len);
	while ((v = htab__next(&rec->stack_idx, h, &cur)))
		if (same_stack(rec->stacks[v - 1], st))
			return *recent = (uint32_t)v;
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
	return *recent = (uint32_t)rec->nstacks;
}

/* ---- applying events ---- */

static bool is_late(const struct recorder *rec, uint64_t clock)
{
	return rec->frozen && clock + 1 >= rec->frozen;
}

static void on_alloc(struct recorder *rec, const struct pytm_rec_event *ev, uint64_t clock)
{
	struct live_ent *e;
	uint32_t *slot = live_find(rec, ev->ptr);
	uint64_t ms = (rec->now - rec->start_ns) / 1000000;

	if (slot) {
		/* Already tracked (tracemalloc_add_trace does the same). */
		block_drop(rec, slot, clock);
	}
	e = live_insert(rec, ev->ptr);
	if (!e) {
		rec->lost++;
		return;
	}
	e->size = ev->size;
	e->born_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
	e->clock = clock;
	e->late = is_late(rec, clock);
	e->gone = 0;
	e->stack = e->late ? 0 : intern(rec, ev, clock);
	account(rec, (int64_t)ev->size, clock);
}

static void on_free(struct recorder *rec, uint64_t addr, uint64_t clock)
{
	struct live_ent *e;
	uint32_t *slot;

	code_gone(rec, addr);
	slot = live_find(rec, addr);
	if (!slot)
		return;
	e = live_at(&rec->live, *slot & LIVE_NUM_MASK);
	if (is_late(rec, clock) && !e->late && !e->gone) {
		/* Of the frozen set: it stays in it, no longer counted. */
		e->gone = 1;
		account(rec, -(int64_t)e->size, clock);
		return;
	}
	block_drop(rec, slot, clock);
}

static void on_restamp(struct recorder *rec, const struct pytm_rec_event *ev, uint64_t clock)
{
	struct live_ent *e;
	uint32_t *slot = live_find(rec, ev->ptr);

	if (!slot || is_late(rec, clock))
		return;
	e = live_at(&rec->live, *slot & LIVE_NUM_MASK);
	if (e->late || e->gone)
		return;
	e->stack = intern(rec, ev, clock);
	e->born_ms = (uint32_t)((rec->now - rec->start_ns) / 1000000);
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
	uint32_t *slot;
	struct tomb t;

	const struct tomb *w = rec->tombs.items;

	while (rec->tombs.first < rec->tombs.n && w[rec->tombs.first].head <= tail) {
		t = w[rec->tombs.first++];
		slot = live_find(rec, t.addr);
		if (slot && live_at(&rec->live, *slot & LIVE_NUM_MASK)->clock < t.clock)
			on_free(rec, t.addr, t.clock);
	}
}

/* Up to MAX published events, under the lock. */
static size_t drain(struct recorder *rec, size_t max)
{
	const struct pytm_ring_slot *s;
	uint64_t pos = __atomic_load_n(&rec->h->tail, __ATOMIC_RELAXED), released = pos;
	uint64_t run = RELEASE_RUN, half = rec->h->slots / 2;
	size_t n = 0;

	rec->now = (uint64_t)(mono_now() * 1e9);
	if (rec->codes_rb)
		ring_buffer__consume(rec->codes_rb);
	while (n < max && (s = pytm_ring_peek_at(rec->h, rec->slots, pos))) {
		apply(rec, s);
		pos++;
		n++;
		/*
		 * The tail a run at a time: producers read it at every claim.
		 * Shorter runs while the ring is over half full: producers that
		 * found it full wait for room (page/sampler.c, pg_rec_wait).
		 */
		if (pos - released >= run) {
			pytm_ring_release_to(rec->h, pos);
			released = pos;
			run = __atomic_load_n(&rec->h->head, __ATOMIC_RELAXED) - pos > half ?
			      RELEASE_FULL : RELEASE_RUN;
		}
	}
	if (pos != released)
		pytm_ring_release_to(rec->h, pos);
	if (rec->tombs.first < rec->tombs.n)
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
	rec->bpf_events = p.nevents;
	rec->forking = p.forking != 0;
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
		if (rec->retrying &&
		    mono_now() >= rec->last_retry + (rec->bpf_events != rec->retry_events ?
						     RETRY_BUSY_NS : RETRY_NS) * 1e-9) {
			int err = rec->o.retry(rec->o.retry_arg);

			rec->retrying = err == -EAGAIN;
			rec->last_retry = mono_now();
			rec->retry_events = rec->bpf_events;
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
	if (!rec) {
		if (o->codes_fd >= 0)
			close(o->codes_fd);
		return -ENOMEM;
	}
	rec->o = *o;
	rec->h = o->ring;
	rec->slots = (uint8_t *)o->ring + PYTM_RING_SLOTS_OFF;
	rec->seed = hash__seed();
	rec->start_ns = (uint64_t)(mono_now() * 1e9);
	rec->code_ents.size = sizeof(struct code_ent);
	rec->retrying = o->retry != NULL;
	rec->scratch = calloc(1, sizeof(*rec->scratch));
	pthread_mutex_init(&rec->lock, NULL);
	pthread_mutex_init(&rec->r_lock, NULL);
	pthread_mutex_init(&rec->early_lock, NULL);
	rec->live.idx = calloc(LIVE_MIN_SLOTS, sizeof(*rec->live.idx));
	rec->live.mask = LIVE_MIN_SLOTS - 1;
	if (!rec->scratch || !rec->live.idx || htab__init(&rec->codes, 1024) ||
	    htab__init(&rec->stack_idx, 1024))
		goto fail;
	if (o->codes_fd >= 0) {
		rec->codes_rb = ring_buffer__new(o->codes_fd, on_code_record, rec, NULL);
		if (!rec->codes_rb) {
			err = -errno;
			goto fail;
		}
	}
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
	free(rec->tombs.items);
	free(rec->freed);
	free(rec->pfreed);
	free(rec->early.items);
	ring_buffer__free(rec->codes_rb);
	if (rec->o.codes_fd >= 0)
		close(rec->o.codes_fd);
	free(rec->scratch);
	live_free(&rec->live);
	htab__free(&rec->codes);
	htab__free(&rec->stack_idx);
	pool_free(&rec->code_ents);
	pthread_mutex_destroy(&rec->lock);
	pthread_mutex_destroy(&rec->r_lock);
	pthread_mutex_destroy(&rec->early_lock);
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
	n = fifo_push(&rec->tombs, sizeof(*n));
	if (n) {
		/* Applied once the drain has passed the head as it is now: see the top. */
		*n = (struct tomb){
			.addr = addr, .clock = clock,
			.head = __atomic_load_n(&rec->h->head, __ATOMIC_SEQ_CST),
		};
		tombs_apply(rec);
	}
	pthread_mutex_unlock(&rec->lock);
}

void recorder__sync(struct recorder *rec)
{
	uint64_t head;

	if (!rec)
		return;
	head = __atomic_load_n(&rec->h->head, __ATOMIC_ACQUIRE);
	pthread_mutex_lock(&rec->lock);
	read_proc(rec);
	/* Up to the head as it was: producers that keep going are not waited for. */
	while (__atomic_load_n(&rec->h->tail, __ATOMIC_RELAXED) < head && drain(rec, BATCH))
		;
	pthread_mutex_unlock(&rec->lock);
}

int recorder__inherit(struct recorder *rec, uint64_t fork_clock,
		      int (*fn)(void *arg, const struct recorder_block *b,
				const struct pytm_stack *st),
		      void *arg)
{
	struct timespec ms = { 0, 1000000 };
	const struct live *l = &rec->live;
	const struct live_ent *e;
	struct recorder_block b;
	uint32_t num1;
	size_t i;
	int err = 0, tries;

	/*
	 * Every event numbered before the fork applied (one claimed then may
	 * be published a little later: its thread was between the two).
	 */
	for (tries = 0; tries < 100; tries++) {
		recorder__sync(rec);
		if (fork_clock == UINT64_MAX ||
		    __atomic_load_n(&rec->h->tail, __ATOMIC_ACQUIRE) >= fork_clock)
			break;
		nanosleep(&ms, NULL);
	}
	pthread_mutex_lock(&rec->lock);
	if (fork_clock != UINT64_MAX && rec->freed_dropped > fork_clock)
		err = -ERANGE;	/* some freed since were forgotten: what is left */
	for (num1 = 1; num1 <= l->n; num1++) {
		e = live_at(l, num1);
		if (!e->addr || e->late || e->gone || e->clock >= fork_clock)
			continue;
		b = block_view(rec, e);
		if (fn(arg, &b, e->stack ? rec->stacks[e->stack - 1] : NULL))
			goto out;
	}
	for (i = 0; fork_clock != UINT64_MAX && i < rec->nfreed; i++) {
		e = &rec->freed[i].e;
		if (e->late || e->gone || e->clock >= fork_clock ||
		    rec->freed[i].freed < fork_clock)
			continue;
		b = block_view(rec, e);
		if (fn(arg, &b, e->stack ? rec->stacks[e->stack - 1] : NULL))
			goto out;
	}
out:
	pthread_mutex_unlock(&rec->lock);
	return err;
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

/*
 * FN for each block of the table (not born while finalizing: not in the
 * frozen set); with PEAK, only those numbered by the peak mark, then
 * those freed since that were.
 */
static int each_block(struct recorder *rec, bool peak,
		      int (*fn)(void *arg, const struct recorder_block *b,
				const struct pytm_stack *st, uint32_t stack),
		      void *arg)
{
	const struct live *l = &rec->live;
	size_t n = l->n + (peak ? rec->npfreed : 0), num1;
	const struct live_ent *e;
	struct recorder_block b;
	int err = 0;

	for (num1 = 1; num1 <= n && !err; num1++) {
		e = num1 <= l->n ? live_at(l, (uint32_t)num1) : &rec->pfreed[num1 - l->n - 1];
		if (!e->addr || e->late || (peak && e->clock > rec->mark_clock))
			continue;
		b = block_view(rec, e);
		err = fn(arg, &b, e->stack ? rec->stacks[e->stack - 1] : NULL, e->stack);
	}
	return err;
}

int recorder__each(struct recorder *rec,
		   int (*fn)(void *arg, const struct recorder_block *b,
			     const struct pytm_stack *st, uint32_t stack),
		   void *arg)
{
	return each_block(rec, false, fn, arg);
}

uint64_t recorder__peak_mark(struct recorder *rec)
{
	return rec->mark_ns;
}

int recorder__peak_each(struct recorder *rec,
			int (*fn)(void *arg, const struct recorder_block *b,
				  const struct pytm_stack *st, uint32_t stack),
			void *arg)
{
	return rec->mark_ns ? each_block(rec, true, fn, arg) : 0;
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
	out->mark = rec->mark;
	out->events = rec->events;
	out->codes = rec->ncodes;
	out->codes_early = rec->ncodes_early;
	out->codes_spilled = __atomic_load_n(&rec->spills, __ATOMIC_RELAXED);
	out->tombs = rec->ntombs_seen;
	out->blocks = rec->live.count;
	out->lost = rec->lost;
	out->full = __atomic_load_n(&rec->h->full, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&rec->lock);
	if (rec->started && !pthread_getcpuclockid(rec->thread, &cid) &&
	    !clock_gettime(cid, &ts))
		out->cpu = ts.tv_sec + ts.tv_nsec * 1e-9;
}

void recorder__clear(struct recorder *rec)
{
	pthread_mutex_lock(&rec->lock);
	live_clear(&rec->live);
	rec->current = 0;
	rec->peak = 0;
	rec->npfreed = 0;	/* cleared traces: not in a later peak's set (the
				 * mark stays, as BPF's does) */
	pthread_mutex_unlock(&rec->lock);
}

void recorder__reset_peak(struct recorder *rec, int64_t bpf_current)
{
	pthread_mutex_lock(&rec->lock);
	rec->bpf_current = bpf_current;
	rec->peak = rec->current + bpf_current;
	pthread_mutex_unlock(&rec->lock);
}
