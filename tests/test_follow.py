# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Forked children and exec, followed (issue: nothing missed when the target
ends or forks).

Prefork: tests/workloads/wl_prefork.py is a gunicorn-like master that builds
what its workers inherit, forks four workers that allocate at once (plain
os.fork, or multiprocessing's fork start method), and replaces one that
ended, all while traced with `-p MASTER -o DIR/heap.pytm`. Ground truth: the
same workload untraced with tracemalloc started at "go", each worker dumping
its own snapshot (tracemalloc keeps its parent's traces across fork) when
it ends: at finalization for os.fork workers (an atexit hook, as pytm-bpf
snapshots at Py_FinalizeEx), at the end of its work for multiprocessing
ones (they end with os._exit: pytm-bpf reports them as they were at death).
Each worker's file (heap.PID.pytm) must agree with its ground truth on
>= 99.9% of the bytes at the workload's lines, the master's reports say
which workers it forked, and without following (--no-follow-forks) no worker
is traced while the master still is.

Sampled (--sample R), the same workload: each worker's estimate of its own
line and of what it inherited (the master's base, which worker 2 frees
mostly) within 4 standard errors (and two steps of the estimator) of its
tracemalloc ground truth; the model's standard error of a line of n blocks
of mean size S is sqrt(n S^2 (1 - p) / p), p = 1 - exp(-S/R).

Exec: tests/workloads/wl_exec.py replaces itself with another Python
version (os.execv) while traced by -p: the program before is reported as it
was at the exec, the new interpreter is attached and reported.
"""

import json
import math
import os
import re
import time

import pytest

from conftest import (INTERPRETERS, T_START, T_WORK, WORKLOADS, batch_result,
                      isolated, marked_line, snaptool)

PREFORK = os.path.join(WORKLOADS, "wl_prefork.py")
EXEC = os.path.join(WORKLOADS, "wl_exec.py")
# (interpreter, how): every frame layout, both ways of forking
CASES = [("debian-3.11", "fork"), ("3.8", "mp"), ("3.9", "fork"),
         ("3.10", "mp"), ("3.11", "fork"), ("3.12", "mp"), ("3.13", "fork"),
         ("debian-3.11", "mp")]
WORKERS = 5             # four, and the replacement of the first
EXEC_CASES = [("3.12", "debian-3.11"), ("3.9", "3.13")]


def workers_of(lines):
    return dict((int(m.group(1)), int(m.group(2))) for m in
                (re.match(r"worker (\d) (\d+)$", l) for l in lines) if m)


def prefork_run(procs, python, how, tmp, follow=True, extra=(), tracer_args=()):
    ref_dir = os.path.join(tmp, "ref")
    run_dir = os.path.join(tmp, "run")
    os.makedirs(ref_dir)
    os.makedirs(run_dir)
    res = {"ref_dir": ref_dir, "run_dir": run_dir}
    # Ground truth, untraced.
    ref = procs.target(python, PREFORK, [how, "--dump", ref_dir])
    ref.expect("ready", timeout=T_START)
    ref.send("go")
    ref.expect("done", timeout=T_WORK)
    ref.send("quit")
    assert ref.wait(timeout=T_WORK) == 0, ref.err.text()
    res["ref_workers"] = workers_of(ref.seen)
    # Traced.
    tgt = procs.target(python, PREFORK, [how] + list(extra))
    tgt.expect("ready", timeout=T_START)
    args = ["-p", tgt.pid, "-o", os.path.join(run_dir, "heap.pytm"), "--format",
            "json", "-v"]
    tr = procs.tracer(args + list(tracer_args) +
                      ([] if follow else ["--no-follow-forks"]))
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("done", timeout=T_WORK)
    res["rc"], res["out"], res["err"] = tr.stop()
    tgt.send("quit")
    res["target_rc"] = tgt.wait(timeout=T_WORK)
    res["pid"] = tgt.pid
    res["lines"] = list(tgt.seen)
    res["workers"] = workers_of(tgt.seen)
    return res


def reports_of(out):
    docs = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
    return dict((d["process"]["pid"], d) for d in docs if d.get("type") == "report")


@pytest.mark.parametrize("key,how", CASES, ids=["%s-%s" % c for c in CASES])
def test_prefork_workers(key, how, tmp_path_factory):
    python = INTERPRETERS[key]
    if not os.access(python, os.X_OK):
        pytest.fail("expected interpreter %s missing: %s" % (key, python))

    def make_jobs():
        return dict(((k, h), isolated(prefork_run, INTERPRETERS[k], h,
                                      str(tmp_path_factory.mktemp("prefork"))))
                    for k, h in CASES)
    r = batch_result(("prefork",), (key, how), make_jobs)
    check_workers(r, python, key, how)


def check_workers(r, python, key, how):
    """Each worker of prefork_run R reported, whose child it is, and agreeing
    with its own tracemalloc."""
    detail = "workload said: %s\ntracer stderr (tail): %s" % (
        r["lines"], r["err"].decode("utf-8", "replace")[-4000:])
    assert r["rc"] == 0 and r["target_rc"] == 0, detail
    assert sorted(r["workers"]) == list(range(WORKERS)), detail
    assert all("exited %d 0" % k in r["lines"] for k in range(4)), detail

    # One report per worker, each saying whose child it is.
    reports = reports_of(r["out"])
    assert r["pid"] in reports, detail
    for k, pid in sorted(r["workers"].items()):
        assert pid in reports, "worker %d (pid %d) not reported\n%s" % (k, pid, detail)
        doc = reports[pid]
        assert doc["process"]["ppid"] == r["pid"], doc["process"]
        assert doc["end"] and doc["end"]["status"] == 0, doc["end"]
        # os.fork workers finalize (sys.exit); multiprocessing's os._exit.
        assert doc["snapshot_at"] == ("finalization" if how == "fork" else "now")

    # Each worker against its own tracemalloc, in the target's interpreter.
    for k, pid in sorted(r["workers"].items()):
        ours = os.path.join(r["run_dir"], "heap.%d.pytm" % pid)
        ref = os.path.join(r["ref_dir"], "worker-%d.pytm" % k)
        assert os.path.exists(ours), "no %s\n%s" % (ours, detail)
        c = snaptool(python, "compare", ours, ref, PREFORK)
        print("%s %s worker %d: %.5f of bytes, %.5f of blocks agree (%d B ours, "
              "%d B tracemalloc)" % (key, how, k, c["bytes_agreement"],
                                      c["count_agreement"], c["size_ours"],
                                      c["size_ref"]))
        assert c["bytes_agreement"] >= 0.999, "worker %d: %s\n%s" % (k, c, detail)
        # Its own line and what it inherited (worker 2 freed most of that).
        st = snaptool(python, "stats", ours, "lineno", 0)
        at = dict(((t["traceback"][0][0], t["traceback"][0][1]), t["count"]) for t in st)
        own = at.get((PREFORK, marked_line(PREFORK, "W%d_LINE" % k)), 0)
        base = at.get((PREFORK, marked_line(PREFORK, "BASE_LINE")), 0)
        assert own >= 990 and base >= (500 if k == 2 else 3000), (k, own, base, detail)
        assert k != 2 or base < 600, (base, detail)


# --recorder: the master records in its page; its workers go BPF's way
# from the fork on, with the blocks their master's recorder held then.
RECORDER_CASES = [("debian-3.11", "fork"), ("3.12", "mp"), ("3.13", "fork")]


@pytest.mark.parametrize("key,how", RECORDER_CASES,
                         ids=["%s-%s" % c for c in RECORDER_CASES])
def test_prefork_workers_recorder(key, how, tmp_path_factory):
    """--recorder: forked workers followed, each agreeing with its own
    tracemalloc (its inherited set is its master's recorder's at the
    fork)."""
    python = INTERPRETERS[key]

    def make_jobs():
        return dict(((k, h), isolated(prefork_run, INTERPRETERS[k], h,
                                      str(tmp_path_factory.mktemp("prefork-rec")),
                                      tracer_args=["--recorder", "-v"]))
                    for k, h in RECORDER_CASES)
    r = batch_result(("prefork-recorder",), (key, how), make_jobs)
    check_workers(r, python, key, how)
    # The master recorded; no worker set a ring up (each went BPF's way: on
    # its master's page, then on a page of its own, with the BPF walk and
    # the master's kind of sites, not the children's 6-byte NOPs: ~4x
    # dearer where the 5-byte one is chosen). A worker that is done before
    # the tracer comes to it has no page of its own: not all need one (os.fork
    # workers get theirs 4 or 5 of 5 times here, multiprocessing's 1 or 2).
    assert ("process %d: recorder: " % r["pid"]).encode() in r["err"]
    own = 0
    for pid in r["workers"].values():
        assert ("process %d: recorder: " % pid).encode() not in r["err"], \
            r["err"][-3000:]
        own += ("process %d: probe sites: " % pid).encode() in r["err"]
    print("%s %s: %d of %d workers with a page of their own" % (key, how, own,
                                                               len(r["workers"])))
    assert own >= 1 or how != "fork", r["err"][-3000:]


SAMPLE_RATE = 16384
SAMPLED_CASES = [("debian-3.11", "fork"), ("3.12", "mp")]


def line_stats(python, path):
    """{lineno: (bytes, blocks)} at the workload's lines of a snapshot."""
    st = snaptool(python, "stats", path, "lineno", 0)
    return dict((t["traceback"][0][1], (t["size"], t["count"])) for t in st
                if t["traceback"][0][0] == PREFORK)


@pytest.mark.parametrize("key,how", SAMPLED_CASES, ids=["%s-%s" % c for c in SAMPLED_CASES])
def test_prefork_workers_sampled(key, how, tmp_path):
    """Sampled: each worker traced from its first allocation, with the
    sampled blocks it inherited, against its own tracemalloc."""
    from conftest import Procs
    python = INTERPRETERS[key]
    if not os.access(python, os.X_OK):
        pytest.fail("expected interpreter %s missing: %s" % (key, python))
    procs = Procs()
    try:
        r = prefork_run(procs, python, how, str(tmp_path),
                        tracer_args=["--sample", str(SAMPLE_RATE)])
    finally:
        procs.end_all()
    detail = "workload said: %s\ntracer stderr (tail): %s" % (
        r["lines"], r["err"].decode("utf-8", "replace")[-3000:])
    assert r["rc"] == 0 and r["target_rc"] == 0, detail
    assert sorted(r["workers"]) == list(range(WORKERS)), detail
    reports = reports_of(r["out"])
    bad, rows = [], []
    for k, pid in sorted(r["workers"].items()):
        assert pid in reports, "worker %d (pid %d) not reported\n%s" % (k, pid, detail)
        assert reports[pid]["process"]["ppid"] == r["pid"], reports[pid]["process"]
        ours = line_stats(python, os.path.join(r["run_dir"], "heap.%d.pytm" % pid))
        ref = line_stats(python, os.path.join(r["ref_dir"], "worker-%d.pytm" % k))
        for mark in ("W%d_LINE" % k, "BASE_LINE"):
            line = marked_line(PREFORK, mark)
            exact, n = ref.get(line, (0, 0))
            assert n > 100, (k, mark, ref)
            size = exact / n
            p = 1 - math.exp(-size / SAMPLE_RATE)
            se = math.sqrt(n * size * size * (1 - p) / p)
            est = ours.get(line, (0, 0))[0]
            z = (est - exact) / se
            rows.append("worker %d %-9s exact %9d B (%5d blocks), estimate %9d B, "
                        "SE %5.1f%%, z %+5.2f" % (k, mark, exact, n, est,
                                                   100 * se / exact, z))
            if abs(est - exact) > 4 * se + 2 * size / p:
                bad.append(rows[-1])
    print("\n%s %s, R = %d:\n%s" % (key, how, SAMPLE_RATE, "\n".join(rows)))
    assert not bad, "\n".join(bad) + "\n" + detail


def test_prefork_not_followed(tmp_path):
    """--no-follow-forks: the master only; its workers run as without us:
    each put its allocator tables back at its first call (none of its 12
    slots leads into the page, while all of the master's do)."""
    from conftest import Procs
    procs = Procs()
    try:
        r = prefork_run(procs, INTERPRETERS["debian-3.11"], "fork", str(tmp_path),
                        follow=False, extra=["--hooks"])
    finally:
        procs.end_all()
    hooks = dict(l.split()[1:] for l in r["lines"] if l.startswith("hooks "))
    assert hooks == {"master": "12", "0": "0", "1": "0", "2": "0", "3": "0",
                     "4": "0"}, r["lines"]
    detail = r["err"].decode("utf-8", "replace")[-3000:]
    assert r["rc"] == 0 and r["target_rc"] == 0, detail
    assert all("exited %d 0" % k in r["lines"] for k in range(4)), r["lines"]
    reports = reports_of(r["out"])
    assert list(reports) == [r["pid"]], (list(reports), detail)
    assert os.listdir(r["run_dir"]) == ["heap.pytm"], os.listdir(r["run_dir"])
    assert b"forked from" not in r["err"], detail


def exec_run(procs, first, second):
    tgt = procs.target(first, EXEC, [second])
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--format", "json"])
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("built1", timeout=T_WORK)
    tgt.expect("ready2", timeout=T_START)
    # "pytm-bpf: tracing new process PID": the new interpreter is attached.
    line = tr.wait_tracing()
    tgt.send("go2")
    tgt.expect("built2", timeout=T_WORK)
    rc, out, err = tr.stop()
    tgt.send("end")
    return {"pid": tgt.pid, "rc": rc, "out": out, "err": err, "line": line,
            "target_rc": tgt.wait(timeout=T_WORK)}


@pytest.mark.parametrize("first,second", EXEC_CASES,
                         ids=["%s-to-%s" % c for c in EXEC_CASES])
def test_exec_into_another_python(first, second):
    def make_jobs():
        return dict(((a, b), isolated(exec_run, INTERPRETERS[a], INTERPRETERS[b]))
                    for a, b in EXEC_CASES)
    r = batch_result(("exec",), (first, second), make_jobs)
    err = r["err"].decode("utf-8", "replace")
    assert r["rc"] == 0 and r["target_rc"] == 0, err[-3000:]
    assert "tracing new process %d" % r["pid"] in r["line"], r["line"]
    docs = [json.loads(l) for l in r["out"].decode().splitlines() if l.strip()]
    reports = [d for d in docs if d.get("type") == "report"]
    assert [d["process"]["pid"] for d in reports] == [r["pid"]] * 2, docs
    before, after = reports

    def count_at(doc, mark):
        line = marked_line(EXEC, mark)
        return sum(s["count"] for s in doc["statistics"]
                   if s["traceback"][-1] == {"filename": EXEC, "lineno": line})

    # The program it replaced, as it was then, in its own version...
    assert before["snapshot_at"] == "exec" and before["exited"], before
    assert before["process"]["python"].startswith(first.split("python")[-1]) or \
        first.endswith("python3.11"), before["process"]
    assert count_at(before, "FIRST_LINE") >= 2000, before["statistics"][:3]
    # ...then the new interpreter, attached again under the same pid.
    assert after["process"]["python"] != before["process"]["python"], \
        (before["process"], after["process"])
    assert count_at(after, "SECOND_LINE") >= 3000, after["statistics"][:3]
    assert count_at(after, "FIRST_LINE") == 0
    print("%s -> %s: %d blocks before exec, %d after, same pid %d" % (
        before["process"]["python"], after["process"]["python"],
        count_at(before, "FIRST_LINE"), count_at(after, "SECOND_LINE"), r["pid"]))


@pytest.mark.parametrize("mode", ["bpf-walk", "recorder"])
def test_followed_children_exported(procs, tmp_path, mode):
    """Followed workers in /metrics (with ppid) and in pprof (a ppid label),
    while they live; the forked-process counter counts them. With the
    recorder too, whose workers go on through their master's page."""
    from test_serve import get, pprof, serving_url
    python = INTERPRETERS["debian-3.11"]
    tgt = procs.target(python, PREFORK, ["fork", "--hold"])
    tgt.expect("ready", timeout=T_START)
    extra = ["--recorder"] if mode == "recorder" else ["--bpf-walk"]
    tr = procs.tracer(["-p", tgt.pid, "--serve", "127.0.0.1:0"] + extra)
    tr.wait_tracing()
    url = serving_url(tr)
    tgt.send("go")
    tgt.expect("held", timeout=T_WORK)
    workers = workers_of(tgt.seen)
    assert sorted(workers) == [0, 1, 2, 3], tgt.seen
    time.sleep(1.5)                     # the answer cache: 0.5 s
    status, _, body = get(url + "/metrics")
    assert status == 200
    text = body.decode()
    for k, pid in workers.items():
        m = re.search(r'^pytm_traced_memory_bytes\{pid="%d",nspid="%d",ppid="%d",[^}]*\} (\d+)'
                      % (pid, pid, tgt.pid), text, re.M)
        assert m, "worker %d (pid %d) not in /metrics:\n%s" % (k, pid, text[:3000])
        assert int(m.group(1)) > 1000000, m.group(0)
    m = re.search(r"^pytm_processes_forked_total (\d+)", text, re.M)
    assert m and int(m.group(1)) >= 4, text[:2000]
    # pprof: go tool pprof shows the label on the worker's samples.
    out = pprof(tmp_path, "-traces", "%s/debug/pprof/heap?pid=%d" % (url, workers[0]))
    assert re.search(r"^\s*ppid:\s+%d$" % tgt.pid, out, re.M), out[:2000]
    tgt.send("release")
    tgt.expect("done", timeout=T_WORK)
    rc, out, err = tr.stop()
    assert rc == 0, err[-2000:]
    tgt.send("quit")
    assert tgt.wait(timeout=T_WORK) == 0


def test_recorder_child_own_ring(procs):
    """A worker forked from a --recorder master that is not followed keeps
    its master's ring mapping (shared memory, inherited); a --recorder
    attached to the worker makes a ring of its own instead of taking that
    one (it would share its master's events), and the master's trace goes
    on unharmed."""
    python = INTERPRETERS["3.12"]

    def rings(pid):
        with open("/proc/%d/maps" % pid) as f:
            return [l for l in f if "pytm-bpf-ring" in l]

    tgt = procs.target(python, PREFORK, ["fork", "--hold"])
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--recorder", "--no-follow-forks"])
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("held", timeout=T_WORK)
    worker = workers_of(tgt.seen)[0]
    assert len(rings(tgt.pid)) == 1 and len(rings(worker)) == 1, \
        (rings(tgt.pid), rings(worker))
    second = procs.tracer(["-p", worker, "--recorder"])
    second.wait_tracing()
    theirs = rings(worker)
    assert len(theirs) == 2, theirs
    rc, out, err = second.stop()
    assert rc == 0, err[-2000:]
    tgt.send("release")
    tgt.expect("done", timeout=T_WORK)
    rc, out, err = tr.stop()
    assert rc == 0, err[-2000:]
    assert b"Lost events: none" in out, out[-2000:]
    tgt.send("quit")
    assert tgt.wait(timeout=T_WORK) == 0
