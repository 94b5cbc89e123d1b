/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Where a 3.13+ runtime keeps its reference tracer: _PyRuntime.ref_tracer,
 * at an offset that _Py_DebugOffsets does not give. Found in the code of
 * PyRefTracer_SetTracer(func, data), which stores its two arguments there.
 */
#ifndef __PYTM_REFTRACE_H
#define __PYTM_REFTRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct target;

/*
 * Where the stores of rdi (tracer_func) and rsi (tracer_data) go, in
 * CODE (LEN bytes of the function, loaded at ADDR): at BASE + DISP, BASE
 * an address (direct) or read from the pointer-sized cell at BASE (a GOT
 * entry: indirect).
 */
struct reftrace_store {
	uint64_t base;
	int64_t disp;
	bool indirect;
};

/*
 * Decode the stores: 0, or -1 if the code is not two 8-byte stores of
 * rdi and rsi to adjacent fields (func, then data) off one base, reached
 * RIP-relative or through a register loaded RIP-relative, before ret.
 */
int reftrace__decode(const uint8_t *code, size_t len, uint64_t addr,
		     struct reftrace_store *out);
/*
 * &_PyRuntime.ref_tracer.tracer_func in T, checked to lie inside
 * _PyRuntime (the size its symbol gives); 0 if not found.
 */
uint64_t reftrace__find_slot(const struct target *t);

#endif /* __PYTM_REFTRACE_H */
