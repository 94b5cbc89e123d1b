"""Hostile target: what a buggy or malicious process can put in front of a tracer.

Prints "ready"; on "go" allocates, holding everything, under:
- a code object whose file name holds terminal escape sequences (CSI, an
  OSC title), a newline, a carriage return, C1 controls (raw and as UTF-8)
  and bytes that are not UTF-8: 2000 blocks of 1000 bytes;
- a function whose name is 10,000 characters long: 1000 bytearrays of 500;
- a function whose line table was overwritten with 0xff bytes through
  ctypes before it ran: 1000 blocks of 700 bytes;
- 400 short-lived code objects, each keeping blocks, then freed together
  (their arenas go back to the system: memory the tracer may read late);
then prints "built" and the evil file name as repr(); "quit" ends it.
"""
import ctypes
import gc
import os
import sys

EVIL = os.fsdecode(b"evil\x1b[31m\x1b]0;pwned\x07\nline\r\x9b\xff\xfe\xc2\x9bx.py")
HELD = []


def evil():
    ns = {}
    exec(compile("def hold(n):\n    return [bytes(1000) for _ in range(n)]\n", EVIL, "exec"), ns)
    HELD.append(ns["hold"](2000))


def long_name():
    name = "f" * 10000
    ns = {}
    exec("def %s(n):\n    return [bytearray(500) for _ in range(n)]\n" % name, ns)
    HELD.append(ns[name](1000))


def corrupt(n):
    out = []
    for _ in range(n):
        out.append(bytes(700))  # CORRUPT_LINE
    return out


def corrupt_table():
    code = corrupt.__code__
    table = code.co_linetable if sys.version_info >= (3, 10) else code.co_lnotab
    start = id(table) + sys.getsizeof(table) - len(table) - 1   # ob_sval
    ctypes.memset(start, 0xff, len(table))
    HELD.append(corrupt(1000))


def churn():
    fns = []
    for i in range(400):
        ns = {}
        exec(compile("def c%d(n):\n    return [bytes(300) for _ in range(n)]\n" % i,
                     "<churn-%d>" % i, "exec"), ns)
        fns.append(ns["c%d" % i])
    for fn in fns:
        HELD.append(fn(5))
    del fns, ns, fn
    gc.collect()


def main():
    print("ready", flush=True)
    sys.stdin.readline()
    evil()
    long_name()
    corrupt_table()
    churn()
    print("built", flush=True)
    print("evil %r" % EVIL, flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
