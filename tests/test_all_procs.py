# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Several processes at once: `pytm-bpf --all` and `pytm-bpf -p A -p B ...`.

- test_all_versions_namespace_late_exit: `--all` over CPython 3.9, 3.13, a
  COPY of 3.11 (other path, other inodes) running in new mount and pid
  namespaces, and a 3.12 started after pytm-bpf; each report's [ Top N ]
  lines agree with in-process tracemalloc of the same deterministic workload
  (>= 99% of bytes and counts, line by line, exact sizes: --format json);
  the contained one's report shows the pid it has in its namespace (what it
  printed as os.getpid()); the one that ends while traced has its report,
  marked "exited".
- test_twenty_processes_no_lost_events: `-p` x20 under a steady allocation
  workload, in the text form (headers, host summary): every report says
  "Lost events: none"; the tracer's memory (VmRSS, VmHWM, BPF map memlock)
  and CPU are printed.
- test_exit_releases_map_entries: with `-p A -p B`, A's entries in the
  `blocks` (and `codes`, `procs`) maps of the running pytm-bpf go when A
  exits, and B's stay.
- test_full_map_isolated: `--max-blocks 1024`; one process fills the map, the
  other's report is still right and only the first one reports lost events.
- test_maps_grow: `--max-blocks 1048576` (maps of 131,072 entries at first)
  with the BPF walk: a process and the forked child of another, each with
  600,000 live blocks, lose nothing; their maps grow (said under -v) and
  both reports agree with tracemalloc.

`--all` sees every CPython on the host, other users' included: assertions
only look at the sections of the pids started here. Every process is started
through conftest's procs fixture (or registered with it) and ended by pid.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import time

import pytest

from conftest import (ROOT, T_ATTACH, T_CMD, T_STOP, T_WORK, THRESHOLD,
                      WORKLOADS, _show, pyenv, ready_pid, run_cmd,
                      start_namespaced)

# The interpreters of the multi-version test (a missing one fails it).
V39, V311, V312, V313 = "3.9.18", "3.11.7", "3.12.1", "3.13.0"

GT = "all_gt.py"
BLOCKS = "all_blocks.py"
STEADY = "all_steady.py"
TOP = 40                    # report lines: covers every line of the workloads

# Stopping a multi-process run detaches every probe first; that takes
# seconds per process on this kernel (see the final report of the suite).
T_STOP_MANY = 600


def _load_bench():
    path = os.path.join(ROOT, "tools", "bench_procs.py")
    spec = importlib.util.spec_from_file_location("bench_procs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()       # /proc and bpftool figures, shared with the bench


def need(path):
    if not os.access(path, os.X_OK):
        pytest.fail("interpreter missing: %s" % path)
    return path


def pyenv_prefix(version):
    return os.path.dirname(os.path.dirname(pyenv(version)))


# --------------------------------------------------------------------------
# Reports.

HEADER = re.compile(r"^== pid (\d+)(?: \(pid (\d+) in its namespace\))?"
                    r"(?: container (\S+))?, CPython ([^:]+): (.*)$")
EXITED = re.compile(r"^Process (\d+) exited\.$")
STAT = re.compile(r"^(.*):(\d+): size=(-?[\d.]+ (?:B|KiB|MiB|GiB|TiB)), "
                  r"count=(\d+), average=")
TRACED = re.compile(r"^Traced memory: .*\((-?\d+) B, (-?\d+) B\); "
                    r"(\d+) allocator events$")


class Section(object):
    """One process's report: identity, statistics, footer figures."""

    def __init__(self, pid, nspid, container, version, cmdline, exited):
        self.pid, self.nspid, self.container = pid, nspid, container
        self.version, self.cmdline, self.exited = version, cmdline, exited
        self.stats = []         # (filename, lineno, size, count)
        self.traced = None      # (current, peak, events)
        self.recorder = None    # JSON: the report's "recorder" member
        self.lost = None        # "none", or "reason=N, ..."
        self.lines = []         # what was parsed, for messages
        self.header = ""        # text: the "== pid" line; JSON: rebuilt

    @classmethod
    def from_text(cls, m, exited):
        sec = cls(int(m.group(1)), int(m.group(2)) if m.group(2) else
                  int(m.group(1)), m.group(3), m.group(4), m.group(5),
                  exited)
        sec.header = m.group(0)
        sec.lines = [m.group(0)]
        return sec

    @classmethod
    def from_json(cls, doc, line):
        p = doc["process"]
        sec = cls(p["pid"], p["nspid"], p["container"], p["python"],
                  p["cmdline"], doc["exited"])
        sec.header = "== pid %d (nspid %d), CPython %s: %s" % (
            sec.pid, sec.nspid, sec.version, sec.cmdline)
        sec.lines = [line]
        for st in doc["statistics"]:
            fr = st["traceback"][-1]
            sec.stats.append((fr["filename"], fr["lineno"], st["size"],
                              st["count"]))
        t = doc["traced"]
        sec.traced = (t["current"], t["peak"], t["events"])
        sec.recorder = doc["recorder"]
        lost = dict((k, v) for k, v in doc["lost"].items()
                    if v and k != "no_thread_state")
        sec.lost = ", ".join("%s=%d" % kv for kv in sorted(lost.items())) \
            or "none"
        return sec

    def text(self):
        return "\n".join(self.lines)


def parse_reports(out):
    """({pid: [Section, ...]}, host summary rows {pid: (nspid, version)})
    from pytm-bpf's stdout in multi-process mode, --format json or text."""
    text = out.decode("utf-8", "replace")
    if text.startswith("{"):
        return parse_json_reports(text)
    sections, summary = {}, {}
    cur, exited_pid, in_summary = None, None, False
    for line in text.split("\n"):
        if in_summary:
            cols = line.split(None, 6)
            if len(cols) >= 6 and cols[0].isdigit():
                summary[int(cols[0])] = (int(cols[1]), cols[3])
            continue
        if line.startswith("[ Host summary:"):
            in_summary, cur = True, None
            continue
        m = EXITED.match(line)
        if m:
            exited_pid, cur = int(m.group(1)), None
            continue
        m = HEADER.match(line)
        if m:
            cur = Section.from_text(m, exited_pid == int(m.group(1)))
            exited_pid = None
            sections.setdefault(cur.pid, []).append(cur)
            continue
        if cur is None:
            continue
        cur.lines.append(line)
        m = STAT.match(line)
        if m:
            cur.stats.append((m.group(1), int(m.group(2)), m.group(3),
                              int(m.group(4))))
            continue
        m = TRACED.match(line)
        if m:
            cur.traced = tuple(int(g) for g in m.groups())
            continue
        if line.startswith("Lost events:"):
            cur.lost = line[len("Lost events:"):].strip()
            cur = None
    return sections, summary


def parse_json_reports(text):
    """The same from --format json: one document per line, each checked."""
    sections, summary = {}, {}
    for line in text.splitlines():
        doc = json.loads(line)
        assert doc["schema"] == 1, line
        if doc["type"] == "summary":
            for row in doc["processes"]:
                summary[row["pid"]] = (row["nspid"], row["python"])
            continue
        assert doc["type"] == "report", line
        sec = Section.from_json(doc, line)
        sections.setdefault(sec.pid, []).append(sec)
    return sections, summary


def one_section(sections, pid, out, err):
    got = sections.get(pid, [])
    assert len(got) == 1, "expected one report for pid %d, got %d\n" \
        "stdout: %s\nstderr: %s" % (pid, len(got), _show(out, 20000),
                                    _show(err))
    sec = got[0]
    assert sec.lost is not None, "report of pid %d is cut short:\n%s" % (
        pid, sec.text())
    return sec


def ref_stats(python, dump, source):
    _, out, _ = run_cmd([python, os.path.join(WORKLOADS, GT), "--ref-stats",
                         dump, source], timeout=T_CMD)
    return dict((lineno, (size, count))
                for _, lineno, size, count in json.loads(out.decode()))


def top_agreement(sec, ref, source):
    """Agreement of the report's lines for SOURCE (--format json: exact
    sizes) with tracemalloc's statistics('lineno') of the reference: sum of
    min / max of totals, for bytes and counts."""
    ours = {}
    for filename, lineno, size, count in sec.stats:
        assert isinstance(size, int), "check_top needs a --format json report"
        if filename == source:
            ours[lineno] = (size, count)
    total_ours = sum(v[0] for v in ours.values())
    total_ref = sum(v[0] for v in ref.values())
    count_ours = sum(v[1] for v in ours.values())
    count_ref = sum(v[1] for v in ref.values())
    min_size = min_count = 0
    rows = []
    for lineno in sorted(set(ours) | set(ref)):
        so, co = ours.get(lineno, (0, 0))
        sr, cr = ref.get(lineno, (0, 0))
        min_size += min(so, sr)
        min_count += min(co, cr)
        rows.append("line %d: report size=%d count=%d | tracemalloc size=%d "
                    "count=%d" % (lineno, so, co, sr, cr))
    fig = {
        "bytes": min_size / float(max(total_ours, total_ref) or 1),
        "counts": min_count / float(max(count_ours, count_ref) or 1),
        "size_ours": total_ours, "size_ref": total_ref,
        "count_ours": count_ours, "count_ref": count_ref,
        "rows": rows,
    }
    return fig


def check_top(label, sec, ref, source):
    fig = top_agreement(sec, ref, source)
    summary = ("%s (pid %d, CPython %s): bytes %.5f (report %d B, "
               "tracemalloc %d B), counts %.5f (report %d, tracemalloc %d)"
               % (label, sec.pid, sec.version, fig["bytes"],
                  fig["size_ours"], fig["size_ref"], fig["counts"],
                  fig["count_ours"], fig["count_ref"]))
    print(summary)
    detail = "%s\n  %s\nreport:\n%s" % (summary, "\n  ".join(fig["rows"]),
                                        sec.text())
    assert fig["size_ref"] > 0, detail
    assert fig["bytes"] >= THRESHOLD, detail
    assert fig["counts"] >= THRESHOLD, detail
    return fig


# --------------------------------------------------------------------------
# Waiting on pytm-bpf's output.

def wait_text(reader, pattern, timeout, what, tracer):
    """Wait until the reader's whole text matches the regex PATTERN."""
    rx = re.compile(pattern.encode(), re.M)
    deadline = time.monotonic() + timeout
    while True:
        m = rx.search(reader.text())
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(
                "timeout (%ss) waiting for %s from %s\nstdout: %s\nstderr: %s"
                % (timeout, what, " ".join(tracer.cmd),
                   _show(tracer.out.text(), 20000), _show(tracer.err.text())))
        if tracer.proc.poll() is not None:
            time.sleep(0.5)     # last output still in the pipe
            if not rx.search(reader.text()):
                raise AssertionError(
                    "pytm-bpf exited (rc=%s) before %s\nstdout: %s\n"
                    "stderr: %s" % (tracer.proc.returncode, what,
                                    _show(tracer.out.text(), 20000),
                                    _show(tracer.err.text())))
        time.sleep(0.1)


def wait_exit_report(tracer, pid, timeout=T_STOP):
    """The whole report of a process that exited: text or JSON."""
    if "json" in tracer.cmd:
        return wait_text(tracer.out, r'^\{"schema":1,"type":"report",[^\n]*'
                         r'"exited":true,"process":\{"pid":%d,[^\n]*\n' % pid,
                         timeout, "the exit report of pid %d" % pid, tracer)
    return wait_text(tracer.out, r"^Process %d exited\.\n== pid %d[^\n]*\n"
                     r"(?:[^\n]*\n)*?Lost events:[^\n]*\n" % (pid, pid),
                     timeout, "the exit report of pid %d" % pid, tracer)


def startup_pids(line):
    m = re.search(r"\(pids ([\d, ]+)\)", line)
    return set(int(p) for p in m.group(1).split(", ")) if m else set()


def test_all_recorder(procs, tmp_path):
    """--all --recorder: every process found at start (Debian's 3.11, 3.13)
    and one started later (3.12, through its exec) records in its own
    ring; each report agrees with its tracemalloc, and says how much went
    through the ring."""
    py311, py312, py313 = "/usr/bin/python3.11", need(pyenv(V312)), need(pyenv(V313))
    refs = {
        "3.11": reference(procs, py311, GT, tmp_path, "r3.11"),
        "3.13": reference(procs, py313, GT, tmp_path, "r3.13"),
        "late": reference(procs, py312, GT, tmp_path, "rlate"),
    }
    a = procs.target(py311, GT)
    c = procs.target(py313, GT)
    assert ready_pid(a) == a.pid and ready_pid(c) == c.pid
    tracer = procs.tracer(["--all", "--recorder", "--top", TOP, "-v",
                           "--format", "json"])
    line = tracer.wait_tracing(timeout=T_ATTACH * 3)
    first = startup_pids(line)
    assert a.pid in first and c.pid in first, (line, _show(tracer.err.text()))
    d = procs.target(py312, GT)
    assert ready_pid(d) == d.pid
    wait_text(tracer.err, r"^pytm-bpf: tracing new process %d$" % d.pid,
              T_ATTACH, "'tracing new process %d'" % d.pid, tracer)
    for t in (a, c, d):
        t.send("go")
    for t in (a, c, d):
        t.expect("done", timeout=T_WORK)
    rc, out, err = tracer.stop(signal.SIGINT, timeout=T_STOP_MANY)
    for t in (a, c, d):
        t.send("exit")
    for t in (a, c, d):
        assert t.wait(timeout=T_WORK) == 0, _show(t.err.text())
    assert rc == 0, "rc=%d\nstderr: %s" % (rc, _show(err))
    sections, _ = parse_reports(out)
    text = out.decode("utf-8", "replace")
    for label, t, ref in (("3.11", a, refs["3.11"]), ("3.13", c, refs["3.13"]),
                          ("3.12 started after pytm-bpf", d, refs["late"])):
        sec = one_section(sections, t.pid, out, err)
        check_top("--all --recorder, " + label, sec, ref,
                  os.path.join(WORKLOADS, GT))
        # Its own ring: the page's setup says so, and its report.
        assert ("process %d: recorder: " % t.pid).encode() in err, _show(err)
        rec = sec.recorder
        assert rec and rec["events"] > 10000, sec.text()
        assert rec["bpf_allocations"] < rec["events"] / 4, rec


def skipped(err, pid):
    return re.findall(r"^pytm-bpf: skipping pid %d: .*$" % pid,
                      err.decode("utf-8", "replace"), re.M)


# --------------------------------------------------------------------------
# Processes (ready_pid and start_namespaced are in conftest).

def kill_pid(pid):
    """SIGKILL one process this test started, by pid (a namespace's pid 1
    ignores SIGTERM from outside: it installs no handler for it)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def mapped_files(pid, needle):
    """(path, inode) of the mappings of PID whose path contains NEEDLE."""
    found = set()
    with open("/proc/%d/maps" % pid) as fh:
        for line in fh:
            cols = line.split()
            if len(cols) >= 6 and needle in cols[5]:
                found.add((cols[5], int(cols[4])))
    return found


def reference(procs, python, workload, tmp_path, label, args=(), env=None,
              source=None):
    """Run WORKLOAD under in-process tracemalloc (1 frame): its per-line
    statistics for SOURCE (default: the workload file)."""
    dump = str(tmp_path / ("ref-%s.pickle" % label))
    t = procs.target(python, workload, list(args) +
                     ["--tracemalloc", 1, "--dump", dump], env=env)
    ready_pid(t)
    t.send("go")
    t.expect("done", timeout=T_WORK)
    t.send("exit")
    rc = t.wait(timeout=T_WORK)
    assert rc == 0, "reference run %s failed: %s" % (label,
                                                     _show(t.err.text()))
    return ref_stats(python, dump,
                     source or os.path.join(WORKLOADS, workload))


# --------------------------------------------------------------------------
# BPF maps of a running pytm-bpf.

def tracer_map_ids(tracer_pid):
    """{name: id} of the BPF maps the pytm-bpf process holds (ids from its
    /proc/PID/fdinfo, names from bpftool)."""
    ids = {}
    for m in bench.tracer_maps(tracer_pid):
        assert m["name"] not in ids, "two maps named %s: %s" % (
            m["name"], bench.tracer_maps(tracer_pid))
        ids[m["name"]] = m["id"]
    for name in ("blocks", "codes", "procs"):
        assert name in ids, "pytm-bpf %d holds no map %r: %s" % (
            tracer_pid, name, ids)
    return ids


def dump_map(map_id):
    _, out, _ = run_cmd(["bpftool", "-j", "map", "dump", "id", str(map_id)],
                        timeout=T_CMD * 3)
    return json.loads(out.decode() or "[]")


def entries_by_pid(map_id, name=None):
    """{pid: entries} of a map whose keys start with a u32 pid. The blocks
    map holds one inner map per process (pid -> map id): count those."""
    counts = {}
    for e in dump_map(map_id):
        key = bytes(int(b, 16) for b in e["key"][:4])
        pid = int.from_bytes(key, "little")
        if name == "blocks":
            inner = int.from_bytes(bytes(int(b, 16) for b in e["value"][:4]),
                                   "little")
            counts[pid] = counts.get(pid, 0) + len(dump_map(inner))
        else:
            counts[pid] = counts.get(pid, 0) + 1
    return counts


# --------------------------------------------------------------------------

def test_all_versions_namespace_late_exit(procs, tmp_path):
    """--all: 3.9, 3.13, a namespaced copy of 3.11, a late 3.12; ground
    truth per process; namespaced pid; exit report."""
    py39, py312, py313 = need(pyenv(V39)), need(pyenv(V312)), \
        need(pyenv(V313))
    need(pyenv(V311))
    copy_root = str(tmp_path / "py311")
    extra_pids = []
    try:
        t0 = time.monotonic()
        run_cmd(["cp", "-a", pyenv_prefix(V311), copy_root], timeout=900)
        print("\ncopied %s to %s in %.1f s" % (pyenv_prefix(V311), copy_root,
                                               time.monotonic() - t0))
        py_copy = os.path.join(copy_root, "bin", "python3.11")
        # The pyenv build's RUNPATH names the original lib/: make the copy
        # load its own libpython.
        copy_env = {"LD_LIBRARY_PATH": os.path.join(copy_root, "lib")}
        gt = os.path.join(WORKLOADS, GT)

        refs = {
            "3.9": reference(procs, py39, GT, tmp_path, "3.9"),
            "ns": reference(procs, py_copy, GT, tmp_path, "ns",
                            env=copy_env),
            "3.13": reference(procs, py313, GT, tmp_path, "3.13"),
            "late": reference(procs, py312, GT, tmp_path, "late"),
        }

        # A ends while traced (os._exit: its live blocks at the end are
        # those at "done"); B runs the copy in its own namespaces.
        a = procs.target(py39, GT, ["--exit-mode", "_exit"])
        b, b_nspid, b_pid = start_namespaced(procs, py_copy, GT, [],
                                             copy_env)
        extra_pids.append(b_pid)
        c = procs.target(py313, GT)
        assert ready_pid(a) == a.pid
        assert ready_pid(c) == c.pid
        print("pids: 3.9 %d, namespaced copy of 3.11 %d (%d inside), "
              "3.13 %d" % (a.pid, b_pid, b_nspid, c.pid))

        # The namespaced process is what the test says it is.
        assert os.readlink("/proc/%d/ns/pid" % b_pid) != \
            os.readlink("/proc/self/ns/pid")
        assert os.readlink("/proc/%d/ns/mnt" % b_pid) != \
            os.readlink("/proc/self/ns/mnt")
        assert b_nspid != b_pid
        libs = mapped_files(b_pid, "libpython3.11")
        assert libs and all(p.startswith(copy_root) for p, _ in libs), libs
        orig_lib = os.path.join(pyenv_prefix(V311), "lib",
                                "libpython3.11.so.1.0")
        assert os.stat(orig_lib).st_ino not in [i for _, i in libs], libs

        tracer = procs.tracer(["--all", "--sample", "0", "--top", TOP,
                               "--format", "json"])
        line = tracer.wait_tracing(timeout=T_ATTACH * 3)
        print("pytm-bpf --all up in %.2f s: %s" % (tracer.attach_seconds,
                                                   line))
        first = startup_pids(line)
        for pid in (a.pid, b_pid, c.pid):
            assert pid in first, "pid %d not traced at start: %s\n" \
                "stderr: %s" % (pid, line, _show(tracer.err.text()))

        # D starts after pytm-bpf: it must be picked up through exec.
        d = procs.target(py312, GT)
        assert ready_pid(d) == d.pid
        t_late = time.monotonic()
        wait_text(tracer.err, r"^pytm-bpf: tracing new process %d$" % d.pid,
                  T_ATTACH, "'tracing new process %d'" % d.pid, tracer)
        print("late 3.12 pid %d traced %.2f s after its 'ready'"
              % (d.pid, time.monotonic() - t_late))

        for t in (a, b, c, d):
            t.send("go")
        for t in (a, b, c, d):
            t.expect("done", timeout=T_WORK)

        # A ends while traced.
        a.send("exit")
        assert a.wait(timeout=T_WORK) == 0
        wait_exit_report(tracer, a.pid)

        t_stop = time.monotonic()
        rc, out, err = tracer.stop(signal.SIGINT, timeout=T_STOP_MANY)
        print("pytm-bpf --all stopped %.1f s after SIGINT, rc=%d"
              % (time.monotonic() - t_stop, rc))
        for t in (b, c, d):
            t.send("exit")
        for t in (b, c, d):
            assert t.wait(timeout=T_WORK) == 0, _show(t.err.text())
        assert rc == 0, "rc=%d\nstderr: %s" % (rc, _show(err))
        sections, summary = parse_reports(out)

        print("pytm-bpf stderr:\n%s" % _show(err, 8000))
        for pid in (a.pid, b_pid, c.pid, d.pid):
            assert not skipped(err, pid), skipped(err, pid)
        sa = one_section(sections, a.pid, out, err)
        sb = one_section(sections, b_pid, out, err)
        sc = one_section(sections, c.pid, out, err)
        sd = one_section(sections, d.pid, out, err)
        for sec in (sa, sb, sc, sd):
            print("%s\n" % sec.text())

        # Every check below runs; the failures are reported together.
        problems = []

        def check(ok, msg):
            if not ok:
                problems.append(msg)

        # Headers.
        for sec, version, path in ((sa, V39, py39), (sb, V311, py_copy),
                                   (sc, V313, py313), (sd, V312, py312)):
            check(sec.version == version,
                  "pid %d: header says CPython %s, the interpreter is %s: %s"
                  % (sec.pid, sec.version, version, sec.header))
            check(sec.cmdline.startswith(path + " ") and gt in sec.cmdline,
                  "pid %d: header's command line: %s" % (sec.pid,
                                                          sec.header))
        check(sb.nspid == b_nspid,
              "namespaced pid: the report says %d, the process says %d: %s"
              % (sb.nspid, b_nspid, sb.header))
        for sec in (sa, sc, sd):
            check(sec.nspid == sec.pid, "pid %d: namespaced pid %d in %s"
                  % (sec.pid, sec.nspid, sec.header))

        # The exit.
        check(sa.exited, "no 'Process %d exited.' before its report:\n%s"
              % (a.pid, _show(out, 20000)))
        for sec in (sb, sc, sd):
            check(not sec.exited, "pid %d reported as exited" % sec.pid)
        check(a.pid not in summary, "exited pid %d in the host summary: %s"
              % (a.pid, summary.get(a.pid)))

        # Ground truth, per process.
        for label, sec, ref in (
                ("3.9, exited while traced", sa, refs["3.9"]),
                ("3.11 copy in namespaces", sb, refs["ns"]),
                ("3.13", sc, refs["3.13"]),
                ("3.12 started after pytm-bpf", sd, refs["late"])):
            try:
                check_top(label, sec, ref, gt)
            except AssertionError as e:
                problems.append(str(e))

        # The host summary lists the live ones, NSPID included.
        for sec in (sb, sc, sd):
            row = summary.get(sec.pid)
            check(row and row == (sec.nspid, sec.version),
                  "pid %d: host summary row %r (nspid %d, CPython %s)"
                  % (sec.pid, row, sec.nspid, sec.version))
        for sec in (sa, sb, sc, sd):
            print("pid %d: Lost events: %s" % (sec.pid, sec.lost))
        assert not problems, "\n".join(problems + [
            "pytm-bpf stderr:\n" + _show(err, 8000)])
    finally:
        for pid in extra_pids:
            kill_pid(pid)
        procs.end_all()
        shutil.rmtree(copy_root, ignore_errors=True)


def test_twenty_processes_no_lost_events(procs):
    """-p x20 (CPython 3.9, 3.11, 3.12, 3.13 x5), steady allocation: no
    lost events in any report; the tracer's memory and CPU."""
    pythons = [need(pyenv(v)) for v in (V39, V311, V312, V313)]
    ring, seconds, rate = 2000, 6, 5000
    src = os.path.join(WORKLOADS, STEADY)
    with open(src) as fh:
        lines = fh.read().split("\n")
    bytes_line = [i + 1 for i, s in enumerate(lines) if "# BYTES_LINE" in s]
    str_line = [i + 1 for i, s in enumerate(lines) if "# STR_LINE" in s]
    assert len(bytes_line) == 1 and len(str_line) == 1

    targets = [procs.target(pythons[i % 4], STEADY,
                            ["--seconds", seconds, "--rate", rate,
                             "--ring", ring])
               for i in range(20)]
    for t in targets:
        assert ready_pid(t) == t.pid
    args = ["--top", 10]
    for t in targets:
        args += ["-p", t.pid]
    tracer = procs.tracer(args)
    line = tracer.wait_tracing(timeout=T_ATTACH * 3)
    print("\npytm-bpf up in %.2f s: %s" % (tracer.attach_seconds, line))
    assert startup_pids(line) == set(t.pid for t in targets), line

    cpu0, w0 = bench.proc_cpu_seconds(tracer.pid), time.monotonic()
    for t in targets:
        t.send("go")
    iterations = 0
    for t in targets:
        iterations += int(t.expect("stats", timeout=T_WORK).split()[1])
        t.expect("done", timeout=T_WORK)
    cpu1, w1 = bench.proc_cpu_seconds(tracer.pid), time.monotonic()
    mem = bench.proc_mem_kib(tracer.pid)
    maps = bench.tracer_maps(tracer.pid)
    memlock = sum(m["bytes_memlock"] or 0 for m in maps)

    t_stop = time.monotonic()
    rc, out, err = tracer.stop(signal.SIGINT, timeout=T_STOP_MANY)
    stop_seconds = time.monotonic() - t_stop
    for t in targets:
        t.send("exit")
    for t in targets:
        assert t.wait(timeout=T_WORK) == 0, _show(t.err.text())

    print("20 processes: %d iterations in %.1f s (%.0f/s); pytm-bpf CPU "
          "%.2f s over the phase (%.1f%% of one CPU); VmRSS %s, VmHWM %s; "
          "BPF maps memlock %s (%s); stopped %.1f s after SIGINT"
          % (iterations, w1 - w0, iterations / (w1 - w0), cpu1 - cpu0,
             100.0 * (cpu1 - cpu0) / (w1 - w0), bench.fmt_kib(mem["VmRSS"]),
             bench.fmt_kib(mem["VmHWM"]), bench.fmt_bytes(memlock),
             ", ".join("%s %s" % (m["name"],
                                  bench.fmt_bytes(m["bytes_memlock"] or 0))
                       for m in maps), stop_seconds))
    assert rc == 0, "rc=%d\nstderr: %s" % (rc, _show(err))
    sections, summary = parse_reports(out)
    events = 0
    problems = []
    for t in targets:
        sec = one_section(sections, t.pid, out, err)
        events += sec.traced[2] if sec.traced else 0
        by_line = dict((ln, (st, n)) for f, ln, st, n in sec.stats
                       if f == src)
        if sec.lost != "none":
            problems.append("pid %d (CPython %s): Lost events: %s"
                            % (t.pid, sec.version, sec.lost))
        for ln in (bytes_line[0], str_line[0]):
            if by_line.get(ln, (None, 0))[1] != ring:
                problems.append("pid %d (CPython %s): line %d has %r, "
                                "expected count=%d\n%s"
                                % (t.pid, sec.version, ln, by_line.get(ln),
                                   ring, sec.text()))
        assert t.pid in summary, "pid %d not in the host summary" % t.pid
    print("%d allocator events in 20 reports; %d with lost events"
          % (events, sum(1 for p in problems if "Lost events" in p)))
    assert not problems, "\n".join(problems)


def test_exit_releases_map_entries(procs):
    """-p A -p B: A's entries in the blocks, codes and procs maps go when A
    exits while traced; B's stay."""
    python = need(pyenv(V311))
    n_a, n_b = 50000, 3000
    src = os.path.join(WORKLOADS, BLOCKS)
    a = procs.target(python, BLOCKS, ["--blocks", n_a, "--exit-mode",
                                      "_exit"])
    b = procs.target(python, BLOCKS, ["--blocks", n_b])
    assert ready_pid(a) == a.pid and ready_pid(b) == b.pid
    # The BPF walk: its live blocks are in the maps (the recorder's are not).
    tracer = procs.tracer(["-p", a.pid, "-p", b.pid, "--bpf-walk"])
    tracer.wait_tracing()
    ids = tracer_map_ids(tracer.pid)
    print("\npytm-bpf %d maps: %s" % (tracer.pid, ids))
    for t in (a, b):
        t.send("go")
        t.expect("done", timeout=T_WORK)

    before = {name: entries_by_pid(ids[name], name)
              for name in ("blocks", "codes", "procs")}
    print("before A exits: blocks A=%d B=%d, codes A=%d B=%d, procs A=%d "
          "B=%d" % tuple(before[n].get(p, 0) for n in
                         ("blocks", "codes", "procs") for p in (a.pid, b.pid)))
    assert before["blocks"].get(a.pid, 0) >= n_a, before["blocks"]
    assert before["blocks"].get(b.pid, 0) >= n_b, before["blocks"]
    assert before["procs"].get(a.pid) == 1, before["procs"]

    a.send("exit")              # os._exit: no frees at finalization
    assert a.wait(timeout=T_WORK) == 0
    wait_exit_report(tracer, a.pid)
    deadline = time.monotonic() + 30
    while True:
        after = {name: entries_by_pid(ids[name], name)
                 for name in ("blocks", "codes", "procs")}
        left = sum(after[n].get(a.pid, 0) for n in after)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print("after A exited: blocks A=%d B=%d, codes A=%d B=%d, procs A=%d "
          "B=%d" % tuple(after[n].get(p, 0) for n in
                         ("blocks", "codes", "procs") for p in (a.pid, b.pid)))
    assert tracer.proc.poll() is None, "pytm-bpf ended with A: %s" % (
        _show(tracer.err.text()))

    rc, out, err = tracer.stop(signal.SIGINT, timeout=T_STOP_MANY)
    b.send("exit")
    assert b.wait(timeout=T_WORK) == 0
    assert rc == 0, "rc=%d\nstderr: %s" % (rc, _show(err))

    for name in ("blocks", "codes", "procs"):
        assert after[name].get(a.pid, 0) == 0, \
            "%d entries of exited pid %d left in %s" % (
                after[name][a.pid], a.pid, name)
        assert after[name].get(b.pid, 0) == before[name].get(b.pid, 0), \
            "pid %d's %s entries changed: %d -> %d" % (
                b.pid, name, before[name].get(b.pid, 0),
                after[name].get(b.pid, 0))

    sections, _ = parse_reports(out)
    sa = one_section(sections, a.pid, out, err)
    assert sa.exited, _show(out, 20000)
    counts = dict((ln, n) for f, ln, _, n in sa.stats if f == src)
    assert max(counts.values() or [0]) >= n_a, sa.text()
    sb = one_section(sections, b.pid, out, err)
    assert not sb.exited
    assert sa.lost == "none" and sb.lost == "none", (sa.text(), sb.text())


def test_full_map_isolated(procs, tmp_path):
    """--max-blocks 1024: BIG fills the live-block map, then SMALL
    allocates: SMALL's report is still right and only BIG reports lost
    events."""
    python = need(pyenv(V311))
    src = os.path.join(WORKLOADS, BLOCKS)
    n_big, n_small = 5000, 200
    ref = reference(procs, python, BLOCKS, tmp_path, "small",
                    args=["--blocks", n_small])
    big = procs.target(python, BLOCKS, ["--blocks", n_big])
    small = procs.target(python, BLOCKS, ["--blocks", n_small])
    assert ready_pid(big) == big.pid and ready_pid(small) == small.pid
    tracer = procs.tracer(["--format", "json", "-p", big.pid, "-p",
                           small.pid, "--max-blocks", 1024, "--top", TOP,
                           "--bpf-walk"])
    tracer.wait_tracing()
    big.send("go")
    big.expect("done", timeout=T_WORK)
    small.send("go")
    small.expect("done", timeout=T_WORK)
    rc, out, err = tracer.stop(signal.SIGINT, timeout=T_STOP_MANY)
    for t in (big, small):
        t.send("exit")
        assert t.wait(timeout=T_WORK) == 0
    assert rc == 0, "rc=%d\nstderr: %s" % (rc, _show(err))
    sections, _ = parse_reports(out)
    sbig = one_section(sections, big.pid, out, err)
    ssmall = one_section(sections, small.pid, out, err)
    print("\n%s\n\n%s" % (sbig.text(), ssmall.text()))
    assert "blocks_full=" in sbig.lost, sbig.text()
    assert ssmall.lost == "none", \
        "the small process lost events to the big one's full map:\n%s" % (
            ssmall.text())
    check_top("small process next to a full map", ssmall, ref, src)


GROW_BLOCKS = 600000


def test_maps_grow(procs, tmp_path):
    """The live-block maps grow as they fill (generations, each twice the
    last, within --max-blocks): 600,000 live blocks in maps that start at
    131,072 entries, in a process of its own and in a followed child, whose
    blocks go into its parent's maps (they grow for both)."""
    python = need(pyenv(V311))
    src = os.path.join(WORKLOADS, BLOCKS)
    ref = reference(procs, python, BLOCKS, tmp_path, "grow",
                    args=["--blocks", GROW_BLOCKS])
    alone = procs.target(python, BLOCKS, ["--blocks", GROW_BLOCKS])
    parent = procs.target(python, BLOCKS, ["--blocks", GROW_BLOCKS, "--fork"])
    assert ready_pid(alone) == alone.pid and ready_pid(parent) == parent.pid
    tracer = procs.tracer(["--format", "json", "-v", "-p", alone.pid, "-p", parent.pid,
                           "--max-blocks", 1048576, "--top", TOP, "--bpf-walk"])
    tracer.wait_tracing()
    alone.send("go")
    parent.send("go")
    child = int(parent.expect("child ", timeout=T_WORK).split()[1])
    alone.expect("done", timeout=T_WORK)
    parent.expect("done", timeout=T_WORK)
    rc, out, err = tracer.stop(signal.SIGINT, timeout=T_STOP_MANY)
    for t in (alone, parent):
        t.send("exit")
        assert t.wait(timeout=T_WORK) == 0
    assert rc == 0, "rc=%d\nstderr: %s" % (rc, _show(err))
    sections, _ = parse_reports(out)
    grown = {}
    for m in re.finditer(rb"process (\d+): live-block map generation (\d+): (\d+) entries",
                         err):
        grown.setdefault(int(m.group(1)), []).append((int(m.group(2)), int(m.group(3))))
    print("generations made: %s" % grown)
    # 131072, then 262144 and 524288: 917,504 entries for the 600,000 blocks.
    assert [g for g, _ in grown.get(alone.pid, [])] == [2, 3], (grown, _show(err))
    assert sum(n for _, n in grown[alone.pid]) == 262144 + 524288, grown
    # The child's blocks went into its parent's maps: made once, for both.
    assert [g for g, _ in grown.get(parent.pid, [])] == [2, 3], (grown, _show(err))
    assert child not in grown, grown
    for pid, label in ((alone.pid, "a process of its own"), (child, "a forked child")):
        sec = one_section(sections, pid, out, err)
        print("\n%s" % sec.text())
        assert sec.lost == "none", sec.text()
        check_top("%s, maps grown" % label, sec, ref, src)


def test_exit_report_while_tracer_busy(procs, tmp_path):
    """-p A -p B: B exits; while pytm-bpf reports B and detaches B's probes,
    A runs its workload and exits at once (os._exit). A's exit report must
    still be right: its code objects have to be read while A lives."""
    python = need(pyenv(V311))
    gt = os.path.join(WORKLOADS, GT)
    ref = reference(procs, python, GT, tmp_path, "busy")
    a = procs.target(python, GT, ["--exit-mode", "_exit"])
    b = procs.target(python, BLOCKS, ["--blocks", 10])
    assert ready_pid(a) == a.pid and ready_pid(b) == b.pid
    tracer = procs.tracer(["-p", a.pid, "-p", b.pid, "--top", TOP,
                           "--format", "json"])
    tracer.wait_tracing()
    b.send("go")
    b.expect("done", timeout=T_WORK)
    b.send("exit")
    assert b.wait(timeout=T_WORK) == 0
    wait_exit_report(tracer, b.pid)
    t0 = time.monotonic()
    a.send("go")
    a.expect("done", timeout=T_WORK)
    a.send("exit")
    assert a.wait(timeout=T_WORK) == 0
    print("\nA ran and exited %.2f s after pytm-bpf began B's exit report"
          % (time.monotonic() - t0))
    wait_exit_report(tracer, a.pid, timeout=T_STOP_MANY)
    rc, out, err = tracer.finish(timeout=T_STOP_MANY)   # all gone: it ends
    assert rc == 0, "rc=%d\nstderr: %s" % (rc, _show(err))
    sections, _ = parse_reports(out)
    sa = one_section(sections, a.pid, out, err)
    print(sa.text())
    assert sa.exited, _show(out, 20000)
    check_top("exited while pytm-bpf handled another exit", sa, ref, gt)
    assert sa.lost == "none", sa.text()
