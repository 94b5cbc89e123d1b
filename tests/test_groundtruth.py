# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""pytm-bpf's snapshot against tracemalloc's, traceback by traceback.

Agreement (bytes) = sum over tracebacks of min(size_ours, size_ref)
                    / max(total_ours, total_ref), likewise for counts,
on both snapshots filtered to the workload's file (Filter(True, path),
most recent frame). Required: >= conftest.THRESHOLD (0.99) for both.
"""

import os

import pytest

from conftest import (agreement, check_agreement, check_run, run_reference,
                      run_traced)

GT_WORKLOADS = ["gt_single.py", "gt_threads.py"]
FRAMES = [1, 25]


@pytest.mark.parametrize("frames", FRAMES, ids=lambda n: "frames%d" % n)
@pytest.mark.parametrize("workload", GT_WORKLOADS)
def test_groundtruth_with_tracemalloc(procs, python, tmp_path, workload,
                                      frames):
    """tracemalloc.start(N) runs in the target; both snapshots of one run."""
    ours = str(tmp_path / "ours.pickle")
    ref = str(tmp_path / "ref.pickle")
    run = run_traced(procs, python, workload, ["--frames", frames], out=ours,
                     wl_args=["--tracemalloc", frames, "--dump", ref])
    check_run(run)
    assert os.path.isfile(ref), "workload wrote no reference snapshot"
    fig, summary = agreement(python, ours, ref, workload)
    check_agreement("with tracemalloc, %s, --frames %d" % (workload, frames),
                    run, fig, summary)


@pytest.mark.parametrize("frames", FRAMES, ids=lambda n: "frames%d" % n)
@pytest.mark.parametrize("workload", GT_WORKLOADS)
def test_groundtruth_without_tracemalloc(procs, python, tmp_path, workload,
                                         frames):
    """Reference from a tracemalloc run; pytm-bpf on a run without it."""
    ours = str(tmp_path / "ours.pickle")
    ref = run_reference(procs, python, workload, frames,
                        str(tmp_path / "ref.pickle"))
    run = run_traced(procs, python, workload, ["--frames", frames], out=ours)
    check_run(run)
    fig, summary = agreement(python, ours, ref, workload)
    check_agreement("without tracemalloc, %s, --frames %d"
                    % (workload, frames), run, fig, summary)
