/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Line-number tables of CPython code objects: what PyCode_Addr2Line does. */
#ifndef __PYTM_LINETABLE_H
#define __PYTM_LINETABLE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Line of the instruction at byte offset ADDRQ, as PyCode_Addr2Line(co, addrq)
 * of the CPython whose PY_VERSION_HEX is HEXVERSION computes it from the
 * code object's table (co_lnotab for 3.8-3.9, co_linetable for 3.10+) and
 * co_firstlineno. -1 when the instruction has no line (tracemalloc shows 0).
 */
int linetable__addr2line(uint32_t hexversion, const uint8_t *table,
			 size_t len, int firstlineno, int addrq);

#endif /* __PYTM_LINETABLE_H */
