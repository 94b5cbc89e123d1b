/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Code objects of a target: read when BPF announces them, then (file, line). */
#ifndef __PYTM_RESOLVE_H
#define __PYTM_RESOLVE_H

#include <stdbool.h>
#include <stdint.h>
#include "pytm.h"
#include "snapshot.h"

struct target;
struct resolver;

struct resolver *resolver__new(const struct target *t,
			       const struct pytm_offsets *off);
void resolver__free(struct resolver *r);	/* safe on NULL */
/*
 * Take FROM's code objects (a parent's, before its child forked) for ids R
 * has not read: the child's inherited tracebacks name them. 0 or -ENOMEM.
 */
int resolver__inherit(struct resolver *r, const struct resolver *from);
/* Read the code object ADDR now, under id ID. */
int resolver__add_code(struct resolver *r, uint32_t id, uint64_t addr);
/*
 * The same, read from FROM's memory (a forked child's code object that
 * its parent has at the same address, the child gone already).
 */
int resolver__add_code_from(struct resolver *r, const struct target *from, uint32_t id,
			    uint64_t addr);
/* Memory copied from the target at some moment: LEN bytes at ADDR. */
struct resolver_mem {
	uint64_t addr;
	const void *bytes;
	size_t len;
};
/*
 * The same, reading what MEM holds from it (the code object as it was
 * then, maybe freed since), the rest from the target now.
 */
int resolver__add_code_copied(struct resolver *r, uint32_t id, uint64_t addr,
			      const struct resolver_mem *mem, size_t nmem);
/* The copies in BPF's event CE (SIZE bytes) as MEM; how many. */
size_t resolver__event_mem(const void *ce, size_t size, struct resolver_mem mem[PYTM_CAP_N]);
/* RETRY: a failed resolver__add_code is not counted (a _from call follows). */
void resolver__set_retry(struct resolver *r, bool retry);
/*
 * (filename, lineno) of FRAME (PYTM_FRAME(id, lasti)) as tracemalloc would
 * record it; filename interned in S. Unknown code: ("<unknown>", 0).
 */
void resolver__frame(struct resolver *r, uint64_t frame, struct snapshot *s,
		     struct pytm_frame_info *out);
/* Code objects read, and those that could not be read. */
void resolver__stats(const struct resolver *r, uint64_t *nread, uint64_t *nfailed);

#endif /* __PYTM_RESOLVE_H */
