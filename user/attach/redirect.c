// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include "page.h"
#include "page/page_syms.h"
#include "pytm.h"
#include "redirect.h"
#include "recorder.h"
#include "ring.h"
#include "hash.h"
#include "x86emit.h"
#include "target.h"
#include "util.h"

/*
 * Page layout (page/page.h): a header, the original function pointers,
 * one 128-byte exact-mode trampoline per (domain, kind), then the sampler
 * (page/sampler.c, linked in at build time). The code is the same for
 * every run of one layout, whatever the mode and site kind (both NOPs are
 * in every site; the tracer probes one), so a page left by an earlier run
 * is reused as the target sees it, after checking that it does (see
 * redirect__prepare), and never changes under a thread running in it.
 * The data region (inject's, zeroed in forked children) holds the
 * sampler's control block; its first byte arms the sites.
 */
#define PAGE_LEN	PYTM_PAGE_CODE_LEN
#define MAGIC		"pytm-bpf trampA"	/* 16 bytes with the NUL; layout 10 */
#define MAGIC9		"pytm-bpf tramp9"	/* before: no recorder's code site */
#define MAGIC8		"pytm-bpf tramp8"	/* before: raw calls nested in obj/mem traced */
#define MAGIC7		"pytm-bpf tramp7"	/* before: three code pages, no recorder */
#define MAGIC6		"pytm-bpf tramp6"	/* before: two code pages, no reference tracer */
#define MAGIC5		"pytm-bpf tramp5"	/* before that: no kept page */
#define MAGIC4		"pytm-bpf tramp4"	/* before that: 64-byte trampolines */
#define ORIG_OFF	PYTM_PAGE_ORIG_OFF
#define CODE_OFF	PYTM_PAGE_CODE_OFF
#define TRAMP_SIZE	128
#define TRAMP4_SIZE	64
#define DATA_OFF	PYTM_PAGE_DATA_OFF
#define ARMED_OFF	(PYTM_DATA_CTL + offsetof(struct pytm_page_ctl, armed))
#define MAX_PAGES	8			/* stale pages passed over, at most */
#define KEEP_FOLLOW_OFF	(PYTM_DATA_KEEP + offsetof(struct pytm_page_keep, follow))
#define KEEP_REF_PREV_OFF (PYTM_DATA_KEEP + offsetof(struct pytm_page_keep, ref_prev))
#define LAST_NEW_OFF	(PYTM_DATA_CTL + offsetof(struct pytm_page_ctl, last_new))
#define OUTER_OFF	(PYTM_DATA_CTL + offsetof(struct pytm_page_ctl, outer))
#define PYTM_DOMAIN_RAW	0
#define PYTM_DOMAIN_OBJ	2
_Static_assert(CODE_OFF + 12 * TRAMP_SIZE + 5 * 16 <= PYTM_PAGE_SAMPLER_OFF,
	       "trampolines and children's sites overlap the sampler");

extern const uint8_t pytm_page_blob[], pytm_page_blob_end[];	/* page/blob.S */

/* The sampler's entry points, as page offsets (from page/page.lds). */
typedef uint64_t entry_table[REDIRECT_DOMAINS][REDIRECT_KINDS];
static const entry_table sampler_entry = {
	{ PYTM_SYM_pytm_tramp_raw_malloc, PYTM_SYM_pytm_tramp_raw_calloc,
	  PYTM_SYM_pytm_tramp_raw_realloc, PYTM_SYM_pytm_tramp_raw_free },
	{ PYTM_SYM_pytm_tramp_mem_malloc, PYTM_SYM_pytm_tramp_mem_calloc,
	  PYTM_SYM_pytm_tramp_mem_realloc, PYTM_SYM_pytm_tramp_mem_free },
	{ PYTM_SYM_pytm_tramp_obj_malloc, PYTM_SYM_pytm_tramp_obj_calloc,
	  PYTM_SYM_pytm_tramp_obj_realloc, PYTM_SYM_pytm_tramp_obj_free },
};

/*
 * The same in a page of the two layouts before (tramp9: the same entries,
 * no code site; tramp8: the exact trampolines did not mark obj/mem calls),
 * with their reference tracer.
 */
static const entry_table sampler_entry8 = {
	{ 0x810, 0x960, 0xae0, 0xe10 }, { 0xfe0, 0x1180, 0x1350, 0x16e0 },
	{ 0x18d0, 0x1a70, 0x1c40, 0x1fd0 },
};
#define REFTRACE8	0x21c0

/*
 * The same in a page of the layout before that (tramp7), with its reference
 * tracer and its data region.
 */
static const entry_table sampler_entry7 = {
	{ 0xac0, 0xbd0, 0xd00, 0xf40 }, { 0x10b0, 0x1200, 0x1360, 0x15d0 },
	{ 0x1740, 0x1890, 0x19f0, 0x1c60 },
};
#define REFTRACE7	0x1dd0
#define DATA_OFF7	0x4000

/*
 * The same in a page of the layout before that (tramp6), which a tracer that
 * died may have left the tables pointing into: its sampler's entries, as
 * that build had them, so that its originals can still be found.
 */
static const entry_table sampler_entry6 = {
	{ 0xa90, 0xb90, 0xcb0, 0xe60 }, { 0xf70, 0x10b0, 0x1200, 0x1400 },
	{ 0x1510, 0x1650, 0x17a0, 0x19a0 },
};

static size_t tramp_off(int d, int k)
{
	return CODE_OFF + (d * REDIRECT_KINDS + k) * TRAMP_SIZE;
}

static size_t orig_off(int d, int k)
{
	return ORIG_OFF + (d * REDIRECT_KINDS + k) * 8;
}

/* Where the tables point in RD's mode. */
static uint64_t entry_off(const struct redirect *rd, int d, int k)
{
	return rd->sample_rate || rd->record ? sampler_entry[d][k] : tramp_off(d, k);
}

/* Offset of the probed NOP of a site that holds both (nop5, then nop6). */
static uint64_t site_nop(enum redirect_site kind, uint64_t site)
{
	return kind == REDIRECT_SITE_NOP6 ? site + 5 : site;
}

const char *redirect__site_name(enum redirect_site kind)
{
	return kind == REDIRECT_SITE_NOP6 ? "6-byte NOP" : "5-byte NOP";
}

/*
 * The children's sites, shared by the trampolines of every domain (BPF
 * records every injected event under domain 0): one per kind and one for
 * entries, each a 6-byte NOP and a jump to the sampler's
 * pytm_child_tail (page/sites.S: returns at once when the tracer follows
 * forks, else puts the child's tables back), after the trampolines.
 */
#define CHILD_SITES_OFF	(CODE_OFF + REDIRECT_DOMAINS * REDIRECT_KINDS * TRAMP_SIZE)
#define CHILD_SITE_SIZE	16
#define CHILD_ENTRY	REDIRECT_KINDS	/* the entry sites' shared one */

static size_t child_site_off(int which)
{
	return CHILD_SITES_OFF + which * CHILD_SITE_SIZE;
}

/*
 * A probe site behind the fork guard: only the process the tracer armed
 * passes it. A forked child (data page zeroed) skips it, so it never runs
 * what the kernel made of the site in the parent: on 6.18 a probed 5-byte
 * NOP becomes a call into a [uprobes-trampoline] mapping that fork does
 * not copy. Both NOP kinds, the tracer probes one. The unarmed way calls
 * a children's site instead (CHILD: which one): a 6-byte NOP (never
 * rewritten, so safe in any child) that the tracer probes for every
 * process mapping the page when it follows forks, so that a child is
 * traced from its first allocation on. When it does not follow, the
 * child puts its tables back at its first call there (pytm_child_tail),
 * and pays nothing after. Returns
 * the site's offset (its 5-byte NOP). Flags are clobbered (free in any
 * call), registers are not.
 */
static size_t emit_site(struct x86_emitter *e, int child)
{
	static const uint8_t cmpb[] = { 0x80, 0x3d }, zero = 0, call[] = { 0xe8 };
	static const uint8_t nops[] = { 0x0f, 0x1f, 0x44, 0x00, 0x00,
					0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00 };
	static const uint8_t je[2] = { 0x74, sizeof(nops) + 2 };
	static const uint8_t jmp[2] = { 0xeb, 5 };	/* over the call */
	size_t site;

	x86__rip(e, cmpb, sizeof(cmpb), DATA_OFF + ARMED_OFF, &zero); /* cmpb $0,armed(%rip) */
	x86__bytes(e, je, sizeof(je));				/* je the call */
	site = e->at;
	x86__bytes(e, nops, sizeof(nops));
	x86__bytes(e, jmp, sizeof(jmp));
	x86__rip(e, call, sizeof(call), child_site_off(child), NULL);	/* call child site */
	return site;
}

/* The children's sites: nop6; jmp pytm_child_tail; int3 to the end. */
static void emit_child_sites(uint8_t *page)
{
	static const uint8_t nop6[] = { 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00 }, jmp[] = { 0xe9 };
	struct x86_emitter e = { page, 0 };
	int i;

	for (i = 0; i <= CHILD_ENTRY; i++) {
		e.at = child_site_off(i);
		memset(page + e.at, 0xcc, CHILD_SITE_SIZE);
		x86__bytes(&e, nop6, sizeof(nop6));
		x86__rip(&e, jmp, sizeof(jmp), PYTM_SYM_pytm_child_tail, NULL);
	}
}

/* outer = 0, after the original call: %rsi is restored from the stack next. */
static void emit_outer_clear(struct x86_emitter *e)
{
	static const uint8_t xor_esi[] = { 0x31, 0xf6 };		/* xor %esi,%esi */
	static const uint8_t store_rsi[] = { 0x48, 0x89, 0x35 };	/* mov %rsi,disp(%rip) */

	x86__bytes(e, xor_esi, sizeof(xor_esi));
	x86__rip(e, store_rsi, sizeof(store_rsi), DATA_OFF + OUTER_OFF, NULL);
}

/*
 * Emit trampoline (D, K). System V: the caller's call left rsp = 8 mod 16;
 * the pushes below keep the callee's alignment right. Exit site: after the
 * call, result and arguments in registers. Entry site (not for free):
 * before it, probed only when a hook layer below us may make nested
 * allocator calls at other addresses.
 */
static void emit(struct redirect *rd, uint8_t *page, int d, int k)
{
	static const uint8_t push_rsi = 0x56, push_rdx = 0x52, pop_rsi = 0x5e,
			     pop_rdx = 0x5a, ret = 0xc3;
	static const uint8_t sub8[] = { 0x48, 0x83, 0xec, 0x08 };	/* sub $8,%rsp */
	static const uint8_t add8[] = { 0x48, 0x83, 0xc4, 0x08 };	/* add $8,%rsp */
	static const uint8_t call_mem[] = { 0xff, 0x15 }, jmp_mem[] = { 0xff, 0x25 };
	static const uint8_t store_rax[] = { 0x48, 0x89, 0x05 };	/* mov %rax,disp(%rip) */
	static const uint8_t load_tp[] = { 0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0 };	/* mov %fs:0,%rax */
	static const uint8_t cmp_outer[] = { 0x48, 0x3b, 0x05 };	/* cmp disp(%rip),%rax */
	static const uint8_t jne_over[] = { 0x75, 6 };			/* jne over the jmp */
	struct x86_emitter e = { page, tramp_off(d, k) };
	size_t o = orig_off(d, k);

	/*
	 * As in tracemalloc, an allocator call made inside another one of ours
	 * is not traced: pymalloc's own bookkeeping (the arenas array, the
	 * radix tree's 128 KiB nodes on 3.10+) goes through the raw table from
	 * inside an obj/mem call and returns another block than the outer call.
	 * obj/mem calls run with the GIL (one thread at a time): around the
	 * original call the trampoline writes the thread's pointer to `outer`;
	 * a raw call of the same thread meanwhile goes straight through, as in
	 * the sampler (page/sampler.c, pg_enter).
	 */
	if (d == PYTM_DOMAIN_RAW && k != PYTM_FREE) {
		x86__bytes(&e, load_tp, sizeof(load_tp));
		x86__rip(&e, cmp_outer, sizeof(cmp_outer), DATA_OFF + OUTER_OFF, NULL);
		x86__bytes(&e, jne_over, sizeof(jne_over));
		x86__rip(&e, jmp_mem, sizeof(jmp_mem), o, NULL);	/* jmp *orig(%rip) */
	}
	if (k != PYTM_FREE)
		rd->entry_site[d][k] = site_nop(rd->site_kind, emit_site(&e, CHILD_ENTRY));
	if (d != PYTM_DOMAIN_RAW && k != PYTM_FREE) {
		x86__bytes(&e, load_tp, sizeof(load_tp));
		x86__rip(&e, store_rax, sizeof(store_rax), DATA_OFF + OUTER_OFF, NULL);
	}
	switch (k) {
	case PYTM_MALLOC:	/* malloc(ctx, size): rsi = size at the site, rax = block */
		x86__bytes(&e, &push_rsi, 1);
		x86__rip(&e, call_mem, sizeof(call_mem), o, NULL);	/* call *orig(%rip) */
		if (d != PYTM_DOMAIN_RAW)
			emit_outer_clear(&e);
		x86__bytes(&e, &pop_rsi, 1);
		if (d == PYTM_DOMAIN_OBJ)	/* see pytm_reftrace */
			x86__rip(&e, store_rax, sizeof(store_rax), DATA_OFF + LAST_NEW_OFF, NULL);
		break;
	case PYTM_CALLOC:	/* calloc(ctx, nelem, elsize) */
	case PYTM_REALLOC:	/* realloc(ctx, ptr, size) */
		x86__bytes(&e, &push_rsi, 1);
		x86__bytes(&e, &push_rdx, 1);
		x86__bytes(&e, sub8, sizeof(sub8));
		x86__rip(&e, call_mem, sizeof(call_mem), o, NULL);
		if (d != PYTM_DOMAIN_RAW)
			emit_outer_clear(&e);
		x86__bytes(&e, add8, sizeof(add8));
		x86__bytes(&e, &pop_rdx, 1);
		x86__bytes(&e, &pop_rsi, 1);
		if (d == PYTM_DOMAIN_OBJ && k == PYTM_CALLOC)
			x86__rip(&e, store_rax, sizeof(store_rax), DATA_OFF + LAST_NEW_OFF, NULL);
		break;
	case PYTM_FREE:	/* free(ctx, ptr): the site comes first, rsi = block */
		break;
	}
	rd->site[d][k] = site_nop(rd->site_kind, emit_site(&e, k));
	if (k == PYTM_FREE)
		x86__rip(&e, jmp_mem, sizeof(jmp_mem), o, NULL);	/* jmp *orig(%rip) */
	else
		x86__bytes(&e, &ret, 1);
	assert(e.at <= tramp_off(d, k) + TRAMP_SIZE);
	memset(page + e.at, 0xcc, tramp_off(d, k) + TRAMP_SIZE - e.at);	/* int3 */
}

uint64_t redirect__site(const struct redirect *rd, int d, int k)
{
	return rd->site[d][k];
}

uint64_t redirect__entry_site(const struct redirect *rd, int d, int k)
{
	return rd->entry_site[d][k];
}

uint64_t redirect__child_site(int k)
{
	return child_site_off(k);
}

uint64_t redirect__child_entry_site(void)
{
	return child_site_off(CHILD_ENTRY);
}

uint64_t redirect__child_sample_site(enum redirect_sample_site which)
{
	return which == REDIRECT_SAMPLE_FREE ? PYTM_SYM_pytm_site_child_free
					     : PYTM_SYM_pytm_site_child_alloc;
}

uint64_t redirect__newref_site(const struct redirect *rd)
{
	return site_nop(rd->site_kind, PYTM_SYM_pytm_site_newref);
}

uint64_t redirect__child_newref_site(void)
{
	return PYTM_SYM_pytm_site_child_newref;
}

uint64_t redirect__sample_site(const struct redirect *rd, enum redirect_sample_site which)
{
	return rd->sample_site[which];
}

uint64_t redirect__tomb_site(const struct redirect *rd)
{
	return site_nop(rd->site_kind, PYTM_SYM_pytm_site_tomb);
}

uint64_t redirect__code_site(const struct redirect *rd)
{
	return site_nop(rd->site_kind, PYTM_SYM_pytm_site_code);
}

const char *redirect__path(const struct redirect *rd)
{
	return rd->page.path;
}

/* Fill PAGE for RD's originals, and note its sites for RD's site kind. */
static void build_page(struct redirect *rd, uint8_t page[PAGE_LEN])
{
	size_t blob = pytm_page_blob_end - pytm_page_blob;
	int d, k;

	memset(page, 0, PAGE_LEN);
	memcpy(page, MAGIC, sizeof(MAGIC));
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			memcpy(page + orig_off(d, k), &rd->orig[d][k], 8);
			emit(rd, page, d, k);
		}
	}
	emit_child_sites(page);
	/* page.lds asserts that it fits */
	memcpy(page + PYTM_PAGE_SAMPLER_OFF, pytm_page_blob, blob);
	rd->sample_site[REDIRECT_SAMPLE_ALLOC] = site_nop(rd->site_kind, PYTM_SYM_pytm_site_alloc);
	rd->sample_site[REDIRECT_SAMPLE_FREE] = site_nop(rd->site_kind, PYTM_SYM_pytm_site_free);
}

/*
 * Write PAGE into RD's page and check that the target sees it. It may
 * not: installing a uprobe gives the target a private copy of the code,
 * which later writes to the file do not reach (on 6.18 not always even
 * after the probe is removed), and a child forked while its parent was
 * traced holds its parent's copy, with whatever the kernel had made of
 * the probe sites (a call into a mapping it does not have).
 */
static int fill_page(struct redirect *rd, const uint8_t page[PAGE_LEN])
{
	static const char none[sizeof(MAGIC)];
	char magic[sizeof(MAGIC)];
	uint8_t *seen;
	int err;

	/*
	 * Another layout: its code may be running, leave it be. Its data
	 * region may also be shorter than it seems (what follows it in the
	 * address space is somebody else's): only a page of this layout, or
	 * a new one, is known to have the kept part.
	 */
	if (rd->page.len != PAGE_LEN || rd->page.data_len < INJECT_DATA_LEN)
		return -ESTALE;
	err = inject__read_page(&rd->page, 0, magic, sizeof(magic));
	if (err)
		return err;
	if (memcmp(magic, MAGIC, sizeof(MAGIC)) && memcmp(magic, none, sizeof(none)))
		return -ESTALE;
	seen = malloc(PAGE_LEN);
	if (!seen)
		return -ENOMEM;
	err = inject__write_page(&rd->page, 0, page, PAGE_LEN);
	if (!err)
		err = inject__read_page(&rd->page, 0, seen, PAGE_LEN);
	if (!err && memcmp(page, seen, PAGE_LEN))
		err = -ESTALE;
	free(seen);
	return err;
}

/* Bytes to the first sample point: exponential with mean RATE, from 64 random bits. */
static int64_t exp_draw(uint64_t bits, uint64_t rate)
{
	return (int64_t)(-log(((double)(bits >> 11) + 0.5) * 0x1p-53) * (double)rate);
}

#define SET_UP_OFF	(PYTM_DATA_CTL + offsetof(struct pytm_page_ctl, set_up))
_Static_assert(SET_UP_OFF == ARMED_OFF + 1, "armed and set_up are written together");

/*
 * Empty the sampled set of what a tracer before us left, in PAGE's data
 * region, or (FROM, not 0: the data region of the page a forked child
 * inherited, in its address space) make it a copy of that one. Only
 * buckets in use are written: the rest stays untouched, unallocated.
 */
static int fill_set(const struct inject_page *page, const struct target *t, uint64_t from)
{
	static const uint64_t zeros[PYTM_SET_WAYS];
	uint64_t *slots = NULL, *mine = NULL;
	uint8_t *counts = NULL;
	size_t b, slots_len = (size_t)PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS * 8;
	int err;

	counts = malloc(PYTM_SET_MAX_BUCKETS);
	slots = malloc(slots_len);
	mine = from ? malloc(slots_len) : NULL;
	if (!counts || !slots || (from && !mine)) {
		err = -ENOMEM;
		goto cleanup;
	}
	/* Reading untouched pages maps the zero page: nothing is allocated. */
	if (from) {
		err = target__read(t, from + PYTM_DATA_COUNTS, counts, PYTM_SET_MAX_BUCKETS) ?:
		      target__read(t, from + PYTM_DATA_SLOTS, slots, slots_len) ?:
		      inject__read_data(page, PYTM_DATA_SLOTS, mine, slots_len);
		if (!err)
			err = inject__write_data(page, PYTM_DATA_COUNTS, counts, PYTM_SET_MAX_BUCKETS);
	} else {
		err = inject__read_data(page, PYTM_DATA_COUNTS, counts, PYTM_SET_MAX_BUCKETS) ?:
		      inject__read_data(page, PYTM_DATA_SLOTS, slots, slots_len);
		mine = slots;
	}
	for (b = 0; !err && b < PYTM_SET_MAX_BUCKETS; b++) {
		const uint64_t *want = from ? &slots[b * PYTM_SET_WAYS] : zeros;

		if (!memcmp(&mine[b * PYTM_SET_WAYS], want, sizeof(zeros)) &&
		    (from || !counts[b]))
			continue;
		err = inject__write_data(page, PYTM_DATA_SLOTS + b * sizeof(zeros), want,
					 sizeof(zeros));
		if (!err && !from)
			err = inject__write_data(page, PYTM_DATA_COUNTS + b, zeros, 1);
	}
cleanup:
	if (mine != slots)
		free(mine);
	free(counts);
	free(slots);
	return err;
}

/*
 * A fresh random sequence, and first points drawn from it (exponential, as
 * after every sample: the process is memoryless, so a new draw at any
 * time is as good as the countdown it replaces).
 */
static void reseed(struct pytm_page_keep *keep, uint64_t rate)
{
	uint64_t seed[3];

	if (getrandom(seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed)) {
		seed[0] = hash__mix64((uint64_t)(mono_now() * 1e9) ^ (uint64_t)getpid() << 32);
		seed[1] = hash__mix64(seed[0]);
		seed[2] = hash__mix64(seed[1]);
	}
	keep->prng = seed[0];
	keep->countdown = exp_draw(seed[1], rate);
	keep->countdown_gil = exp_draw(seed[2], rate);
}

/*
 * Sampled mode: disarm, say the process is set up (its forked children
 * will not be), empty the set and fill KEEP's configuration and first
 * sample points; the caller writes KEEP.
 */
static int setup_sampler(struct redirect *rd, const struct target *t,
			 struct pytm_page_keep *keep)
{
	const size_t nb = rd->set_slots < 2 * PYTM_SET_WAYS ? 2 :
			  rd->set_slots > PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS ?
			  PYTM_SET_MAX_BUCKETS : rd->set_slots / PYTM_SET_WAYS;
	static const uint8_t head[2] = { 0, 1 };	/* not armed, set up */
	struct pytm_page_ctl ctl;
	unsigned int bits = 0;
	int err;

	while (((size_t)1 << bits) < nb)
		bits++;
	err = inject__write_data(&rd->page, ARMED_OFF, head, sizeof(head)) ?:
	      fill_set(&rd->page, t, 0);
	if (err)
		goto out;
	keep->set_shift = 64 - bits;
	keep->rate = rd->sample_rate;
	keep->gil_plain = rd->gil_plain;
	reseed(keep, rd->sample_rate);
	/* The rest of the process's own part: nobody inside, counters at 0. */
	memset(&ctl, 0, sizeof(ctl));
	err = inject__write_data(&rd->page, SET_UP_OFF + 1, (const uint8_t *)&ctl + SET_UP_OFF + 1,
				 sizeof(ctl) - SET_UP_OFF - 1);
out:
	if (err)
		warn("process %d: cannot configure the sampler: %s", t->pid,
		     err == -ENOMEM ? "out of memory" : error__last());
	return err;
}

/*
 * A forked child's sampler moves to its own page (under a ptrace stop, so
 * that its thread does not sample meanwhile): the configuration, the
 * sample points and the set it inherited, as they are now in the page its
 * tables lead to, then "set up".
 */
static int adopt_sampler(struct redirect *rd, const struct target *t)
{
	static const uint8_t one = 1;
	struct pytm_page_keep keep;
	uint64_t from = rd->inherited + PYTM_PAGE_DATA_OFF;
	int err = 0;

	if (rd->inherited != rd->page.addr) {
		err = target__read(t, from + PYTM_DATA_KEEP, &keep, sizeof(keep)) ? -EIO : 0;
		if (!err) {
			keep.follow = 1;	/* until redirect__swap is done */
			keep.ref_slot = rd->ref_slot;	/* this process's own */
			keep.ref_prev = rd->ref_prev;
			/* Its siblings forked with the same sequence: its own from now on. */
			reseed(&keep, keep.rate);
			err = inject__write_data(&rd->page, PYTM_DATA_KEEP, &keep, sizeof(keep)) ?:
			      fill_set(&rd->page, t, from);
		}
	}
	if (!err)
		err = inject__write_data(&rd->page, SET_UP_OFF, &one, 1);
	if (err)
		warn("process %d: cannot take over the sampler it inherited: %s", t->pid,
		     err == -EIO ? "its page is unreadable" : error__last());
	return err;
}

/* The mapping of a page of ours (of any layout) that holds ADDR, or NULL. */
static const struct mapping *our_mapping(const struct target *t, uint64_t addr)
{
	static const char prefix[] = "/memfd:" REDIRECT_PAGE_NAME " ";
	const struct mapping *m = target__mapping(t, addr);

	return m && m->path && !m->offset && !strncmp(m->path, prefix, sizeof(prefix) - 1) ?
	       m : NULL;
}

/*
 * The reference tracer that ours replaces, given the one at the slot now
 * (FN): FN itself, unless it is the tracer of a page of ours (a tracer
 * before us died, or a forked child's parent traced it): then the one
 * that page replaced, and so on. -EPROTO for a page of ours we cannot read
 * or of another layout (it would chain to it: leave it be).
 */
static int ref_previous(const struct target *t, uint64_t fn, uint64_t *prev)
{
	char magic[sizeof(MAGIC)];
	const struct mapping *m;
	int hops;

	for (hops = 0; hops <= MAX_PAGES; hops++) {
		m = fn ? our_mapping(t, fn) : NULL;
		if (!m) {
			*prev = fn;
			return 0;
		}
		if (target__read(t, m->start, magic, sizeof(magic)))
			return -EPROTO;
		if (!memcmp(magic, MAGIC, sizeof(MAGIC)) && fn == m->start + PYTM_SYM_pytm_reftrace)
			fn = m->start + DATA_OFF + KEEP_REF_PREV_OFF;
		else if ((!memcmp(magic, MAGIC9, sizeof(MAGIC9)) ||
			  !memcmp(magic, MAGIC8, sizeof(MAGIC8))) && fn == m->start + REFTRACE8)
			fn = m->start + DATA_OFF + KEEP_REF_PREV_OFF;
		else if (!memcmp(magic, MAGIC7, sizeof(MAGIC7)) && fn == m->start + REFTRACE7)
			fn = m->start + DATA_OFF7 + KEEP_REF_PREV_OFF;
		else
			return -EPROTO;
		if (target__read(t, fn, &fn, sizeof(fn)))
			return -EPROTO;
	}
	return -EPROTO;
}

/*
 * 3.13+: the reference tracer's part of KEEP (see pytm_reftrace), which
 * redirect__swap installs. Off (rd->ref_slot 0) when the slot cannot be
 * read or holds what we cannot chain to.
 */
static void prepare_reftrace(struct redirect *rd, const struct target *t,
			     const struct redirect_opts *o, struct pytm_page_keep *keep)
{
	uint64_t cur, prev;

	if (target__read(t, o->ref_slot, &cur, sizeof(cur)) || ref_previous(t, cur, &prev)) {
		vlog("process %d: its reference tracer at %#llx is not one we can chain to: "
		     "objects reused from free lists keep their first traceback", t->pid,
		     (unsigned long long)o->ref_slot);
		return;
	}
	rd->ref_slot = o->ref_slot;
	rd->ref_seen = cur;
	rd->ref_prev = prev;
	keep->ref_slot = o->ref_slot;
	keep->ref_prev = prev;
	keep->ob_type = o->ob_type;
	keep->tp_flags = o->tp_flags;
	keep->gc_head = o->gc_head;
}

/* Which site kind for a page: see redirect__prepare. */
static void choose_site(struct redirect *rd, enum redirect_site_pref pref,
			bool nop5_fork_safe)
{
	if (pref == REDIRECT_PREFER_NOP5 || pref == REDIRECT_PREFER_NOP6) {
		rd->site_kind = pref == REDIRECT_PREFER_NOP6 ? REDIRECT_SITE_NOP6
							     : REDIRECT_SITE_NOP5;
		rd->site_why = "chosen with --probe-site";
	} else if (rd->page.wipeonfork) {
		rd->site_kind = REDIRECT_SITE_NOP5;
		rd->site_why = "the cheapest trap; forked children skip the sites "
			       "(their data page is wiped: MADV_WIPEONFORK)";
	} else if (nop5_fork_safe) {
		rd->site_kind = REDIRECT_SITE_NOP5;
		rd->site_why = "no fork guard (no MADV_WIPEONFORK), but this "
			       "kernel's 5-byte NOP probes survive fork";
	} else {
		rd->site_kind = REDIRECT_SITE_NOP6;
		rd->site_why = "no fork guard (no MADV_WIPEONFORK), and this "
			       "kernel's probed 5-byte NOPs crash forked children";
	}
}

/*
 * The page of ours (this layout) that a forked child's tables lead to in
 * sampled mode: its parent's, whose sampler it runs. 0 if none.
 */
static uint64_t inherited_page(const struct target *t, const uint64_t funcs[REDIRECT_DOMAINS][5])
{
	const struct mapping *m = our_mapping(t, funcs[0][1]);
	char magic[sizeof(MAGIC)];

	if (!m || funcs[0][1] != m->start + sampler_entry[0][0] ||
	    target__read(t, m->start, magic, sizeof(magic)) || memcmp(magic, MAGIC, sizeof(MAGIC)))
		return 0;
	return m->start;
}

/*
 * The recorder: its ring (shared memory, one this process keeps from an
 * attach before if it has the same size, emptied: the page is disarmed)
 * and its configuration. Without it, an empty one: a page left recording
 * by a tracer that died stops (page/sampler.c reads rec.ring each call).
 */
#define RING_NAME	"pytm-bpf-ring"
/*
 * Rings are mapped at least this long, whatever their slots, so that the
 * next attach finds one it can take whatever --frames it asks for (a ring
 * of another length would be a new one each time, and the target keeps
 * them all).
 */
#define RING_MIN_LEN	((8u << 20) + 4096)

/* A ring this process had: its own, not one it inherited from its parent. */
static bool own_ring(const void *mem, void *arg)
{
	return ((const struct pytm_ring_hdr *)mem)->owner == (uint64_t)*(const pid_t *)arg;
}

static int setup_recorder(struct redirect *rd, const struct target *t,
			  const struct redirect_opts *o)
{
	struct pytm_page_rec rec = { 0 };
	struct pytm_ring_hdr *h;
	size_t slot, used;
	int err;

	if (rd->record) {
		rec = o->rec;
		slot = PYTM_REC_SLOT_SIZE(rec.max_frames);
		used = PYTM_RING_SLOTS_OFF + (size_t)o->ring_slots * slot;
		err = inject__shared(t->pid, RING_NAME, used > RING_MIN_LEN ? used : RING_MIN_LEN,
				     own_ring, (void *)&t->pid, &rd->ring);
		if (err) {
			/* Exact all the same: every event BPF's way. */
			warn("process %d: no ring for the recorder (%s): the BPF walk instead",
			     t->pid, error__last());
			rd->record = false;
			rec = (struct pytm_page_rec){ 0 };
			goto write;
		}
		memset(rd->ring.mem, 0, used);
		h = rd->ring.mem;
		h->slots = o->ring_slots;
		h->slot_size = slot;
		h->owner = (uint64_t)t->pid;
		rec.ring = rd->ring.addr;
		rec.slots = rd->ring.addr + PYTM_RING_SLOTS_OFF;
		vlog("process %d: recorder: %u slots of %zu bytes at %#llx%s", t->pid,
		     o->ring_slots, slot, (unsigned long long)rd->ring.addr,
		     rd->ring.found ? " (its ring from before)" : "");
	}
write:
	err = inject__write_data(&rd->page, PYTM_DATA_REC, &rec, sizeof(rec));
	if (err)
		warn("process %d: %s", t->pid, error__last());
	return err;
}

int redirect__prepare(struct redirect *rd, const struct target *t,
		      const uint64_t tables[REDIRECT_DOMAINS],
		      const uint64_t funcs[REDIRECT_DOMAINS][5],
		      const struct redirect_opts *o)
{
	uint64_t orig[REDIRECT_DOMAINS][5], after = 0;
	struct pytm_page_keep keep = { 0 };
	uint8_t *page = NULL;
	int d, k, err, tries;

	memset(rd, 0, sizeof(*rd));
	memcpy(rd->tables, tables, sizeof(rd->tables));
	rd->follow_forks = o->follow_forks;
	rd->sample_rate = o->sample_rate;
	rd->record = o->record && !o->sample_rate;
	rd->set_slots = o->set_slots;
	rd->gil_plain = o->gil_plain;
	/* What each slot called before any of us (through any page of ours). */
	memcpy(orig, funcs, sizeof(orig));
	if (redirect__originals(t, orig)) {
		warn("process %d: the allocator table points into a pytm-bpf page that has no usable original",
		     t->pid);
		return -EPROTO;
	}
	for (d = 0; d < REDIRECT_DOMAINS; d++)
		for (k = 0; k < REDIRECT_KINDS; k++)
			rd->orig[d][k] = orig[d][k + 1];
	page = malloc(PAGE_LEN);
	if (!page) {
		warn("process %d: out of memory", t->pid);
		return -ENOMEM;
	}

	/* The first page of ours that the target sees as we write it, or a new one. */
	for (tries = 0;; tries++) {
		err = tries < MAX_PAGES ?
		      inject__find_page_after(t->pid, REDIRECT_PAGE_NAME, after, &rd->page) :
		      -ENOENT;
		if (err == -ENOENT)
			err = inject__create_page(t->pid, REDIRECT_PAGE_NAME, PAGE_LEN,
						  &rd->page);
		if (err) {
			warn("process %d: %s", t->pid, error__last());
			goto out;
		}
		rd->have_page = true;
		choose_site(rd, o->site_pref, o->nop5_fork_safe);
		build_page(rd, page);
		err = fill_page(rd, page);
		if (!err)
			break;
		after = rd->page.addr;
		if (err == -ESTALE)
			vlog("process %d: the page at %#llx is not what we wrote (another "
			     "layout, probed before, or a forked child's copy of its "
			     "parent's): passed over", t->pid, (unsigned long long)after);
		redirect__close(rd);
		if (err != -ESTALE || tries >= MAX_PAGES) {
			warn("process %d: cannot write the trampoline page: %s", t->pid,
			     err == -ESTALE ? "the target does not see what we write"
					    : strerror(-err));
			err = err == -ESTALE ? -EIO : err;
			goto out;
		}
	}
	if (rd->record && !rd->page.wipeonfork) {
		/* As below, but exact all the same: every event BPF's way. */
		warn("process %d: the recorder needs MADV_WIPEONFORK (Linux 4.14 or later) to "
		     "keep forked children out of its ring: the BPF walk instead", t->pid);
		rd->record = false;
	}
	if (rd->sample_rate && !rd->page.wipeonfork) {
		/* A child forked with the sampler armed would share nothing but
		 * run it: its set, countdown and sites are its parent's copies. */
		warn("process %d: sampling needs MADV_WIPEONFORK (Linux 4.14 or later) "
		     "to keep forked children out of the sampler", t->pid);
		err = -EOPNOTSUPP;
		goto out;
	}
	/*
	 * What children inherit: the tables, and for now "stay redirected":
	 * a tracer before us may have left them pointing here, and a page
	 * disarmed below (sampled) must not put them back under us. The
	 * real choice is written once the tables are ours (redirect__swap).
	 * A forked child's sampler is taken over there, as it is then.
	 */
	keep.follow = 1;
	memcpy(keep.tables, rd->tables, sizeof(keep.tables));
	if (o->ref_slot)
		prepare_reftrace(rd, t, o, &keep);
	if (rd->sample_rate && o->adopt)
		rd->inherited = inherited_page(t, funcs);
	if ((rd->sample_rate || rd->record) && !rd->inherited)
		err = setup_sampler(rd, t, &keep);
	if (!err && rd->inherited != rd->page.addr)
		err = setup_recorder(rd, t, o);
	if (!err && rd->inherited != rd->page.addr) {
		err = inject__write_data(&rd->page, PYTM_DATA_KEEP, &keep, sizeof(keep));
		if (err)
			warn("process %d: %s", t->pid, error__last());
	}
	if (err)
		goto out;
	/* Slots left redirected to this page by a tracer before us that died. */
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			rd->swapped[d][k] = funcs[d][k + 1] == rd->page.addr + entry_off(rd, d, k);
			rd->before[d][k] = funcs[d][k + 1];
		}
	}
	vlog("process %d: probe sites: %s: %s", t->pid,
	     redirect__site_name(rd->site_kind), rd->site_why);
	if (rd->sample_rate)
		vlog("process %d: sampler: 1 per %llu bytes, %u slots; obj/mem countdown %s",
		     t->pid, (unsigned long long)rd->sample_rate, rd->set_slots,
		     rd->gil_plain ? "plain (one interpreter, one GIL)"
				   : "compare-and-swap (more than one interpreter)");
	err = 0;
out:
	free(page);
	return err;
}

int redirect__sampler_state(const struct redirect *rd, struct pytm_page_ctl *out)
{
	if (!rd->have_page || (!rd->sample_rate && !rd->record))
		return -ENOENT;
	return inject__read_data(&rd->page, PYTM_DATA_CTL, out, sizeof(*out));
}

/*
 * Point the runtime's reference tracer at ours (under the tables' stop S),
 * if it still holds what it held when we prepared, or is ours already.
 * Not fatal: without it, objects reused from free lists keep the
 * traceback of their block's allocation.
 */
static void swap_reftrace(struct redirect *rd, const struct target *t,
			  struct inject_session *s)
{
	uint64_t ours = rd->page.addr + PYTM_SYM_pytm_reftrace, cur;

	if (!rd->ref_slot)
		return;
	if (target__read(t, rd->ref_slot, &cur, sizeof(cur)) ||
	    (cur != ours && cur != rd->ref_seen)) {
		vlog("process %d: its reference tracer changed while we attached: not chained",
		     t->pid);
		return;
	}
	if (cur != ours && inject__store_u64(s, rd->ref_slot, ours)) {
		warn("process %d: cannot install the reference tracer: %s", t->pid,
		     error__last());
		return;
	}
	rd->ref_swapped = true;
	vlog("process %d: reference tracer installed at %#llx (chained to %#llx)", t->pid,
	     (unsigned long long)rd->ref_slot, (unsigned long long)rd->ref_prev);
}

int redirect__swap(struct redirect *rd, const struct target *t)
{
	struct inject_session *s = NULL;
	const uint8_t armed = 1;
	uint64_t tramp, cur;
	int d, k, err;

	/* Arm the sites first: a call redirected below passes them at once. */
	err = inject__write_data(&rd->page, ARMED_OFF, &armed, 1);
	if (err) {
		warn("process %d: cannot arm the probe sites: %s", t->pid, error__last());
		return err;
	}
	/* One ptrace stop for all twelve stores. */
	err = inject__attach(t->pid, &s);
	if (err) {
		warn("process %d: %s", t->pid, error__last());
		return err;
	}
	if (rd->inherited && adopt_sampler(rd, t)) {
		inject__detach(s);
		redirect__restore(rd, t);
		return -EIO;
	}
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			if (rd->swapped[d][k])
				continue;
			/*
			 * The slot must still hold what it held when we looked: else
			 * someone hooked it meanwhile, or the process is not the one
			 * we read (a forked child that exec'd since).
			 */
			if (target__read(t, rd->tables[d] + 8 * (k + 1), &cur, sizeof(cur)) ||
			    cur != rd->before[d][k]) {
				warn("process %d: its allocator changed while we attached", t->pid);
				inject__detach(s);
				redirect__restore(rd, t);
				return -ESTALE;
			}
			tramp = rd->page.addr + entry_off(rd, d, k);
			err = inject__store_u64(s, rd->tables[d] + 8 * (k + 1), tramp);
			if (err) {
				warn("process %d: cannot redirect the allocator: %s", t->pid,
				     error__last());
				inject__detach(s);
				redirect__restore(rd, t);
				return err;
			}
			rd->swapped[d][k] = true;
		}
	}
	swap_reftrace(rd, t, s);
	inject__detach(s);
	/* Children forked from now on: see struct pytm_page_keep. */
	if (!rd->follow_forks && inject__write_data(&rd->page, KEEP_FOLLOW_OFF,
						    &rd->follow_forks, 1))
		vlog("process %d: %s: its forked children stay redirected", t->pid,
		     error__last());
	return 0;
}

void redirect__restore(struct redirect *rd, const struct target *t)
{
	const uint8_t disarmed = 0;
	struct inject_session *s = NULL;
	uint64_t cur;
	int d, k;

	/* The reference tracer, if it is still ours: tracer_data was never changed. */
	if (rd->ref_swapped && !target__read(t, rd->ref_slot, &cur, sizeof(cur)) &&
	    cur == rd->page.addr + PYTM_SYM_pytm_reftrace) {
		if (inject__attach(t->pid, &s) ||
		    inject__store_u64(s, rd->ref_slot, rd->ref_prev))
			warn("process %d: cannot restore its reference tracer: %s", t->pid,
			     error__last());
	}
	rd->ref_swapped = false;
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			if (!rd->swapped[d][k])
				continue;
			rd->swapped[d][k] = false;
			if (target__read(t, rd->tables[d] + 8 * (k + 1), &cur, sizeof(cur)))
				continue;	/* the target is gone */
			if (cur != rd->page.addr + entry_off(rd, d, k))
				continue;	/* someone hooked on top of us */
			if (!s && inject__attach(t->pid, &s)) {
				warn("process %d: cannot restore the allocator: %s", t->pid,
				     error__last());
				return;
			}
			/* A thread between load and call still reaches the original. */
			if (inject__store_u64(s, rd->tables[d] + 8 * (k + 1), rd->orig[d][k]))
				warn("process %d: cannot restore the allocator: %s", t->pid,
				     error__last());
		}
	}
	inject__detach(s);
	/*
	 * Disarm: calls still in the page, or through a hook installed on top
	 * of ours, skip the sites (a NOP either way once the probes are gone).
	 */
	if (rd->have_page)
		inject__write_data(&rd->page, ARMED_OFF, &disarmed, 1);
}

void redirect__close(struct redirect *rd)
{
	inject__shared_close(&rd->ring);
	if (rd->have_page)
		inject__page_close(&rd->page);
	rd->have_page = false;
}

/*
 * Which (domain, kind) an entry point at page offset OFF is, in a page of
 * this layout (either mode) or of an older one (TSIZE-byte exact-mode
 * trampolines; SAMPLER: its sampler's entries, NULL if it had none or
 * they are not known); 12 if none.
 */
static uint64_t entry_index(uint64_t off, size_t tsize, const entry_table *sampler)
{
	int i;

	if (off >= CODE_OFF && off < CODE_OFF + 12 * tsize)
		return (off - CODE_OFF) % tsize ? 12 : (off - CODE_OFF) / tsize;
	for (i = 0; sampler && i < REDIRECT_DOMAINS * REDIRECT_KINDS; i++)
		if ((*sampler)[i / REDIRECT_KINDS][i % REDIRECT_KINDS] == off)
			return i;
	return 12;
}

/*
 * What *FN calls in the end: a trampoline of any page of ours (this
 * layout's or an older one's) stands for the original in its page's
 * header, which may itself be another page's trampoline. -EPROTO for a
 * pointer into a page of ours that leads to no usable original.
 */
static int original_of(const struct target *t, uint64_t *fn)
{
	char magic[sizeof(MAGIC)];
	const struct mapping *m;
	uint64_t idx;
	int hops;

	for (hops = 0; hops <= MAX_PAGES; hops++) {
		m = our_mapping(t, *fn);
		if (!m)
			return 0;	/* not our page */
		if (target__read(t, m->start, magic, sizeof(magic)))
			return -EPROTO;
		if (!memcmp(magic, MAGIC, sizeof(MAGIC)))
			idx = entry_index(*fn - m->start, TRAMP_SIZE, &sampler_entry);
		else if (!memcmp(magic, MAGIC9, sizeof(MAGIC9)) ||
			 !memcmp(magic, MAGIC8, sizeof(MAGIC8)))
			idx = entry_index(*fn - m->start, TRAMP_SIZE, &sampler_entry8);
		else if (!memcmp(magic, MAGIC7, sizeof(MAGIC7)))
			idx = entry_index(*fn - m->start, TRAMP_SIZE, &sampler_entry7);
		else if (!memcmp(magic, MAGIC6, sizeof(MAGIC6)))
			idx = entry_index(*fn - m->start, TRAMP_SIZE, &sampler_entry6);
		else if (!memcmp(magic, MAGIC5, sizeof(MAGIC5)))
			idx = entry_index(*fn - m->start, TRAMP_SIZE, NULL);
		else if (!memcmp(magic, MAGIC4, sizeof(MAGIC4)))
			idx = entry_index(*fn - m->start, TRAMP4_SIZE, NULL);
		else
			return -EPROTO;	/* a layout we do not know */
		if (idx >= REDIRECT_DOMAINS * REDIRECT_KINDS ||
		    target__read(t, m->start + ORIG_OFF + idx * 8, fn, sizeof(*fn)) || !*fn)
			return -EPROTO;
	}
	return -EPROTO;
}

int redirect__originals(const struct target *t, uint64_t funcs[REDIRECT_DOMAINS][5])
{
	int d, k;

	for (d = 0; d < REDIRECT_DOMAINS; d++)
		for (k = 0; k < REDIRECT_KINDS; k++)
			if (original_of(t, &funcs[d][k + 1]))
				return -EPROTO;
	return 0;
}
