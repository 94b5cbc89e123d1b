# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Blocks in time.sleep() (main thread) and in a lock wait with a timeout
(second thread) while a tracer attaches; reports how long each really took.

    -> "ready PID"   -> "sleeping"   -> "waited S"   -> "slept S"
    <- "ping"        -> "pong"       (stdin still works after the attach)
"""

import os
import sys
import threading
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0


def emit(msg):
    os.write(1, (msg + "\n").encode())


def lock_waiter(lock):
    t0 = time.monotonic()
    got = lock.acquire(timeout=SECONDS)
    emit("waited %.3f %s" % (time.monotonic() - t0, got))


def main():
    emit("ready %d" % os.getpid())
    lock = threading.Lock()
    lock.acquire()
    t = threading.Thread(target=lock_waiter, args=(lock,))
    t.start()
    emit("sleeping")
    t0 = time.monotonic()
    time.sleep(SECONDS)
    slept = time.monotonic() - t0
    t.join()
    emit("slept %.3f" % slept)
    line = sys.stdin.readline()
    emit("pong" if line.strip() == "ping" else "bad %r" % line)


if __name__ == "__main__":
    main()
