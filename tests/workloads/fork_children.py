# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Forks in every way a Python service does, while traced and after.
Used by tests/test_fork.py. Python 3.8+.

    -> "ready PID"
    <- "go"                      (a tracer is attached)
    the traced round: os.fork() children, a multiprocessing pool (fork
    start method), subprocess.run, forks while another thread allocates;
    then one child ("held") forked now that waits for its own tracer
    -> "child PID STATUS ROUND"  each child's os.waitpid status (0: exit 0)
    -> "round NAME ok" or "round NAME FAIL why"
    -> "held PID"
    -> "done"
    <- "after"                   (the tracer has detached)
    the same os.fork() round again ("after-detach")
    -> "done2"
    <- "child-go"                (a tracer is attached to the held child)
    -> "held-done N"             from the held child: N blocks kept
    <- "exit"
    -> "child PID STATUS held"
"""

import multiprocessing
import os
import subprocess
import sys
import threading

from wlproto import emit, expect

HELD_BLOCKS = 20000


def checksum(n):
    """Allocation-heavy work whose result the parent knows."""
    keep = {}
    total = 0
    for i in range(n):
        item = [str(i), "x" * (i % 50), bytes(i % 32), (i, i * 2)]
        keep[i % 500] = item
        total += len(item[0]) + len(item[1]) + len(item[2])
    return total


def fork_round(name, nchildren=3, n=3000):
    """os.fork() children that allocate, check their result, and exit 0."""
    want = checksum(n)
    pids = []
    for _ in range(nchildren):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if checksum(n) == want else 1)
        pids.append(pid)
    return finish_children(name, pids)


def finish_children(name, pids):
    bad = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        emit("child %d %d %s" % (pid, status, name))
        if status:
            bad.append("%d:%d" % (pid, status))
    if bad:
        emit("round %s FAIL children %s" % (name, " ".join(bad)))
    else:
        emit("round %s ok" % name)


def square_sum(i):
    return sum(len(str(j)) * j for j in range(i * 100))


def pool_round():
    want = [square_sum(i) for i in range(24)]
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(2)
    # Every worker ever started: the pool replaces a dead one silently.
    workers = {w.pid: w for w in pool._pool}
    try:
        got = pool.map_async(square_sum, range(24)).get(timeout=60)
    except multiprocessing.TimeoutError:
        pool.terminate()
        emit("round pool FAIL no result in 60 s (a worker died?)")
        return
    workers.update((w.pid, w) for w in pool._pool)
    workers = list(workers.values())
    pool.close()
    pool.join()
    for w in workers:
        # exitcode: 0, or -signal (SIGSEGV: -11)
        emit("child %d %d pool" % (w.pid, (-w.exitcode) & 0x7f if w.exitcode else 0))
    codes = [w.exitcode for w in workers]
    if got != want:
        emit("round pool FAIL wrong results")
    elif any(codes):
        emit("round pool FAIL worker exit codes %s" % codes)
    else:
        emit("round pool ok")


def subprocess_round():
    code = "import sys; print(sum(len(str(i)) for i in range(5000)))"
    want = str(sum(len(str(i)) for i in range(5000)))
    r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode or r.stdout.decode().strip() != want:
        emit("round subprocess FAIL rc %d out %r err %r"
             % (r.returncode, r.stdout, r.stderr[-300:]))
        return
    # posix_spawn: glibc's clone(CLONE_VM | CLONE_VFORK), the parent's memory
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"],
                         dict(os.environ))
    _, status = os.waitpid(pid, 0)
    emit("child %d %d spawn" % (pid, status))
    if status:
        emit("round subprocess FAIL posix_spawn status %d" % status)
    else:
        emit("round subprocess ok")


def thread_round():
    """Fork while another thread allocates (it may be inside the allocator)."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            checksum(200)

    th = threading.Thread(target=churn)
    th.start()
    try:
        want = checksum(1000)
        pids = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                os._exit(0 if checksum(1000) == want else 1)
            pids.append(pid)
    finally:
        stop.set()
        th.join()
    finish_children("thread", pids)


def held_child():
    """Forked while traced; allocates only once its own tracer is there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)                   # "child-go"
        held = [("%06d" % i) * 4 for i in range(HELD_BLOCKS)]
        emit("held-done %d" % len(held))
        os.read(r, 1)                   # "exit"
        os._exit(0 if len(held) == HELD_BLOCKS else 1)
    os.close(r)
    emit("held %d" % pid)
    return pid, w


def main():
    emit("ready %d" % os.getpid())
    expect("go")
    fork_round("fork")
    pool_round()
    subprocess_round()
    thread_round()
    held, wake = held_child()
    emit("done")
    expect("after")
    fork_round("after-detach")
    emit("done2")
    expect("child-go")
    os.write(wake, b"g")
    expect("exit")
    os.write(wake, b"x")
    _, status = os.waitpid(held, 0)
    emit("child %d %d held" % (held, status))


if __name__ == "__main__":
    main()
