# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground-truth workload, one thread, deterministic (run with
PYTHONHASHSEED=0): allocates lists, dicts, tuples, strings, bytes,
bytearrays and instances through nested calls in this file, keeps some alive
in globals, frees some, grows lists/bytearrays/dicts (realloc), recurses
deeper than 25 frames, allocates from a generator, a closure, a comprehension
and an exception handler. Protocol: see wlproto.py."""


import wlproto

KEEP = []           # lives to the end
TREES = []
BUFFERS = []
TABLE = {}


class Node(object):
    def __init__(self, key, payload):
        self.key = key
        self.payload = payload
        self.children = []


class Point(object):
    __slots__ = ("x", "y", "label")

    def __init__(self, x, y):
        self.x = x
        self.y = y
        self.label = "p%d/%d" % (x, y)


def make_list(n):
    return [i * 7 + 1000 for i in range(n)]


def make_dict(n, tag):
    d = {}
    for i in range(n):
        d["%s-%d" % (tag, i)] = i * 1000
    return d


def make_string(i):
    return "item-%06d-" % i + "x" * (i % 300)


def make_bytes(n):
    return bytes(n)


def grow_list(n):
    lst = []
    for i in range(n):
        lst.append(i + 100000)
    return lst


def grow_bytearray(steps, chunk):
    buf = bytearray()
    for _ in range(steps):
        buf += b"y" * chunk
    return buf


def build_tree(depth, fanout):
    node = Node(depth, "n%d" % depth * 3)
    if depth > 0:
        for _ in range(fanout):
            node.children.append(build_tree(depth - 1, fanout))
    return node


def deep(n, size):
    if n == 0:
        return bytearray(size)
    return deep(n - 1, size)


def records(n):
    for i in range(n):
        yield ["rec", i + 1000, "v" * (i % 50 + 2)]


def closure(i):
    data = [i] * (i % 20 + 1)

    def get():
        return data
    return get


def failing(i):
    try:
        raise ValueError("bad value %d" % i)
    except ValueError as e:
        return [str(e)] * 3


def level3(i):
    out = [make_string(i), make_list(i % 40 + 1), Point(i, i * 2)]
    if i % 5 == 0:
        out.append(make_dict(i % 30 + 5, "l3"))
    if i % 7 == 0:
        out.append(make_bytes(100 + (i * 37) % 4000))
    if i % 11 == 0:
        out.append(tuple(range(i % 50 + 2)))
    return out


def level2(i):
    a = level3(i)
    b = level3(i + 100000) if i % 3 == 0 else None
    return [a, b, Node(i, make_string(i * 3))]


def level1(i):
    return level2(i)


def phase_nested(n):
    for i in range(n):
        KEEP.append(level1(i))


def phase_growth():
    BUFFERS.append(grow_bytearray(300, 37))
    BUFFERS.append(grow_bytearray(50, 4096))
    BUFFERS.append(grow_list(8000))
    BUFFERS.append(bytearray(1 << 20))          # large: malloc/mmap
    for i in range(300):
        TABLE["key-%d" % i] = make_string(i)    # dict grows (realloc path)


def phase_deep():
    for i in range(40):
        KEEP.append(deep(30 + i % 10, 64 + i * 8))


def phase_misc():
    KEEP.append(list(records(500)))
    for i in range(200):
        KEEP.append(closure(i))
    for i in range(100):
        KEEP.append(failing(i))
    KEEP.append({i: "%d" % (i * 31) for i in range(600)})
    TREES.append(build_tree(5, 4))


def phase_churn():
    temp = []
    for i in range(1500):
        temp.append(make_string(i * 5))
        temp.append(Node(i, None))
    del temp[::2]                               # frees half; list shrinks
    KEEP.append(temp)
    scratch = [make_list(100) for _ in range(200)]
    del scratch                                 # all freed again
    for i in range(len(KEEP) // 4):
        KEEP[i * 2] = None                      # free some nested results


def work():
    phase_nested(1200)
    phase_growth()
    phase_deep()
    phase_misc()
    phase_churn()


if __name__ == "__main__":
    wlproto.main(work)
