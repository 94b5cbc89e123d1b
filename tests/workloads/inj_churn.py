# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Self-checking allocation churn for tests/test_inject_mode.py: several
threads build dicts, lists, strings, bytearrays grown in place (realloc),
zero-filled bytes (calloc: checked to be zero) and raw-domain blocks through
ctypes without the GIL (filled, read back, freed), round after round, and
check every round against the first rounds. The checksum printed at the end
covers the reference rounds; "mismatches" counts later rounds that differed.
Python 3.6+.

    inj_churn.py [--rounds N] [--gt] [--tracemalloc N --dump PATH]

    -> "ready PID"   <- "go"
    -> "warm"        every worker has done its PERIOD reference rounds
    without --rounds: the workers run until the test sends "stop"
                     (the main thread waits for it in os.read on stdin)
    with --rounds N: each worker does N rounds (N >= PERIOD), then stops
    -> "checksum HEX rounds R mismatches M raw_errors E zero_errors Z"
    without --gt: exit 0
    with --gt:       <- "go2"   gt_single.work()   [tracemalloc dump]
                     -> "done"  <- "exit"

With --tracemalloc N, tracemalloc.start(N) runs at start-up and its traces
are cleared just before gt_single.work(), as tests/workloads/wlproto.py does.
"""

import ctypes
import gc
import hashlib
import os
import sys
import threading
import tracemalloc

import gt_single
import wlproto
from rawmem import RAW_FREE, RAW_MALLOC, RAW_REALLOC

NWORKERS = 3
PERIOD = 16



def build(seed):
    table = {}
    for i in range(2000):
        key = "k%d-%d" % (seed, i)
        table[key] = [i * seed, str(i * seed + 7), "v" * (i % 61)]
    grown = bytearray()
    for i in range(600):
        grown += ("%d;" % (i * seed)).encode()     # realloc in place or moved
    lst = []
    for i in range(3000):
        lst.append((i, seed))                       # list grows (realloc)
    return table, grown, lst


def zeros(seed):
    """bytes(n) comes from calloc: every byte must be zero."""
    bad = 0
    for i in range(40):
        b = bytes(100 + (seed * 37 + i * 101) % 3000)
        if b.count(0) != len(b):
            bad += 1
    return bad


def raw(seed):
    """Raw blocks filled, grown with realloc, read back and freed."""
    bad = 0
    live = []
    for i in range(60):
        size = 16 + (seed * 13 + i * 29) % 700
        p = RAW_MALLOC(size)
        if not p:
            raise MemoryError
        val = (seed + i) % 251
        ctypes.memset(p, val, size)
        if i % 4 == 0:
            q = RAW_REALLOC(p, size * 2)
            if not q:
                raise MemoryError
            p = q
        live.append((p, size, val))
        if i % 3 == 0:
            q, qsize, qval = live.pop(0)
            if ctypes.string_at(q, qsize) != bytes([qval]) * qsize:
                bad += 1
            RAW_FREE(q)
    for q, qsize, qval in live:
        if ctypes.string_at(q, qsize) != bytes([qval]) * qsize:
            bad += 1
        RAW_FREE(q)
    return bad


def one_round(seed):
    table, grown, lst = build(seed)
    h = hashlib.sha256()
    for key in sorted(table):
        v = table[key]
        h.update(key.encode())
        h.update(repr(v[0]).encode())
        h.update(v[1].encode())
        h.update(v[2].encode())
    h.update(bytes(grown))
    h.update(repr(lst[-1]).encode())
    h.update(repr(len(lst)).encode())
    return h.hexdigest(), raw(seed), zeros(seed)


class Worker(threading.Thread):
    def __init__(self, wid, rounds, stop, warm):
        threading.Thread.__init__(self, name="churn%d" % wid)
        self.wid = wid
        self.rounds = rounds
        self.stop = stop
        self.warm = warm
        self.ref = []
        self.done = 0
        self.mismatches = 0
        self.raw_errors = 0
        self.zero_errors = 0
        self.error = None

    def run(self):
        try:
            r = 0
            while True:
                if self.rounds is not None and r >= self.rounds:
                    break
                if self.rounds is None and r >= PERIOD and self.stop.is_set():
                    break
                d, raw_bad, zero_bad = one_round(self.wid * 1000 + r % PERIOD)
                self.raw_errors += raw_bad
                self.zero_errors += zero_bad
                if r < PERIOD:
                    self.ref.append(d)
                    if r == PERIOD - 1:
                        self.warm.release()
                elif d != self.ref[r % PERIOD]:
                    self.mismatches += 1
                r += 1
                self.done = r
        except BaseException as e:   # reported by the main thread
            self.error = repr(e)
            self.warm.release()


def read_word():
    data = b""
    while not data.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            sys.exit("inj_churn: stdin closed")
        data += c
    return data.decode().strip()


def expect(word):
    got = read_word()
    if got != word:
        sys.exit("inj_churn: expected %r, got %r" % (word, got))


def main():
    opts = wlproto.Options(sys.argv[1:])
    rounds = None
    gt = False
    it = iter(opts.extra)
    for a in it:
        if a == "--rounds":
            rounds = int(next(it))
            if rounds < PERIOD:
                sys.exit("inj_churn: --rounds must be >= %d" % PERIOD)
        elif a == "--gt":
            gt = True
        else:
            sys.exit("inj_churn: unknown argument %r" % a)
    gc.disable()
    if opts.trace:
        tracemalloc.start(opts.trace)
    wlproto.emit("ready %d" % os.getpid())
    expect("go")
    stop = threading.Event()
    warm = threading.Semaphore(0)
    workers = [Worker(w, rounds, stop, warm) for w in range(NWORKERS)]
    for w in workers:
        w.start()
    for w in workers:
        warm.acquire()
    wlproto.emit("warm")
    if rounds is None:
        expect("stop")
        stop.set()
    for w in workers:
        w.join()
    h = hashlib.sha256()
    for w in workers:
        if w.error:
            wlproto.emit("worker %d failed: %s" % (w.wid, w.error))
            sys.exit(3)
        for d in w.ref:
            h.update(d.encode())
    wlproto.emit("checksum %s rounds %d mismatches %d raw_errors %d "
                 "zero_errors %d" % (
                     h.hexdigest(), sum(w.done for w in workers),
                     sum(w.mismatches for w in workers),
                     sum(w.raw_errors for w in workers),
                     sum(w.zero_errors for w in workers)))
    if not gt:
        return
    del workers
    gc.collect()
    expect("go2")
    if opts.trace:
        tracemalloc.clear_traces()
    gt_single.work()
    wlproto.finish(opts)


if __name__ == "__main__":
    main()
