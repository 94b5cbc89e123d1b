# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Functions that live for one call: each made from its own source (file
name dyn-I.py), called once to allocate a block of 1000 + I bytes that is
kept, then dropped with its code object, which may be freed and its address
reused by the next one before a tracer has read it. argv[1]: how many.

    -> "ready PID"    <- "go"    -> "built"    <- "end"
"""

import os
import sys

KEEP = []


def expect(word):
    line = sys.stdin.readline()
    if line != word + "\n":
        sys.exit("expected %r, got %r" % (word, line))


def main():
    n = int(sys.argv[1])
    print("ready %d" % os.getpid(), flush=True)
    expect("go")
    for i in range(n):
        ns = {}
        exec(compile("def f():\n    return bytearray(%d)\n" % (1000 + i),
                     "dyn-%d.py" % i, "exec"), ns)
        KEEP.append(ns["f"]())
        ns.clear()      # no cycle left (f's globals): f and its code go now
    print("built", flush=True)
    expect("end")


if __name__ == "__main__":
    main()
