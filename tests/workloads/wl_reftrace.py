# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The runtime's reference tracer (3.13+) seen from inside, for
tests/test_reftracer.py. Commands on stdin, one per line:

  state   -> "tracer 0xADDR WHERE": PyRefTracer_GetTracer(), and the
             mapping that holds it ("none", "pytm" for a pytm-bpf page,
             else the file's base name)
  fork    -> a child that allocates, then reports its own tracer as
             "child 0xADDR WHERE" and exits
  work    -> free-list reuse (as gt_freelist.py), then "worked"
  dump P  -> tracemalloc's snapshot to P (filtered by the test), "dumped"
  exit
Options: --tracemalloc (tracemalloc.start(1) before "ready").
"""

import ctypes
import gc
import os
import sys
import tracemalloc

KEEP = []


def tracer():
    get = ctypes.pythonapi.PyRefTracer_GetTracer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.c_void_p]
    addr = get(None) or 0
    where = "none"
    if addr:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= addr < hi:
                    path = " ".join(fields[5:]) if len(fields) > 5 else ""
                    where = "pytm" if "memfd:pytm-bpf" in path else \
                        os.path.basename(path) or "anonymous"
                    break
    return "0x%x %s" % (addr, where)


def make(n):
    return [(i % 50, 1, 2) for i in range(n)]     # MAKE


def reuse(n):
    return [(i % 50, 3, 4) for i in range(n)]     # REUSE


def work():
    first = make(1500)
    del first
    KEEP.append(reuse(1500))


def emit(msg):
    os.write(1, (msg + "\n").encode())


def main():
    gc.disable()
    if "--tracemalloc" in sys.argv:
        tracemalloc.start(1)
    emit("ready %d" % os.getpid())
    buf = b""
    while True:
        c = os.read(0, 1)
        if not c:
            return
        if c != b"\n":
            buf += c
            continue
        cmd, buf = buf.decode().split(), b""
        if cmd[0] == "state":
            emit("tracer " + tracer())
        elif cmd[0] == "fork":
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                junk = [bytearray(100) for _ in range(100)]
                os.write(w, ("child " + tracer() + "\n").encode())
                del junk
                os._exit(0)
            os.close(w)
            line = b""
            while not line.endswith(b"\n"):
                line += os.read(r, 4096)
            os.close(r)
            os.waitpid(pid, 0)
            emit(line.decode().strip())
        elif cmd[0] == "work":
            if tracemalloc.is_tracing():
                tracemalloc.clear_traces()
            work()
            emit("worked")
        elif cmd[0] == "dump":
            tracemalloc.take_snapshot().dump(cmd[1])
            emit("dumped")
        elif cmd[0] == "exit":
            return


if __name__ == "__main__":
    main()
