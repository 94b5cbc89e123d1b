# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The -o file is a tracemalloc snapshot for the target's own Python, and
the printed [ Top N ] block is what tracemalloc prints for that file."""

import os
import re

import pytest

from conftest import (WORKLOADS, run_traced, snaptool, snaptool_raw,
                      top_block)

WORKLOAD = "gt_single.py"
FRAMES = 10


def test_snapshot_usable(procs, python, tmp_path):
    ours = str(tmp_path / "ours.pytm")
    ref = str(tmp_path / "ref.pickle")
    run = run_traced(procs, python, WORKLOAD, ["--frames", FRAMES], out=ours,
                     wl_args=["--tracemalloc", FRAMES, "--dump", ref])
    assert run.rc == 0, run.describe()
    assert os.path.isfile(ours), "no snapshot written: " + run.describe()
    path = os.path.join(WORKLOADS, WORKLOAD)
    res = snaptool(python, "check", ours, FRAMES, path, ref)
    print("\nsnapshot: %d traces, %d lineno stats, %d traceback stats, "
          "%d files (cumulative); workload: %d lines, %d B; compare_to(ref): "
          "%d diffs, sum |size_diff| %d B" % (
              res["traces"], res["lineno"], res["traceback"],
              res["filename_cumulative"], res["workload_lines"],
              res["workload_size"], res["compare_to_ref"],
              res["compare_to_ref_abs_size_diff"]))
    assert res["problems"] == [], res
    assert res["traces"] > 0, res
    assert res["lineno"] > 0 and res["traceback"] > 0, res
    assert res["filename_cumulative"] > 0, res
    assert res["lineno_cumulative"] >= res["lineno"], res
    assert res["file_in_filename_stats"], res
    assert res["workload_lines"] > 10, res
    assert res["sum_matches"], res
    assert res["top_formatted"], res
    assert res["compare_to_ref"] > 0, res


REPORT_CASES = [
    ("lineno", False),
    ("filename", False),
    ("traceback", False),
    ("lineno", True),
    ("filename", True),
]


@pytest.mark.parametrize(
    "key,cumulative", REPORT_CASES,
    ids=["%s%s" % (k, "-cumulative" if c else "") for k, c in REPORT_CASES])
def test_report_matches_tracemalloc(procs, python, tmp_path, key,
                                    cumulative):
    ours = str(tmp_path / "ours.pytm")
    args = ["--frames", FRAMES, "--top", 15, "--key", key]
    if cumulative:
        args.append("--cumulative")
    run = run_traced(procs, python, WORKLOAD, args, out=ours)
    assert run.rc == 0, run.describe()
    assert os.path.isfile(ours), "no snapshot written: " + run.describe()
    expected = snaptool_raw(python, "top", ours, key, int(cumulative), 15)
    got = top_block(run.stdout)
    assert expected.startswith(b"[ Top 15 ]\n"), expected
    if got != expected:
        g = got.decode("utf-8", "replace").splitlines()
        e = expected.decode("utf-8", "replace").splitlines()
        diff = ["line %d:\n  pytm-bpf:    %r\n  tracemalloc: %r"
                % (i, g[i] if i < len(g) else None,
                   e[i] if i < len(e) else None)
                for i in range(max(len(g), len(e)))
                if (g[i] if i < len(g) else None) !=
                (e[i] if i < len(e) else None)]
        pytest.fail("[ Top 15 ] block differs (%s, cumulative=%s):\n%s"
                    % (key, cumulative, "\n".join(diff[:10])))
    tail = run.report_tail()
    assert re.search(r"traced", tail, re.I), \
        "no traced-memory line after the block: %r" % tail
    assert re.search(r"lost", tail, re.I), \
        "no lost-events line after the block: %r" % tail
