#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A heap of 6 million live blocks (2M tuples, each of a str and an int,
kept in a list), traced exactly: whether anything is lost, and the
tracer's memory per live block next to tracemalloc's. One run of each, on
one interpreter (default Debian's python3.11). No thresholds.

    /usr/bin/python3 tools/bench_scale.py [--python PATH] [--n 2000000]
                                          [--pytm ./pytm-bpf]

  tracemalloc            tracemalloc.start(1) in the target:
                         get_tracemalloc_memory() / traces
  pytm-bpf --recorder    the tracer's resident memory once the heap is
                         built, less its memory right after attaching,
                         / the live blocks its report counts
  pytm-bpf --bpf-walk    the BPF walk, default --max-blocks: what its
                         per-process maps hold (they grow: generations),
                         what they cost in kernel memory per live block
                         (bpftool's memlock of the maps blocks_PID), and
                         what it loses

The same file is the target (run by the chosen interpreter with --child);
keep it Python 3.6+ compatible.
"""

import os
import sys


def child(mode, n):
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start(1)
    os.write(1, ("ready %d\n" % os.getpid()).encode())
    if sys.stdin.readline().strip() != "go":
        sys.exit("bench child: expected go")
    keep = [(str(i), i + 1000) for i in range(n)]
    info = ""
    if mode == "tracemalloc":
        import tracemalloc
        traces = len(tracemalloc._get_traces())
        info = " %d %d" % (tracemalloc.get_tracemalloc_memory(), traces)
    os.write(1, ("built %d%s\n" % (len(keep), info)).encode())
    sys.stdin.readline()


if len(sys.argv) > 1 and sys.argv[1] == "--child":
    child(sys.argv[2], int(sys.argv[3]))
    sys.exit(0)

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import (Failed, Lines, end, python_version,  # noqa: E402
                      start_tracer, stop_tracer, target_env)

ROOT = os.path.dirname(HERE)


def rss(pid):
    """Resident bytes of PID."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def maps_memlock(pid):
    """(maps, bytes) of the live-block maps of process PID (bpftool)."""
    out = subprocess.run(["bpftool", "-j", "map", "show"], stdout=subprocess.PIPE,
                         check=True).stdout
    import json
    maps = [m for m in json.loads(out) if m.get("name") == "blocks_%d" % pid]
    return len(maps), sum(m.get("bytes_memlock", 0) for m in maps)


def run(args, mode):
    cmd = [args.python, os.path.abspath(__file__), "--child",
           "tracemalloc" if mode == "tracemalloc" else "plain", str(args.n)]
    target = tracer = None
    try:
        target = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=target_env())
        out = Lines(target.stdout)
        pid = int(out.wait_for("ready", 30).split()[1])
        before = 0
        if mode.startswith("pytm-bpf"):
            tracer, tout, terr, _ = start_tracer(
                [args.pytm, "-p", str(pid), "--top", "3"] + mode.split()[1:], 120)
            before = rss(tracer.pid)
        target.stdin.write(b"go\n")
        target.stdin.flush()
        built = out.wait_for("built", 900).split()
        res = {"n": int(built[1])}
        if mode == "tracemalloc":
            res["bytes"], res["blocks"] = int(built[2]), int(built[3])
        else:
            res["tracer_rss"] = rss(tracer.pid) - before
            res["maps"], res["memlock"] = maps_memlock(pid)
            stop_tracer(tracer, tout, terr, timeout=900)
            text = "\n".join(tout.all)
            m = re.search(r"(\d+) live blocks", text)
            res["blocks"] = int(m.group(1)) if m else None
            m = re.search(r"Lost events: (.*)", text)
            res["lost"] = m.group(1) if m else "?"
            m = re.search(r"Traced memory: current=([^,]+),", text)
            res["current"] = m.group(1) if m else "?"
            m = re.search(r"(Recorder: .*)", text)
            res["recorder"] = m.group(1) if m else ""
            if mode == "pytm-bpf --recorder":
                res["bytes"] = res["tracer_rss"]
        target.stdin.write(b"exit\n")
        target.stdin.flush()
        target.wait(timeout=120)
        return res
    finally:
        end(tracer)
        end(target)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="/usr/bin/python3.11")
    ap.add_argument("--n", type=int, default=2000000)
    ap.add_argument("--pytm", default=os.path.join(ROOT, "pytm-bpf"))
    args = ap.parse_args()
    print("pytm-bpf scale: %s (Python %s), %d tuples of a str and an int kept"
          % (args.python, python_version(args.python), args.n))
    failed = 0
    for mode in ("tracemalloc", "pytm-bpf --recorder", "pytm-bpf --bpf-walk"):
        try:
            r = run(args, mode)
        except (Failed, RuntimeError, subprocess.SubprocessError) as e:
            print("  %-20s failed: %s" % (mode, str(e)[:300]))
            failed = 1
            continue
        if mode == "tracemalloc":
            print("  %-20s %d traces, %.1f bytes of tracemalloc's per trace"
                  % (mode, r["blocks"], r["bytes"] / r["blocks"]))
        elif mode == "pytm-bpf --recorder":
            print("  %-20s %s live blocks, tracer +%.0f MiB: %.1f bytes per "
                  "block; current=%s; lost: %s"
                  % (mode, r["blocks"], r["tracer_rss"] / 2**20,
                     r["tracer_rss"] / r["blocks"] if r["blocks"] else 0,
                     r["current"], r["lost"]))
            print("  %-20s %s" % ("", r["recorder"]))
        else:
            print("  %-20s %s live blocks in %d maps, %.0f MiB of kernel memory: %.1f "
                  "bytes per block; current=%s; lost: %s"
                  % (mode, r["blocks"], r["maps"], r["memlock"] / 2**20,
                     r["memlock"] / r["blocks"] if r["blocks"] else 0,
                     r["current"], r["lost"]))
    return failed


if __name__ == "__main__":
    sys.exit(main())
