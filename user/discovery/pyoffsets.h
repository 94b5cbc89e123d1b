/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Struct offsets of CPython versions: generated table and _Py_DebugOffsets. */
#ifndef __PYTM_PYOFFSETS_H
#define __PYTM_PYOFFSETS_H

#include <stddef.h>
#include <stdint.h>
#include <linux/types.h>
#include "pytm.h"

/*
 * Offsets for a 3.8-3.12 interpreter of PY_VERSION_HEX HEXVERSION, from
 * the generated table (tools/gen_offsets.py); NULL when the minor version
 * is not in the table.
 */
const struct pytm_offsets *pyoffsets__lookup(uint32_t hexversion);
/*
 * 3.13+: fill OUT from the _Py_DebugOffsets bytes at the start of
 * _PyRuntime (BUF, LEN bytes read from the target). -1 when the cookie is
 * not "xdebugpy" or the version is one we cannot read.
 */
int pyoffsets__from_debug(const void *buf, size_t len,
			  struct pytm_offsets *out);

#endif /* __PYTM_PYOFFSETS_H */
