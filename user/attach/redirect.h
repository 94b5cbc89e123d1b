/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Redirected allocator: the target's allocator tables point to trampolines
 * in an injected page; each trampoline calls the previous function and
 * passes a NOP probe site with the result and arguments in registers.
 */
#ifndef __PYTM_REDIRECT_H
#define __PYTM_REDIRECT_H

#include <stdbool.h>
#include <stdint.h>
#include "inject.h"
#include "page.h"

#define REDIRECT_DOMAINS	3	/* raw, mem, obj */
#define REDIRECT_KINDS		4	/* malloc, calloc, realloc, free */
#define REDIRECT_PAGE_NAME	"pytm-bpf"

struct target;

/*
 * The instruction a probe site is. The kernel traps on both without
 * single-stepping; 6.18 also rewrites a probed 5-byte NOP into a call to a
 * per-process trampoline mapping (no trap: ~4x cheaper here), which a
 * forked child does not get.
 */
enum redirect_site {
	REDIRECT_SITE_NOP5,	/* 0f 1f 44 00 00 */
	REDIRECT_SITE_NOP6,	/* 66 0f 1f 44 00 00: never rewritten */
};

enum redirect_site_pref {
	REDIRECT_PREFER_AUTO,	/* 5-byte unless children are at risk */
	REDIRECT_PREFER_NOP5,
	REDIRECT_PREFER_NOP6,
};

/* What redirect__prepare makes of the page. */
struct redirect_opts {
	enum redirect_site_pref site_pref;
	bool nop5_fork_safe;		/* see sites__check */
	uint64_t sample_rate;		/* mean bytes between samples; 0: exact */
	unsigned int set_slots;		/* sampled: the sampled-block set's slots */
	bool gil_plain;			/* sampled: obj/mem calls share one GIL */
	bool follow_forks;		/* forked children stay redirected (else
					 * they put their tables back) */
	bool adopt;			/* a forked child that the page it inherited
					 * traces already: sampled, its sampler goes
					 * on as it is (see redirect__swap) */
	/* 3.13+: objects reused from free lists (page/sampler.c, pytm_reftrace) */
	uint64_t ref_slot;		/* &_PyRuntime.ref_tracer.tracer_func; 0: none */
	uint16_t ob_type;		/* offsetof(PyObject, ob_type) */
	uint16_t tp_flags;		/* offsetof(PyTypeObject, tp_flags) */
	uint8_t gc_head;		/* sizeof(PyGC_Head) */
	/*
	 * Exact mode through the in-target recorder (sample_rate 0): the
	 * ring's slots (a power of two) and its configuration but for the
	 * ring's addresses (filled here).
	 */
	bool record;
	uint32_t ring_slots;
	struct pytm_page_rec rec;
};

/* Sampled mode's two probe sites (page/sites.S). */
enum redirect_sample_site {
	REDIRECT_SAMPLE_ALLOC = 0,	/* rdi = block, rsi = size, rdx = weight */
	REDIRECT_SAMPLE_FREE = 1,	/* rdi = block */
};

struct redirect {
	struct inject_page page;
	bool have_page;
	uint64_t tables[REDIRECT_DOMAINS];	/* PyMemAllocatorEx addresses */
	/* The functions the trampolines call: what the tables held before us. */
	uint64_t orig[REDIRECT_DOMAINS][REDIRECT_KINDS];
	bool swapped[REDIRECT_DOMAINS][REDIRECT_KINDS];
	/* Page offsets of the probe sites, as emitted (no entry site for free). */
	uint64_t site[REDIRECT_DOMAINS][REDIRECT_KINDS];
	uint64_t entry_site[REDIRECT_DOMAINS][REDIRECT_KINDS];
	uint64_t before[REDIRECT_DOMAINS][REDIRECT_KINDS];	/* the slots as prepared */
	enum redirect_site site_kind;
	const char *site_why;		/* why that kind, for -v */
	uint64_t sample_rate;		/* 0: exact mode */
	unsigned int set_slots;
	bool gil_plain;
	bool follow_forks;		/* see struct redirect_opts */
	uint64_t inherited;		/* adopted, sampled: the page whose sampler
					 * it runs (0: none) */
	uint64_t sample_site[2];	/* enum redirect_sample_site */
	/* The reference tracer (3.13+): see redirect_opts.ref_slot. */
	uint64_t ref_slot;		/* 0: not hooked */
	uint64_t ref_seen;		/* what the slot held when prepared */
	uint64_t ref_prev;		/* the tracer ours replaces (pytm_page_keep) */
	bool ref_swapped;		/* the slot points to our page */
	bool record;			/* exact mode through the recorder */
	struct inject_shared ring;	/* its ring, shared with the target */
};

/*
 * Find (or inject) the page in T and fill it for TABLES, whose current
 * function slots are FUNCS[d][1..4]. Slots that already point into a page
 * of ours (a tracer before us died without restoring them) keep their
 * originals. A page the target does not see as we write it is passed
 * over for another. Site kind: O->site_pref, or with AUTO the 5-byte NOP
 * where forked children skip the sites (the page's data page is wiped on
 * fork) or O->nop5_fork_safe, else the 6-byte NOP. With O->sample_rate,
 * the sampler is configured (disarmed, its set emptied) and the tables
 * will point to its entries (which need the fork wipe: -EOPNOTSUPP).
 * Negative errno with a message shown on failure.
 */
int redirect__prepare(struct redirect *rd, const struct target *t,
		      const uint64_t tables[REDIRECT_DOMAINS],
		      const uint64_t funcs[REDIRECT_DOMAINS][5],
		      const struct redirect_opts *o);
const char *redirect__site_name(enum redirect_site kind);
/* File offset of the probe site of trampoline (D, K) in the page's file. */
uint64_t redirect__site(const struct redirect *rd, int d, int k);
/* File offset of the entry site of trampoline (D, K), K != free. */
uint64_t redirect__entry_site(const struct redirect *rd, int d, int k);
/*
 * File offsets of the children's sites (the unarmed way: forked children),
 * shared by the trampolines of every domain: of kind K, and of the entries.
 */
uint64_t redirect__child_site(int k);
uint64_t redirect__child_entry_site(void);
/* File offset of a sampled-mode children's site (a 6-byte NOP). */
uint64_t redirect__child_sample_site(enum redirect_sample_site which);
/*
 * File offsets of the reference tracer's site (an object created in a
 * block that may be traced: its chosen NOP) and of its children's site.
 * Probed when rd->ref_slot is set.
 */
uint64_t redirect__newref_site(const struct redirect *rd);
uint64_t redirect__child_newref_site(void);
/* File offset of a sampled-mode site (the chosen NOP of it). */
uint64_t redirect__sample_site(const struct redirect *rd, enum redirect_sample_site which);
/* File offset of the recorder's tomb site (its chosen NOP). */
uint64_t redirect__tomb_site(const struct redirect *rd);
/* File offset of the recorder's code site: a code object it had not seen. */
uint64_t redirect__code_site(const struct redirect *rd);
/*
 * The sampler's counters as the target has them now (struct
 * pytm_page_ctl: samples, frees, lost_full, ...). Negative errno.
 */
struct pytm_page_ctl;
int redirect__sampler_state(const struct redirect *rd, struct pytm_page_ctl *out);
/* Path that reaches the page's file, for uprobe attachment. */
const char *redirect__path(const struct redirect *rd);
/* Arm the sites, then point the tables at the trampolines (aligned 8-byte stores). */
int redirect__swap(struct redirect *rd, const struct target *t);
/*
 * Put back the original pointers where the tables still point to our
 * trampolines (a hook installed on top of ours keeps chaining through
 * them, inert). The page stays, to be found again by the next attach.
 */
void redirect__restore(struct redirect *rd, const struct target *t);
void redirect__close(struct redirect *rd);	/* safe on a zeroed struct */
/*
 * Plain mode over a redirected allocator (another tracer, or one that died):
 * replace table slots that point into our page with the functions the
 * trampolines call. -EPROTO if a slot points into the page but not at a
 * trampoline.
 */
int redirect__originals(const struct target *t, uint64_t funcs[REDIRECT_DOMAINS][5]);

#endif /* __PYTM_REDIRECT_H */
