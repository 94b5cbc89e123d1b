# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Builds 4 MB of strings after "go", then ends (argv[1]): "return" =
the interpreter finalizes (and frees them all), "sysexit" = the same
through sys.exit (SystemExit), "_exit" = os._exit(3),
"kill" = SIGKILL to itself. With --dump PATH (and tracemalloc started by
-X tracemalloc), an atexit hook dumps tracemalloc's snapshot first: what
the program held when finalization began.

    -> "ready PID"   <- "go"   -> "built"   <- "end"   ... exit
"""

import atexit
import os
import signal
import sys
import tracemalloc

KEEP = []


def build():
    for i in range(4000):
        KEEP.append("s%05d" % i + "x" * 1000)       # BUILD_LINE


def dump(path):
    tracemalloc.take_snapshot().dump(path)


def main():
    how = sys.argv[1]
    if len(sys.argv) > 3 and sys.argv[2] == "--dump":
        atexit.register(dump, sys.argv[3])
    os.write(1, ("ready %d\n" % os.getpid()).encode())
    if os.read(0, 3) != b"go\n":
        sys.exit("expected go")
    build()
    os.write(1, b"built\n")
    if os.read(0, 4) != b"end\n":
        sys.exit("expected end")
    if how == "sysexit":
        sys.exit(0)     # SystemExit: Py_Exit (3.13's skips Py_FinalizeEx)
    if how == "_exit":
        os._exit(3)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
