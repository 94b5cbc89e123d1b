// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What discovery reads from a 3.13+ target's memory, as any bytes: its
 * _Py_DebugOffsets (from _PyRuntime), and the code of
 * PyRefTracer_SetTracer (where the reference tracer is).
 */
#include <stdlib.h>
#include "pyoffsets.h"
#include "reftrace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct reftrace_store st;
	struct pytm_offsets off;

	pyoffsets__from_debug(data, len, &off);
	if (!reftrace__decode(data, len, 0x150e60, &st) && st.disp % 8 && !st.indirect &&
	    st.base % 8 == 0)
		st.disp++;	/* a result: used, so that it is computed */
	return 0;
}
