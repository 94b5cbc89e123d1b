// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The sampler (page/sampler.c) in a test process, before it is ever
 * injected: the same source, with the page's symbols defined here. Its
 * numbers against libm; the sampling rate and the estimator against the
 * model (binomial and weight sums within 5 standard errors); every
 * allocator kind; the nesting rule (a raw call inside our obj call is the
 * obj call's block, counted once); the set (frees of sampled blocks only,
 * full buckets counted); realloc both ways and failing; threads hammering
 * the shared countdown and set at once; a forked child's unhooking.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "page.h"

void *pytm_orig[3 * 4];
struct pytm_page_ctl pytm_ctl;
uint8_t pytm_counts[PYTM_SET_MAX_BUCKETS];
uint64_t pytm_slots[PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS];
struct pytm_page_keep pytm_keep;
struct pytm_page_rec pytm_rec;
uint8_t pytm_exact_tramps[12 * 128];

/* What the probes would see. */
static atomic_ulong n_alloc_sites, n_free_sites, weight_sum, bad_free;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
#define LIVE_MAX (1 << 20)
static uint64_t *live;		/* open addressing: sampled blocks the "tracer" holds */

static uint64_t *live_slot(uint64_t p)
{
	uint64_t h = (p * 0x9e3779b97f4a7c15ULL) >> 44;

	while (live[h] && live[h] != p)
		h = (h + 1) & (LIVE_MAX - 1);
	return &live[h];
}

/* Declared as page/sampler.c declares them: clang wants the attribute first. */
#define SITE_DECL __attribute__((visibility("hidden")))
void pytm_site_alloc(uint64_t ptr, uint64_t size, uint64_t weight) SITE_DECL;
void pytm_site_free(uint64_t ptr) SITE_DECL;
void pytm_site_child_alloc(uint64_t ptr, uint64_t size, uint64_t weight) SITE_DECL;
void pytm_site_child_free(uint64_t ptr) SITE_DECL;

void pytm_site_alloc(uint64_t ptr, uint64_t size, uint64_t weight)
{
	n_alloc_sites++;
	weight_sum += weight;
	pthread_mutex_lock(&live_lock);
	*live_slot(ptr) = ptr;
	pthread_mutex_unlock(&live_lock);
}

static void live_erase(uint64_t *s)
{
	uint64_t *hole = s, *t;
	uint64_t i = s - live, j, h;

	/* backward-shift deletion */
	*hole = 0;
	for (j = (i + 1) & (LIVE_MAX - 1); live[j]; j = (j + 1) & (LIVE_MAX - 1)) {
		t = &live[j];
		h = (*t * 0x9e3779b97f4a7c15ULL) >> 44;
		if (((j - h) & (LIVE_MAX - 1)) >= ((j - (hole - live)) & (LIVE_MAX - 1))) {
			*hole = *t;
			*t = 0;
			hole = t;
		}
	}
}

void pytm_site_free(uint64_t ptr)
{
	uint64_t *s;

	n_free_sites++;
	pthread_mutex_lock(&live_lock);
	s = live_slot(ptr);
	if (*s)
		live_erase(s);
	else
		bad_free++;	/* a free site for a block never sampled */
	pthread_mutex_unlock(&live_lock);
}

/* The children's sites: the same bookkeeping, counted apart. */
static atomic_ulong n_child_allocs, n_child_frees;

void pytm_site_child_alloc(uint64_t ptr, uint64_t size, uint64_t weight)
{
	n_child_allocs++;
	pytm_site_alloc(ptr, size, weight);
}

void pytm_site_child_free(uint64_t ptr)
{
	n_child_frees++;
	pytm_site_free(ptr);
}

/* The reference tracer's sites: the blocks they were given, in order. */
static uint64_t newref_seen[16], child_newref_seen[16];
static unsigned int n_newref, n_child_newref;
void pytm_site_newref(uint64_t ptr) SITE_DECL;
void pytm_site_child_newref(uint64_t ptr) SITE_DECL;

void pytm_site_newref(uint64_t ptr)
{
	newref_seen[n_newref++ % 16] = ptr;
}

void pytm_site_child_newref(uint64_t ptr)
{
	child_newref_seen[n_child_newref++ % 16] = ptr;
}

#include "../../page/sampler.c"
#include "../../page/recorder.c"

/* The recorder's tomb site: (block, number) of the last ones. */
static uint64_t tomb_ptr, tomb_clock;
static unsigned int n_tomb;
void pytm_site_tomb(uint64_t ptr, uint64_t clock) SITE_DECL;

void pytm_site_tomb(uint64_t ptr, uint64_t clock)
{
	tomb_ptr = ptr;
	tomb_clock = clock;
	n_tomb++;
}

/* The recorder's code site: (code object, number) of the last one. */
static uint64_t code_site_code, code_site_clock;
static unsigned int n_code_site;
void pytm_site_code(uint64_t code, uint64_t clock) SITE_DECL;

void pytm_site_code(uint64_t code, uint64_t clock)
{
	code_site_code = code;
	code_site_clock = clock;
	n_code_site++;
}

/* The "original" allocators: libc, and a pymalloc-like obj domain. */
static atomic_ulong raw_calls;
static void *raw_malloc(void *c, size_t n) { raw_calls++; return malloc(n ? n : 1); }
static void *raw_calloc(void *c, size_t n, size_t e) { raw_calls++; return calloc(n ? n : 1, e ? e : 1); }
static void *raw_realloc(void *c, void *p, size_t n) { raw_calls++; return n > (1UL << 40) ? NULL : realloc(p, n ? n : 1); }
static void raw_free(void *c, void *p) { free(p); }
/* pymalloc: large blocks go to the raw domain through the table, i.e. through us. */
static void *obj_malloc(void *c, size_t n) { return n > 512 ? pytm_tramp_raw_malloc(c, n) : malloc(n ? n : 1); }
static void *obj_calloc(void *c, size_t n, size_t e) { return n * e > 512 ? pytm_tramp_raw_calloc(c, n, e) : calloc(n ? n : 1, e ? e : 1); }
static void *obj_realloc(void *c, void *p, size_t n) { return n > 512 ? pytm_tramp_raw_realloc(c, p, n) : realloc(p, n ? n : 1); }
static void obj_free(void *c, void *p) { pytm_tramp_raw_free(c, p); }

typedef void *(*mfn)(void *, size_t);
typedef void (*ffn)(void *, void *);
static const mfn tmalloc[3] = { pytm_tramp_raw_malloc, pytm_tramp_mem_malloc, pytm_tramp_obj_malloc };
static const ffn tfree[3] = { pytm_tramp_raw_free, pytm_tramp_mem_free, pytm_tramp_obj_free };

static unsigned int set_used(void)
{
	unsigned int n = 0, i;

	for (i = 0; i < PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS; i++)
		n += pytm_slots[i] != 0;
	return n;
}

static int gil_plain = 1;

static void setup(uint64_t rate, unsigned int bucket_bits, uint64_t seed)
{
	memset(&pytm_ctl, 0, sizeof(pytm_ctl));
	memset(&pytm_keep, 0, sizeof(pytm_keep));
	memset(pytm_counts, 0, sizeof(pytm_counts));
	memset(pytm_slots, 0, sizeof(pytm_slots));
	memset(live, 0, LIVE_MAX * sizeof(*live));
	n_alloc_sites = n_free_sites = weight_sum = bad_free = 0;
	n_child_allocs = n_child_frees = 0;
	pytm_keep.rate = rate;
	pytm_keep.set_shift = 64 - bucket_bits;
	pytm_keep.prng = seed;
	pytm_keep.countdown = pg_draw(rate);
	pytm_keep.countdown_gil = pg_draw(rate);
	pytm_keep.gil_plain = gil_plain;
	pytm_ctl.armed = 1;
	pytm_ctl.set_up = 1;
}

static void test_numbers(void)
{
	double x, worst = 0, e;

	for (x = 1e-300; x < 1e300; x *= 1.37) {
		e = fabs(pg_log(x) - log(x)) / fmax(fabs(log(x)), 1e-300);
		if (e > worst)
			worst = e;
	}
	for (x = 0.5; x < 2; x += 1e-4) {
		e = fabs(pg_log(x) - log(x));
		if (e > worst)
			worst = e;
	}
	CHECK(worst < 1e-14, "ln: worst relative error %g", worst);
	worst = 0;
	for (x = 1e-12; x < 800; x *= 1.01) {
		double want = -expm1(-x);

		e = fabs(pg_one_minus_exp_neg(x) - want) / want;
		if (e > worst)
			worst = e;
	}
	CHECK(worst < 1e-13, "1-exp(-x): worst relative error %g", worst);
	/* The weight of a block far above R is its size; far below, about R. */
	pytm_keep.rate = 65536;
	CHECK(pg_weight(1 << 30) == 1 << 30, "%llu", (unsigned long long)pg_weight(1 << 30));
	CHECK(pg_weight(16) == 65536 + 8, "%llu", (unsigned long long)pg_weight(16));
}

/* Exponential draws: mean R, and P(E >= t) = exp(-t/R). */
static void test_draws(void)
{
	const int n = 400000;
	double sum = 0, over = 0;
	int i;

	memset(&pytm_ctl, 0, sizeof(pytm_ctl));
	pytm_keep.prng = 12345;
	for (i = 0; i < n; i++) {
		int64_t d = pg_draw(1000);

		sum += d;
		over += d >= 2000;
	}
	/* floor() lowers the mean by ~0.5; the SE of the mean is R/sqrt(n). */
	CHECK(fabs(sum / n - 999.5) < 5 * 1000 / sqrt(n), "mean %f", sum / n);
	CHECK(fabs(over / n - exp(-2)) < 5 * sqrt(exp(-2) * (1 - exp(-2)) / n),
	      "P(E >= 2R) %f", over / n);
}

/*
 * N blocks of SIZE through domain D: the samples are binomial(N, p) with
 * p = 1 - exp(-SIZE/R), and the weights sum to about N * SIZE.
 */
static void check_rate(int d, size_t size, uint64_t rate, int n)
{
	void **p = calloc(n, sizeof(*p));
	double pr = -expm1(-(double)size / rate), mean = n * pr;
	double sd = sqrt(n * pr * (1 - pr));
	unsigned long raw0 = raw_calls;
	int i;

	setup(rate, 16, 777 + size + d);
	for (i = 0; i < n; i++)
		p[i] = tmalloc[d](NULL, size);
	CHECK(fabs(n_alloc_sites - mean) <= 5 * sd + 1,
	      "domain %d size %zu: %lu samples, expected %.1f +- %.1f", d, size,
	      (unsigned long)n_alloc_sites, mean, sd);
	/* sum of weights: variance n * p * w^2 (1 - p) */
	{
		double w = size / pr, se = w * sd, total = (double)n * size;

		CHECK(fabs(weight_sum - total) <= 5 * se + w,
		      "domain %d size %zu: estimated %lu bytes of %.0f (se %.0f)", d, size,
		      (unsigned long)weight_sum, total, se);
	}
	CHECK(set_used() == n_alloc_sites, "set %u, samples %lu", set_used(),
	      (unsigned long)n_alloc_sites);
	CHECK(pytm_ctl.samples == n_alloc_sites, "counter");
	for (i = 0; i < n; i++)
		tfree[d](NULL, p[i]);
	CHECK(n_free_sites == n_alloc_sites && !bad_free,
	      "frees %lu of %lu sampled, %lu unknown", (unsigned long)n_free_sites,
	      (unsigned long)n_alloc_sites, (unsigned long)bad_free);
	CHECK(set_used() == 0, "set not empty: %u", set_used());
	if (d == 2 && size > 512)
		CHECK(raw_calls - raw0 == (unsigned long)n, "raw calls %lu",
		      raw_calls - raw0);
	free(p);
}

static void test_rates(void)
{
	check_rate(0, 16, 4096, 200000);
	check_rate(1, 100, 4096, 200000);
	check_rate(2, 64, 65536, 400000);
	check_rate(0, 4096, 4096, 50000);
	/* Nested: obj's 2 KiB blocks go through the raw trampoline, counted once. */
	check_rate(2, 2048, 4096, 100000);
	check_rate(2, 1 << 20, 65536, 2000);
	/* obj/mem by compare-and-swap too (more than one interpreter) */
	gil_plain = 0;
	check_rate(2, 64, 65536, 400000);
	check_rate(1, 2048, 4096, 100000);
	gil_plain = 1;
}

static void test_calloc_realloc(void)
{
	void *p, *q;
	int i, moved = 0;

	/* R = 1 byte: every block of 64 bytes or more is sampled (p > 1 - 1e-27). */
	setup(1, 16, 1);
	p = pytm_tramp_mem_calloc(NULL, 8, 8);
	CHECK(n_alloc_sites == 1 && set_used() == 1, "calloc sampled");
	/* realloc of a sampled block: its free, then the new block's sample */
	q = pytm_tramp_mem_realloc(NULL, p, 4096);
	CHECK(n_free_sites == 1 && n_alloc_sites == 2 && set_used() == 1 && !bad_free,
	      "realloc sampled->sampled: %lu frees, %lu allocs",
	      (unsigned long)n_free_sites, (unsigned long)n_alloc_sites);
	/* a failing realloc of a sampled block: it lives on, untraced */
	p = pytm_tramp_raw_realloc(NULL, q, 1UL << 41);
	CHECK(!p && pytm_ctl.realloc_failed == 1 && set_used() == 0, "failed realloc");
	pytm_tramp_raw_free(NULL, q);
	CHECK(n_free_sites == 2, "no second free site for an untraced block");

	/* realloc that moves an unsampled block: no free site, the new one sampled or not */
	setup(1 << 30, 16, 2);
	void *pin[64];

	p = pytm_tramp_raw_malloc(NULL, 64);
	for (i = 0; i < 64; i++) {
		q = pytm_tramp_raw_realloc(NULL, p, 64 << (i % 12));
		moved += q != p;
		p = q;
		pin[i] = malloc(32);	/* no room to grow in place */
	}
	for (i = 0; i < 64; i++)
		free(pin[i]);
	CHECK(n_alloc_sites == 0 && n_free_sites == 0 && moved > 0,
	      "unsampled reallocs: %lu allocs, %lu frees, %d moved",
	      (unsigned long)n_alloc_sites, (unsigned long)n_free_sites, moved);
	pytm_keep.rate = 1;
	pytm_keep.countdown = 0;
	q = pytm_tramp_raw_realloc(NULL, p, 1 << 16);
	CHECK(n_alloc_sites == 1 && n_free_sites == 0 && set_used() == 1,
	      "unsampled -> sampled");
	pytm_tramp_raw_free(NULL, q);
	CHECK(n_free_sites == 1 && set_used() == 0 && !bad_free, "freed");
}

static void test_full_and_disarmed(void)
{
	void *p[40];
	int i;

	setup(1, 1, 3);		/* two buckets: 16 slots */
	for (i = 0; i < 40; i++)
		p[i] = pytm_tramp_raw_malloc(NULL, 1000);
	CHECK(n_alloc_sites == 16 && pytm_ctl.lost_full == 24 &&
	      pytm_ctl.lost_bytes >= 24 * 1000, "full: %lu recorded, %llu lost",
	      (unsigned long)n_alloc_sites, (unsigned long long)pytm_ctl.lost_full);
	for (i = 0; i < 40; i++)
		pytm_tramp_raw_free(NULL, p[i]);
	CHECK(n_free_sites == 16 && !bad_free && set_used() == 0, "full: frees");

	/* Not armed: nothing but the original call. */
	setup(1, 16, 4);
	pytm_ctl.armed = 0;
	p[0] = pytm_tramp_obj_malloc(NULL, 100);
	pytm_tramp_obj_free(NULL, p[0]);
	CHECK(!n_alloc_sites && !n_free_sites && !pytm_ctl.outer, "disarmed");

	/* Another thread inside an obj call does not hide this thread's raw calls. */
	setup(1, 16, 5);
	pytm_ctl.outer = pg_self() + 4096;
	p[0] = pytm_tramp_raw_malloc(NULL, 100);
	CHECK(n_alloc_sites == 1, "raw call beside another thread's obj call");
	pytm_ctl.outer = pg_self();	/* ...but inside our own it is nested */
	p[1] = pytm_tramp_raw_malloc(NULL, 100);
	CHECK(n_alloc_sites == 1, "raw call inside our obj call");
	pytm_ctl.outer = 0;
	pytm_tramp_raw_free(NULL, p[0]);
	pytm_tramp_raw_free(NULL, p[1]);
	CHECK(n_free_sites == 1 && !bad_free, "frees");
}

/*
 * A forked child (not armed) whose tracer does not follow: each slot that
 * leads to the page (an exact trampoline or a sampler entry) gets its
 * original back at its first call; a hook of somebody else's stays; with
 * following, nothing changes.
 */
static void test_unhook(void)
{
	uint64_t table[3][5], want[3][5], before[3][5], other = 0x1234560;
	void *const sampled[12] = {
		pytm_tramp_raw_malloc, pytm_tramp_raw_calloc, pytm_tramp_raw_realloc, pytm_tramp_raw_free,
		pytm_tramp_mem_malloc, pytm_tramp_mem_calloc, pytm_tramp_mem_realloc, pytm_tramp_mem_free,
		pytm_tramp_obj_malloc, pytm_tramp_obj_calloc, pytm_tramp_obj_realloc, pytm_tramp_obj_free,
	};
	void *p;
	int d, k, round;

	for (round = 0; round < 2; round++) {
		for (d = 0; d < 3; d++) {
			table[d][0] = 0xc0;	/* ctx: never touched */
			for (k = 0; k < 4; k++) {
				int i = d * 4 + k;

				table[d][k + 1] = i % 3 == 0 ? (uint64_t)(pytm_exact_tramps + i * 128) :
						  i % 3 == 1 ? (uint64_t)sampled[i] : other + i;
			}
		}
		memcpy(want, table, sizeof(want));
		memcpy(before, table, sizeof(before));
		for (d = 0; d < 3; d++)
			for (k = 0; round == 1 && k < 4; k++)
				if ((d * 4 + k) % 3 != 2)
					want[d][k + 1] = (uint64_t)pytm_orig[d * 4 + k];
		setup(1, 16, 6);
		pytm_ctl.armed = 0;
		pytm_keep.follow = round == 0;
		for (d = 0; d < 3; d++)
			pytm_keep.tables[d] = (uint64_t)table[d];
		p = pytm_tramp_mem_malloc(NULL, 100);	/* a disarmed parent */
		pytm_tramp_mem_free(NULL, p);
		CHECK(!memcmp(table, before, sizeof(before)), "the parent keeps its tables");
		CHECK(!n_alloc_sites, "the parent, disarmed, samples nothing");
		pytm_ctl.set_up = 0;	/* a child's own part is wiped */
		p = pytm_tramp_mem_malloc(NULL, 100);	/* through the page, unarmed */
		pytm_tramp_mem_free(NULL, p);
		CHECK(!memcmp(table, want, sizeof(want)) && (round || n_alloc_sites == 1),
		      "%s: the tables as expected", round ? "not following" : "following");
	}
	memset(&pytm_keep, 0, sizeof(pytm_keep));
}

/*
 * A forked child that its parent's tracer follows samples as its parent
 * did, with the set it inherited, past the children's sites; its parent
 * disarmed (set up, not armed) passes straight through.
 */
static void test_child(void)
{
	void *parent[1000], *p[1000];
	unsigned long inherited;
	int i;

	setup(4096, 16, 7);
	for (i = 0; i < 1000; i++)
		parent[i] = pytm_tramp_obj_malloc(NULL, 2000);
	inherited = n_alloc_sites;
	/* The fork: the process's own part wiped, the rest as it was. */
	memset(&pytm_ctl, 0, sizeof(pytm_ctl));
	pytm_keep.follow = 1;
	for (i = 0; i < 1000; i++)
		p[i] = pytm_tramp_raw_malloc(NULL, 3000);
	CHECK(n_child_allocs == n_alloc_sites - inherited && n_child_allocs > 500 &&
	      pytm_ctl.samples == n_child_allocs, "child: %lu samples at its sites",
	      (unsigned long)n_child_allocs);
	for (i = 0; i < 1000; i++) {
		pytm_tramp_obj_free(NULL, parent[i]);	/* what it inherited */
		pytm_tramp_raw_free(NULL, p[i]);
	}
	CHECK(n_child_frees == n_alloc_sites && n_free_sites == n_alloc_sites && !bad_free &&
	      set_used() == 0, "child: every sampled block's free, inherited ones too");
	/* The parent, disarmed by its tracer: nothing. */
	pytm_ctl.set_up = 1;
	p[0] = pytm_tramp_raw_malloc(NULL, 1 << 20);
	pytm_tramp_raw_free(NULL, p[0]);
	CHECK(n_free_sites == n_alloc_sites && pytm_ctl.samples == n_child_allocs,
	      "disarmed parent: nothing sampled");
	memset(&pytm_keep, 0, sizeof(pytm_keep));
}

/* A reference tracer installed before ours: what it was called with. */
static void *prev_op, *prev_data;
static int prev_event, prev_calls;

static int prev_tracer(void *op, int event, void *data)
{
	prev_op = op;
	prev_event = event;
	prev_data = data;
	prev_calls++;
	return 7;
}

/* A type with tp_flags at 168 (3.13's PyTypeObject), objects with ob_type at 8. */
struct fake_type {
	uint64_t words[21];
	uint64_t tp_flags;
};

/*
 * pytm_reftrace: chains to the tracer before it (same data, its result),
 * finds each kind of object's block (GC header, pre-header, both,
 * neither), skips the block the obj domain just returned (exact) or a
 * block not in the set (sampled), passes the site for the rest; unarmed in
 * a child that is not followed it puts the runtime's tracer back (only if
 * still ours), in one that is it passes the children's site.
 */
static void test_reftrace(void)
{
	static const uint64_t flags[4] = { 0, 1ULL << 14, (1ULL << 14) | (3ULL << 3), 1ULL << 4 };
	static const unsigned int presize[4] = { 0, 16, 32, 16 };
	struct fake_type types[4];
	uint8_t mem[4][128] __attribute__((aligned(16)));
	void *op[4];
	uint64_t slot, other = 0x1234;
	int i, ret;

	memset(&pytm_keep, 0, sizeof(pytm_keep));
	memset(&pytm_ctl, 0, sizeof(pytm_ctl));
	pytm_keep.ob_type = 8;
	pytm_keep.tp_flags = offsetof(struct fake_type, tp_flags);
	pytm_keep.gc_head = 16;
	pytm_keep.ref_prev = (uint64_t)prev_tracer;
	pytm_keep.follow = 1;
	pytm_ctl.armed = 1;
	for (i = 0; i < 4; i++) {
		memset(&types[i], 0, sizeof(types[i]));
		types[i].tp_flags = flags[i];
		op[i] = mem[i] + presize[i];
		*(void **)((char *)op[i] + 8) = &types[i];
	}
	CHECK(offsetof(struct fake_type, tp_flags) == 168, "tp_flags at 168");
	/* exact: every kind's block, past the site */
	for (i = 0; i < 4; i++) {
		prev_calls = 0;
		ret = pytm_reftrace(op[i], 0, (void *)0xda7a);
		CHECK(ret == 7 && prev_calls == 1 && prev_op == op[i] && prev_event == 0 &&
		      prev_data == (void *)0xda7a, "kind %d: chained with its data", i);
		CHECK(n_newref == (unsigned int)i + 1 && newref_seen[i] == (uint64_t)mem[i],
		      "kind %d: the block at op - %u", i, presize[i]);
	}
	/* just allocated: skipped once, and only that block */
	pytm_ctl.last_new = (uint64_t)mem[2];
	pytm_reftrace(op[2], 0, NULL);
	CHECK(n_newref == 4 && pytm_ctl.last_new == 0, "the block just allocated is skipped");
	pytm_reftrace(op[2], 0, NULL);
	CHECK(n_newref == 5, "...once: a later creation in it passes the site");
	pytm_ctl.last_new = (uint64_t)mem[1];
	pytm_reftrace(op[2], 0, NULL);
	CHECK(n_newref == 6 && pytm_ctl.last_new == 0, "another block's creation passes");
	/* destruction: chained, no site */
	prev_calls = 0;
	CHECK(pytm_reftrace(op[0], 1, NULL) == 7 && prev_calls == 1 && prev_event == 1 &&
	      n_newref == 6, "destruction: chained only");
	/* no tracer before ours */
	pytm_keep.ref_prev = 0;
	CHECK(pytm_reftrace(op[0], 0, NULL) == 0 && n_newref == 7, "alone: returns 0");
	pytm_keep.ref_prev = (uint64_t)prev_tracer;
	/* sampled: only blocks in the set */
	pytm_keep.rate = 4096;
	pytm_keep.set_shift = 64 - 4;
	pg_insert((uint64_t)mem[3]);
	pytm_reftrace(op[1], 0, NULL);
	CHECK(n_newref == 7, "sampled: a block not in the set is skipped");
	pytm_reftrace(op[3], 0, NULL);
	CHECK(n_newref == 8 && newref_seen[7] == (uint64_t)mem[3], "sampled: one in it passes");
	pg_remove((uint64_t)mem[3]);
	pytm_keep.rate = 0;
	/* a forked child: followed, the children's site */
	memset(&pytm_ctl, 0, sizeof(pytm_ctl));
	pytm_reftrace(op[1], 0, NULL);
	CHECK(n_newref == 8 && n_child_newref == 1 && child_newref_seen[0] == (uint64_t)mem[1],
	      "followed child: the children's site");
	/* not followed: the tracer goes back (if still ours), no site */
	pytm_keep.follow = 0;
	pytm_keep.ref_slot = (uint64_t)&slot;
	slot = (uint64_t)pytm_reftrace;
	prev_calls = 0;
	CHECK(pytm_reftrace(op[1], 0, NULL) == 7 && prev_calls == 1, "child: still chained");
	CHECK(slot == (uint64_t)prev_tracer && n_newref == 8 && n_child_newref == 1,
	      "unfollowed child: the tracer before ours is back");
	pytm_keep.ref_slot = (uint64_t)&other;
	pytm_reftrace(op[1], 0, NULL);
	CHECK(other == 0x1234, "unfollowed child: another tracer is left alone");
	memset(&pytm_keep, 0, sizeof(pytm_keep));
	memset(&pytm_ctl, 0, sizeof(pytm_ctl));
}

#define THREADS 4
#define ROUNDS 200000

static void *hammer(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	void *keep[64] = { 0 };
	unsigned int x = id * 7919 + 1, i;

	for (i = 0; i < ROUNDS; i++) {
		unsigned int k = (x = x * 1103515245 + 12345) >> 16 & 63;
		size_t size = 16 + ((x >> 8) & 1023);

		if (keep[k]) {
			if (x & 0x10000)
				keep[k] = pytm_tramp_raw_realloc(NULL, keep[k], size);
			else {
				pytm_tramp_raw_free(NULL, keep[k]);
				keep[k] = NULL;
			}
		} else {
			keep[k] = (x & 0x20000) ? pytm_tramp_raw_calloc(NULL, 1, size)
						 : pytm_tramp_raw_malloc(NULL, size);
		}
	}
	for (i = 0; i < 64; i++)
		pytm_tramp_raw_free(NULL, keep[i]);
	return NULL;
}

static void test_threads(void)
{
	pthread_t th[THREADS];
	uintptr_t i;

	setup(2048, 12, 6);
	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, hammer, (void *)i);
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	CHECK(n_alloc_sites > 1000, "threads: %lu samples", (unsigned long)n_alloc_sites);
	CHECK(n_free_sites == n_alloc_sites && !bad_free && set_used() == 0,
	      "threads: %lu samples, %lu frees, %lu unknown, %u left in the set",
	      (unsigned long)n_alloc_sites, (unsigned long)n_free_sites,
	      (unsigned long)bad_free, set_used());
	{
		unsigned int b, sum = 0;

		for (b = 0; b < PYTM_SET_MAX_BUCKETS; b++)
			sum += pytm_counts[b];
		CHECK(sum == 0, "bucket counts left: %u", sum);
	}
}


/*
 * The recorder (exact mode): a fake interpreter (one thread state, whose
 * thread_id is this thread's pointer, in one frame of a fake code
 * object; 3.8's layout), a ring read here as the tracer reads it.
 */
#define RSLOTS	8
static struct pytm_ring_hdr rhdr;
static uint8_t rslots[RSLOTS * PYTM_REC_SLOT_SIZE(4)];
static uint64_t fake_runtime[4], fake_tstate[8], fake_frame[4];
static uint8_t fake_code[64] __attribute__((aligned(16)));

static void rec_setup(void)
{
	setup(0, 16, 9);
	pytm_keep.rate = 0;
	memset(&rhdr, 0, sizeof(rhdr));
	memset(rslots, 0, sizeof(rslots));
	rhdr.slots = RSLOTS;
	rhdr.slot_size = PYTM_REC_SLOT_SIZE(4);
	memset(&pytm_rec, 0, sizeof(pytm_rec));
	pytm_rec.ring = (uint64_t)&rhdr;
	pytm_rec.slots = (uint64_t)rslots;
	pytm_rec.runtime = (uint64_t)fake_runtime;
	pytm_rec.max_frames = 4;
	pytm_rec.max_total = 4;
	pytm_rec.off.layout = PYTM_LAYOUT_FRAMEOBJ;
	pytm_rec.off.runtime_tstate_current = 8;
	pytm_rec.off.tstate_frame = 16;
	pytm_rec.off.tstate_thread_id = 24;
	pytm_rec.off.frame_back = 0;
	pytm_rec.off.frame_code = 8;
	pytm_rec.off.frame_lasti = 16;
	fake_runtime[1] = (uint64_t)fake_tstate;
	fake_tstate[2] = (uint64_t)fake_frame;
	fake_tstate[3] = pg_self();
	fake_frame[0] = 0;
	fake_frame[1] = (uint64_t)fake_code;
	fake_frame[2] = 42;
	n_tomb = 0;
	n_code_site = 0;
}

/* The next event in the ring, copied into EV; 0 if none. */
static int rec_next(struct pytm_rec_event *ev, struct pytm_rec_frame *f0, uint64_t *clock)
{
	const struct pytm_ring_slot *sl = pytm_ring_peek(&rhdr, rslots);
	const struct pytm_rec_event *e;

	if (!sl)
		return 0;
	e = (const struct pytm_rec_event *)sl->data;
	*ev = *e;
	*f0 = e->nframe ? e->frames[0] : (struct pytm_rec_frame){ 0 };
	*clock = sl->clock;
	pytm_ring_release(&rhdr);
	return 1;
}

static void test_recorder(void)
{
	struct pytm_rec_event ev;
	struct pytm_rec_frame f;
	uint64_t clock, last = 0;
	void *a, *b, *c, *q[RSLOTS];
	int i, n;

	rec_setup();
	a = pytm_tramp_obj_malloc(NULL, 24);
	CHECK(rec_next(&ev, &f, &clock) && ev.kind == PYTM_REC_ALLOC && ev.ptr == (uint64_t)a &&
	      ev.size == 24 && ev.nframe == 1 && ev.total == 1 &&
	      f.code == (uint64_t)fake_code && f.lasti == 42 && f.pad == PYTM_REC_NEW_CODE,
	      "first allocation: kind %d nframe %d code %#llx pad %u", ev.kind, ev.nframe,
	      (unsigned long long)f.code, f.pad);
	CHECK(n_code_site == 1 && code_site_code == (uint64_t)fake_code && code_site_clock == clock,
	      "a new code object passes the code site with its event's number (%u)", n_code_site);
	last = clock;
	CHECK(pytm_ctl.last_new == (uint64_t)a, "obj's last block for the reference tracer");
	b = pytm_tramp_mem_calloc(NULL, 4, 8);
	CHECK(rec_next(&ev, &f, &clock) && ev.ptr == (uint64_t)b && ev.size == 32 && !f.pad &&
	      clock > last, "a code object is flagged once");
	last = clock;
	pytm_tramp_obj_free(NULL, a);
	CHECK(rec_next(&ev, &f, &clock) && ev.kind == PYTM_REC_FREE && ev.ptr == (uint64_t)a &&
	      clock > last, "free recorded");
	last = clock;
	/* realloc: the old block goes first, then the new one */
	c = pytm_tramp_raw_realloc(NULL, b, 4096);
	CHECK(rec_next(&ev, &f, &clock) && ev.kind == PYTM_REC_FREE && ev.ptr == (uint64_t)b,
	      "realloc's free");
	CHECK(rec_next(&ev, &f, &clock) && ev.kind == PYTM_REC_ALLOC && ev.ptr == (uint64_t)c &&
	      ev.size == 4096, "realloc's allocation");
	free(c);	/* behind the page's back: no event */
	/* The code object freed: flagged again when seen next. */
	pg_rec_free(0, fake_code);
	CHECK(rec_next(&ev, &f, &clock) && ev.kind == PYTM_REC_FREE, "code object's free");
	a = pytm_tramp_obj_malloc(NULL, 8);
	CHECK(rec_next(&ev, &f, &clock) && f.pad == PYTM_REC_NEW_CODE && n_code_site == 2 &&
	      code_site_clock == clock, "flagged again, the code site passed again");
	pytm_tramp_obj_free(NULL, a);
	rec_next(&ev, &f, &clock);
	CHECK(n_alloc_sites == 0 && n_free_sites == 0 && n_tomb == 0, "no kernel entry so far");

	/* Another thread holds the GIL: a raw call goes BPF's way, its free too. */
	fake_tstate[3] = pg_self() + 1;
	a = pytm_tramp_raw_malloc(NULL, 100);
	CHECK(n_alloc_sites == 1 && set_used() >= 1 && !rec_next(&ev, &f, &clock),
	      "no thread state: the alloc site");
	pytm_tramp_raw_free(NULL, a);
	CHECK(n_free_sites == 1 && !bad_free && !rec_next(&ev, &f, &clock), "and the free site");
	fake_tstate[3] = pg_self();

	/* The ring full: allocations BPF's way, frees as tombstones after the ring's numbers. */
	for (i = 0; i < RSLOTS; i++)
		q[i] = pytm_tramp_mem_malloc(NULL, 16);
	CHECK(rhdr.head - rhdr.tail == RSLOTS && n_alloc_sites == 1, "ring filled");
	a = pytm_tramp_mem_malloc(NULL, 16);
	CHECK(n_alloc_sites == 2 && rhdr.full == 1, "full: the alloc site");
	pytm_tramp_mem_free(NULL, q[0]);
	CHECK(n_tomb == 1 && tomb_ptr == (uint64_t)q[0] && tomb_clock == rhdr.head,
	      "full: a tombstone (%u, number %llu, head %llu)", n_tomb,
	      (unsigned long long)tomb_clock, (unsigned long long)rhdr.head);
	for (n = 0; rec_next(&ev, &f, &clock); n++)
		CHECK(clock < tomb_clock, "ring event %llu after the tombstone %llu",
		      (unsigned long long)clock, (unsigned long long)tomb_clock);
	CHECK(n == RSLOTS, "%d events drained", n);
	pytm_tramp_mem_free(NULL, a);
	CHECK(n_free_sites == 2 && !bad_free, "BPF's block freed past the free site");
	for (i = 1; i < RSLOTS; i++)
		pytm_tramp_mem_free(NULL, q[i]);
	for (n = 0; rec_next(&ev, &f, &clock); n++)
		;
	/* Left in the set: the code object, nothing of BPF's. */
	CHECK(n == RSLOTS - 1 && set_used() == 1 && pg_has((uint64_t)fake_code | 1),
	      "%d frees recorded, set %u", n, set_used());

	/* Nobody drains: after STALL full rings the page disarms itself. */
	for (i = 0; i < RSLOTS; i++)
		q[i] = pytm_tramp_mem_malloc(NULL, 16);
	pytm_ctl.stall_tail = rhdr.tail;
	pytm_ctl.stall_count = STALL - 2;
	a = pytm_tramp_mem_malloc(NULL, 16);
	CHECK(pytm_ctl.armed == 1, "still armed");
	b = pytm_tramp_mem_malloc(NULL, 16);
	CHECK(pytm_ctl.armed == 0, "disarmed after %u full rings", STALL);
	n = (int)n_alloc_sites;
	c = pytm_tramp_mem_malloc(NULL, 16);
	CHECK((int)n_alloc_sites == n, "disarmed: nothing recorded");
	pytm_tramp_mem_free(NULL, c);
	pytm_ctl.armed = 1;
	pytm_tramp_mem_free(NULL, a);
	pytm_tramp_mem_free(NULL, b);
	for (i = 0; i < RSLOTS; i++)
		free(q[i]);

	/* No ring (a tracer that does not record, over a page left so): straight through. */
	rec_setup();
	pytm_rec.ring = 0;
	a = pytm_tramp_obj_malloc(NULL, 24);
	pytm_tramp_obj_free(NULL, a);
	CHECK(!rec_next(&ev, &f, &clock) && n_alloc_sites == 0 && n_free_sites == 0,
	      "no ring: nothing");
	memset(&pytm_rec, 0, sizeof(pytm_rec));
}

int main(void)
{
	/* raw and mem: libc; obj: pymalloc-like */
	void *const domain[2][4] = {
		{ raw_malloc, raw_calloc, raw_realloc, raw_free },
		{ obj_malloc, obj_calloc, obj_realloc, obj_free },
	};
	int i;

	for (i = 0; i < 12; i++)
		pytm_orig[i] = domain[i / 8][i % 4];
	live = calloc(LIVE_MAX, sizeof(*live));
	test_numbers();
	test_draws();
	test_rates();
	test_calloc_realloc();
	test_full_and_disarmed();
	test_unhook();
	test_child();
	test_reftrace();
	test_threads();
	test_recorder();
	free(live);
	return unit_done("test_page");
}
