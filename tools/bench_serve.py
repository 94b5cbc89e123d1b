#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a scrape costs at fleet scale: `pytm-bpf --serve` over --procs
CPython processes (default 50) holding about 1M live blocks in all, while
they keep allocating (tests/workloads/all_steady.py: a ring of --ring bytes
and str objects per process, replaced --rate times a second).

Once every ring is full, it fetches /metrics and /debug/pprof/heap --scrapes
times each (one every 2 s: the server keeps an answer 0.5 s), and prints
each one's wall time (target: under 1 s), the live blocks the metrics
report, the tracer's RSS, and the lost events of the final reports (target:
none: the probes keep running while scrapes are served).

    /usr/bin/python3 tools/bench_serve.py [--procs 50] [--ring 10000]
        [--rate 1000] [--scrapes 5] [--python PATH] [--pytm ./pytm-bpf]

It reports figures; the exit status is 1 only if something fails to run.
Every process it starts is ended by pid.
"""

import argparse
import os
import re
import signal
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import Failed, end, pyenv_python, start_tracer  # noqa: E402
from bench_procs import (Target, WORKLOAD, cpu_of,  # noqa: E402
                         finish_targets, proc_mem_kib, proc_cpu_seconds,
                         report_figures)

ROOT = os.path.dirname(HERE)


def fetch(url):
    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return time.monotonic() - t0, body


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=50)
    ap.add_argument("--ring", type=int, default=10000,
                    help="slots per process (two live blocks each)")
    # 250 keeps the targets well under the machine's 2 CPUs (0.7 CPUs
    # measured here, 2026-12-02); at 1000 they take both and every scrape
    # waits for CPU.
    ap.add_argument("--rate", type=int, default=250)
    ap.add_argument("--scrapes", type=int, default=5)
    ap.add_argument("--python", default=None)
    ap.add_argument("--pytm", default=os.environ.get("PYTM_BPF") or
                    os.path.join(ROOT, "pytm-bpf"))
    args = ap.parse_args()
    if args.python is None:
        args.python = pyenv_python("3.11.7")
    fill = args.ring / float(args.rate)
    seconds = fill + 4 * args.scrapes + 20
    print("bench_serve: %d targets (%s %s, ring %d, %d iterations/s each: "
          "about %d live blocks in all once full), pytm-bpf --serve; %d "
          "scrapes of each endpoint; %d CPUs"
          % (args.procs, args.python, os.path.basename(WORKLOAD), args.ring,
             args.rate, 2 * args.ring * args.procs, args.scrapes,
             os.cpu_count()))
    sys.stdout.flush()
    targets, tracer = [], None
    try:
        for _ in range(args.procs):
            targets.append(Target(args.python, ["--seconds", seconds,
                                                "--rate", args.rate,
                                                "--ring", args.ring]))
        for t in targets:
            t.out.wait_for("ready", 60)
        cmd = [args.pytm, "--serve", "127.0.0.1:0", "--max-procs",
               str(args.procs)]
        for t in targets:
            cmd += ["-p", str(t.pid)]
        t0 = time.monotonic()
        tracer, tout, terr, _ = start_tracer(cmd, 600)
        attach = time.monotonic() - t0
        line = terr.wait_for("pytm-bpf: serving", 30)
        url = re.search(r"(http://[^/\s]+)/metrics", line).group(1)
        for t in targets:
            t.send("go")
        time.sleep(fill + 2)
        times = {"/metrics": [], "/debug/pprof/heap": []}
        blocks, size = 0, 0
        pids = [t.pid for t in targets]
        c0, tc0, w0 = cpu_of(pids), proc_cpu_seconds(tracer.pid), \
            time.monotonic()
        for _ in range(args.scrapes):
            for path in times:
                dt, body = fetch(url + path)
                times[path].append(dt)
                if path == "/metrics":
                    blocks = sum(int(m) for m in re.findall(
                        rb"^pytm_live_blocks\{[^}]*\} (\d+)$", body, re.M))
                else:
                    size = len(body)
                time.sleep(2)
        load = (cpu_of(pids) - c0) / (time.monotonic() - w0)
        tload = (proc_cpu_seconds(tracer.pid) - tc0) / (time.monotonic() - w0)
        rss = proc_mem_kib(tracer.pid)
        for t in targets:
            t.out.wait_for("done", seconds + 120)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=600)
        tout.join(timeout=30)
        figs = report_figures(tout.all, [t.pid for t in targets])
        finish_targets(targets)
    except (Failed, RuntimeError, OSError) as e:
        print("bench_serve: FAILED: %s" % e)
        return 1
    finally:
        end(tracer)
        for t in targets:
            end(t.proc)
    lost = {p: f[1] for p, f in figs.items() if f[1] != "none"}
    print("")
    print("attach:            %.1f s for %d processes" % (attach, args.procs))
    print("live blocks:       %d (pytm_live_blocks summed); profile %d KiB "
          "gzipped" % (blocks, size // 1024))
    for path, ts in times.items():
        print("%-18s %s s (max %.3f s; target < 1 s: %s)"
              % (path + ":", " ".join("%.3f" % t for t in ts), max(ts),
                 "met" if max(ts) < 1 else "NOT met"))
    print("CPU while scraped: targets %.2f CPUs (allocating, probes "
          "running), pytm-bpf %.2f CPUs, of %d" % (load, tload, os.cpu_count()))
    print("tracer memory:     VmRSS %d MiB, VmHWM %d MiB"
          % (rss["VmRSS"] // 1024, rss["VmHWM"] // 1024))
    print("lost events:       %s" % ("none" if not lost else lost))
    print("reports:           %d of %d processes" % (len(figs), args.procs))
    return 0 if tracer.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
