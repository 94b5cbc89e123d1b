#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a forked child of a traced process pays (`make bench`): the speed
of an allocation loop run by a child that the target forks after "go",
its parent untraced, traced with --no-follow-forks, and traced with
children followed (the default), each exact and sampled (--sample 64 KiB),
on Debian's /usr/bin/python3.11 and pyenv 3.11.7, in one run.

    /usr/bin/python3 tools/bench_fork.py [--runs 5] [--iterations N]
        [--python PATH ...] [--pytm ./pytm-bpf]

Runs of the three modes are interleaved (median of --runs each). The
child times only its loop (time.perf_counter) and prints it; its parent
relays it; the figures are per loop iteration (about 8 allocator events). Target (issue): with following off, the child within 5% of an
untraced child's speed: the child puts its allocator tables back at its
first call. Followed, the child pays for being traced: through its
parent's page's children's sites (6-byte NOPs, never rewritten) until its
own attach, then through its own page like any traced process.

The same file is the target (--child); keep it Python 3.6+ compatible.
"""

import os
import sys


def child_loop(n):
    """The allocation-heavy loop of tools/bench.py's workload, shorter."""
    import time
    keep = {}
    t0 = time.perf_counter()
    for i in range(n):
        item = [str(i), "x" * (i % 50), bytes(i % 32), (i, i * 2)]
        keep[i % 1000] = item
    return time.perf_counter() - t0


def child_main(n):
    print("ready %d" % os.getpid(), flush=True)
    if sys.stdin.readline() != "go\n":
        sys.exit("expected go")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, ("%.6f" % child_loop(n)).encode())
        os._exit(0)
    os.close(w)
    took = b""
    while True:
        b = os.read(r, 64)
        if not b:
            break
        took += b
    _, status = os.waitpid(pid, 0)
    print("child %s %d" % (took.decode(), status), flush=True)
    sys.stdin.readline()


if __name__ == "__main__" and "--child" in sys.argv:
    child_main(int(sys.argv[sys.argv.index("--child") + 1]))
    sys.exit(0)

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import (Failed, Lines, end, pyenv_python, python_version,  # noqa: E402
                      start_tracer, stop_tracer, target_env)

MODES = ["untraced", "no-follow", "no-follow sampled", "followed", "followed sampled"]
SAMPLE = 65536


def one(python, mode, n, pytm):
    tgt = subprocess.Popen([python, os.path.abspath(__file__), "--child", str(n)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           env=target_env())
    tracer = None
    try:
        out = Lines(tgt.stdout)
        pid = int(out.wait_for("ready", 60).split()[1])
        if mode != "untraced":
            cmd = [pytm, "-p", str(pid)] + (
                ["--no-follow-forks"] if mode.startswith("no-follow") else []) + (
                ["--sample", str(SAMPLE)] if mode.endswith("sampled") else [])
            tracer, tout, terr, _ = start_tracer(cmd, 120)
        tgt.stdin.write(b"go\n")
        tgt.stdin.flush()
        line = out.wait_for("child ", 600).split()
        if line[2] != "0":
            raise Failed("%s child exited with status %s" % (mode, line[2]))
        if tracer:
            stop_tracer(tracer, tout, terr)
            tracer = None
        tgt.stdin.write(b"end\n")
        tgt.stdin.flush()
        tgt.wait(timeout=60)
        return float(line[1])
    finally:
        end(tracer)
        end(tgt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=2000000)
    ap.add_argument("--python", action="append")
    ap.add_argument("--pytm", default=os.environ.get("PYTM_BPF") or
                    os.path.join(os.path.dirname(HERE), "pytm-bpf"))
    args = ap.parse_args()
    pythons = args.python or ["/usr/bin/python3.11", pyenv_python("3.11.7")]
    failed = False
    print("== a forked child's allocation loop (%d iterations; followed exact: a tenth), "
          "median of %d runs"
          % (args.iterations, args.runs))
    for python in pythons:
        if not os.access(python, os.X_OK):
            print("%s: missing" % python)
            failed = True
            continue
        times = dict((m, []) for m in MODES)
        try:
            for _ in range(args.runs):
                for m in MODES:
                    # Followed, every event is traced: a tenth of the loop, per iteration.
                    n = args.iterations // (10 if m == "followed" else 1)
                    times[m].append(one(python, m, n, args.pytm) / n * 1e9)
        except Failed as e:
            print("%s: FAILED: %s" % (python, e))
            failed = True
            continue
        med = dict((m, statistics.median(v)) for m, v in times.items())
        print("%s (CPython %s):" % (python, python_version(python)))
        for m in MODES:
            print("  %-17s %8.0f ns per iteration (%s)  %.2fx untraced" % (
                m, med[m], " ".join("%.0f" % t for t in times[m]), med[m] / med["untraced"]))
        for m in ("no-follow", "no-follow sampled"):
            ratio = med[m] / med["untraced"]
            print("  target: %s within 5%% of untraced: %+.1f%% -> %s" % (
                m, (ratio - 1) * 100, "met" if ratio <= 1.05 else "NOT met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
