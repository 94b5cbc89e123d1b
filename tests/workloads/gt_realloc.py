# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground-truth workload for realloc: blocks created at one line and
resized at another, both in place (small growth, shrinking) and moving
(large growth), in the object domain (bytearray, list items) and through
pymalloc's size classes. tracemalloc moves the trace of a resized block to
the line of the resize, whether the block moved or not. Protocol: see
wlproto.py."""


import wlproto

KEEP = []


def create_bytearrays(n):
    return [bytearray(600 + (i % 7) * 100) for i in range(n)]


def grow_a_little(bufs):
    for b in bufs:
        b.extend(b"x")                   # realloc, often in place


def shrink(bufs):
    for b in bufs:
        del b[len(b) // 2:]              # realloc to a smaller size


def create_lists(n):
    return [[0] * 40 for _ in range(n)]


def append_one(lists):
    for lst in lists:
        lst.append(1)                    # items array realloc


def grow_a_lot(bufs):
    for b in bufs:
        b.extend(bytes(5000))            # realloc that moves


def work():
    a = create_bytearrays(400)
    grow_a_little(a)
    b = create_bytearrays(400)
    shrink(b)
    c = create_lists(400)
    append_one(c)
    d = create_bytearrays(200)
    grow_a_lot(d)
    KEEP.extend([a, b, c, d])


if __name__ == "__main__":
    wlproto.main(work)
