#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Cost per allocator event of pytm-bpf's probe modes, and the workload
slowdown of each against in-process tracemalloc's, in one run, on Debian's
/usr/bin/python3.11 and on pyenv 3.11.7 (`make bench`).

    /usr/bin/python3 tools/bench_events.py [--runs 3] [--iterations N]
        [--python PATH ...] [--pytm ./pytm-bpf] [--timeout S]

Modes, per interpreter (median of --runs runs each; the runs of all modes
are interleaved, so that a drift of the machine hits every mode alike):

    untraced           the workload alone
    tracemalloc 1/25   tracemalloc.start(N) in the target
    injected 1/25      pytm-bpf -p PID --frames N (allocator redirected)
    plain 1            pytm-bpf -p PID --no-inject (uprobes + uretprobes)
    empty NOP          pytm-bpf -p PID --bench-empty: the injected page's
                       trampolines and NOP probe sites, BPF programs that
                       return at once (the bare cost of one probe hit)
    inj nop6 1         injected, frames 1, --probe-site nop6: the site kind
                       the kernel never rewrites (safe in forked children
                       on any kernel, without the fork guard)
    empty NOP6         --bench-empty --probe-site nop6: its bare cost
    untraced 10x       the workload alone, 10 times the iterations
    sampled 1/25       pytm-bpf -p PID --sample 512k --frames N, 10 times
                       the iterations (a run of the default length is too
                       short for a few-percent effect on this VM): the
                       sampler in the injected page; only sampled blocks
                       (and their frees) enter the kernel. Compared with
                       "untraced 10x"; its per-event cost is divided by 10
                       times the injected frames-1 event count.

Sites: the default injected runs use what --probe-site auto picks (their
tracing line says; on 6.18 the 5-byte NOP, which the kernel rewrites into
a call after its first hit). The two empty-probe figures are the cost of
one hit of each site kind, printed side by side at the end.

Every run is a fresh target that waits for "go" on stdin and times only
its allocation phase (time.perf_counter); for pytm-bpf, "go" is sent after
its "pytm-bpf: tracing" line, so attach, detach and the final report are
not in the figures.

Per-event cost = (median traced time - median untraced time) / allocator
events, where the events are the "N allocator events" of pytm-bpf's report
(median over the runs). The empty-probe runs count nothing (their programs
return at once), so they are divided by the injected frames-1 runs' count:
the same trampolines are hit as often. Plain mode is divided by the events
it saw (on Debian's python3.11 it misses the inlined allocator copies, so
it also sees far fewer events; its coverage is printed).

The issue's targets are printed next to the results; nothing is asserted.
The exit status is 1 only when a run failed.

The same file is the target (run by each interpreter with --child); keep it
Python 3.6+ compatible.
"""

import os
import sys

# --------------------------------------------------------------------------
# The workload (child side).


class Cell(object):
    __slots__ = ("key", "text")

    def __init__(self, key, text):
        self.key = key
        self.text = text


def make_cell(i):
    return Cell(i, "c%d" % i)              # object + str (+ int)


def make_row(i):
    return [make_cell(i), make_cell(i + 3)]    # list + 2 cells


def allocate(n):
    kept = []
    for i in range(n):
        row = make_row(i)
        if i % 32 == 0:
            kept.append(row)               # a few survive; most are freed
    return kept


def child(mode, frames, iterations):
    import time
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start(frames)
    os.write(1, ("ready %d\n" % os.getpid()).encode())
    line = sys.stdin.readline()
    if line.strip() != "go":
        sys.exit("bench child: expected go, got %r" % line)
    t0 = time.perf_counter()
    kept = allocate(iterations)
    elapsed = time.perf_counter() - t0
    os.write(1, ("elapsed %.6f %d\n" % (elapsed, len(kept))).encode())
    sys.stdin.readline()                   # "exit"


if len(sys.argv) > 1 and sys.argv[1] == "--child":
    child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    sys.exit(0)

# --------------------------------------------------------------------------
# The driver.

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402

# The drivers' shared helpers; the child part above must not need them
# (it runs on other interpreters, before this point).
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import (Failed, Lines, end, pyenv_python,  # noqa: E402
                      python_version, start_tracer, stop_tracer, target_env)

ROOT = os.path.dirname(HERE)
DEBIAN = "/usr/bin/python3.11"

# (label, kind, frames, extra pytm-bpf options)
PLAN = [
    ("untraced", "untraced", 0, []),
    ("tracemalloc", "tracemalloc", 1, []),
    ("tracemalloc", "tracemalloc", 25, []),
    ("injected", "pytm", 1, []),
    ("injected", "pytm", 25, []),
    ("plain", "pytm", 1, ["--no-inject"]),
    ("empty NOP", "pytm", 1, ["--bench-empty"]),
    ("inj nop6", "pytm", 1, ["--probe-site", "nop6"]),
    ("empty NOP6", "pytm", 1, ["--bench-empty", "--probe-site", "nop6"]),
    ("untraced 10x", "untraced", 0, []),
    ("sampled", "pytm", 1, ["--sample", "512k"]),
    ("sampled", "pytm", 25, ["--sample", "512k"]),
]

# Issue targets (printed, not asserted).
TARGET_EVENT_VS_EMPTY = 1.5
TARGET_SLOWDOWN_VS_TM = {1: 0.8, 25: 1.0}
LONG = {"untraced 10x": 10, "sampled": 10}     # iterations multiplier
TARGET_SAMPLED_SLOWDOWN = 1.10          # against untraced, 512k
TARGET_SAMPLED_NS = 10.0                # per allocator event, unsampled


def one_run(args, python, kind, frames, extra, scale=1):
    """Returns a dict: elapsed, and for pytm-bpf runs events, lost, line."""
    cmd = [python, os.path.abspath(__file__), "--child",
           "tracemalloc" if kind == "tracemalloc" else "none",
           str(frames or 1), str(args.iterations * scale)]
    target = tracer = None
    res = {}
    try:
        target = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=target_env())
        out = Lines(target.stdout)
        pid = int(out.wait_for("ready", 60).split()[1])
        if kind == "pytm":
            tracer, tout, terr, res["line"] = start_tracer(
                [args.pytm, "-p", str(pid), "--frames", str(frames)] + extra,
                120)
        target.stdin.write(b"go\n")
        target.stdin.flush()
        res["elapsed"] = float(out.wait_for("elapsed",
                                            args.timeout).split()[1])
        if tracer is not None:
            stop_tracer(tracer, tout, terr)
            report = "\n".join(tout.all)
            m = re.search(r"; (\d+) allocator events", report) or \
                re.search(r"; (\d+) samples, \d+ sampled frees", report)
            if not m:
                raise Failed("no event count in pytm-bpf's report: %r"
                             % report[-300:])
            res["events"] = int(m.group(1))
            m = re.search(r"^Lost events: (.*)$", report, re.M)
            res["lost"] = m.group(1) if m else "?"
        target.stdin.write(b"exit\n")
        target.stdin.flush()
        target.wait(timeout=60)
        return res
    finally:
        end(tracer)
        end(target)


def has_bench_empty(pytm):
    """True when pytm-bpf accepts --bench-empty (a hidden option)."""
    try:
        p = subprocess.run([pytm, "--bench-empty", "--version"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0


def median(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec, na="n/a"):
    return na if x is None else spec % x


def bench_one(args, python, plan):
    """All runs on one interpreter, interleaved; returns {key: [res...]}."""
    results = dict(((label, frames), []) for label, _, frames, _ in plan)
    failures = {}
    for r in range(args.runs):
        for label, kind, frames, extra in plan:
            key = (label, frames)
            if key in failures:
                continue
            try:
                res = one_run(args, python, kind, frames, extra,
                              LONG.get(label, 1))
            except (Failed, OSError, subprocess.SubprocessError) as e:
                failures[key] = str(e)
                continue
            results[key].append(res)
            sys.stdout.write("  run %d/%d  %-12s frames %-3s %8.3fs%s\n" % (
                r + 1, args.runs, label, frames or "-", res["elapsed"],
                "  (%d events)" % res["events"] if "events" in res else ""))
            sys.stdout.flush()
    return results, failures


def table(python, version, plan, results, failures):
    """Prints the table for one interpreter; returns the figures."""
    med = {}
    for key, runs in results.items():
        if runs and key not in failures:
            med[key] = {
                "t": median([x["elapsed"] for x in runs]),
                "runs": [x["elapsed"] for x in runs],
                "events": median([x["events"] for x in runs])
                if "events" in runs[0] else None,
                "lost": sorted(set(x.get("lost", "") for x in runs)),
                "line": runs[-1].get("line", ""),
            }
    base = med.get(("untraced", 0), {}).get("t")
    inj_events = med.get(("injected", 1), {}).get("events")

    print()
    print("== %s (Python %s) ==" % (python, version))
    head = "%-12s %6s %9s  %-23s %9s %10s %9s %8s" % (
        "mode", "frames", "median", "runs (s)", "slowdown", "events",
        "ns/event", "vs tm")
    print(head)
    print("-" * len(head))
    fig = {}
    for label, kind, frames, _ in plan:
        key = (label, frames)
        if key not in med:
            print("%-12s %6s %9s  %s" % (label, frames or "-", "FAILED",
                                         failures.get(key, "no runs")[:120]))
            continue
        m = med[key]
        scale = LONG.get(label, 1)
        # the long runs against the long untraced runs
        b = med.get(("untraced 10x", 0), {}).get("t") if scale > 1 else base
        slow = m["t"] / b if b else None
        events = m["events"]
        denom = events
        note = ""
        if label.startswith("empty") or label == "sampled" or \
                kind == "tracemalloc":
            # same number of allocator calls
            denom = inj_events * scale if inj_events else None
            note = "*"
        per = ((m["t"] - b) / denom * 1e9) if (b and denom) else None
        tm = med.get(("tracemalloc", frames), {}).get("t")
        vs_tm = None
        if kind == "pytm" and tm and base and not label.startswith("empty"):
            vs_tm = slow / (tm / base)
        fig[key] = {"slowdown": slow, "per_event_ns": per, "vs_tm": vs_tm,
                    "events": events}
        print("%-12s %6s %8.3fs  %-23s %9s %10s %9s %8s" % (
            label, frames or "-", m["t"],
            " ".join("%.3f" % t for t in m["runs"]),
            fmt(slow, "%.2fx"),
            fmt(events, "%d") if kind == "pytm" and not label.startswith("empty")
            else "-",
            fmt(per, "%.1f" if per is not None and abs(per) < 100
                else "%.0f") + note if kind != "untraced" else "-",
            fmt(vs_tm, "%.2fx")))
    print("(* divided by the injected frames-1 event count%s, times 10 for "
          "the 10x runs, whose slowdown is against untraced 10x; \"vs tm\" = "
          "slowdown / tracemalloc's slowdown at the same frames)"
          % (" (%d)" % inj_events if inj_events else ""))
    plain = med.get(("plain", 1))
    if plain and inj_events and plain["events"] is not None:
        share = 100.0 * plain["events"] / inj_events
        why = ("the allocator copies inlined in the binary are not probed"
               if share < 95 else
               "plain probes also count the allocator calls nested in "
               "another one")
        print("plain mode saw %d events, %.1f%% of the injected mode's %d "
              "(%s)" % (plain["events"], share, inj_events, why))
    for key in (("injected", 1), ("injected", 25), ("plain", 1),
                ("empty NOP", 1), ("inj nop6", 1), ("empty NOP6", 1),
                ("sampled", 1), ("sampled", 25)):
        if key in med:
            lost = ", ".join(x for x in med[key]["lost"] if x)
            what = med[key]["line"].rsplit("): ", 1)[-1]
            print("%s frames %d: %s; lost events: %s" % (
                key[0], key[1], what, lost or "?"))
    return fig


def site_kinds(fig):
    """The two probe-site kinds' cost per hit, side by side."""
    n5 = fig.get(("empty NOP", 1), {}).get("per_event_ns")
    n6 = fig.get(("empty NOP6", 1), {}).get("per_event_ns")
    i5 = fig.get(("injected", 1), {}).get("per_event_ns")
    i6 = fig.get(("inj nop6", 1), {}).get("per_event_ns")
    print("Probe sites, per event: empty 5-byte NOP %s ns, empty 6-byte NOP "
          "%s ns (%s); injected frames 1 with each: %s ns, %s ns" % (
              fmt(n5, "%.0f"), fmt(n6, "%.0f"),
              fmt(n6 / n5 if n5 and n6 else None, "%.2fx"),
              fmt(i5, "%.0f"), fmt(i6, "%.0f")))


def targets(fig):
    site_kinds(fig)
    print("Issue targets (not asserted):")
    for frames in (1, 25):
        f = fig.get(("sampled", frames), {})
        slow, per = f.get("slowdown"), f.get("per_event_ns")
        if slow is None:
            print("  sampled 512k frames %d: n/a" % frames)
            continue
        print("  sampled 512k frames %-2d slowdown <= %.2fx untraced: %.3fx  "
              "[%s]; per allocator event <= %.0f ns: %s ns  [%s]  (%s "
              "samples)" % (
                  frames, TARGET_SAMPLED_SLOWDOWN, slow,
                  "met" if slow <= TARGET_SAMPLED_SLOWDOWN else "NOT met",
                  TARGET_SAMPLED_NS, fmt(per, "%.1f"),
                  "met" if per is not None and per <= TARGET_SAMPLED_NS
                  else "NOT met", fmt(f.get("events"), "%d")))
    inj = fig.get(("injected", 1), {}).get("per_event_ns")
    empty = fig.get(("empty NOP", 1), {}).get("per_event_ns")
    if inj is not None and empty:
        ratio = inj / empty
        print("  injected frames 1 per event <= %.1fx the empty NOP probe: "
              "%.0f ns vs %.0f ns = %.2fx  [%s]" % (
                  TARGET_EVENT_VS_EMPTY, inj, empty, ratio,
                  "met" if ratio <= TARGET_EVENT_VS_EMPTY else "NOT met"))
    else:
        print("  injected frames 1 per event <= %.1fx the empty NOP probe: "
              "n/a (%s)" % (TARGET_EVENT_VS_EMPTY,
                            "no empty-probe figure" if inj is not None
                            else "no injected figure"))
    for frames, goal in sorted(TARGET_SLOWDOWN_VS_TM.items()):
        v = fig.get(("injected", frames), {}).get("vs_tm")
        if v is None:
            print("  injected slowdown <= %.1fx tracemalloc's at frames %d: "
                  "n/a" % (goal, frames))
        else:
            print("  injected slowdown <= %.1fx tracemalloc's at frames %d: "
                  "%.2fx  [%s]" % (goal, frames, v,
                                   "met" if v <= goal else "NOT met"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append",
                    help="target interpreter (repeatable; default: %s and "
                    "pyenv 3.11.7)" % DEBIAN)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=100000,
                    help="iterations of the workload (about 20 allocator "
                    "events each)")
    ap.add_argument("--pytm", default=os.path.join(ROOT, "pytm-bpf"))
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds allowed for one timed phase")
    args = ap.parse_args()
    pythons = args.python or [DEBIAN, pyenv_python("3.11.7")]
    if not os.access(args.pytm, os.X_OK):
        sys.exit("bench: %s is not built (run make)" % args.pytm)
    missing = [p for p in pythons if not os.access(p, os.X_OK)]
    if missing:
        sys.exit("bench: no interpreter at %s" % ", ".join(missing))
    plan = list(PLAN)
    empty_ok = has_bench_empty(args.pytm)
    if not empty_ok:
        plan = [p for p in plan if not p[0].startswith("empty")]

    print("pytm-bpf cost per allocator event (%s)" % args.pytm)
    print("workload: %d iterations of nested calls; median of %d runs per "
          "mode, runs interleaved" % (args.iterations, args.runs))
    if not empty_ok:
        print("empty NOP probe: n/a (this pytm-bpf has no --bench-empty)")
    status = 0
    figs = []
    for python in pythons:
        version = python_version(python)
        print()
        print("-- running on %s (Python %s)" % (python, version))
        results, failures = bench_one(args, python, plan)
        if failures:
            status = 1
        figs.append((python, version, results, failures))
    for python, version, results, failures in figs:
        fig = table(python, version, plan, results, failures)
        targets(fig)
    return status


if __name__ == "__main__":
    sys.exit(main())
