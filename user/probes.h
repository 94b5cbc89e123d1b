/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The probe plan: where a target's allocations are caught, and attaching. */
#ifndef __PYTM_PROBES_H
#define __PYTM_PROBES_H

#include <stdint.h>

struct pytm_bpf;
struct target;
struct bpf_link;

#define PROBES_MAX 32

struct probes {
	struct bpf_link *links[PROBES_MAX];
	int nlinks;
	int nfuncs;			/* allocator functions probed */
};

/*
 * Attach uprobes (+ uretprobes) to the functions the target's live
 * allocator tables (raw, mem, obj) point to, and to PyTraceMalloc_Track /
 * Untrack. Negative errno, with a message shown, on failure.
 */
int probes__attach(struct probes *pr, struct pytm_bpf *skel,
		   const struct target *t);
void probes__detach(struct probes *pr);	/* safe when nothing attached */

#endif /* __PYTM_PROBES_H */
