# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The -o file is a tracemalloc snapshot for the target's own Python, and
the printed [ Top N ] block is what tracemalloc prints for that file.

These checks use the ground-truth runs (conftest.gt_result), each of which
ran with --top 15 and one of the report keys (conftest.GT_REPORT)."""

import os
import re

import pytest

from conftest import (GT_REPORT, GT_TOP, WORKLOADS, gt_result, snaptool,
                      snaptool_raw, top_block)

USABLE_RUN = ("with", "gt_single.py", 25)


def test_snapshot_usable(python, tmp_path_factory):
    mode, workload, frames = USABLE_RUN
    run, _, _ = gt_result(python, tmp_path_factory, mode, workload, frames)
    path = os.path.join(WORKLOADS, workload)
    res = snaptool(python, "check", run.snapshot, frames, path, run.ref)
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


REPORT_CASES = sorted(GT_REPORT.items(), key=lambda kv: (kv[1], kv[0]))


@pytest.mark.parametrize(
    "run_id,key,cumulative", [(r, k, c) for r, (k, c) in REPORT_CASES],
    ids=["%s%s" % (k, "-cumulative" if c else "")
         for _, (k, c) in REPORT_CASES])
def test_report_matches_tracemalloc(python, tmp_path_factory, run_id, key,
                                    cumulative):
    mode, workload, frames = run_id
    run, _, _ = gt_result(python, tmp_path_factory, mode, workload, frames)
    assert (run.key, run.cumulative) == (key, cumulative)
    expected = snaptool_raw(python, "top", run.snapshot, key,
                            int(cumulative), GT_TOP)
    got = top_block(run.stdout)
    assert expected.startswith(b"[ Top %d ]\n" % GT_TOP), expected
    if got != expected:
        g = got.decode("utf-8", "replace").splitlines()
        e = expected.decode("utf-8", "replace").splitlines()
        diff = ["line %d:\n  pytm-bpf:    %r\n  tracemalloc: %r"
                % (i, g[i] if i < len(g) else None,
                   e[i] if i < len(e) else None)
                for i in range(max(len(g), len(e)))
                if (g[i] if i < len(g) else None) !=
                (e[i] if i < len(e) else None)]
        pytest.fail("[ Top %d ] block differs (%s, cumulative=%s, %s):\n%s"
                    % (GT_TOP, key, cumulative, " ".join(map(str, run_id)),
                       "\n".join(diff[:10])))
    tail = run.report_tail()
    assert re.search(r"traced", tail, re.I), \
        "no traced-memory line after the block: %r" % tail
    assert re.search(r"lost", tail, re.I), \
        "no lost-events line after the block: %r" % tail
