#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Side-by-side slowdowns of an allocation-heavy workload: untraced,
in-process tracemalloc (frames 1 and 25), pytm-bpf from outside (frames 1
and 25), with the BPF walk and with --recorder (then also its kernel
entries per million events and its drain's CPU per event). Median of
--runs runs each, all in one invocation. No thresholds.

    /usr/bin/python3 tools/bench.py [--python PATH] [--runs 3]
                                    [--iterations N] [--pytm ./pytm-bpf]
                                    [--workload alloc|freelist]

--workload freelist: a loop whose objects all come from free lists (a
float and a tuple an iteration, no allocator call), the case that 3.13+'s
re-attribution of such objects (the page's reference tracer) makes cost:
untraced, tracemalloc and pytm-bpf at frames 1, and pytm-bpf with
--no-free-lists.

Every run is a fresh target process that waits for "go" on stdin and times
only its allocation phase (time.perf_counter), so start-up, attach and
pytm-bpf's final report are not in the figures. For pytm-bpf the target is
told "go" only after pytm-bpf's "pytm-bpf: tracing" line.

The same file is the target (run by the chosen interpreter with --child);
keep it Python 3.6+ compatible.
"""

import os
import sys

# --------------------------------------------------------------------------
# The workload (child side).


class Item(object):
    __slots__ = ("key", "label")

    def __init__(self, key, label):
        self.key = key
        self.label = label


def leaf(i):
    return Item(i, str(i))                 # object + str (+ int)


def branch(i):
    return [leaf(i), leaf(i + 1)]          # list items array + 2 leaves


def trunk(n):
    keep = []
    for i in range(n):
        pair = branch(i)
        if i % 16 == 0:
            keep.append(pair)              # some survive, most are freed
    return keep


def freelist(n):
    import itertools
    s = 0.0
    t = None
    for _ in itertools.repeat(None, n):    # no int objects
        t = (s, s)                         # a size-2 tuple, from its free list
        s = s + 0.5                        # a float, from its free list
    return [t]


def child(mode, frames, iterations, workload="alloc"):
    import time
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start(frames)
    os.write(1, ("ready %d\n" % os.getpid()).encode())
    line = sys.stdin.readline()
    if line.strip() != "go":
        sys.exit("bench child: expected go, got %r" % line)
    t0 = time.perf_counter()
    kept = (freelist if workload == "freelist" else trunk)(iterations)
    elapsed = time.perf_counter() - t0
    os.write(1, ("elapsed %.6f %d\n" % (elapsed, len(kept))).encode())
    sys.stdin.readline()                   # "exit"


if len(sys.argv) > 1 and sys.argv[1] == "--child":
    child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
          sys.argv[5] if len(sys.argv) > 5 else "alloc")
    sys.exit(0)

# --------------------------------------------------------------------------
# The driver.

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

# The drivers' shared helpers; the child part above must not need them
# (it runs on other interpreters, before this point).
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import (Failed, Lines, end, pyenv_python,  # noqa: E402
                      python_version, start_tracer, stop_tracer, target_env)

ROOT = os.path.dirname(HERE)
# Allocations per iteration of trunk(): 2 Item objects, 2 str, 2 temporary
# ints of str()'s decimal conversion, 2 ints (range's next and i + 1, beyond
# the small-int cache), 1 list items array; the list object itself comes
# from the free list. pytm-bpf counts ~5.3M allocator events (allocations and
# frees) for 300000 iterations on 3.11, which matches.
ALLOCS_PER_ITERATION = 9


def one_run(args, mode, frames):
    """Returns (elapsed seconds, extra info dict). MODE: untraced,
    tracemalloc, pytm-bpf, or pytm-bpf followed by its extra options."""
    cmd = [args.python, os.path.abspath(__file__), "--child",
           "tracemalloc" if mode == "tracemalloc" else "plain",
           str(frames), str(args.iterations), args.workload]
    target = tracer = None
    info = {}
    try:
        target = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=target_env())
        out = Lines(target.stdout)
        pid = int(out.wait_for("ready", 30).split()[1])
        if mode.startswith("pytm-bpf"):
            t0 = time.monotonic()
            tracer, tout, terr, _ = start_tracer(
                [args.pytm, "-p", str(pid), "--frames", str(frames)] +
                mode.split()[1:], 120)
            info["attach"] = time.monotonic() - t0
        target.stdin.write(b"go\n")
        target.stdin.flush()
        elapsed = float(out.wait_for("elapsed", args.timeout).split()[1])
        if tracer is not None:
            stop_tracer(tracer, tout, terr)
            report = tout.all
            tail = report[report.index(""):] if "" in report else []
            info["tail"] = [line for line in tail if line]
        target.stdin.write(b"exit\n")
        target.stdin.flush()
        target.wait(timeout=60)
        return elapsed, info
    finally:
        end(tracer)
        end(target)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=pyenv_python("3.11.7"),
                    help="target interpreter (default: pyenv 3.11.7)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=300000)
    ap.add_argument("--pytm", default=os.path.join(ROOT, "pytm-bpf"))
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds allowed for one timed phase")
    ap.add_argument("--workload", choices=("alloc", "freelist"),
                    default="alloc")
    ap.add_argument("--pyenv", metavar="VERSION",
                    help="target pyenv's interpreter VERSION (for --python)")
    args = ap.parse_args()
    if args.pyenv:
        args.python = pyenv_python(args.pyenv)
    if not os.access(args.python, os.X_OK):
        sys.exit("bench: no interpreter at %s" % args.python)
    version = python_version(args.python)

    if args.workload == "freelist":
        plan = [("untraced", 0), ("tracemalloc", 1), ("pytm-bpf --bpf-walk", 1),
                ("pytm-bpf --bpf-walk --no-free-lists", 1)]
    else:
        plan = [("untraced", 0), ("tracemalloc", 1), ("tracemalloc", 25),
                ("pytm-bpf --bpf-walk", 1), ("pytm-bpf --bpf-walk", 25),
                ("pytm-bpf --recorder", 1), ("pytm-bpf --recorder", 25)]
    print("pytm-bpf benchmark: %s (Python %s)" % (args.python, version))
    if args.workload == "freelist":
        print("workload: %d iterations, a float and a tuple from free lists "
              "each, no allocator call; median of %d runs each"
              % (args.iterations, args.runs))
    else:
        print("workload: %d iterations of nested calls, ~%.1fM allocations; "
              "median of %d runs each" % (
                  args.iterations,
                  args.iterations * ALLOCS_PER_ITERATION / 1e6, args.runs))
    print()
    results = {}
    failures = {}
    extra = {}
    for mode, frames in plan:
        times = []
        for _ in range(args.runs):
            try:
                elapsed, info = one_run(args, mode, frames)
            except (Failed, RuntimeError, subprocess.SubprocessError) as e:
                failures[(mode, frames)] = str(e)
                break
            times.append(elapsed)
            extra.setdefault((mode, frames), []).append(info)
        if len(times) == args.runs:
            results[(mode, frames)] = times
        sys.stdout.write("  %-24s frames %-3s %s\n" % (
            mode, frames or "-", "done" if (mode, frames) in results
            else "FAILED"))
        sys.stdout.flush()

    base = results.get(("untraced", 0))
    base_med = statistics.median(base) if base else None
    print()
    print("%-24s %6s %10s   %-26s %9s" % ("mode", "frames", "median",
                                         "runs (s)", "slowdown"))
    print("-" * 82)
    for mode, frames in plan:
        key = (mode, frames)
        if key not in results:
            print("%-24s %6s %10s   %s" % (mode, frames or "-", "failed",
                                          failures.get(key, "")[:200]))
            continue
        med = statistics.median(results[key])
        slow = "%8.2fx" % (med / base_med) if base_med else "        ?"
        print("%-24s %6s %9.3fs   %-26s %9s" % (
            mode, frames or "-", med,
            " ".join("%.3f" % t for t in results[key]), slow))
    print()
    for mode in ("pytm-bpf --bpf-walk", "pytm-bpf --recorder"):
        for frames in (1, 25):
            p = results.get((mode, frames))
            t = results.get(("tracemalloc", frames))
            if p and t and base_med:
                ps = statistics.median(p) / base_med
                ts = statistics.median(t) / base_med
                # Overheads: what each adds to the untraced time.
                print("%s / tracemalloc, frames %-2d: slowdown %.2f (%.2fx vs "
                      "%.2fx), overhead %.2f" % (mode, frames, ps / ts, ps, ts,
                                                 (ps - 1) / (ts - 1)
                                                 if ts > 1 else float("nan")))
            elif any(m == mode for m, _ in plan):
                print("%s / tracemalloc, frames %-2d: n/a" % (mode, frames))
    for mode, frames in plan:
        infos = extra.get((mode, frames), [])
        if not mode.startswith("pytm-bpf") or not infos:
            continue
        attach = statistics.median(i["attach"] for i in infos)
        tail = infos[-1].get("tail", [])
        print("%s frames %d: attach %.2fs (median); last report: %s"
              % (mode, frames, attach, "; ".join(tail) or "(no summary lines)"))
        rec = recorder_figures(tail)
        if rec:
            kernel = rec["bpf_allocs"] + rec["bpf_frees"]
            total = rec["events"] + kernel
            print("  recorder: %.0f kernel entries per million allocator events "
                  "(%d of %d), drain CPU %.0f ns per event"
                  % (1e6 * kernel / total if total else 0, kernel, total,
                     1e9 * rec["cpu"] / rec["events"] if rec["events"] else 0))
    return 1 if failures else 0


def recorder_figures(tail):
    """The figures of pytm-bpf's "Recorder:" line, or None."""
    import re
    for line in tail:
        m = re.search(r"Recorder: (\d+) events .*?BPF's way: (\d+) allocations, "
                      r"(\d+) frees .*drain CPU ([0-9.]+) s", line)
        if m:
            return {"events": int(m.group(1)), "bpf_allocs": int(m.group(2)),
                    "bpf_frees": int(m.group(3)), "cpu": float(m.group(4))}
    return None


if __name__ == "__main__":
    sys.exit(main())
