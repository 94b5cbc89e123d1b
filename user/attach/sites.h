/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What this kernel does with a uprobe on a NOP probe site, found out at run
 * time on a page of our own (kernels differ, and versions say little).
 */
#ifndef __PYTM_SITES_H
#define __PYTM_SITES_H

#include <stdbool.h>

struct bpf_program;

struct sites_check {
	bool optimized;		/* a probed 5-byte NOP became a call into a
				   [uprobes-trampoline] mapping */
	bool fork_safe;		/* a forked child ran the probed NOP and lived */
	double ms;		/* how long the check took */
};

/*
 * Probe a 5-byte NOP in a memfd page of ours with PROG (a program that
 * does nothing), hit it a few times, then run it in a forked child.
 * Negative errno with a message under -v if the check could not run; then
 * OUT says fork_safe = false (assume the worst).
 */
int sites__check(struct bpf_program *prog, struct sites_check *out);

#endif /* __PYTM_SITES_H */
