# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The recorder against tracemalloc, inside this interpreter
(tests/test_recorder.py): loads the hook library (tests/unit/rec_hook.c),
which records each obj-domain event into a ring with page/recorder.c
(allocations with their frames), then makes bytes objects in many kinds
of frames while tracemalloc traces too, drains the ring, and compares,
object by object, the recorder's frames (code object, instruction offset
-> file, line) and frame count with tracemalloc.get_object_traceback()
and the snapshot. Prints one JSON line.

    python rec_check.py LIBRARY [FRAMES]
"""

import ctypes
import json
import sys
import threading
import tracemalloc

FRAMES = int(sys.argv[2]) if len(sys.argv) > 2 else 25
KEEP = []


def leaf(n):
    KEEP.append(bytes(n))


def nest(depth, n):
    if depth:
        nest(depth - 1, n)
    else:
        leaf(n)


def gen(k):
    for i in range(k):
        yield bytes(16 + i)


def comprehension(k):
    return [bytes(40 + i) for i in range(k)]


class Holder(object):
    def __init__(self, n):
        self.data = bytes(n)

    def method(self, n):
        return bytes(n)


def deep(depth, n):
    if depth:
        return deep(depth - 1, n)
    return bytes(n)


def worker(out, k):
    for i in range(k):
        out.append(bytes(100 + i))


def scenarios():
    for i in range(50):
        leaf(2 + i)
    for d in range(0, 12):
        nest(d, 300 + d)
    KEEP.extend(gen(20))
    KEEP.extend(comprehension(20))
    KEEP.append(Holder(77).data)
    KEEP.append(Holder(1).method(88))
    KEEP.append((lambda n: bytes(n))(99))
    for d in (20, 24, 25, 26, 40):
        KEEP.append(deep(d, 500 + d))
    out = []
    t = threading.Thread(target=worker, args=(out, 20))
    t.start()
    t.join()
    KEEP.extend(out)


def addr2line(co, addr):
    """PyCode_Addr2Line(co, addr), as tracemalloc calls it."""
    if addr < 0:
        return co.co_firstlineno
    if hasattr(co, "co_lines"):
        for start, end, line in co.co_lines():
            if start <= addr < end:
                return line if line is not None else -1
        return -1
    tab = co.co_lnotab
    line, at = co.co_firstlineno, 0
    for i in range(0, len(tab), 2):
        at += tab[i]
        if at > addr:
            break
        delta = tab[i + 1]
        line += delta - 256 if delta >= 128 else delta
    return line


def main(lib_path):
    lib = ctypes.PyDLL(lib_path)        # calls keep the GIL (and the thread state)
    lib.rec_tstate_way.restype = ctypes.c_char_p
    lib.rec_find.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64),
                             ctypes.POINTER(ctypes.c_int32),
                             ctypes.POINTER(ctypes.c_uint32)]
    tracemalloc.start(FRAMES)
    if lib.rec_setup(sys.hexversion, FRAMES, 1 << 16) != 0:
        print(json.dumps({"error": "no offsets for %x" % sys.hexversion}))
        return
    bytes_per_unit = 1 if lib.rec_lasti_kind() == 1 else 2
    lib.rec_enable(1)
    scenarios()
    lib.rec_enable(0)
    drained = lib.rec_drain()

    # Frame counts (3.9+) are in the snapshot's traces, by traceback and
    # size (a bytes object's block is sys.getsizeof() bytes).
    counts = {}
    for trace in tracemalloc.take_snapshot().traces:
        tb = trace.traceback
        key = (tuple((f.filename, f.lineno) for f in tb), trace.size)
        counts.setdefault(key, set()).add(getattr(tb, "total_nframe", None))
    codes = (ctypes.c_uint64 * 32)()
    lasti = (ctypes.c_int32 * 32)()
    total = ctypes.c_uint32()
    checked, mismatches, missing, freed = 0, [], 0, 0
    for obj in KEEP:
        tb = tracemalloc.get_object_traceback(obj)
        n = lib.rec_find(id(obj), codes, lasti, ctypes.byref(total))
        if n == -2:
            freed += 1          # a free recorded after its allocation
            continue
        if n < 0 or tb is None:
            missing += 1
            continue
        ref = [(f.filename, f.lineno) for f in reversed(list(tb))]
        ours = []
        for i in range(n):
            co = ctypes.cast(codes[i], ctypes.py_object).value
            line = addr2line(co, lasti[i] * bytes_per_unit)
            ours.append((co.co_filename, line if line >= 0 else 0))
        ref_totals = counts.get((tuple((f.filename, f.lineno) for f in tb),
                                 sys.getsizeof(obj)), {None})
        ref_total = next(iter(ref_totals)) if len(ref_totals) == 1 \
            else ref_totals
        checked += 1
        if ours != ref or (ref_total is not None and total.value != ref_total):
            mismatches.append({"size": len(obj), "ours": ours[:6],
                               "ref": ref[:6], "ours_total": total.value,
                               "ref_total": repr(ref_total)})
    print(json.dumps({"version": sys.version.split()[0], "frames": FRAMES,
                      "checked": checked,
                      "objects": len(KEEP), "missing": missing,
                      "freed": freed, "events": drained,
                      "tstate_way": lib.rec_tstate_way().decode(),
                      "tstate_wrong": lib.rec_tstate_wrong(),
                      "dropped": lib.rec_dropped(),
                      "mismatches": mismatches[:5],
                      "nmismatches": len(mismatches)}))


if __name__ == "__main__":
    main(sys.argv[1])
