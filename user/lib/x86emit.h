/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one x86-64 code emitter, for the code we put in a target's page
 * (inject's stub, redirect's trampolines): bytes, and instructions that
 * address another offset of the same page RIP-relative. Callers record the
 * offsets they need (probe sites, slots) from `at` as they emit.
 */
#ifndef __PYTM_X86EMIT_H
#define __PYTM_X86EMIT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct x86_emitter {
	uint8_t *page;			/* offsets below are into this buffer */
	size_t at;			/* where the next byte goes */
};

static inline void x86__bytes(struct x86_emitter *e, const void *bytes, size_t len)
{
	memcpy(e->page + e->at, bytes, len);
	e->at += len;
}

/*
 * OP, then a disp32 that makes it address page offset TARGET, then IMM8 if
 * not NULL (e.g. cmpb $imm8, disp32(%rip): the displacement counts from
 * the end of the whole instruction).
 */
static inline void x86__rip(struct x86_emitter *e, const uint8_t *op, size_t oplen,
			    size_t target, const uint8_t *imm8)
{
	int32_t disp;

	x86__bytes(e, op, oplen);
	disp = (int32_t)((int64_t)target - (int64_t)(e->at + 4 + (imm8 ? 1 : 0)));
	x86__bytes(e, &disp, 4);
	if (imm8)
		x86__bytes(e, imm8, 1);
}

#endif /* __PYTM_X86EMIT_H */
