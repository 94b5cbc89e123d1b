# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""--format json: one JSON document per report, per line.

A traced run of gt_single.py (5 frames, --interval 0.5, --top 0, -o) on
Debian's python3.11 and pyenv 3.13, with tracemalloc running in the target
too (its own snapshot is the older one for the differences):
- every stdout line is a JSON document of schema 1; only the last is final;
  process, mode, traced figures and lost counts are there;
- the final document's statistics are tracemalloc's statistics("lineno")
  of the -o snapshot of the same report (sizes, counts, frames, order);
- `pytm-bpf report -o-file --top 0` prints, line for line, str(Statistic)
  of those same statistics, so text and JSON agree with each other;
- `pytm-bpf report FILE --compare REF --key traceback --format json` gives
  compare_to()'s size, count and their differences, frames oldest first.
And offline, a snapshot whose file names hold quotes, backslashes, control
characters and non-ASCII text reads back exactly through json.loads.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import (PYTM, T_CMD, T_START, WORKLOADS, batch_result,
                      finish_traced, isolated, pyenv, run_cmd, snaptool)

INTERP = {"debian-3.11": "/usr/bin/python3.11", "3.13": pyenv("3.13.0")}
FRAMES = 5


def json_run(procs, python, outdir):
    ours = os.path.join(outdir, "ours.pickle")
    ref = os.path.join(outdir, "ref.pickle")
    tgt = procs.target(python, "gt_single.py",
                       ["--tracemalloc", FRAMES, "--dump", ref])
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--frames", FRAMES, "--top", 0,
                       "--interval", 0.5, "--format", "json", "-o", ours])
    tr.wait_tracing()
    run = finish_traced(tr, tgt, ours)
    run.pid = tgt.pid
    run.ref = ref
    return run


def result(key, tmp_path_factory):
    python = INTERP[key]
    if not os.access(python, os.X_OK):
        pytest.fail("expected interpreter %s missing: %s" % (key, python))

    def make_jobs():
        return dict((k, isolated(json_run, INTERP[k],
                                 str(tmp_path_factory.mktemp("json-" + k))))
                    for k in INTERP)
    return python, batch_result(("json",), key, make_jobs)


def report(*args):
    _, out, _ = run_cmd([PYTM, "report"] + [str(a) for a in args],
                        timeout=T_CMD)
    return out.decode("utf-8")


def frames_of(stat):
    return [[f["filename"], f["lineno"]] for f in stat["traceback"]]


@pytest.mark.parametrize("key", sorted(INTERP), ids=lambda k: "py" + k)
def test_json_live(key, tmp_path_factory):
    python, run = result(key, tmp_path_factory)
    assert run.rc == 0 and run.target_rc == 0, run.describe()
    lines = run.stdout.decode("utf-8").splitlines()
    assert lines, run.describe()
    docs = [json.loads(line) for line in lines]     # each line one document
    print("\n%s: %d JSON documents, the final one with %d statistics" % (
        key, len(docs), len(docs[-1]["statistics"])))
    for d in docs:
        assert d["schema"] == 1 and d["type"] == "report", d
        assert d["process"]["pid"] == run.pid, d["process"]
        assert d["mode"] == "injected" and d["probe_site"] in ("nop5", "nop6")
        assert d["key"] == "lineno" and d["cumulative"] is False
        assert d["traceback_limit"] == FRAMES
        assert d["compare_to"] is None
        assert d["total"] == len(d["statistics"])       # --top 0: all
    assert [d["final"] for d in docs] == [False] * (len(docs) - 1) + [True]
    final = docs[-1]
    traced = final["traced"]
    assert traced["events"] > 0 and traced["peak"] >= traced["current"] > 0
    # Exact mode records in the target by default: its ring took the events.
    rec = final["recorder"]
    assert rec and rec["events"] > rec["bpf_allocations"], final["recorder"]
    lost = dict(final["lost"])
    lost.pop("no_thread_state")             # not a loss (threads without Python)
    assert set(lost.values()) == {0}, final["lost"]

    # The final document against tracemalloc on the -o file of that report.
    truth = snaptool(python, "stats", run.snapshot, "lineno", 0)
    got = final["statistics"]
    assert len(got) == len(truth) > 0
    for g, t in zip(got, truth):
        assert (g["size"], g["count"], frames_of(g)) == \
            (t["size"], t["count"], t["traceback"]), (g, t)
        assert abs(g["average"] - g["size"] / g["count"]) < 1e-9 * g["size"]
    assert sum(g["size"] for g in got) <= traced["peak"]

    # The text report of the same snapshot: str(Statistic), line for line.
    text = report(run.snapshot, "--top", 0).splitlines()
    assert text[0] == "[ Top %d ]" % len(truth), text[:3]
    assert text[1:] == [t["str"] for t in truth]


@pytest.mark.parametrize("key", sorted(INTERP), ids=lambda k: "py" + k)
def test_json_compare(key, tmp_path_factory):
    python, run = result(key, tmp_path_factory)
    assert run.rc == 0, run.describe()
    doc = json.loads(report(run.snapshot, "--compare", run.ref, "--key",
                            "traceback", "--top", 0, "--format", "json"))
    truth = snaptool(python, "stats", run.snapshot, "traceback", 0, run.ref)
    assert doc["compare_to"] == run.ref and doc["final"] is True
    assert doc["source"]["file"] == run.snapshot
    assert doc["key"] == "traceback" and doc["total"] == len(truth) > 0
    print("\n%s: %d differences; largest %+d B" % (
        key, len(truth), truth[0]["size_diff"]))
    for g, t in zip(doc["statistics"], truth):
        assert (g["size"], g["count"], g["size_diff"], g["count_diff"],
                frames_of(g)) == (t["size"], t["count"], t["size_diff"],
                                  t["count_diff"], t["traceback"]), (g, t)
    # --top N keeps the first N, and says how many there were.
    doc = json.loads(report(run.snapshot, "--top", 3, "--format", "json"))
    assert len(doc["statistics"]) == 3 and doc["total"] > 3


def test_json_strings(tmp_path):
    """File names are untrusted text: JSON escapes them, exactly."""
    names = ['we"ird\\name.py', "tab\there\x01\x7f.py", "caf\u00e9/\u6f22.py"]
    snap = str(tmp_path / "names.pickle")
    code = ("import tracemalloc, sys\n"
            "tracemalloc.start(1)\n"
            "keep = []\n"
            "for i, name in enumerate(sys.argv[2:]):\n"
            "    exec(compile('keep.append([str(j) * 9 for j in range(%d)])'"
            " % (100 * (i + 1)), name, 'exec'))\n"
            "tracemalloc.take_snapshot().dump(sys.argv[1])\n")
    r = subprocess.run([sys.executable, "-c", code, snap] + names,
                       timeout=T_CMD)
    assert r.returncode == 0
    doc = json.loads(report(snap, "--top", 0, "--format", "json"))
    files = set(s["traceback"][0]["filename"] for s in doc["statistics"])
    assert set(names) <= files, files
    # Not for a terminal either way: the text form escapes controls only
    # when stdout is a terminal; JSON always escapes them.
    raw = subprocess.run([PYTM, "report", snap, "--format", "json"],
                         stdout=subprocess.PIPE, timeout=T_CMD).stdout
    assert b"\x01" not in raw and b"\x7f" not in raw and b"\t" not in raw


def test_json_bad_format(tmp_path):
    r = subprocess.run([PYTM, "report", os.path.join(WORKLOADS, "none"),
                        "--format", "xml"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=T_CMD)
    assert r.returncode == 2, r
    assert b"unknown format 'xml'" in r.stderr
    r = subprocess.run([PYTM, "-p", "1", "--format", "yaml"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=T_CMD)
    assert r.returncode == 2 and b"unknown format 'yaml'" in r.stderr, r
    assert r.stderr.count(b"\n") == 1, r.stderr
