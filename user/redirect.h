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

#define REDIRECT_DOMAINS	3	/* raw, mem, obj */
#define REDIRECT_KINDS		4	/* malloc, calloc, realloc, free */
#define REDIRECT_PAGE_NAME	"pytm-bpf"

struct target;

struct redirect {
	struct inject_page page;
	bool have_page;
	uint64_t tables[REDIRECT_DOMAINS];	/* PyMemAllocatorEx addresses */
	/* The functions the trampolines call: what the tables held before us. */
	uint64_t orig[REDIRECT_DOMAINS][REDIRECT_KINDS];
	bool swapped[REDIRECT_DOMAINS][REDIRECT_KINDS];
};

/*
 * Find (or inject) the page in T and fill it for TABLES, whose current
 * function slots are FUNCS[d][1..4]. Slots that already point into our page
 * (a tracer before us died without restoring them) keep their originals.
 * Negative errno with a message shown on failure.
 */
int redirect__prepare(struct redirect *rd, const struct target *t,
		      const uint64_t tables[REDIRECT_DOMAINS],
		      const uint64_t funcs[REDIRECT_DOMAINS][5]);
/* File offset of the probe site of trampoline (D, K) in the page's file. */
uint64_t redirect__site(const struct redirect *rd, int d, int k);
/* File offset of the entry site of trampoline (D, K), K != free. */
uint64_t redirect__entry_site(const struct redirect *rd, int d, int k);
/* Path that reaches the page's file, for uprobe attachment. */
const char *redirect__path(const struct redirect *rd);
/* Point the tables at the trampolines (aligned 8-byte stores). */
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
