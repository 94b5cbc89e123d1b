# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Steady allocation workload for tests/test_all_procs.py and
tools/bench_procs.py. Python 3.6+, one thread.

After "go", for --seconds S: every 10 ms a batch of iterations (--rate
iterations per second in all), each replacing one slot of a ring of --ring R
slots with a new bytes object and a new str (two allocations, two frees once
the ring is full). Live memory stays flat; the event rate stays steady. At
the end the ring holds exactly R bytes objects from BYTES_LINE and R str
objects from STR_LINE (when at least R iterations ran).

    -> "ready PID"   <- "go"   -> "stats ITERATIONS SECONDS"   -> "done"
    <- "exit"
"""

import sys
import time

import wlproto

RING = []
NAMES = []


def step(i, ring):
    RING[i % ring] = bytes(200)                     # BYTES_LINE
    NAMES[i % ring] = "slot-%d-%s" % (i, "n" * 40)  # STR_LINE


def run(seconds, rate, ring):
    RING[:] = [None] * ring
    NAMES[:] = [None] * ring
    batch = max(1, int(rate / 100))
    i = 0
    t0 = time.monotonic()
    next_batch = t0
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        if now < next_batch:
            time.sleep(next_batch - now)
        next_batch += 0.01
        for _ in range(batch):
            step(i, ring)
            i += 1
    return i, time.monotonic() - t0


def main():
    seconds, rate, ring = 5.0, 20000, 2000
    rest = []
    it = iter(sys.argv[1:])
    for a in it:
        if a == "--seconds":
            seconds = float(next(it))
        elif a == "--rate":
            rate = int(next(it))
        elif a == "--ring":
            ring = int(next(it))
        else:
            rest.append(a)
    opts = wlproto.Options(rest)
    wlproto.begin(opts)
    n, elapsed = run(seconds, rate, ring)
    wlproto.emit("stats %d %.3f" % (n, elapsed))
    wlproto.finish(opts)


if __name__ == "__main__":
    main()
