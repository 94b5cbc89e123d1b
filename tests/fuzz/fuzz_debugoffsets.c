// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* 3.13+'s _Py_DebugOffsets, as read from a target's _PyRuntime: any bytes. */
#include "pyoffsets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct pytm_offsets off;

	pyoffsets__from_debug(data, len, &off);
	return 0;
}
