# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A prefork master, gunicorn-like: it builds what its workers inherit,
then forks four workers that each allocate something of their own at
once, and replaces one that ends. argv[1]: "fork" (os.fork workers) or
"mp" (multiprocessing, fork start method). With --dump DIR, tracemalloc
starts at "go" (when a tracer would be attached) and each worker dumps
its snapshot at exit to DIR/worker-K.pytm: its own ground truth,
inherited traces included, as tracemalloc keeps them across fork.

    -> "ready PID"   <- "go"   (the master builds what workers inherit)
    -> "worker K PID"      for K in 0..3, and 4 (the replacement of 0)
    -> "exited K STATUS"   each worker's wait status
    -> "done"
With --hold (after the mode), workers 0-3 wait once their work is done:
    -> "held" (all four done)   <- "release"   then as above.
With --hooks, the master once its base is built and each worker once its
work is done say how many of their allocator table slots (3 domains x 4)
lead into a pytm-bpf page:
    -> "hooks master N", "hooks K N"
"""

import atexit
import multiprocessing
import os
import sys
import threading
import tracemalloc

BASE = []
KEEP = []
HOOKS = "--hooks" in sys.argv


def say(line):
    """One write per line: the master and its workers share the pipe."""
    os.write(1, (line + "\n").encode())


def hooks():
    """Table slots (PyMem_GetAllocator, every domain) into a pytm-bpf page."""
    import ctypes

    class Allocator(ctypes.Structure):
        _fields_ = [(n, ctypes.c_void_p) for n in
                    ("ctx", "malloc", "calloc", "realloc", "free")]
    pages = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("/memfd:pytm-bpf (deleted)"):
                lo, hi = line.split()[0].split("-")
                pages.append((int(lo, 16), int(hi, 16)))
    get = ctypes.pythonapi.PyMem_GetAllocator
    get.restype = None
    n = 0
    for domain in range(3):
        a = Allocator()
        get(domain, ctypes.byref(a))
        for fn in (a.malloc, a.calloc, a.realloc, a.free):
            n += any(lo <= (fn or 0) < hi for lo, hi in pages)
    return n


def base():
    for i in range(3000):
        BASE.append("b%05d" % i + "y" * 700)        # BASE_LINE


def work0():
    for i in range(3000):
        KEEP.append(bytes(1500) + b"%d" % i)        # W0_LINE


def work1():
    d = {}
    for i in range(4000):
        d[i] = "w1-%d" % i + "z" * 300              # W1_LINE
    KEEP.append(d)


def work2():
    # Frees most of what it inherited, then allocates its own.
    del BASE[:2500]
    for i in range(2000):
        KEEP.append([i] * 200)                      # W2_LINE


def work3():
    def run():
        for i in range(2000):
            KEEP.append(bytearray(900 + i % 7))     # W3_LINE
    t = threading.Thread(target=run)
    t.start()
    t.join()


def work4():
    for i in range(1000):
        KEEP.append("w4-%d" % i * 40)               # W4_LINE


WORK = [work0, work1, work2, work3, work4]


# "ready": write end the workers report on; "release": read end they wait
# on, until the master closes "release_w"
HOLD = {}


def worker(k, dump, at_exit):
    path = os.path.join(dump, "worker-%d.pytm" % k) if dump else None
    if path and at_exit:
        # What it holds when finalization begins, as pytm-bpf reports it.
        atexit.register(lambda: tracemalloc.take_snapshot().dump(path))
    if HOLD:
        os.close(HOLD["release_w"])     # only the master holds it open
    WORK[k]()
    if HOOKS:
        say("hooks %d %d" % (k, hooks()))
    if HOLD:
        os.write(HOLD["ready"], b"x")
        os.read(HOLD["release"], 1)      # EOF once the master lets go
    if path and not at_exit:
        # multiprocessing ends its children with os._exit: no finalization,
        # pytm-bpf reports them as they were at death, i.e. now.
        tracemalloc.take_snapshot().dump(path)


def fork_worker(k, dump):
    pid = os.fork()
    if pid == 0:
        worker(k, dump, True)
        sys.stdout.flush()
        # As a worker ends: finalization runs (atexit, then teardown).
        sys.exit(0)
    return pid


def mp_worker(k, dump):
    p = multiprocessing.get_context("fork").Process(target=worker, args=(k, dump, False))
    p.start()
    return p


def main():
    how = sys.argv[1]
    hold = "--hold" in sys.argv
    dump = sys.argv[sys.argv.index("--dump") + 1] if "--dump" in sys.argv else None
    if hold:
        ready_r, HOLD["ready"] = os.pipe()
        HOLD["release"], HOLD["release_w"] = os.pipe()
    say("ready %d" % os.getpid())
    if sys.stdin.readline() != "go\n":
        sys.exit("expected go")
    if dump:
        tracemalloc.start()
    base()
    if HOOKS:
        say("hooks master %d" % hooks())
    start = fork_worker if how == "fork" else mp_worker
    workers = {}
    for k in range(4):
        w = start(k, dump)
        workers[k] = w
        say("worker %d %d" % (k, w if how == "fork" else w.pid))
    if hold:
        got = b""
        while len(got) < 4:
            got += os.read(ready_r, 4 - len(got))
        say("held")
        if sys.stdin.readline() != "release\n":
            sys.exit("expected release")
        os.close(HOLD["release_w"])      # the replacement will not wait
    # Worker 0 ends first; the master replaces it, as a prefork server does.
    order = [0, 1, 2, 3]
    for k in order:
        w = workers[k]
        if how == "fork":
            _, status = os.waitpid(w, 0)
        else:
            w.join()
            status = w.exitcode
        say("exited %d %d" % (k, status))
        if k == 0:
            workers[4] = start(4, dump)
            w4 = workers[4]
            say("worker 4 %d" % (w4 if how == "fork" else w4.pid))
            order.append(4)
    say("done")
    sys.stdin.readline()


if __name__ == "__main__":
    main()
