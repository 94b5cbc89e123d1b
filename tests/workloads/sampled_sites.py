# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Sampling accuracy workload: sites of known live bytes, built and dropped
on command, deterministic per line (run with PYTHONHASHSEED=0).

Sites (each ~5% of the heap at SCALE 1): many tiny objects, small ones,
pymalloc's large blocks (nested raw calls), 10 kB, 100 kB and 1 MiB
blocks, a site that frees 90% of what it allocates, bytearrays grown by
realloc, lists (item arrays), and threads allocating in the raw domain
with the GIL released (PyMem_RawMalloc called through ctypes).
Objects avoid free-listed types where it matters.

    stdin "build" -> stdout "built"      (the sites are live)
    stdin "drop"  -> stdout "dropped"    (everything freed)
    stdin "quit"
    --reference R: tracemalloc.start(), one build, then print per line of
    this file a JSON {lineno: [bytes, variance, step]} at rate R and exit:
    the variance of the estimator is sum(S^2 (1 - p) / p), p = 1 - exp(-S/R);
    the step is the largest weight S / p of a block with p < 0.99, the
    size of the estimator's jumps where it is far from normal.
"""

import gc
import json
import math
import os
import sys
import threading
import tracemalloc

from rawmem import RAW_FREE, RAW_MALLOC

SCALE = float(os.environ.get("SCALE", "1"))
LIVE = {}


def n(count):
    return max(1, int(count * SCALE))


def raw_in_thread(out):
    for _ in range(n(250)):
        out.append(RAW_MALLOC(65536))           # a CDLL call drops the GIL


def build():
    LIVE["tiny"] = [bytes(16) for _ in range(n(1200000))]
    LIVE["small"] = [bytes(200) for _ in range(n(250000))]
    LIVE["pymalloc_large"] = [bytes(1000) for _ in range(n(60000))]
    LIVE["10k"] = [bytes(10000) for _ in range(n(6000))]
    LIVE["100k"] = [bytes(100000) for _ in range(n(600))]
    LIVE["1m"] = [bytes(1 << 20) for _ in range(n(60))]
    churn = [bytes(1500) for _ in range(n(400000))]
    LIVE["kept_tenth"] = churn[::10]
    del churn
    grown = [bytearray(100) for _ in range(n(300))]
    for _ in range(200):
        for b in grown:
            b += b"g" * 1000
    LIVE["grown"] = grown
    LIVE["lists"] = [list(range(100)) for _ in range(n(70000))]
    raw = [[] for _ in range(4)]
    threads = [threading.Thread(target=raw_in_thread, args=(out,))
               for out in raw]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    LIVE["raw"] = raw


def drop():
    for out in LIVE.get("raw", ()):
        for ptr in out:
            RAW_FREE(ptr)
    LIVE.clear()


def reference(rate):
    tracemalloc.start()
    build()
    snap = tracemalloc.take_snapshot()
    here = os.path.abspath(__file__)
    names = {}
    sites = {}
    total = 0
    # The raw (domain, size, frames[, total_nframe]) tuples: millions of
    # Trace objects would take longer than the run.
    for raw in snap.traces._traces:
        s = raw[1]
        total += s
        filename, lineno = raw[2][0]
        if filename not in names:
            names[filename] = os.path.abspath(filename) == here
        if not names[filename]:
            continue
        p = -math.expm1(-s / rate) if s else 1.0
        site = sites.setdefault(lineno, [0, 0.0, 0.0])
        site[0] += s
        site[1] += s * s * (1 - p) / p
        if p < 0.99 and s / p > site[2]:
            site[2] = s / p
    print(json.dumps({"total": total, "sites": sites}))


def main():
    gc.disable()
    if len(sys.argv) > 2 and sys.argv[1] == "--reference":
        reference(float(sys.argv[2]))
        return
    print("ready %d" % os.getpid(), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "build":
            build()
            print("built", flush=True)
        elif cmd == "drop":
            drop()
            print("dropped", flush=True)
        elif cmd == "quit":
            return


main()
