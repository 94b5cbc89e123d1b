/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A stack's id in the stacks map: computed by BPF for the stacks it walks
 * (stack.bpf.h) and by the tracer for those it puts there itself (a forked
 * child's copy of its recording parent's blocks, user/session/tracee.c),
 * so that the same stack has one id. A multiply-xorshift mix per frame
 * (every input bit reaches every output bit), the counts folded in last:
 * 64 bits, so that distinct stacks of one run collide with negligible
 * probability. Never 0 (no frames).
 */
#ifndef __PYTM_STACK_HASH_H
#define __PYTM_STACK_HASH_H

#include "pytm.h"

static __always_inline __u64 pytm_stack_hash(const __u64 *frames, __u32 n, __u32 total)
{
	__u64 h = 0x9e3779b97f4a7c15ULL;
	__u32 i;

	for (i = 0; i < PYTM_MAX_FRAMES; i++) {
		if (i >= n)
			break;
		h ^= frames[i];
		h *= 0xbf58476d1ce4e5b9ULL;
		h ^= h >> 31;
	}
	h ^= (__u64)total << 32 | n;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 32;
	return h ? h : 1;
}

#endif /* __PYTM_STACK_HASH_H */
