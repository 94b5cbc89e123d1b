// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Sampling by bytes inside the target: the allocator trampolines of the
 * injected page in sampled mode. Freestanding C (no libc, no system
 * calls, bounded loops), compiled position-independent and linked by
 * page/page.lds into the page (Makefile: $(OUTPUT)/page/page.bin); the
 * unit test (tests/unit/test_page.c) builds the same file into a test
 * process with its own definitions of the symbols declared below.
 *
 * Each allocation of S bytes is a segment of a Poisson process over
 * allocated bytes with mean interval R (pytm_keep.rate): it is sampled if
 * a point falls in it, with probability 1 - exp(-S/R). A countdown of
 * bytes to the next point; after a sample it restarts from a fresh
 * exponential draw (memoryless). Two processes, one per lock regime, each
 * unbiased on its own: raw calls run without the GIL and move theirs by
 * compare-and-swap, so that each allocation claims its own segment (no
 * lost update); obj and mem calls hold the GIL (the C API requires it),
 * so theirs is a plain load and store, unless the tracer found more than
 * one interpreter (3.12+ may give each its own GIL) and cleared
 * gil_plain: then it is compare-and-swap too. Only a sampled block passes the alloc site (one kernel
 * entry), with its weight S / (1 - exp(-S/R)); its address goes into a
 * set so that only its free passes the free site. An unsampled free costs
 * a hash and one byte load.
 *
 * A forked child (its own part of the data region wiped: not armed, not
 * set up) that its parent's tracer follows goes on sampling with what it
 * inherited (configuration, sample points, the set) past the children's
 * sites, until the tracer moves it to a page of its own; one that is not
 * followed puts its tables back (pg_unhook).
 *
 * Nesting: pymalloc hands large blocks to the raw domain through the
 * table, i.e. through our raw trampolines, inside our obj/mem call. obj
 * and mem calls hold the GIL, so one thread at a time is inside one: it
 * leaves its thread pointer (%fs:0) in pytm_ctl.outer, and calls of ours
 * that find their own thread there pass straight through: the outer call
 * alone counts the block, as tracemalloc's reentrancy flag does.
 */
#include <stddef.h>
#include "page.h"
#include "recorder.h"
#include "ring.h"

#define HIDDEN __attribute__((visibility("hidden")))
#define INLINE static inline __attribute__((always_inline))
#define COLD static __attribute__((noinline, cold))	/* once per sample */
#define CALLED static __attribute__((noinline))		/* one copy, not one per entry */

enum { RAW = 0, MEM = 1, OBJ = 2 };
enum { MALLOC = 0, CALLOC = 1, REALLOC = 2, FREE = 3 };

/* Where the linker script (or the unit test) puts them. */
extern void *pytm_orig[3 * 4] HIDDEN;	/* in the read-only header */
extern struct pytm_page_ctl pytm_ctl HIDDEN;
extern uint8_t pytm_counts[PYTM_SET_MAX_BUCKETS] HIDDEN;
extern uint64_t pytm_slots[PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS] HIDDEN;
extern struct pytm_page_keep pytm_keep HIDDEN;	/* not wiped in children */
extern uint8_t pytm_exact_tramps[] HIDDEN;	/* 12 x 128 bytes (user/attach/redirect.c) */
extern struct pytm_page_rec pytm_rec HIDDEN;	/* the recorder's configuration */
/*
 * The probe sites (page/sites.S): a NOP each, registers as the arguments;
 * the children's, for a forked child that its parent's tracer follows.
 */
void pytm_site_alloc(uint64_t ptr, uint64_t size, uint64_t weight) HIDDEN;
void pytm_site_free(uint64_t ptr) HIDDEN;
void pytm_site_child_alloc(uint64_t ptr, uint64_t size, uint64_t weight) HIDDEN;
void pytm_site_child_free(uint64_t ptr) HIDDEN;
/* The recorder's ring was full at a free: BPF keeps it with its number. */
void pytm_site_tomb(uint64_t ptr, uint64_t clock) HIDDEN;
/* A code object the ring shows for the first time, in the event numbered CLOCK. */
void pytm_site_code(uint64_t code, uint64_t clock) HIDDEN;

typedef void *(*malloc_fn)(void *ctx, size_t size);
typedef void *(*calloc_fn)(void *ctx, size_t nelem, size_t elsize);
typedef void *(*realloc_fn)(void *ctx, void *ptr, size_t size);
typedef void (*free_fn)(void *ctx, void *ptr);

#define LOAD(p)		__atomic_load_n(p, __ATOMIC_RELAXED)
#define STORE(p, v)	__atomic_store_n(p, v, __ATOMIC_RELAXED)
#define ADD(p, v)	__atomic_fetch_add(p, v, __ATOMIC_RELAXED)
#define SIZE_CAP	((int64_t)1 << 62)

/* ---- numbers (no libm here) ---- */

/* ln(x) for 0 < x < 2^1023 (normal): x = m 2^e, ln m = 2 atanh((m-1)/(m+1)). */
INLINE double pg_log(double x)
{
	union { double d; uint64_t u; } v = { x };
	int e = (int)((v.u >> 52) & 0x7ff) - 1023;
	double m, s, s2, p;

	v.u = (v.u & 0xfffffffffffffULL) | 0x3ff0000000000000ULL;
	m = v.d;				/* [1, 2) */
	if (m > 1.4142135623730951) {
		m *= 0.5;
		e++;
	}
	s = (m - 1) / (m + 1);			/* |s| <= 0.1716 */
	s2 = s * s;
	p = 1.0 / 19;
	p = p * s2 + 1.0 / 17;
	p = p * s2 + 1.0 / 15;
	p = p * s2 + 1.0 / 13;
	p = p * s2 + 1.0 / 11;
	p = p * s2 + 1.0 / 9;
	p = p * s2 + 1.0 / 7;
	p = p * s2 + 1.0 / 5;
	p = p * s2 + 1.0 / 3;
	p = p * s2 + 1;
	return e * 0.6931471805599453 + 2 * s * p;
}

/* 1 - exp(-x) for x >= 0, without cancellation for small x. */
INLINE double pg_one_minus_exp_neg(double x)
{
	double r, t, sum;
	int k, i;

	if (x < 0.5) {		/* x - x^2/2 + x^3/6 - ...: 0.5^17/17! < 1e-19 */
		t = x;
		sum = x;
		for (i = 2; i <= 17; i++) {
			t *= -x / i;
			sum += t;
		}
		return sum;
	}
	if (x > 745)
		return 1;
	/* exp(-x) = 2^-k e^-r, r = x - k ln2 in [0, ln2) */
	k = (int)(x * 1.4426950408889634);
	r = x - k * 0.6931471805599453;
	t = 1;
	sum = 1;
	for (i = 1; i <= 18; i++) {
		t *= -r / i;
		sum += t;
	}
	{
		union { double d; uint64_t u; } v = { sum };

		if (k > 1000)
			return 1;
		v.u -= (uint64_t)k << 52;	/* sum >= 0.5: stays normal */
		return 1 - v.d;
	}
}

/* splitmix64 of a counter shared by every thread: each call its own value. */
INLINE uint64_t pg_random(void)
{
	uint64_t z = ADD(&pytm_keep.prng, 0x9e3779b97f4a7c15ULL) + 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Bytes to the next sample point: exponential with mean R, floored. */
COLD int64_t pg_draw(uint64_t rate)
{
	double u = ((double)(pg_random() >> 11) + 0.5) * 0x1p-53;	/* (0, 1) */
	double e = -pg_log(u) * (double)rate;

	return e >= (double)SIZE_CAP ? SIZE_CAP : (int64_t)e;
}

/*
 * Is the segment of SIZE bytes that starts at countdown C sampled? The
 * point is at the countdown's distance: inside the segment iff *C < SIZE
 * (the countdown is the floor of a continuous draw).
 */
INLINE int pg_take_atomic(int64_t *cd, int64_t s)
{
	int64_t c = LOAD(cd), n;

	for (;;) {
		if (c >= s) {
			if (__atomic_compare_exchange_n(cd, &c, c - s, 1,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
				return 0;
			continue;
		}
		n = pg_draw(LOAD(&pytm_keep.rate));
		if (__atomic_compare_exchange_n(cd, &c, n, 1,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED))
			return 1;
	}
}

INLINE int pg_take(int d, uint64_t size)
{
	int64_t s = size > (uint64_t)SIZE_CAP ? SIZE_CAP : (int64_t)size, c;

	if (d == RAW || !LOAD(&pytm_keep.gil_plain))
		return pg_take_atomic(d == RAW ? &pytm_keep.countdown : &pytm_keep.countdown_gil, s);
	c = LOAD(&pytm_keep.countdown_gil);	/* under the GIL: no other writer */
	if (c >= s) {
		STORE(&pytm_keep.countdown_gil, c - s);
		return 0;
	}
	STORE(&pytm_keep.countdown_gil, pg_draw(LOAD(&pytm_keep.rate)));
	return 1;
}

/* S / (1 - exp(-S/R)), rounded: the bytes a sample of S bytes stands for. */
COLD uint64_t pg_weight(uint64_t size)
{
	double s = (double)size;
	double w = s / pg_one_minus_exp_neg(s / (double)LOAD(&pytm_keep.rate));

	return (uint64_t)(w + 0.5);
}

/* ---- the set of sampled blocks ---- */

INLINE uint64_t pg_bucket(uint64_t ptr)
{
	/* The mask keeps a bad shift inside the set. */
	return (((ptr >> 4) * 0x9e3779b97f4a7c15ULL) >> LOAD(&pytm_keep.set_shift)) &
	       (PYTM_SET_MAX_BUCKETS - 1);
}

/* 1 if PTR went in; 0 if its bucket is full. */
INLINE int pg_insert(uint64_t ptr)
{
	uint64_t b = pg_bucket(ptr), *slot = &pytm_slots[b * PYTM_SET_WAYS], none;
	int i;

	for (i = 0; i < PYTM_SET_WAYS; i++) {
		none = 0;
		if (!LOAD(&slot[i]) &&
		    __atomic_compare_exchange_n(&slot[i], &none, ptr, 0,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
			/* After the slot: a free of PTR comes after we return. */
			ADD(&pytm_counts[b], 1);
			return 1;
		}
	}
	return 0;
}

/*
 * PTR's slot in the set, from way FROM of its bucket B on; NULL if it is
 * not there.
 */
INLINE uint64_t *pg_find(uint64_t ptr, uint64_t b, int from)
{
	uint64_t *slot;
	int i;

	if (!LOAD(&pytm_counts[b]))
		return 0;	/* the common case: one byte load */
	slot = &pytm_slots[b * PYTM_SET_WAYS];
	for (i = from; i < PYTM_SET_WAYS; i++)
		if (LOAD(&slot[i]) == ptr)
			return &slot[i];
	return 0;
}

/* 1 if PTR is in the set. */
INLINE int pg_has(uint64_t ptr)
{
	return pg_find(ptr, pg_bucket(ptr), 0) != 0;
}

/* 1 if PTR was in the set (and is no more). */
INLINE int pg_remove(uint64_t ptr)
{
	uint64_t b = pg_bucket(ptr), *slot, want;

	for (slot = pg_find(ptr, b, 0); slot;
	     slot = pg_find(ptr, b, (int)(slot - &pytm_slots[b * PYTM_SET_WAYS]) + 1)) {
		want = ptr;
		if (__atomic_compare_exchange_n(slot, &want, 0, 0,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
			ADD(&pytm_counts[b], (uint8_t)-1);
			return 1;
		}
	}
	return 0;
}

/* ---- the trampolines ---- */

INLINE uint64_t pg_self(void)
{
	uint64_t tp;

	__asm__ volatile("mov %%fs:0, %0" : "=r"(tp));	/* the x86-64 ABI's thread pointer */
	return tp;
}

/*
 * A forked child (its data page wiped) whose parent's tracer does not
 * follow forks: the table slots that still lead to this page (exact or
 * sampled entries) get their originals back, so that from its next call
 * on the child pays nothing. One compare-and-swap a slot: a hook put on
 * top of ours since (tracemalloc started in the child) keeps chaining
 * through the page, unarmed. The tables are the interpreter's own, at the
 * addresses its parent had; no other thread can be inside one of ours
 * that is not a call already under way (which still reaches the original).
 */
#define DECLARE_TRAMPS(name)							\
void *pytm_tramp_##name##_malloc(void *ctx, size_t size) HIDDEN;		\
void *pytm_tramp_##name##_calloc(void *ctx, size_t n, size_t e) HIDDEN;	\
void *pytm_tramp_##name##_realloc(void *ctx, void *p, size_t size) HIDDEN;	\
void pytm_tramp_##name##_free(void *ctx, void *p) HIDDEN;
DECLARE_TRAMPS(raw)
DECLARE_TRAMPS(mem)
DECLARE_TRAMPS(obj)

/* Slot K of table D back to its original if it leads here (exact or SAMPLED). */
INLINE void pg_unhook_slot(int d, int k, uint64_t sampled)
{
	uint64_t table = LOAD(&pytm_keep.tables[d]), *slot, want;

	if (!table)
		return;
	slot = (uint64_t *)table + 1 + k;
	want = LOAD(slot);
	if (want == (uint64_t)(pytm_exact_tramps + (d * 4 + k) * 128) || want == sampled)
		__atomic_compare_exchange_n(slot, &want, (uint64_t)pytm_orig[d * 4 + k], 0,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/* Unrolled: each entry's address RIP-relative (the page has no relocations). */
#define UNHOOK_DOMAIN(name, d)						\
	do {								\
		pg_unhook_slot(d, MALLOC, (uint64_t)pytm_tramp_##name##_malloc);	\
		pg_unhook_slot(d, CALLOC, (uint64_t)pytm_tramp_##name##_calloc);	\
		pg_unhook_slot(d, REALLOC, (uint64_t)pytm_tramp_##name##_realloc);	\
		pg_unhook_slot(d, FREE, (uint64_t)pytm_tramp_##name##_free);	\
	} while (0)

int pytm_reftrace(void *op, int event, void *data) HIDDEN;

/* Every table slot that leads here back to its original, and the reference tracer. */
COLD void pg_unhook_all(void)
{
	uint64_t *ref = (uint64_t *)LOAD(&pytm_keep.ref_slot), want;

	UNHOOK_DOMAIN(raw, RAW);
	UNHOOK_DOMAIN(mem, MEM);
	UNHOOK_DOMAIN(obj, OBJ);
	/* The reference tracer too, if it is still ours (tracer_data was never changed). */
	want = (uint64_t)pytm_reftrace;
	if (ref && LOAD(ref) == want)
		__atomic_compare_exchange_n(ref, &want, LOAD(&pytm_keep.ref_prev), 0,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

void pg_unhook(void) HIDDEN;
void pg_unhook(void)
{
	if (!LOAD(&pytm_keep.follow))
		pg_unhook_all();
}

/* How a call goes: straight through, or sampled, past which sites. */
enum { BYPASS = 0, ARMED = 1, CHILD = 2 };

/*
 * Not armed: no tracer (a disarmed process the tracer set up), or a forked
 * child (its own part wiped): one whose parent's tracer follows forks goes
 * FOLLOWED's way (the allocator sampled as its parent was, past the
 * children's sites, until its own attach); any other puts its tables
 * back (pg_unhook).
 */
COLD int pg_unarmed(int followed)
{
	if (LOAD(&pytm_ctl.set_up))
		return BYPASS;
	if (!LOAD(&pytm_keep.follow)) {
		pg_unhook();
		return BYPASS;
	}
	return followed;
}

/* Pass straight through (BYPASS) when not armed or nested. */
INLINE int pg_mode(uint64_t self)
{
	int mode = LOAD(&pytm_ctl.armed) ? ARMED :
		   pg_unarmed(LOAD(&pytm_keep.rate) || LOAD(&pytm_rec.ring) ? CHILD : BYPASS);

	return mode && LOAD(&pytm_ctl.outer) == self ? BYPASS : mode;
}

/*
 * Around the original call of an obj/mem trampoline (GIL held: one thread
 * at a time): raw calls of ours made meanwhile by this thread pass through.
 * Raw calls run without the GIL and never write it.
 */
INLINE void pg_enter(int d, uint64_t self)
{
	if (d != RAW)
		STORE(&pytm_ctl.outer, self);
}

INLINE void pg_leave(int d)
{
	if (d != RAW)
		STORE(&pytm_ctl.outer, 0);
}

/*
 * ---- the in-target recorder (exact mode, issue #12) ----
 *
 * Each event goes into the ring the tracer drains (page/ring.c), with the
 * stack walked here (page/recorder.c): no kernel entry. What the page
 * cannot do alone goes BPF's way, past the same sites as sampled mode's
 * (weight = size), and stays that way for its block:
 *  - an allocation whose thread state is not found here (a raw call
 *    without the GIL), or that finds the ring full: BPF walks and records
 *    it in its map; the block goes into the set, so that its free passes
 *    the free site too;
 *  - a free that finds the ring full: past the tomb site with its number
 *    (the ring's head then: page/ring.c), so that the tracer drops the
 *    block in order (the allocation is in the ring, maybe not yet read).
 * Code objects: the set holds each one the ring has shown (address | 1);
 * a frame of one not in it is flagged and passes the code site, so that
 * the tracer reads it at once (it is alive: its frame runs; the drain may
 * come after its free, or after an exec), and goes into the set then, its
 * event's slot already claimed, so that any later event that finds it
 * there is behind the event that flagged it. Its free takes it out: a new
 * code object at the same address is flagged again.
 * A tracer that stopped draining (killed): after STALL full rings in a
 * row with the consumer's tail unmoved, the page disarms itself and puts
 * the allocator tables back: nothing to pay until the next attach.
 */
#define STALL	(1u << 20)
#define WAIT_TSC	(1u << 16)	/* ~25 us at 2.5 GHz */

INLINE uint64_t pg_tstate(void)
{
	const struct pytm_offsets *off = &pytm_rec.off;
	uint64_t ts;

	/* 3.12+: the thread's current state (none while it does not hold the GIL). */
	if (__atomic_load_n(&pytm_rec.tls_ok, __ATOMIC_ACQUIRE))
		return pytm_rec_tstate(off, 0, LOAD(&pytm_rec.tls), 0);
	/* Until 3.11 the GIL holder's: ours if it holds the GIL (a raw call may not). */
	ts = pytm_rec_tstate(off, LOAD(&pytm_rec.runtime), 0, 1);
	if (ts && *(const volatile uint64_t *)(ts + off->tstate_thread_id) != pg_self())
		return 0;
	return ts;
}

COLD void pg_rec_stalled(struct pytm_ring_hdr *h)
{
	uint64_t tail = LOAD(&h->tail);

	if (tail != LOAD(&pytm_ctl.stall_tail)) {
		STORE(&pytm_ctl.stall_tail, tail);
		STORE(&pytm_ctl.stall_count, 0);
		return;
	}
	if (ADD(&pytm_ctl.stall_count, 1) + 1 >= STALL) {
		/*
		 * Nobody drains: stop, and put the tables back, so that the
		 * process pays nothing at all until the next attach (which
		 * finds them as at a first one). Only the thread that disarms
		 * does: a tracer attaching meanwhile writes `armed` first.
		 */
		uint8_t on = 1;

		if (__atomic_compare_exchange_n(&pytm_ctl.armed, &on, 0, 0, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED))
			pg_unhook_all();
	}
}

/*
 * The ring is full: wait for the tracer to make room, up to WAIT_TSC
 * cycles; 1 if it did. Going BPF's way costs a kernel entry and a walk
 * there (microseconds), and fills the set, which a heap growing faster
 * than the drain would overflow: a short wait for a drain that keeps
 * moving costs less. A tracer that did not move its tail in a whole wait
 * (stopped, killed, busy) is not waited for again until it does.
 */
COLD int pg_rec_wait(struct pytm_ring_hdr *h)
{
	uint64_t n = LOAD(&h->slots), t0;

	if (LOAD(&h->tail) + 1 == LOAD(&pytm_ctl.wait_tail))
		return 0;
	t0 = __builtin_ia32_rdtsc();
	do {
		__builtin_ia32_pause();
		if (LOAD(&h->head) - LOAD(&h->tail) < n) {
			ADD(&pytm_ctl.waits, 1);
			return 1;
		}
	} while (__builtin_ia32_rdtsc() - t0 < WAIT_TSC);
	STORE(&pytm_ctl.wait_tail, LOAD(&h->tail) + 1);
	ADD(&pytm_ctl.wait_timeouts, 1);
	return 0;
}

/*
 * Whether the set holds code object CODE: its code_known slot first. A
 * slot is only ever filled with a code object a frame of the caller's runs
 * (it cannot be freed meanwhile), and emptied at its free (pg_rec_free).
 */
INLINE int pg_code_known(uint64_t code)
{
	uint64_t *slot = &pytm_ctl.code_known[(code >> 4) & (PYTM_CODE_KNOWN - 1)];

	if (LOAD(slot) == code)
		return 1;
	if (!pg_has(code | 1))
		return 0;
	STORE(slot, code);
	return 1;
}

/* Record KIND for PTR in the ring; 0 if it is full. */
CALLED int pg_rec(int kind, int d, uint64_t ptr, uint64_t size, uint64_t tstate)
{
	struct pytm_ring_hdr *h = (struct pytm_ring_hdr *)LOAD(&pytm_rec.ring);
	struct pytm_rec_event ev = { .kind = (uint8_t)kind, .domain = (uint8_t)d,
				     .ptr = ptr, .size = size };
	struct pytm_rec_event *out;
	struct pytm_ring_slot *s;
	uint64_t pos;
	uint32_t i, tries = 0;

	do {
		s = pytm_rec_begin(h, (uint8_t *)LOAD(&pytm_rec.slots), &pytm_rec.off,
				   LOAD(&pytm_rec.max_frames), LOAD(&pytm_rec.max_total),
				   tstate, &ev, &pos);
	} while (!s && ++tries < 4 && pg_rec_wait(h));	/* others may take the room */
	if (!s) {
		pg_rec_stalled(h);
		return 0;
	}
	out = (struct pytm_rec_event *)s->data;
	for (i = 0; i < out->nframe; i++) {
		if (!pg_code_known(out->frames[i].code)) {
			out->frames[i].pad = PYTM_REC_NEW_CODE;
			pg_insert(out->frames[i].code | 1);	/* full: flagged again later */
			/* The tracer reads it now: the drain may come after its free. */
			pytm_site_code(out->frames[i].code, pos);
		}
	}
	/* Not read after this: the slot is the tracer's, then another event's. */
	pytm_ring_publish(s, pos);
	return 1;
}

COLD void pg_rec_bpf_alloc(uint64_t p, uint64_t size)
{
	if (!pg_insert(p))
		ADD(&pytm_ctl.lost_full, 1);	/* its free will not pass the site */
	ADD(&pytm_ctl.samples, 1);
	pytm_site_alloc(p, size, size);
}

CALLED void pg_rec_alloc(int d, void *p, uint64_t size)
{
	uint64_t ts;

	if (!p)
		return;
	if (d == OBJ)
		STORE(&pytm_ctl.last_new, (uint64_t)p);	/* see pytm_reftrace */
	ts = pg_tstate();
	if (!ts || !pg_rec(PYTM_REC_ALLOC, d, (uint64_t)p, size, ts))
		pg_rec_bpf_alloc((uint64_t)p, size);
}

COLD void pg_rec_tomb(uint64_t p)
{
	struct pytm_ring_hdr *h = (struct pytm_ring_hdr *)LOAD(&pytm_rec.ring);

	ADD(&pytm_ctl.frees, 1);
	pytm_site_tomb(p, pytm_ring_now(h));
}

CALLED void pg_rec_free(int d, void *p)
{
	if (!p)
		return;
	if (pg_remove((uint64_t)p | 1)) {	/* a code object goes */
		uint64_t *slot = &pytm_ctl.code_known[((uint64_t)p >> 4) &
						      (PYTM_CODE_KNOWN - 1)];

		if (LOAD(slot) == (uint64_t)p)
			STORE(slot, 0);
	}
	if (pg_remove((uint64_t)p)) {		/* a block BPF recorded */
		ADD(&pytm_ctl.frees, 1);
		pytm_site_free((uint64_t)p);
		return;
	}
	if (!pg_rec(PYTM_REC_FREE, d, (uint64_t)p, 0, 0))
		pg_rec_tomb((uint64_t)p);
}

/* A sampled block: into the set, then past the alloc site (MODE's). */
COLD void pg_sampled(void *p, uint64_t size, int mode)
{
	uint64_t w = pg_weight(size);

	if (!pg_insert((uint64_t)p)) {
		ADD(&pytm_ctl.lost_full, 1);
		ADD(&pytm_ctl.lost_bytes, w);
		return;
	}
	ADD(&pytm_ctl.samples, 1);
	if (mode == CHILD)
		pytm_site_child_alloc((uint64_t)p, size, w);
	else
		pytm_site_alloc((uint64_t)p, size, w);
}

/*
 * Exact, a followed child of a recording process: the ring is its
 * parent's, so every event goes BPF's way, past the children's sites
 * (the tracer copies what it inherited into BPF's map), until its own
 * attach.
 */
COLD void pg_child_exact_alloc(int d, void *p, uint64_t size)
{
	if (!p)
		return;
	if (d == OBJ)
		STORE(&pytm_ctl.last_new, (uint64_t)p);	/* see pytm_reftrace */
	pytm_site_child_alloc((uint64_t)p, size, size);
}

COLD void pg_child_exact_free(void *p)
{
	if (p)
		pytm_site_child_free((uint64_t)p);
}

/* A block was allocated in domain D: sample it, and if so record it. */
INLINE void pg_allocated(int d, void *p, uint64_t size, int mode)
{
	if (!LOAD(&pytm_keep.rate)) {
		/* Exact: the recorder (no ring: a tracer's page set up otherwise). */
		if (!LOAD(&pytm_rec.ring))
			return;
		if (mode == CHILD)
			pg_child_exact_alloc(d, p, size);
		else
			pg_rec_alloc(d, p, size);
		return;
	}
	if (p && pg_take(d, size))
		pg_sampled(p, size, mode);
}

/* A sampled block goes: tell the tracer before the address can be reused. */
COLD void pg_sampled_free(void *p, int mode)
{
	ADD(&pytm_ctl.frees, 1);
	if (mode == CHILD)
		pytm_site_child_free((uint64_t)p);
	else
		pytm_site_free((uint64_t)p);
}

INLINE void pg_freeing(void *p, int mode)
{
	if (!LOAD(&pytm_keep.rate)) {
		if (!LOAD(&pytm_rec.ring))
			return;
		if (mode == CHILD)
			pg_child_exact_free(p);
		else
			pg_rec_free(0, p);
		return;
	}
	if (p && pg_remove((uint64_t)p))
		pg_sampled_free(p, mode);
}

#define ORIG(d, k)	pytm_orig[(d) * 4 + (k)]

INLINE void *pg_malloc(int d, void *ctx, size_t size)
{
	malloc_fn f = (malloc_fn)ORIG(d, MALLOC);
	uint64_t self = pg_self();
	int mode = pg_mode(self);
	void *p;

	if (!mode)
		return f(ctx, size);
	pg_enter(d, self);
	p = f(ctx, size);
	pg_leave(d);
	pg_allocated(d, p, size, mode);
	return p;
}

INLINE void *pg_calloc(int d, void *ctx, size_t nelem, size_t elsize)
{
	calloc_fn f = (calloc_fn)ORIG(d, CALLOC);
	uint64_t self = pg_self();
	int mode = pg_mode(self);
	size_t size;
	void *p;

	if (!mode)
		return f(ctx, nelem, elsize);
	pg_enter(d, self);
	p = f(ctx, nelem, elsize);
	pg_leave(d);
	if (!__builtin_mul_overflow(nelem, elsize, &size))
		pg_allocated(d, p, size, mode);
	return p;
}

INLINE void *pg_realloc(int d, void *ctx, void *old, size_t size)
{
	realloc_fn f = (realloc_fn)ORIG(d, REALLOC);
	uint64_t self = pg_self();
	int mode = pg_mode(self), was = 0;
	void *p;

	if (!mode)
		return f(ctx, old, size);
	if (!LOAD(&pytm_keep.rate)) {
		if (!LOAD(&pytm_rec.ring))
			return f(ctx, old, size);
		/* Recorded: the old block goes before the call, as below. */
		if (old && mode == CHILD)
			pg_child_exact_free(old);
		else if (old)
			pg_rec_free(d, old);
		pg_enter(d, self);
		p = f(ctx, old, size);
		pg_leave(d);
		if (p && mode == CHILD)
			pg_child_exact_alloc(d, p, size);
		else if (p)
			pg_rec_alloc(d, p, size);
		else if (old)	/* the block lives on, untraced */
			ADD(&pytm_ctl.realloc_failed, 1);
		return p;
	}
	/* Out of the set before the call: a moved block's address is free at once. */
	if (old && pg_remove((uint64_t)old)) {
		was = 1;
		pg_sampled_free(old, mode);
	}
	pg_enter(d, self);
	p = f(ctx, old, size);
	pg_leave(d);
	if (!p) {
		if (was)	/* the block lives on, untraced */
			ADD(&pytm_ctl.realloc_failed, 1);
		return p;
	}
	/* The new block is a new segment, as tracemalloc makes it a new trace. */
	pg_allocated(d, p, size, mode);
	return p;
}

INLINE void pg_free(int d, void *ctx, void *p)
{
	free_fn f = (free_fn)ORIG(d, FREE);
	uint64_t self = pg_self();
	int mode = pg_mode(self);

	if (!mode) {
		f(ctx, p);
		return;
	}
	pg_freeing(p, mode);
	/* pymalloc gives a large block back through the raw table: the same free. */
	pg_enter(d, self);
	f(ctx, p);
	pg_leave(d);
}

/*
 * The twelve entry points the tables point to. A raw call of ours nested
 * in another raw call of ours (a hook layer below us that allocates
 * through the table) is not told apart: none of CPython's own does.
 */
#define DOMAIN_TRAMPS(name, d)							\
void *pytm_tramp_##name##_malloc(void *ctx, size_t size)			\
{ return pg_malloc(d, ctx, size); }						\
void *pytm_tramp_##name##_calloc(void *ctx, size_t n, size_t e)		\
{ return pg_calloc(d, ctx, n, e); }						\
void *pytm_tramp_##name##_realloc(void *ctx, void *p, size_t size)		\
{ return pg_realloc(d, ctx, p, size); }					\
void pytm_tramp_##name##_free(void *ctx, void *p)				\
{ pg_free(d, ctx, p); }

DOMAIN_TRAMPS(raw, RAW)
DOMAIN_TRAMPS(mem, MEM)
DOMAIN_TRAMPS(obj, OBJ)

/*
 * ---- objects taken from a free list (3.13+) ----
 *
 * tracemalloc gives a block the traceback of the object created in it,
 * not of the allocation, when the two differ: a tuple, float, list...
 * taken from a free list reuses a live block with no allocator call.
 * 3.13's runtime calls a reference tracer at each object creation
 * (_PyRuntime.ref_tracer, PyRefTracer_CREATE from _Py_NewReference);
 * tracemalloc's own (_PyTraceMalloc_TraceRef) moves the block's trace to
 * the current traceback. The tracer points the runtime at this function
 * (user/attach/redirect.c) under the table swap's stop, keeping the one
 * it replaced in pytm_keep.ref_prev, called first, with the same data
 * (tracer_data is left as it was); it puts it back at detach, and a
 * forked child that is not followed does in pg_unhook.
 *
 * Called for every creation and destruction with the GIL held. A block
 * the obj domain's malloc/calloc just returned already has this stack
 * (nothing ran Python code in between): the exact trampolines leave it in
 * pytm_ctl.last_new and it costs an exchange. The equality cannot be
 * stale: last_new holds an address only until the next creation takes
 * it, and an allocator returns a block again only after it was freed, so
 * a block reused from a free list is never the last one returned.
 * Sampled: only blocks in the set have a trace. Anything else passes the
 * site with the block's address (pytm_site_newref: one kernel entry, BPF
 * walks the stack and re-stamps the block if it is traced).
 */
void pytm_site_newref(uint64_t ptr) HIDDEN;
void pytm_site_child_newref(uint64_t ptr) HIDDEN;

typedef int (*reftracer_fn)(void *op, int event, void *data);
#define REF_CREATE		0		/* PyRefTracer_CREATE */

/* Where OP's block starts: op - _PyType_PreHeaderSize(Py_TYPE(op)). */
INLINE uint64_t pg_block_of(const char *op)
{
	const char *type = *(const char *const *)(op + LOAD(&pytm_keep.ob_type));
	uint64_t flags = *(const uint64_t *)(type + LOAD(&pytm_keep.tp_flags));

	return (uint64_t)op - (flags & PYTM_TPFLAGS_HAVE_GC ? LOAD(&pytm_keep.gc_head) : 0) -
	       (flags & PYTM_TPFLAGS_PREHEADER ? 2 * sizeof(void *) : 0);
}

COLD void pg_created(uint64_t ptr, int mode)
{
	if (mode == CHILD)
		pytm_site_child_newref(ptr);
	else
		pytm_site_newref(ptr);
}

int pytm_reftrace(void *op, int event, void *data)
{
	reftracer_fn prev = (reftracer_fn)LOAD(&pytm_keep.ref_prev);
	int ret = prev ? prev(op, event, data) : 0, mode;
	uint64_t ptr;

	if (event != REF_CREATE || !op)
		return ret;
	/* A followed child passes its own site in either mode. */
	mode = LOAD(&pytm_ctl.armed) ? ARMED : pg_unarmed(CHILD);
	if (!mode)
		return ret;
	ptr = pg_block_of(op);
	if (LOAD(&pytm_keep.rate)) {
		if (!pg_has(ptr))
			return ret;
	} else if (__atomic_exchange_n(&pytm_ctl.last_new, 0, __ATOMIC_RELAXED) == ptr) {
		return ret;
	} else if (mode == ARMED && LOAD(&pytm_rec.ring) && !pg_has(ptr)) {
		/* Recording, and not a block BPF has: the tracer re-stamps it. */
		uint64_t ts = pg_tstate();

		if (ts && pg_rec(PYTM_REC_RESTAMP, OBJ, ptr, 0, ts))
			return ret;
		ADD(&pytm_ctl.restamp_lost, 1);
		return ret;
	}
	pg_created(ptr, mode);
	return ret;
}
