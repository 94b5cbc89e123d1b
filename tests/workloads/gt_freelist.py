# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground-truth workload for free-list reuse: objects are created at one
line and dropped (their memory goes to a free list, it is not freed),
then as many are created at another line and kept; they reuse the same
memory without any allocator call. tracemalloc re-attributes a block to
the line that creates the new object (_Py_NewReference calls
_PyTraceMalloc_NewReference while tracing; 3.13+: its reference tracer),
so the kept objects belong to the second line. Tuples (no GC header
offset question: GC, no pre-header), floats (not GC), lists and dicts
(GC), each kind below its free list's limit; and instances of a class
(GC and, 3.12+, a pre-header for the managed dict), which no free list
holds: they come back through the allocator. Protocol: see wlproto.py."""


import wlproto

KEEP = []
N = 1500                # below the size-3 tuple free list's limit (2000)
M = 60                  # below the float, list and dict free lists' (80+)


class Point(object):
    def __init__(self, i):
        self.i = i


def make_tuples(n):
    return [(i % 50, 1, 2) for i in range(n)]     # small ints: no int blocks


def reuse_tuples(n):
    return [(i % 50, 3, 4) for i in range(n)]


def make_floats(n):
    return [i + 0.5 for i in range(n)]


def reuse_floats(n):
    return [i + 0.25 for i in range(n)]


def make_lists(n):
    return [[i % 50] for i in range(n)]


def reuse_lists(n):
    return [[i % 50, 1] for i in range(n)]


def make_dicts(n):
    return [{"a": i % 50} for i in range(n)]


def reuse_dicts(n):
    return [{"b": i % 50} for i in range(n)]


def make_points(n):
    return [Point(i % 50) for i in range(n)]


def reuse_points(n):
    return [Point(i % 50) for i in range(n)]


def work():
    for make, reuse, n in ((make_tuples, reuse_tuples, N),
                           (make_floats, reuse_floats, M),
                           (make_lists, reuse_lists, M),
                           (make_dicts, reuse_dicts, M),
                           (make_points, reuse_points, M)):
        first = make(n)
        del first                                 # objects -> free list
        KEEP.append(reuse(n))


if __name__ == "__main__":
    wlproto.main(work)
