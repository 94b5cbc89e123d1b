# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground-truth workload for pymalloc's own bookkeeping: enough small
objects to double the number of arenas twice, so that pymalloc grows its
arenas array (PyMem_RawRealloc from inside an object allocation; on 3.10+
its radix tree may get a 128 KiB node too). tracemalloc does not trace an
allocation made inside another one; neither may pytm-bpf. Protocol: see
wlproto.py."""


import sys

import wlproto

KEEP = []
# Arenas are 1 MiB from 3.10 on, 256 KiB before; the array starts at 16.
TOTAL = (48 << 20) if sys.version_info >= (3, 10) else (12 << 20)


def fill(total):
    n = total // 448                     # 413-byte bytes objects: pymalloc
    return [bytes(380) for _ in range(n)]


def work():
    KEEP.append(fill(TOTAL))


if __name__ == "__main__":
    wlproto.main(work)
