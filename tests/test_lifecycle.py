# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ends of a trace that are not a polite SIGINT, and what the target sees:
the target exits mid-trace; pytm-bpf is SIGKILLed (the target must finish
its work correctly); a second pytm-bpf attaches after the first one ended;
a target blocked in sleep / lock wait / pipe read while pytm-bpf attaches.
The variants of a test for one interpreter run at the same time
(conftest.batch_result)."""

import os
import signal
import time

import pytest

from conftest import (T_START, T_STOP, T_WORK, agreement, batch_result,
                      check_agreement, check_run, finish_traced, isolated,
                      snaptool, snaptool_raw, top_block)


EXIT_WAYS = ["return", "_exit", "killed"]


def exit_run(procs, python, outdir, how):
    out = os.path.join(outdir, "exit.pytm")
    tgt = procs.target(python, "wl_exit.py",
                       ["wait" if how == "killed" else how])
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--frames", 5, "--top", 10, "-o", out])
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("working")
    if how == "killed":
        time.sleep(1.0)
        os.kill(tgt.pid, signal.SIGKILL)
    trc = tgt.wait(timeout=T_WORK)
    assert trc == (-signal.SIGKILL if how == "killed" else 0), \
        "target: rc=%s %r" % (trc, tgt.err.text())
    t0 = time.monotonic()
    rc, stdout, stderr = tr.finish(timeout=T_STOP)   # no signal from us
    note = ("target %s: pytm-bpf exited %.2fs after the target, rc=%s"
            % (how, time.monotonic() - t0, rc))
    shown = "rc=%s\nstderr: %r\nstdout: %r" % (rc, stderr, stdout[:2000])
    assert rc == 0, shown
    assert stdout.startswith(b"[ Top "), shown
    assert os.path.isfile(out), "no snapshot file: " + shown
    info = snaptool(python, "summary", out)
    assert info["traceback_limit"] == 5, info
    expected = snaptool_raw(python, "top", out, "lineno", 0, 10)
    assert top_block(stdout) == expected, \
        "report differs from tracemalloc on the written snapshot:\n%s\n%s" % (
            top_block(stdout).decode(errors="replace"),
            expected.decode(errors="replace"))
    return note


@pytest.mark.parametrize("how", EXIT_WAYS)
def test_target_exits_mid_trace(python, tmp_path_factory, how):
    def make_jobs():        # the three ways of one interpreter at once
        return dict((h, isolated(exit_run, python,
                                 str(tmp_path_factory.mktemp("exit")), h))
                    for h in EXIT_WAYS)
    print("\n" + batch_result(("exit", python), how, make_jobs))


def checksum_run(procs, python, tracer_args=None, kill_after="phase1"):
    """wl_checksum.py, untraced (tracer_args None) or traced with pytm-bpf
    SIGKILLed as soon as the workload prints kill_after."""
    tgt = procs.target(python, "wl_checksum.py")
    tgt.expect("ready", timeout=T_START)
    tr = None
    if tracer_args is not None:
        tr = procs.tracer(["-p", tgt.pid] + tracer_args)
        tr.wait_tracing()
    tgt.send("go")
    if tr is not None:
        tgt.expect(kill_after)
        tr.send_signal(signal.SIGKILL)
        rc, _, err = tr.finish()
        assert rc == -signal.SIGKILL, "pytm-bpf rc=%s %r" % (rc, err)
    line = tgt.expect("checksum", timeout=T_WORK)
    hooked = int(tgt.expect("hooked", timeout=T_WORK).split()[1])
    rc = tgt.wait(timeout=T_WORK)
    assert rc == 0, "workload rc=%s: %s" % (rc, tgt.err.text())
    return line, hooked


def sigkill_run(procs, python, outdir, frames):
    reference = checksum_run(procs, python)
    extra = ["--recorder"] if frames == "recorder" else ["--bpf-walk"]
    traced = checksum_run(procs, python,
                          ["--frames", 25 if frames == "recorder" else frames, "-o",
                           os.path.join(outdir, "never.pytm")] + extra)
    return reference, traced


KILL_MODES = [1, 25, "recorder"]


@pytest.mark.parametrize("frames", KILL_MODES, ids=lambda n: (
    "frames%d" % n if isinstance(n, int) else n))
def test_tracer_sigkill_target_unharmed(python, tmp_path_factory, frames):
    """pytm-bpf SIGKILLed mid-way: the target computes what it computes
    untraced (the BPF walk at --frames 1 and 25, and --recorder at 25,
    whose page then finds its ring undrained, disarms itself and puts the
    allocator tables back)."""
    def make_jobs():
        return dict((n, isolated(sigkill_run, python,
                                 str(tmp_path_factory.mktemp("kill")), n))
                    for n in KILL_MODES)
    (reference, _), (traced, hooked) = batch_result(("sigkill", python),
                                                    frames, make_jobs)
    print("\nuntraced: %s\nkilled tracer: %s; table slots still leading to "
          "the page: %d" % (reference, traced, hooked))
    assert traced == reference
    if frames == "recorder":
        # Its page puts the tables back (the BPF walk's leaves them, to
        # NOP sites: it cannot tell that its tracer is gone).
        assert hooked == 0


def reattach_run(procs, python, outdir, first_end):
    workload = "gt_single.py"
    ours = os.path.join(outdir, "ours.pickle")
    ref = os.path.join(outdir, "ref.pickle")
    tgt = procs.target(python, workload,
                       ["--tracemalloc", 1, "--dump", ref])
    tgt.expect("ready", timeout=T_START)
    rec = ["--recorder"] if first_end.startswith("recorder") else ["--bpf-walk"]
    first = procs.tracer(["-p", tgt.pid, "--frames", 1] + rec)
    first.wait_tracing()
    killed = first_end.endswith("sigkill")
    rc, _, err = first.stop(signal.SIGKILL if killed else signal.SIGINT)
    want = -signal.SIGKILL if killed else 0
    assert rc == want, "first pytm-bpf rc=%s %r" % (rc, err)

    # After a killed recorder, another: its page left recording, its ring.
    second = procs.tracer(["-p", tgt.pid, "--frames", 1, "-o", ours] + rec)
    second.wait_tracing()
    run = finish_traced(second, tgt, ours)
    check_run(run)
    fig, summary = agreement(python, ours, ref, workload)
    return run, fig, summary


REATTACH = ["sigkill", "sigint", "recorder-sigkill"]


@pytest.mark.parametrize("first_end", REATTACH)
def test_reattach(python, tmp_path_factory, first_end):
    """A second pytm-bpf on the same target after the first one ended
    (killed, or detached normally) still agrees with tracemalloc; so does
    a --recorder one after a --recorder one was killed (its page left
    recording, its ring taken over)."""
    def make_jobs():
        return dict((e, isolated(reattach_run, python,
                                 str(tmp_path_factory.mktemp("reattach")), e))
                    for e in REATTACH)
    run, fig, summary = batch_result(("reattach", python), first_end,
                                     make_jobs)
    check_agreement("re-attach after %s" % first_end, run, fig, summary)


def test_attach_during_sleep_and_lock_wait(procs, python):
    """Attaching must not shorten or stretch a sleep or a timed lock wait,
    nor break a pending read on a pipe (the design's syscall-injection
    cases)."""
    seconds = 4.0
    tgt = procs.target(python, "wl_sleep.py", [seconds])
    tgt.expect("ready", timeout=T_START)
    tgt.expect("sleeping", timeout=T_START)
    t0 = time.monotonic()
    tr = procs.tracer(["-p", tgt.pid, "--frames", 3])
    tr.wait_tracing()
    attach = time.monotonic() - t0
    assert attach < seconds - 1.0, \
        "attach took %.2fs: the sleep was over before it (inconclusive)" \
        % attach
    waited = tgt.expect("waited", timeout=seconds + 30).split()
    slept = tgt.expect("slept", timeout=seconds + 30).split()
    tgt.send("ping")
    pong = tgt.expect("", timeout=30)
    rc, _, err = tr.stop(signal.SIGINT)
    trc = tgt.wait(timeout=30)
    print("\nattach %.2fs; sleep(%.1f) took %ss; lock wait took %ss (%s)"
          % (attach, seconds, slept[1], waited[1], waited[2]))
    assert rc == 0, err
    assert trc == 0, tgt.err.text()
    assert pong == "pong", pong
    assert waited[2] == "False", waited
    assert seconds - 0.01 <= float(slept[1]) <= seconds + 0.5, slept
    assert seconds - 0.01 <= float(waited[1]) <= seconds + 0.5, waited
