# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Allocates for a while after "go", then ends on its own (argv[1]:
"return" = normal interpreter exit, "_exit" = os._exit(0), "wait" = keeps
allocating until killed).

    -> "ready PID"   <- "go"   -> "working"   ... exit
"""

import os
import sys
import time

KEEP = []


def allocate(i):
    KEEP.append(["entry-%d" % i, bytearray(i % 500 + 1), {"i": i}])


def main():
    how = sys.argv[1] if len(sys.argv) > 1 else "return"
    os.write(1, ("ready %d\n" % os.getpid()).encode())
    if os.read(0, 3) != b"go\n":
        sys.exit("expected go")
    deadline = time.monotonic() + (1.0 if how != "wait" else 60.0)
    i = 0
    os.write(1, b"working\n")
    while time.monotonic() < deadline:
        allocate(i)
        i += 1
        if i % 5000 == 0:
            del KEEP[: len(KEEP) // 2]
    if how == "_exit":
        os._exit(0)


if __name__ == "__main__":
    main()
