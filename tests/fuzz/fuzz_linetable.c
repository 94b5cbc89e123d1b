// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Line tables of a target's code objects (co_lnotab 3.8-3.9, co_linetable
 * 3.10, the location tables of 3.11+): any bytes, for every version, any
 * first line and instruction offset.
 */
#include <string.h>
#include "linetable.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static const uint32_t versions[] = {
		0x030800f0, 0x030900f0, 0x030a00f0, 0x030b00f0, 0x030c00f0, 0x030d00f0,
	};
	int32_t first, addrq;

	if (len < 9)
		return 0;
	memcpy(&first, data + 1, 4);
	memcpy(&addrq, data + 5, 4);
	linetable__addr2line(versions[data[0] % 6], data + 9, len - 9, first, addrq);
	return 0;
}
