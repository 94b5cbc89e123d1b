# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""3.13's reference tracer, which pytm-bpf chains into so that objects
reused from free lists are attributed where tracemalloc puts them
(page/sampler.c, pytm_reftrace), seen from inside the target
(tests/workloads/wl_reftrace.py asks PyRefTracer_GetTracer): installed
while attached, chained to tracemalloc's own when it runs, put back in a
forked child that is not followed (kept in one that is), left in place by a killed tracer and
taken over by the next one without chaining to itself, put back at
detach; tracemalloc (when it runs) and pytm-bpf agree on the reused
blocks throughout. The ground truth on every version is
test_groundtruth.py::test_groundtruth_freelist_reuse."""

import os
import signal

import pytest

from conftest import (INTERPRETERS, THRESHOLD, WORKLOADS, agreement,
                      batch_result, check_run, isolated, marked_line,
                      run_traced, snaptool)

WL = os.path.join(WORKLOADS, "wl_reftrace.py")


def py313():
    python = INTERPRETERS["3.13"]
    if not os.access(python, os.X_OK):
        pytest.fail("listed interpreter 3.13 missing: %s" % python)
    return python


def state(tgt, what="state", prefix="tracer"):
    tgt.send(what)
    line = tgt.expect(prefix + " ")
    return line.split(None, 1)[1].strip()


def attach(procs, tgt, label, args):
    """A tracer on tgt; the runtime's tracer must then be in our page."""
    tracer = procs.tracer(["-p", tgt.pid, "--frames", 1] + args)
    tracer.wait_tracing()
    hooked = state(tgt)
    print("%s: %s" % (label, hooked))
    assert hooked.split()[1] == "pytm", hooked
    return tracer, hooked


@pytest.mark.parametrize("tm", ["with", "without"])
def test_reftracer_lifecycle(procs, tmp_path, tm):
    python = py313()
    ours = str(tmp_path / "ours.pickle")
    ref = str(tmp_path / "ref.pickle")
    tgt = procs.target(python, "wl_reftrace.py",
                       ["--tracemalloc"] if tm == "with" else [])
    tgt.expect("ready")
    before = state(tgt)
    print("\nbefore: %s" % before)
    if tm == "with":
        assert before.split()[1].startswith("libpython3.13"), before
    else:
        assert before == "0x0 none", before

    first, hooked = attach(procs, tgt, "attached", ["--no-follow-forks"])
    # A child forked now is not followed: it puts the tracer back itself.
    child = state(tgt, "fork", "child")
    print("unfollowed child: %s" % child)
    assert child == before
    assert state(tgt) == hooked

    rc, _, err = first.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL, err
    assert state(tgt) == hooked, "a killed tracer leaves its page in place"

    second, _ = attach(procs, tgt, "re-attached", ["-o", ours])
    # Followed (the default), a child is traced as its parent is.
    child = state(tgt, "fork", "child")
    print("followed child: %s" % child)
    assert child.split()[1] == "pytm", child
    tgt.send("work")
    tgt.expect("worked")
    if tm == "with":
        tgt.send("dump " + ref)
        tgt.expect("dumped")
    rc, _, err = second.stop(signal.SIGINT)
    assert rc == 0, err
    after = state(tgt)
    print("detached: %s" % after)
    assert after == before, "detach puts the tracer back"
    # Still a working interpreter (and tracemalloc) after all that.
    tgt.send("work")
    tgt.expect("worked")
    tgt.send("exit")
    assert tgt.wait() == 0

    # The kept tuples are the REUSE line's, none the MAKE line's (but for
    # a few that reuse memory freed before the attach: untraced, as in
    # tracemalloc after clear_traces()).
    lines = {}
    for st in snaptool(python, "stats", ours, "lineno", "False"):
        fname, lineno = st["traceback"][0]
        if fname == WL:
            lines[lineno] = (st["size"], st["count"])
    reuse = lines.get(marked_line(WL, "REUSE"), (0, 0))
    make = lines.get(marked_line(WL, "MAKE"), (0, 0))
    print("REUSE line: %s, MAKE line: %s; all: %s" % (reuse, make, lines))
    assert reuse[1] >= 1400 and make == (0, 0)
    if tm == "with":
        fig, summary = agreement(python, ours, ref, "wl_reftrace.py")
        print(summary)
        assert fig["bytes_agreement"] >= THRESHOLD, summary
        assert fig["count_agreement"] >= THRESHOLD, summary


def freelist_run(procs, python, outdir, args):
    ours = os.path.join(outdir, "ours.pickle")
    ref = os.path.join(outdir, "ref.pickle")
    run = run_traced(procs, python, "gt_freelist.py", ["--frames", 1] + args,
                     out=ours, wl_args=["--tracemalloc", 1, "--dump", ref])
    check_run(run)
    return agreement(python, ours, ref, "gt_freelist.py")


@pytest.mark.parametrize("how", ["sampled", "off"])
def test_freelist_sampled_and_off(tmp_path_factory, how):
    """gt_freelist.py on 3.13 against its own tracemalloc: sampled at one
    per byte (every block is a sample: exact figures), reused blocks move
    as in exact mode (only blocks in the sampled set pass the site); with
    --no-free-lists they stay at their first line, as before 3.13."""
    python = py313()
    args = {"sampled": ["--sample", "1"], "off": ["--no-free-lists"]}

    def make_jobs():
        return dict((h, isolated(freelist_run, python,
                                 str(tmp_path_factory.mktemp("fl-" + h)), a))
                    for h, a in args.items())
    fig, summary = batch_result(("freelist313",), how, make_jobs)
    print("\n%s: %s" % (how, summary))
    if how == "sampled":
        assert fig["bytes_agreement"] >= THRESHOLD, summary
        assert fig["count_agreement"] >= THRESHOLD, summary
    else:
        assert fig["size_ours"] == fig["size_ref"], summary
        assert fig["bytes_agreement"] < 0.5, summary
