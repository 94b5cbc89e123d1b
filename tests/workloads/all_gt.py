# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground-truth workload for the multi-process tests (tests/test_all_procs.py).

Deterministic (PYTHONHASHSEED=0), one thread, Python 3.6+. After "go" it
allocates a few large, distinctive groups of blocks, each from its own line of
this file, and keeps them alive until "exit": a handful of lines hold
(nearly) all of the bytes, so a report's [ Top N ] block covers >= 99% of
what this file allocated, and the per-line figures can be compared with
tracemalloc's statistics('lineno') of a reference run.

Protocol: see wlproto.py, plus

    --scale K       multiply every group by K (default 1)
    --exit-mode M   after "exit": "return" (normal interpreter exit, the
                    default) or "_exit" (os._exit(0): no finalization, so the
                    live blocks at the exit are those at "done")
    --ref-stats SNAPSHOT [FILE]   no workload: load a tracemalloc snapshot
                    written by --dump, print statistics('lineno') of FILE
                    (default: this file) as JSON
                    [[filename, lineno, size, count], ...] and exit
"""

import json
import os
import sys

import wlproto

KEEP = []


def big_buffers(k):
    # ~6 MiB in 150 * k blocks of distinct sizes (plus their objects).
    return [bytearray(40000 + 16 * i) for i in range(150 * k)]


def many_strings(k):
    # 12000 * k str objects of ~250 bytes.
    return ["%07d" % i * 35 for i in range(12000 * k)]


def medium_bytes(k):
    # 1200 * k bytes objects of 3000 bytes.
    return [bytes(3000 + (i % 7)) for i in range(1200 * k)]


def list_table(k):
    # 2500 * k lists of 60 items (and their int keys).
    return dict((i + 100000, [i] * 60) for i in range(2500 * k))


def work(k):
    KEEP.append(big_buffers(k))
    KEEP.append(many_strings(k))
    KEEP.append(medium_bytes(k))
    KEEP.append(list_table(k))


def ref_stats(path, source=None):
    import tracemalloc
    snap = tracemalloc.Snapshot.load(path)
    source = os.path.abspath(source or __file__)
    snap = snap.filter_traces([tracemalloc.Filter(True, source)])
    out = [[s.traceback[0].filename, s.traceback[0].lineno, s.size, s.count]
           for s in snap.statistics("lineno")]
    sys.stdout.write(json.dumps(out) + "\n")


def main():
    argv = sys.argv[1:]
    if argv[:1] == ["--ref-stats"]:
        ref_stats(argv[1], argv[2] if len(argv) > 2 else None)
        return
    scale = 1
    exit_mode = "return"
    rest = []
    it = iter(argv)
    for a in it:
        if a == "--scale":
            scale = int(next(it))
        elif a == "--exit-mode":
            exit_mode = next(it)
        else:
            rest.append(a)
    opts = wlproto.Options(rest)
    wlproto.begin(opts)
    work(scale)
    wlproto.finish(opts)
    if exit_mode == "_exit":
        os._exit(0)


if __name__ == "__main__":
    main()
