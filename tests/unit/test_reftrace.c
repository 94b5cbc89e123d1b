// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * reftrace__decode: where PyRefTracer_SetTracer stores its arguments, in
 * the forms compilers give it (pyenv's 3.13.0 shared library, bytes as
 * objdump shows them; a static build with CET; lea without
 * interposition; an extended base register), and refusals of anything
 * else (a vectorized store, another register, fields not adjacent,
 * only one store, cut short, a SIB operand).
 */
#include <string.h>
#include "unit.h"
#include "reftrace.h"

#define ADDR 0x150e60ULL

static int decode(const uint8_t *code, size_t len, struct reftrace_store *st)
{
	memset(st, 0, sizeof(*st));
	return reftrace__decode(code, len, ADDR, st);
}

int main(void)
{
	/* pyenv 3.13.0 libpython3.13.so.1.0 */
	static const uint8_t pyenv313[] = {
		0x48, 0x8b, 0x05, 0x49, 0x9e, 0x39, 0x00,	/* mov 0x399e49(%rip),%rax */
		0x48, 0x89, 0xb8, 0x48, 0x28, 0x00, 0x00,	/* mov %rdi,0x2848(%rax) */
		0x48, 0x89, 0xb0, 0x50, 0x28, 0x00, 0x00,	/* mov %rsi,0x2850(%rax) */
		0x31, 0xc0, 0xc3,				/* xor %eax,%eax; ret */
	};
	/* a static build: endbr64, then both RIP-relative (the second's target 8 further) */
	static const uint8_t rip[] = {
		0xf3, 0x0f, 0x1e, 0xfa,
		0x48, 0x89, 0x3d, 0x00, 0x10, 0x00, 0x00,	/* mov %rdi,0x1000(%rip) */
		0x48, 0x89, 0x35, 0x01, 0x10, 0x00, 0x00,	/* mov %rsi,0x1001(%rip) */
		0x31, 0xc0, 0xc3,
	};
	/* lea, disp8 stores, data stored first */
	static const uint8_t lea[] = {
		0x48, 0x8d, 0x0d, 0x00, 0x20, 0x00, 0x00,	/* lea 0x2000(%rip),%rcx */
		0x48, 0x89, 0x71, 0x10,				/* mov %rsi,0x10(%rcx) */
		0x48, 0x89, 0x79, 0x08,				/* mov %rdi,0x8(%rcx) */
		0xc3,
	};
	/* r8 as the base: REX.R on the load, REX.B on the stores */
	static const uint8_t r8[] = {
		0x4c, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00,	/* mov 0x10(%rip),%r8 */
		0x49, 0x89, 0xb8, 0x00, 0x01, 0x00, 0x00,	/* mov %rdi,0x100(%r8) */
		0x49, 0x89, 0xb0, 0x08, 0x01, 0x00, 0x00,	/* mov %rsi,0x108(%r8) */
		0xc3,
	};
	static const uint8_t vector[] = {
		0x66, 0x48, 0x0f, 0x6e, 0xc7,			/* movq %rdi,%xmm0 */
		0xc3,
	};
	static const uint8_t rdx[] = {
		0x48, 0x8b, 0x05, 0x49, 0x9e, 0x39, 0x00,
		0x48, 0x89, 0x90, 0x48, 0x28, 0x00, 0x00,	/* mov %rdx,0x2848(%rax) */
		0x48, 0x89, 0xb0, 0x50, 0x28, 0x00, 0x00, 0xc3,
	};
	static const uint8_t apart[] = {
		0x48, 0x8b, 0x05, 0x49, 0x9e, 0x39, 0x00,
		0x48, 0x89, 0xb8, 0x48, 0x28, 0x00, 0x00,
		0x48, 0x89, 0xb0, 0x58, 0x28, 0x00, 0x00, 0xc3,	/* +16 */
	};
	static const uint8_t one[] = {
		0x48, 0x8b, 0x05, 0x49, 0x9e, 0x39, 0x00,
		0x48, 0x89, 0xb8, 0x48, 0x28, 0x00, 0x00, 0xc3,
	};
	static const uint8_t sib[] = {
		0x48, 0x89, 0x3c, 0x24,				/* mov %rdi,(%rsp) */
		0x48, 0x89, 0x74, 0x24, 0x08, 0xc3,
	};
	static const uint8_t unloaded[] = {
		0x48, 0x89, 0xb8, 0x48, 0x28, 0x00, 0x00,	/* %rax never loaded */
		0x48, 0x89, 0xb0, 0x50, 0x28, 0x00, 0x00, 0xc3,
	};
	struct reftrace_store st;

	CHECK(!decode(pyenv313, sizeof(pyenv313), &st) && st.indirect &&
	      st.base == 0x4eacb0 && st.disp == 0x2848,
	      "pyenv 3.13.0: through the GOT entry at 0x4eacb0, +0x2848 (got %#llx %+lld)",
	      (unsigned long long)st.base, (long long)st.disp);
	CHECK(!decode(rip, sizeof(rip), &st) && !st.indirect &&
	      st.base == ADDR + 11 + 0x1000 && st.disp == 0, "static build: RIP-relative");
	CHECK(!decode(lea, sizeof(lea), &st) && !st.indirect &&
	      st.base == ADDR + 7 + 0x2000 + 8 && st.disp == 0, "lea, disp8, data first");
	CHECK(!decode(r8, sizeof(r8), &st) && st.indirect &&
	      st.base == ADDR + 7 + 0x10 && st.disp == 0x100, "r8 base");
	CHECK(decode(pyenv313, 20, &st) == -1, "cut short");
	CHECK(decode(vector, sizeof(vector), &st) == -1, "vectorized: refused");
	CHECK(decode(rdx, sizeof(rdx), &st) == -1, "a store of rdx: refused");
	CHECK(decode(apart, sizeof(apart), &st) == -1, "fields 16 apart: refused");
	CHECK(decode(one, sizeof(one), &st) == -1, "one store: refused");
	CHECK(decode(sib, sizeof(sib), &st) == -1, "SIB: refused");
	CHECK(decode(unloaded, sizeof(unloaded), &st) == -1, "unknown base: refused");
	CHECK(decode(pyenv313, 0, &st) == -1, "nothing");
	return unit_done("test_reftrace");
}
