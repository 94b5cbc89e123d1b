# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# Target of tests/test_python_api.py. Runs on CPython 2.7 and 3.6-3.13 (the
# unsupported ones only need to start), so: no f-strings, no print().
#
#   target -> test:  "ready PID"
#   test -> target:  "alloc"  1000 x bytearray(1000) at the API-ALLOC line,
#                             called from the API-CALL line, kept alive
#                             -> "alloc done"
#                    "free"   drop everything allocated so far -> "free done"
#                    "exit"   (or EOF) exit 0
# The marker comments are how the tests find the line numbers.
import gc
import os
import sys

COUNT = 1000
SIZE = 1000
HELD = []


def emit(msg):
    os.write(1, (msg + "\n").encode("ascii"))


def read_command():
    data = b""
    while not data.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            return None
        data += c
    return data.decode("ascii").strip()


def alloc(count, size):
    out = []
    for _ in range(count):
        out.append(bytearray(size))     # API-ALLOC
    return out


def main():
    gc.disable()
    emit("ready %d" % os.getpid())
    while True:
        cmd = read_command()
        if cmd is None or cmd == "exit":
            return 0
        if cmd == "alloc":
            HELD.append(alloc(COUNT, SIZE))     # API-CALL
        elif cmd == "free":
            del HELD[:]
        else:
            emit("unknown %s" % cmd)
            continue
        emit(cmd + " done")


if __name__ == "__main__":
    sys.exit(main())
