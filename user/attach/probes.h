/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The probe plan: where a target's allocations are caught, and attaching. */
#ifndef __PYTM_PROBES_H
#define __PYTM_PROBES_H

#include <stdbool.h>
#include <stdint.h>
#include "redirect.h"

struct pytm_bpf;
struct target;
struct bpf_link;

#define PROBES_MAX 40

struct probes {
	struct bpf_link *links[PROBES_MAX];
	int nlinks;
	int nfuncs;			/* allocator functions probed */
	bool injected;			/* allocator redirected through our page */
	bool sampled;			/* ...through the sampler */
	bool recording;			/* ...through the recorder */
	bool track_depth;		/* entry sites probed: nesting counted */
	bool child_sites;		/* forked children are traced at their sites */
	struct redirect rd;
	int claim_fd;			/* our claim on the target (0: none; never 0-2) */
	const struct target *target;
};

/*
 * Catch the target's allocations: with O->inject, redirect its allocator
 * tables (raw, mem, obj) through trampolines with one NOP probe site each
 * (o->site_pref: which NOP; see redirect__prepare), falling back to plain
 * probes if injection is refused; else uprobes +
 * uretprobes on the functions the live tables point to. Always probes
 * PyTraceMalloc_Track / Untrack. Negative errno, with a message shown.
 */
struct probes_opts {
	bool inject;			/* redirect the allocator (else plain probes) */
	enum redirect_site_pref site_pref;	/* injected: which NOP the sites are */
	bool empty_sites;		/* injected: programs that do nothing (bench) */
	uint64_t sample_rate;		/* injected: sample by bytes (0: exact) */
	unsigned int set_slots;		/* sampled: the sampled-block set's slots */
	bool gil_plain;			/* sampled: one interpreter, one GIL */
	bool follow_forks;		/* exact: probe the children's sites too; any
				 * mode: children stay redirected, else they
				 * put their tables back */
	bool adopt;			/* a forked child, traced through its
					 * parent's page already (redirect_opts) */
	/* 3.13+: the reference tracer (redirect_opts) */
	uint64_t ref_slot;
	uint16_t ob_type, tp_flags;
	uint8_t gc_head;
	/* Exact, injected: the in-target recorder (redirect_opts) */
	bool record;
	uint32_t ring_slots;
	struct pytm_page_rec rec;
};

int probes__attach(struct probes *pr, struct pytm_bpf *skel,
		   const struct target *t, const struct probes_opts *o);
void probes__detach(struct probes *pr);	/* safe when nothing attached */

#endif /* __PYTM_PROBES_H */
