# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground-truth workload for free-list reuse: tuples are created at one
line and dropped (their memory goes to the tuple free list, it is not
freed), then as many tuples are created at another line and kept; they
reuse the same memory without any allocator call. tracemalloc re-attributes
a block to the line that creates the new object (_Py_NewReference calls
_PyTraceMalloc_NewReference while tracing), so the kept tuples belong to
the second line. Protocol: see wlproto.py."""


import wlproto

KEEP = []
N = 1500                # below the size-3 tuple free list's limit (2000)


def make_tuples(n):
    return [(i % 50, 1, 2) for i in range(n)]     # small ints: no int blocks


def reuse_tuples(n):
    return [(i % 50, 3, 4) for i in range(n)]


def work():
    first = make_tuples(N)
    del first                                     # tuples -> free list
    KEEP.append(reuse_tuples(N))


if __name__ == "__main__":
    wlproto.main(work)
