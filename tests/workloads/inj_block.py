# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Blocks in one system call in its only thread while a tracer attaches (and
injects its page), then reports how the call ended and allocates a little.
Used by tests/test_inject_mode.py. Python 3.6+.

    inj_block.py read            os.read(0, ...) on the stdin pipe
    inj_block.py sleep SECONDS   time.sleep(SECONDS)
    inj_block.py lock SECONDS    threading.Lock().acquire(timeout=SECONDS)
                                 on a lock that is already held

    -> "ready PID"
    -> "blocking MODE"           just before the blocking call
    read:  -> "read HEX"         hex of the bytes the read returned
    sleep: -> "slept S"          time.monotonic() around the call
    lock:  -> "waited S RESULT"  duration and acquire()'s return value
    -> "after N"                 N = a checksum of objects built after it
    <- "exit"
"""

import os
import sys
import threading
import time


def emit(msg):
    os.write(1, (msg + "\n").encode())


def build_after():
    """Allocations after the blocking call: lists, strings, dicts, bytes."""
    keep = []
    total = 0
    for i in range(2000):
        item = {"k%d" % i: [i, str(i * 3), bytes(i % 64)]}
        keep.append(item)
        total += len(item["k%d" % i][1]) + len(item["k%d" % i][2])
    return total


def main():
    mode = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    emit("ready %d" % os.getpid())
    if mode == "read":
        emit("blocking read")
        data = os.read(0, 4096)
        emit("read %s" % data.hex())
    elif mode == "sleep":
        emit("blocking sleep")
        t0 = time.monotonic()
        time.sleep(seconds)
        emit("slept %.4f" % (time.monotonic() - t0))
    elif mode == "lock":
        lock = threading.Lock()
        lock.acquire()
        emit("blocking lock")
        t0 = time.monotonic()
        got = lock.acquire(timeout=seconds)
        emit("waited %.4f %s" % (time.monotonic() - t0, got))
    else:
        sys.exit("inj_block: unknown mode %r" % mode)
    emit("after %d" % build_after())
    line = b""
    while not line.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            break
        line += c
    if line.strip() != b"exit":
        sys.exit("inj_block: expected exit, got %r" % line)


if __name__ == "__main__":
    main()
