# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""numpy arrays: their data buffers are reported by numpy through
PyTraceMalloc_Track in domain 389047. Protocol: "ready PID", then each
command on stdin: "alloc" (make the arrays, print "sizes A B"), "free"
(drop A, print "freed"), "exit"."""

import os
import sys

import numpy

ARRAYS = {}


def make_a():
    return numpy.ones(1000000)                        # LINE_A


def make_b():
    return numpy.zeros((300, 700), dtype=numpy.int32)  # LINE_B


def main():
    os.write(1, b"ready %d\n" % os.getpid())
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "alloc":
            ARRAYS["a"] = make_a()
            ARRAYS["b"] = make_b()
            os.write(1, b"sizes %d %d\n" % (ARRAYS["a"].nbytes, ARRAYS["b"].nbytes))
        elif cmd == "free":
            del ARRAYS["a"]
            os.write(1, b"freed\n")
        elif cmd == "exit":
            return


main()
