#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""pytm-bpf --recorder SIGKILLed at random moments, --cycles times, against
one multithreaded allocating target: whether the target's output stays
what it computes untraced, and whether its cost per round of allocations
comes back to the untraced one a second after the last kill (the page
finds its ring undrained and disarms itself). No thresholds.

Cost: a twin process (same script, never traced) and the target take turns
(never at once) running a few rounds each, before the first attach and a
second after the last kill; what is printed is the target's round time
over the twin's, after against before, so that what two processes differ
by anyway (and the machine's drift) cancels out.

    /usr/bin/python3 tools/bench_kill.py [--python PATH] [--cycles 200]
                                         [--pytm ./pytm-bpf] [--seed 1]

The same file is the target (run by the chosen interpreter with --child);
keep it Python 3.6+ compatible.
"""

import os
import sys

THREADS = 4
ROUNDS = 5          # per turn when the cost is measured
TURNS = 10


def child(paused):
    import hashlib
    import signal
    import threading
    import time

    # Rounds still to run: SIGUSR1 pauses after the current one, SIGUSR2
    # allows ROUNDS more, SIGHUP runs on.
    budget = [0 if paused else -1]

    def on_signal(signum, frame):
        if signum == signal.SIGUSR1:
            budget[0] = 0
        elif signum == signal.SIGUSR2:
            budget[0] = ROUNDS
        else:
            budget[0] = -1

    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def work(seed, out):
        h = hashlib.sha256()
        keep = []
        for i in range(6000):
            s = "%d-%d" % (seed, i)
            d = {"k": s, "n": [i, i + 1, i + 2]}
            keep.append((s, d))
            if i % 3 == 0:
                keep.pop(0)
        for s, d in keep:
            h.update(s.encode())
            h.update(repr(d["n"]).encode())
        out[seed] = h.hexdigest()

    os.write(1, ("ready %d\n" % os.getpid()).encode())
    n = 0
    while True:
        if budget[0] == 0:
            os.write(1, b"paused\n")
            while budget[0] == 0:
                signal.pause()
            continue
        if budget[0] > 0:
            budget[0] -= 1
        out = {}
        t0 = time.perf_counter()
        ts = [threading.Thread(target=work, args=(k, out))
              for k in range(THREADS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        total = hashlib.sha256("".join(out[k] for k in range(THREADS))
                               .encode()).hexdigest()[:16]
        os.write(1, ("round %d %.6f %s\n" % (n, dt, total)).encode())
        n += 1


if len(sys.argv) > 1 and sys.argv[1] == "--child":
    child(len(sys.argv) > 2 and sys.argv[2] == "paused")
    sys.exit(0)

import argparse  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import (Failed, Lines, end, python_version,  # noqa: E402
                      start_tracer, target_env)

ROOT = os.path.dirname(HERE)


def rounds(out, n, timeout=120):
    """The next N rounds: [(seconds, checksum)]."""
    got = []
    for _ in range(n):
        parts = out.wait_for("round", timeout).split()
        got.append((float(parts[2]), parts[3]))
    return got


def turns(procs):
    """TURNS turns of ROUNDS rounds for each (process, Lines) in PROCS, one
    at a time: the median round time of each."""
    import signal
    times = [[] for _ in procs]
    for _ in range(TURNS):
        for i, (p, out) in enumerate(procs):
            p.send_signal(signal.SIGUSR2)
            times[i] += [t for t, _ in rounds(out, ROUNDS)]
            out.wait_for("paused", 120)
    return [statistics.median(t) for t in times]


def pause(p, out):
    """Stop P's free run after its current round."""
    import signal
    p.send_signal(signal.SIGUSR1)
    out.wait_for("paused", 120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="/usr/bin/python3.11")
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--pytm", default=os.path.join(ROOT, "pytm-bpf"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds between the last kill and the measure")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    print("pytm-bpf --recorder killed %d times: %s (Python %s), %d threads "
          "allocating" % (args.cycles, args.python,
                          python_version(args.python), THREADS))
    target = tracer = twin = None
    try:
        target = subprocess.Popen(
            [args.python, os.path.abspath(__file__), "--child"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            env=target_env())
        out = Lines(target.stdout)
        pid = int(out.wait_for("ready", 30).split()[1])
        twin = subprocess.Popen(
            [args.python, os.path.abspath(__file__), "--child", "paused"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            env=target_env())
        tout = Lines(twin.stdout)
        tout.wait_for("paused", 30)
        rounds(out, 3)                       # warm up
        pause(target, out)
        before = turns([(target, out), (twin, tout)])
        target.send_signal(signal.SIGHUP)    # runs on through the cycles
        failed = 0
        for cycle in range(args.cycles):
            try:
                tracer, _, _, _ = start_tracer(
                    [args.pytm, "-p", str(pid), "--recorder", "--frames",
                     str(rnd.choice((1, 25)))], 120)
            except Failed as e:
                failed += 1
                print("  cycle %d: attach failed: %s" % (cycle, str(e)[:200]))
                continue
            time.sleep(rnd.uniform(0, 1.0))
            tracer.send_signal(signal.SIGKILL)
            tracer.wait(timeout=30)
            end(tracer)
            tracer = None
            if target.poll() is not None:
                print("  cycle %d: the target died (rc %s)" % (
                    cycle, target.returncode))
                return 1
        # A second, then measure.
        time.sleep(args.settle)
        pause(target, out)
        after = turns([(target, out), (twin, tout)])
        # every round of the run, traced or not, computed the same
        all_sums = set(line.split()[3] for line in out.all
                       if line.startswith("round "))
        b, a = before[0] / before[1], after[0] / after[1]
        print("  %d cycles (%d attaches failed); target alive; %d rounds, "
              "checksums %s" % (args.cycles, failed,
                                sum(1 for l in out.all if l.startswith("round ")),
                                "all equal" if len(all_sums) == 1
                                else "DIFFER: %s" % sorted(all_sums)))
        print("  round time over the untraced twin's: before the first attach "
              "%.3f (%.4fs / %.4fs), a second after the last kill %.3f "
              "(%.4fs / %.4fs): cost %+.1f%%"
              % (b, before[0], before[1], a, after[0], after[1],
                 100 * (a - b) / b))
        return 0 if len(all_sums) == 1 and not failed else 1
    finally:
        end(tracer)
        end(target)
        end(twin)


if __name__ == "__main__":
    sys.exit(main())
