// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <string.h>
#include "elf.h"
#include "reftrace.h"
#include "target.h"

/*
 * A few x86-64 instruction forms, enough for what compilers make of
 *
 *	_PyRuntime.ref_tracer.tracer_func = tracer;
 *	_PyRuntime.ref_tracer.tracer_data = data;
 *	return 0;
 *
 * mov %rdi, disp32(%rip) in an executable that holds _PyRuntime; or, in
 * a shared library, mov GOT(%rip), %reg then mov %rdi, disp(%reg)
 * (lea instead of the load without interposition). Anything else ends
 * the decoding: the caller goes without.
 */
enum base_kind { NONE, VALUE, GOT };

struct reg {
	enum base_kind kind;
	uint64_t addr;
};

int reftrace__decode(const uint8_t *code, size_t len, uint64_t addr,
		     struct reftrace_store *out)
{
	static const uint8_t endbr64[] = { 0xf3, 0x0f, 0x1e, 0xfa };
	struct reftrace_store st[2];	/* rdi's, rsi's */
	bool seen[2] = { false, false };
	struct reg regs[16];
	size_t at = 0, next;
	uint8_t rex, op, modrm, mod, reg, rm;
	int64_t disp;

	memset(regs, 0, sizeof(regs));
	if (len >= sizeof(endbr64) && !memcmp(code, endbr64, sizeof(endbr64)))
		at = sizeof(endbr64);
	while (at < len && !(seen[0] && seen[1])) {
		if (code[at] == 0xc3)	/* ret */
			break;
		/* REX.W op modrm [disp]: 64-bit mov/lea, no SIB */
		if (at + 3 > len || (code[at] & 0xf8) != 0x48)
			return -1;
		rex = code[at];
		op = code[at + 1];
		modrm = code[at + 2];
		mod = modrm >> 6;
		reg = ((modrm >> 3) & 7) | (rex & 4 ? 8 : 0);
		rm = (modrm & 7) | (rex & 1 ? 8 : 0);
		if ((op != 0x89 && op != 0x8b && op != 0x8d) || mod == 3 || (modrm & 7) == 4)
			return -1;
		next = at + 3 + (mod == 1 ? 1 : 4);
		if (next > len)
			return -1;
		if (mod == 1) {
			disp = (int8_t)code[at + 3];
		} else {
			int32_t d32;

			memcpy(&d32, code + at + 3, 4);
			disp = d32;
		}
		if (mod == 0 && (modrm & 7) != 5)
			return -1;	/* (%reg) without displacement: not ours */
		if (op == 0x8b || op == 0x8d) {
			/* mov/lea disp32(%rip), %reg: a base for the stores */
			if (mod != 0)
				return -1;
			regs[reg].kind = op == 0x8b ? GOT : VALUE;
			regs[reg].addr = addr + next + (uint64_t)disp;
		} else {
			struct reftrace_store s;

			if (reg != 7 && reg != 6)
				return -1;	/* a store of something else */
			if (mod == 0) {	/* disp32(%rip) */
				s.base = addr + next + (uint64_t)disp;
				s.disp = 0;
				s.indirect = false;
			} else {
				if (regs[rm].kind == NONE)
					return -1;
				s.base = regs[rm].addr;
				s.disp = disp;
				s.indirect = regs[rm].kind == GOT;
			}
			st[reg == 7 ? 0 : 1] = s;
			seen[reg == 7 ? 0 : 1] = true;
		}
		at = next;
	}
	if (!seen[0] || !seen[1])
		return -1;
	/* tracer_data right after tracer_func: one address off another */
	if (st[0].indirect != st[1].indirect)
		return -1;
	if (!st[0].indirect) {
		st[0].base += (uint64_t)st[0].disp;
		st[1].base += (uint64_t)st[1].disp;
		st[0].disp = st[1].disp = 0;
		if (st[1].base != st[0].base + 8)
			return -1;
	} else if (st[0].base != st[1].base || st[1].disp != st[0].disp + 8) {
		return -1;
	}
	*out = st[0];
	return 0;
}

uint64_t reftrace__find_slot(const struct target *t)
{
	uint64_t fn = target__symbol(t, "PyRefTracer_SetTracer"), base, slot;
	uint64_t runtime_addr, runtime_size = 0;
	struct reftrace_store st;
	uint8_t code[64];

	if (!fn || !t->runtime || !t->elf ||
	    elf__symbol(t->elf, "_PyRuntime", &runtime_addr, &runtime_size) ||
	    target__read(t, fn, code, sizeof(code)) ||
	    reftrace__decode(code, sizeof(code), fn, &st))
		return 0;
	base = st.base;
	if (st.indirect && target__read(t, st.base, &base, sizeof(base)))
		return 0;
	slot = base + (uint64_t)st.disp;
	/* Inside _PyRuntime, with room for both fields, aligned. */
	if (slot < t->runtime || slot % 8 || runtime_size < 16 ||
	    slot - t->runtime > runtime_size - 16)
		return 0;
	return slot;
}
