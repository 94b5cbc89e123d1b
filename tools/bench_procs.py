#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What tracing many processes at once costs the tracer itself.

Starts --procs CPython processes (default 20) running the steady allocation
workload tests/workloads/all_steady.py for --seconds each, first untraced,
then traced by one `pytm-bpf -p PID -p PID ...`, and prints:

  - pytm-bpf's own memory: VmRSS (largest sample, every 0.2 s) and VmHWM
    from /proc/PID/status, ru_maxrss at its exit (wait4);
  - the memory of its BPF maps: `bpftool map show id N -j` (bytes_memlock)
    of every map the process holds (map ids from /proc/PID/fdinfo, since
    this bpftool reports no pids);
  - pytm-bpf's CPU: utime+stime from /proc/PID/stat over the allocation
    phase, and its whole run (wait4 rusage), per allocator event;
  - the targets' CPU over the same phase untraced and traced (the BPF
    programs run in the targets' context, so their cost shows there);
  - allocator events and lost events from the per-process reports.

    /usr/bin/python3 tools/bench_procs.py [--procs 20] [--seconds 10]
        [--rate 5000] [--python PATH] [--pytm ./pytm-bpf] [--frames 1]

No thresholds: it reports figures. Every process it starts is ended by pid.
Exit status 1 if pytm-bpf fails or a target misbehaves.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from benchlib import (Failed, Lines, end, pyenv_python,  # noqa: E402
                      start_tracer, target_env)

ROOT = os.path.dirname(HERE)
WORKLOAD = os.path.join(ROOT, "tests", "workloads", "all_steady.py")
TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Figures from /proc and bpftool (also used by tests/test_all_procs.py).

def proc_cpu_seconds(pid):
    """utime + stime of PID, in seconds (from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / float(TICK)


def proc_mem_kib(pid):
    """{'VmRSS': KiB, 'VmHWM': KiB} of PID (from /proc/PID/status)."""
    out = {}
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def bpf_map_ids(pid):
    """Ids of the BPF maps PID holds open (from /proc/PID/fdinfo)."""
    ids = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != "anon_inode:bpf-map":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as fh:
                for line in fh:
                    k, _, v = line.partition(":")
                    if k == "map_id":
                        ids.add(int(v))
        except OSError:
            continue
    return sorted(ids)


def bpftool(args, timeout=60):
    p = subprocess.run(["bpftool", "-j"] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("bpftool %s failed (rc=%d): %s" % (
            " ".join(map(str, args)), p.returncode,
            p.stderr.decode("utf-8", "replace").strip()))
    return json.loads(p.stdout.decode() or "null")


def tracer_maps(pid):
    """[{id, name, type, max_entries, bytes_memlock}] of the maps PID holds."""
    maps = []
    for map_id in bpf_map_ids(pid):
        try:
            info = bpftool(["map", "show", "id", map_id])
        except RuntimeError:
            continue                # closed meanwhile
        maps.append({k: info.get(k) for k in
                     ("id", "name", "type", "max_entries", "bytes_memlock")})
    return maps


def fmt_kib(kib):
    return fmt_bytes(kib * 1024)


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0


# --------------------------------------------------------------------------
# Processes.

class Target(object):
    def __init__(self, python, args):
        env = target_env(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [python, WORKLOAD] + [str(a) for a in args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env,
            cwd=os.path.dirname(WORKLOAD))
        self.pid = self.proc.pid
        self.out = Lines(self.proc.stdout)

    def send(self, word):
        self.proc.stdin.write(word.encode() + b"\n")
        self.proc.stdin.flush()


def start_targets(args):
    targets = []
    for _ in range(args.procs):
        targets.append(Target(args.python, ["--seconds", args.seconds,
                                            "--rate", args.rate]))
    for t in targets:
        t.out.wait_for("ready", 60)
    return targets


def drive(targets, timeout):
    """go to all; wait for every "stats"; returns (iterations, seconds)."""
    for t in targets:
        t.send("go")
    iterations, seconds = 0, 0.0
    for t in targets:
        _, n, s = t.out.wait_for("stats", timeout).split()
        iterations += int(n)
        seconds = max(seconds, float(s))
    for t in targets:
        t.out.wait_for("done", timeout)
    return iterations, seconds


def finish_targets(targets):
    for t in targets:
        if t.proc.poll() is None:
            t.send("exit")
    for t in targets:
        t.proc.wait(timeout=60)


def cpu_of(pids):
    return sum(proc_cpu_seconds(p) for p in pids)


REPORT_EVENTS = re.compile(r"^Traced memory: .*; (\d+) allocator events$")
REPORT_LOST = re.compile(r"^Lost events:(.*)$")
REPORT_HEADER = re.compile(r"^== pid (\d+)")


def report_figures(stdout_lines, pids):
    """{pid: (events, lost text)} from the per-process reports. A lone
    target's report has no "== pid" header (it reads as tracemalloc's)."""
    figs, events = {}, None
    pid = pids[0] if len(pids) == 1 else None
    for line in stdout_lines:
        m = REPORT_HEADER.match(line)
        if m:
            pid, events = int(m.group(1)), None
            continue
        m = REPORT_EVENTS.match(line)
        if m and pid is not None:
            events = int(m.group(1))
            continue
        m = REPORT_LOST.match(line)
        if m and pid is not None:
            figs[pid] = (events, m.group(1).strip())
            pid = None
    return figs


# --------------------------------------------------------------------------

def untraced_phase(args):
    targets = []
    try:
        targets = start_targets(args)
        pids = [t.pid for t in targets]
        c0 = cpu_of(pids)
        iterations, seconds = drive(targets, args.seconds * 10 + 120)
        c1 = cpu_of(pids)
        finish_targets(targets)
        return iterations, seconds, c1 - c0
    finally:
        for t in targets:
            end(t.proc)


def traced_phase(args):
    targets, tracer = [], None
    res = {}
    try:
        targets = start_targets(args)
        pids = [t.pid for t in targets]
        cmd = [args.pytm, "--frames", str(args.frames)]
        for p in pids:
            cmd += ["-p", str(p)]
        t_start = time.monotonic()
        tracer, tout, terr, _ = start_tracer(cmd, 300)
        res["attach"] = time.monotonic() - t_start
        res["cpu_attach"] = proc_cpu_seconds(tracer.pid)
        res["maps"] = tracer_maps(tracer.pid)
        rss_max = [proc_mem_kib(tracer.pid)["VmRSS"]]
        stop_sampling = threading.Event()

        def sample():
            while not stop_sampling.wait(0.2):
                try:
                    rss_max[0] = max(rss_max[0],
                                     proc_mem_kib(tracer.pid)["VmRSS"])
                except (OSError, KeyError):
                    return
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tc0, c0, w0 = proc_cpu_seconds(tracer.pid), cpu_of(pids), \
            time.monotonic()
        res["iterations"], res["seconds"] = drive(
            targets, args.seconds * 10 + 120)
        tc1, c1, w1 = proc_cpu_seconds(tracer.pid), cpu_of(pids), \
            time.monotonic()
        stop_sampling.set()
        sampler.join(timeout=5)
        mem = proc_mem_kib(tracer.pid)
        res.update(cpu_phase=tc1 - tc0, wall_phase=w1 - w0,
                   targets_cpu=c1 - c0, rss_max=rss_max[0],
                   rss_end=mem["VmRSS"], hwm=mem["VmHWM"])
        tracer.send_signal(signal.SIGINT)
        t_sig = time.monotonic()
        deadline = t_sig + 300
        while True:
            wpid, status, ru = os.wait4(tracer.pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("pytm-bpf still running 300 s after "
                                   "SIGINT")
            time.sleep(0.05)
        tracer.returncode = os.waitstatus_to_exitcode(status)
        res["report_seconds"] = time.monotonic() - t_sig
        res["cpu_total"] = ru.ru_utime + ru.ru_stime
        res["maxrss"] = ru.ru_maxrss
        tout.join(timeout=30)
        terr.join(timeout=30)
        res["rc"] = tracer.returncode
        res["stderr"] = terr.all
        res["figures"] = report_figures(tout.all, pids)
        res["pids"] = pids
        finish_targets(targets)
        return res
    finally:
        end(tracer)
        for t in targets:
            end(t.proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=5000,
                    help="workload iterations per second per process")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--python", default=None,
                    help="target interpreter (default: pyenv 3.11.7)")
    ap.add_argument("--pytm", default=os.environ.get("PYTM_BPF") or
                    os.path.join(ROOT, "pytm-bpf"))
    args = ap.parse_args()
    if args.python is None:
        args.python = pyenv_python("3.11.7")
    for path, what in ((args.python, "interpreter"), (args.pytm, "pytm-bpf")):
        if not os.access(path, os.X_OK):
            sys.exit("bench_procs: %s not found: %s" % (what, path))
    if os.geteuid() != 0:
        sys.exit("bench_procs: run as root (pytm-bpf needs BPF and ptrace)")

    print("bench_procs: %d targets (%s %s), %.0f s of steady allocation "
          "each, about %d iterations/s per target (a bytes and a str kept "
          "in a ring, temporaries freed); "
          "pytm-bpf --frames %d with -p x%d; %d CPUs"
          % (args.procs, args.python, os.path.basename(WORKLOAD),
             args.seconds, args.rate, args.frames, args.procs,
             os.cpu_count()))
    sys.stdout.flush()
    try:
        u_iter, u_sec, u_cpu = untraced_phase(args)
        r = traced_phase(args)
    except (Failed, RuntimeError, subprocess.SubprocessError, OSError) as e:
        print("bench_procs: FAILED: %s" % e)
        return 1

    figs = r["figures"]
    events = sum(f[0] or 0 for f in figs.values())
    lost = dict((p, f[1]) for p, f in figs.items() if f[1] != "none")
    missing = [p for p in r["pids"] if p not in figs]
    print("")
    print("targets untraced: %d iterations in %.2f s (%.0f/s in all), "
          "targets' CPU %.2f s" % (u_iter, u_sec, u_iter / u_sec, u_cpu))
    print("targets traced:   %d iterations in %.2f s (%.0f/s in all), "
          "targets' CPU %.2f s (%+.2f s: probes and BPF programs run in "
          "the targets)" % (r["iterations"], r["seconds"],
                            r["iterations"] / r["seconds"], r["targets_cpu"],
                            r["targets_cpu"] - u_cpu))
    print("")
    print("pytm-bpf attach:  %.2f s for %d processes (CPU %.2f s)"
          % (r["attach"], args.procs, r["cpu_attach"]))
    print("pytm-bpf memory:  VmRSS %s (largest sample), %s at the end of "
          "the phase; VmHWM %s; ru_maxrss at exit %s"
          % (fmt_kib(r["rss_max"]), fmt_kib(r["rss_end"]), fmt_kib(r["hwm"]),
             fmt_kib(r["maxrss"])))
    total_memlock = sum(m["bytes_memlock"] or 0 for m in r["maps"])
    print("BPF maps:         %d maps, memlock %s in all (%d B)"
          % (len(r["maps"]), fmt_bytes(total_memlock), total_memlock))
    for m in sorted(r["maps"], key=lambda m: -(m["bytes_memlock"] or 0)):
        print("  %-16s %-14s max_entries %-9s memlock %s"
              % (m["name"], m["type"], m["max_entries"],
                 fmt_bytes(m["bytes_memlock"] or 0)))
    print("pytm-bpf CPU:     %.2f s user+sys over the %.2f s allocation "
          "phase (%.1f%% of one CPU); %.2f s for its whole run (final "
          "reports took %.2f s wall)"
          % (r["cpu_phase"], r["wall_phase"],
             100.0 * r["cpu_phase"] / r["wall_phase"], r["cpu_total"],
             r["report_seconds"]))
    print("events:           %d allocator events in %d reports (%.1f per "
          "iteration); %.3f us of pytm-bpf CPU and %.3f us of extra target "
          "CPU per event"
          % (events, len(figs), events / float(max(r["iterations"], 1)),
             1e6 * r["cpu_total"] / max(events, 1),
             1e6 * (r["targets_cpu"] - u_cpu * r["iterations"] /
                    float(max(u_iter, 1))) / max(events, 1)))
    print("lost events:      %s" % (
        "none" if not lost else "; ".join("pid %d: %s" % kv
                                          for kv in sorted(lost.items()))))
    if missing:
        print("no report for pids: %s" % missing)
    if r["rc"] != 0:
        print("pytm-bpf exited %d; stderr: %s" % (r["rc"],
                                                  " | ".join(r["stderr"])))
    return 0 if r["rc"] == 0 and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
