# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Grows to 100 MB, frees to 10 MB, grows to 50 MB (Python 3.8+). With
--dump PATH, tracemalloc starts at "go" and its snapshot at the peak (the
moment the first phase is built) is dumped to PATH: the ground truth of
pytm-bpf --peak.

    -> "ready PID"   <- "go"   -> "built"   <- "end"
"""

import os
import sys
import tracemalloc

BLOCK = 1000            # bytes of payload per object
A, B = [], []


def main():
    dump = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--dump" else None
    print("ready %d" % os.getpid(), flush=True)
    if sys.stdin.readline() != "go\n":
        sys.exit("expected go")
    if dump:
        tracemalloc.start()
    for i in range(100000):
        A.append(b"%07d" % i + bytes(BLOCK))            # PEAK_LINE
    if dump:
        tracemalloc.take_snapshot().dump(dump)          # at the peak
    del A[10000:]                                       # down to 10 MB
    for i in range(40000):
        B.append(b"%07d" % i + bytes(BLOCK))            # AFTER_LINE
    print("built", flush=True)
    if sys.stdin.readline() != "end\n":
        sys.exit("expected end")


if __name__ == "__main__":
    main()
