# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a process held when it ended (issue: nothing missed at the end).

- test_finalization_snapshot (every interpreter): a script builds 4 MB of
  strings and returns; the interpreter's finalization frees them. The
  snapshot pytm-bpf writes (-o) is the live set when finalization began:
  its line equals tracemalloc's own snapshot taken by an atexit hook in a
  reference run (same size, same count); the report says so and that the
  process exited with status 0; the counters still run to the end.
  The same with --recorder.
- test_end_without_finalization: os._exit(3) and SIGKILL: the live set at
  death, reported with the status or the signal.
- test_oom_kill: in a memory cgroup with a limit (made by the test), the
  OOM killer's SIGKILL is named as such.
"""

import json
import os
import signal
import time

import pytest

from conftest import (INTERPRETERS, T_START, T_STOP, T_WORK, WORKLOADS,
                      Target, _show, run_cmd)

WL = "wl_finalize.py"
BUILD_LINE = next(i + 1 for i, l in enumerate(
    open(os.path.join(WORKLOADS, WL)).read().splitlines())
    if l.rstrip().endswith("# BUILD_LINE"))

LINE_STAT = ("import sys, tracemalloc; s = tracemalloc.Snapshot.load(sys.argv[1]); "
             "st = [x for x in s.statistics('lineno') if x.traceback[0].lineno == "
             "%d and x.traceback[0].filename.endswith('%s')]; "
             "print(st[0].size if st else 0, st[0].count if st else 0)"
             % (BUILD_LINE, WL))


def line_stat(python, path):
    _, out, _ = run_cmd([python, "-c", LINE_STAT, str(path)])
    size, count = out.split()
    return int(size), int(count)


def run_target(procs, python, how, args=(), env=None, tracer_args=None,
               out=None):
    """One wl_finalize run; traced when tracer_args is given. Returns the
    tracer's (rc, stdout, stderr), or None."""
    t = procs.target(python, WL, [how] + list(args), env=env)
    t.expect("ready", timeout=T_START)
    tr = None
    if tracer_args is not None:
        tr = procs.tracer(["-p", t.pid, "--format", "json", "-o", out] +
                          tracer_args)
        tr.wait_tracing()
    t.send("go")
    t.expect("built", timeout=T_WORK)
    t.send("end")
    t.wait(timeout=T_WORK)
    if tr is None:
        return None
    return tr.finish(timeout=T_STOP)     # it ends on its own


def final_doc(stdout):
    docs = [json.loads(l) for l in stdout.decode().splitlines()
            if l.startswith("{")]
    docs = [d for d in docs if d.get("type") == "report" and d["final"]]
    assert len(docs) == 1, stdout[:2000]
    return docs[0]


@pytest.mark.parametrize("how", ["return", "sysexit", "recorder-return"])
def test_finalization_snapshot(procs, python, tmp_path, how):
    """(recorder-return: "return" with --recorder, whose freeze BPF reads
    from the recorder's ring.)"""
    ref = tmp_path / "ref.pytm"
    ours = tmp_path / "ours.pytm"
    rec = ["--recorder"] if how.startswith("recorder-") else []
    how = how.split("-")[-1]
    run_target(procs, python, how, ["--dump", ref],
               env={"PYTHONTRACEMALLOC": "1"})
    rc, out, err = run_target(procs, python, how, tracer_args=rec,
                              out=ours)
    assert rc == 0, _show(err)
    doc = final_doc(out)
    assert doc["snapshot_at"] == "finalization", doc
    assert doc["end"] == {"status": 0, "signal": None, "oom_kill": False}, doc
    # The counters ran on: finalization freed the strings.
    assert doc["traced"]["peak"] > 4000 * 1000
    assert doc["traced"]["current"] < doc["traced"]["peak"] // 4, doc["traced"]
    want = line_stat(python, ref)
    got = line_stat(python, ours)
    print("%s: line %d: ours %s, tracemalloc at atexit %s"
          % (python, BUILD_LINE, got, want))
    assert want[1] >= 4000, want
    assert got == want


@pytest.mark.parametrize("how", ["_exit", "kill"])
def test_end_without_finalization(procs, tmp_path, how):
    python = INTERPRETERS["debian-3.11"]
    ours = tmp_path / "ours.pytm"
    rc, out, err = run_target(procs, python, how, tracer_args=[], out=ours)
    assert rc == 0, _show(err)
    doc = final_doc(out)
    assert doc["snapshot_at"] == "now", doc
    if how == "_exit":
        assert doc["end"] == {"status": 3, "signal": None, "oom_kill": False}
    else:
        assert doc["end"] == {"status": None, "signal": signal.SIGKILL,
                              "oom_kill": False}
    size, count = line_stat(python, ours)
    assert count >= 4000 and size >= 4000 * 1000, (size, count)


def memory_cgroup(tmp_name):
    """A new memory cgroup (v2 if mounted with the memory controller, else
    v1): (directory, the file that limits it). None if neither is writable."""
    v2 = "/sys/fs/cgroup"
    try:
        with open(os.path.join(v2, "cgroup.controllers")) as fh:
            has_v2_memory = "memory" in fh.read().split()
    except OSError:
        has_v2_memory = False
    candidates = []
    if has_v2_memory:
        candidates.append((os.path.join(v2, tmp_name), "memory.max"))
    candidates.append((os.path.join(v2, "memory", tmp_name),
                       "memory.limit_in_bytes"))
    for d, limit in candidates:
        try:
            os.mkdir(d)
        except OSError:
            continue
        if os.path.exists(os.path.join(d, limit)):
            return d, limit
        os.rmdir(d)
    return None


def test_oom_kill(procs, tmp_path):
    python = INTERPRETERS["3.11"]
    cg = memory_cgroup("pytm-bpf-test-%d" % os.getpid())
    if cg is None:
        pytest.skip("no writable memory cgroup here (v2 memory controller or "
                    "v1 /sys/fs/cgroup/memory): the OOM case cannot be made")
    d, limit = cg
    try:
        with open(os.path.join(d, limit), "w") as fh:
            fh.write(str(96 << 20))
        # The shell joins the cgroup, then becomes the interpreter.
        script = ("import os, time\n"
                  "os.write(1, ('ready %d\\n' % os.getpid()).encode())\n"
                  "os.read(0, 3)\n"
                  "hog = []\n"
                  "while True:\n"
                  "    hog.append(bytearray(1 << 20))   # HOG_LINE\n")
        path = tmp_path / "hog.py"
        path.write_text(script)
        t = Target("/bin/sh", "-c", ["echo $$ > %s/cgroup.procs && exec %s %s"
                                     % (d, python, path)], desc="hog in " + d)
        procs.items.append(t)
        t.expect("ready", timeout=T_START)
        tr = procs.tracer(["-p", t.pid, "--format", "json"])
        tr.wait_tracing()
        t.send("go")
        rc_t = t.wait(timeout=T_WORK)
        assert rc_t == -signal.SIGKILL, rc_t
        rc, out, err = tr.finish(timeout=T_STOP)
        assert rc == 0, _show(err)
        doc = final_doc(out)
        assert doc["end"] == {"status": None, "signal": signal.SIGKILL,
                              "oom_kill": True}, doc
        top = doc["statistics"][0]
        assert top["traceback"][-1]["lineno"] == 6 and top["size"] > 32 << 20, top
    finally:
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.1)
