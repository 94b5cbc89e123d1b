# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Replaces itself with another Python (os.execv) while traced; Python 3.8+.
argv[1]: the interpreter to exec into; the second program gets "second".

    -> "ready PID"    <- "go"    -> "built1"   (FIRST_LINE: 2000 blocks, in a
                                   function made for it: a code object the
                                   tracer sees for the first time)
    ... at once os.execv(argv[1], [argv[1], this file, "second"]): the
    tracer has no time to catch up before the process's memory is gone
    -> "ready2 PID"   <- "go2"   -> "built2"   (SECOND_LINE: 3000 blocks)
    <- "end"
"""

import os
import sys

KEEP = []


def expect(word):
    line = sys.stdin.readline()
    if line != word + "\n":
        sys.exit("expected %r, got %r" % (word, line))


def main():
    if sys.argv[1:] == ["second"]:
        print("ready2 %d" % os.getpid(), flush=True)
        expect("go2")
        for i in range(3000):
            KEEP.append("second-%d" % i * 20)       # SECOND_LINE
        print("built2", flush=True)
        expect("end")
        return
    print("ready %d" % os.getpid(), flush=True)
    expect("go")
    build()
    print("built1", flush=True)
    os.execv(sys.argv[1], [sys.argv[1], os.path.abspath(__file__), "second"])


def build():
    for i in range(2000):
        KEEP.append(b"first-%d" % i * 30)           # FIRST_LINE


if __name__ == "__main__":
    main()
