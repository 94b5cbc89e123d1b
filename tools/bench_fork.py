#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a forked child of a traced process pays (`make bench`): the speed
of an allocation loop run by a child that the target forks after "go",
its parent untraced, traced with --no-follow-forks, and traced with
children followed (the default), each exact and sampled (--sample 64 KiB),
on Debian's /usr/bin/python3.11 and pyenv 3.11.7, in one run.

    /usr/bin/python3 tools/bench_fork.py [--runs 7] [--iterations N]
        [--python PATH ...] [--pytm ./pytm-bpf]

Runs of the five modes are interleaved, each round in another order after
a pause; the minimum of --runs each is shown (and the median). This VM's
neighbours make separate runs differ by tens of percent, so the target is
judged side by side in one target process (--paired): a child forked
before the attach and one forked after it (not followed) run the loop in
turns (--turns each, a quarter of --iterations per turn), A B B A ... The
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


def paired_worker(cmd_r, res_w, n):
    """A child that runs the loop once per byte it reads, and writes each time.
    Both children on one CPU: this VM's two differ in speed from time to time,
    which would otherwise weigh on one child more than on the other."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    while os.read(cmd_r, 1):
        os.write(res_w, ("%.9f\n" % child_loop(n)).encode())
    os._exit(0)


def paired_main(n):
    """Two children of one process: A forked before "go" (before the tracer
    attaches), B after; their loop runs in turns (A B B A ...), so that the
    VM's slow spells weigh on both alike.

        -> "ready PID"  <- "fork-a"  -> "a"  <- "fork-b"  -> "b"
        <- "run K"  -> "times A1 B1 A2 B2 ..."  <- "end"
    """
    print("ready %d" % os.getpid(), flush=True)
    kids = {}
    for name in ("a", "b"):
        if sys.stdin.readline() != "fork-%s\n" % name:
            sys.exit("expected fork-" + name)
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(cmd_w)
            os.close(res_r)
            for _, w, r in kids.values():   # its sibling's: EOF must reach it
                os.close(w)
                r.close()
            paired_worker(cmd_r, res_w, n)
        os.close(cmd_r)
        os.close(res_w)
        kids[name] = (pid, cmd_w, os.fdopen(res_r))
        print(name, flush=True)
    k = int(sys.stdin.readline().split()[1])
    times = {"a": [], "b": []}
    for i in range(k):
        for name in ("a", "b") if i % 2 == 0 else ("b", "a"):
            os.write(kids[name][1], b"x")
            times[name].append(float(kids[name][2].readline()))
    print("times " + " ".join("%.9f %.9f" % ab for ab in zip(times["a"], times["b"])),
          flush=True)
    for pid, cmd_w, res in kids.values():
        os.close(cmd_w)
        os.waitpid(pid, 0)
    sys.stdin.readline()


if __name__ == "__main__" and "--child" in sys.argv:
    child_main(int(sys.argv[sys.argv.index("--child") + 1]))
    sys.exit(0)
if __name__ == "__main__" and "--paired" in sys.argv:
    paired_main(int(sys.argv[sys.argv.index("--paired") + 1]))
    sys.exit(0)

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import (Failed, Lines, end, pyenv_python, python_version,  # noqa: E402
                      start_tracer, stop_tracer, target_env)

MODES = ["untraced", "no-follow", "no-follow sampled", "followed", "followed sampled"]
SAMPLE = 65536


def target(python, how, n):
    """This file as the target (HOW: --child or --paired): (Popen, its lines)."""
    tgt = subprocess.Popen([python, os.path.abspath(__file__), how, str(n)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           env=target_env())
    return tgt, Lines(tgt.stdout)


def trace(pytm, pid, follow, sampled):
    """pytm-bpf on PID, tracing: (Popen, stdout, stderr, line)."""
    return start_tracer([pytm, "-p", str(pid)] + ([] if follow else ["--no-follow-forks"]) +
                        (["--sample", str(SAMPLE)] if sampled else []), 120)


def one(python, mode, n, pytm):
    tgt, out = target(python, "--child", n)
    tracer = None
    try:
        pid = int(out.wait_for("ready", 60).split()[1])
        if mode != "untraced":
            tracer, tout, terr, _ = trace(pytm, pid, not mode.startswith("no-follow"),
                                          mode.endswith("sampled"))
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


def paired(python, sampled, n, turns, pytm, follow=False):
    """Child B (forked while traced, not followed unless FOLLOW) against
    child A (forked before the attach), turn by turn: (sum B / sum A,
    median of B/A)."""
    tgt, out = target(python, "--paired", n)
    tracer = None
    try:
        pid = int(out.wait_for("ready", 60).split()[1])
        tgt.stdin.write(b"fork-a\n")
        tgt.stdin.flush()
        out.wait_for("a", 60)
        tracer, tout, terr, _ = trace(pytm, pid, follow, sampled)
        tgt.stdin.write(b"fork-b\nrun %d\n" % turns)
        tgt.stdin.flush()
        out.wait_for("b", 60)
        v = [float(x) for x in out.wait_for("times ", 1200).split()[1:]]
        stop_tracer(tracer, tout, terr)
        tracer = None
        tgt.stdin.write(b"end\n")
        tgt.stdin.flush()
        tgt.wait(timeout=60)
        a, b = v[0::2], v[1::2]
        return sum(b) / sum(a), statistics.median(y / x for x, y in zip(a, b))
    finally:
        end(tracer)
        end(tgt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--iterations", type=int, default=2000000)
    ap.add_argument("--python", action="append")
    ap.add_argument("--pytm", default=os.environ.get("PYTM_BPF") or
                    os.path.join(os.path.dirname(HERE), "pytm-bpf"))
    args = ap.parse_args()
    pythons = args.python or ["/usr/bin/python3.11", pyenv_python("3.11.7")]
    failed = False
    print("== a forked child's allocation loop (%d iterations; followed exact: a tenth), "
          "%d runs each"
          % (args.iterations, args.runs))
    for python in pythons:
        if not os.access(python, os.X_OK):
            print("%s: missing" % python)
            failed = True
            continue
        times = dict((m, []) for m in MODES)
        try:
            for r in range(args.runs):
                # Each round in another order, after a pause: a tracer that
                # just ended (its uprobes go one RCU grace period at a time)
                # must not weigh on one mode more than on the others.
                for m in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
                    time.sleep(1)
                    # Followed, every event is traced: a tenth of the loop, per iteration.
                    n = args.iterations // (10 if m == "followed" else 1)
                    times[m].append(one(python, m, n, args.pytm) / n * 1e9)
        except Failed as e:
            print("%s: FAILED: %s" % (python, e))
            failed = True
            continue
        med = dict((m, statistics.median(v)) for m, v in times.items())
        best = dict((m, min(v)) for m, v in times.items())
        print("%s (CPython %s):" % (python, python_version(python)))
        for m in MODES:
            print("  %-17s min %6.0f, median %6.0f ns per iteration (%s)  %.2fx untraced (min)"
                  % (m, best[m], med[m], " ".join("%.0f" % t for t in times[m]),
                     best[m] / best["untraced"]))
        # The minimum: this VM's neighbours only ever add time.
        for m in ("no-follow", "no-follow sampled"):
            ratio = best[m] / best["untraced"]
            print("  %s against untraced, separate runs (min): %+.1f%%" % (
                m, (ratio - 1) * 100))
        # Side by side in one process, turn by turn: what the target is judged
        # on (the median of the turns' ratios); a followed sampled child as
        # the control that the way of measuring sees a cost where there is one.
        for sampled, follow in ((False, False), (True, False), (True, True)):
            try:
                total, med_ratio = paired(python, sampled, args.iterations // 4,
                                          args.turns, args.pytm, follow)
            except Failed as e:
                print("  paired: FAILED: %s" % e)
                failed = True
                continue
            what = "%s%s child" % ("followed" if follow else "no-follow",
                                   " sampled" if sampled else "")
            line = "%s against an untraced sibling, %d turns each: median of turns %+.1f%% " \
                   "(%+.1f%% in all)" % (what, args.turns, (med_ratio - 1) * 100,
                                         (total - 1) * 100)
            if follow:
                print("  control: " + line)
            else:
                print("  target: %s within 5%% -> %s" % (
                    line, "met" if med_ratio <= 1.05 else "NOT met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
