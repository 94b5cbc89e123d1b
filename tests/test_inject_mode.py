# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Injected mode (the default): the allocator tables redirected through
trampolines in an injected memfd page, one NOP probe per event.

1. Ground truth (>= conftest.THRESHOLD of bytes and counts per traceback) on
   Debian's /usr/bin/python3.11 (static, stripped, LTO+PGO, allocator
   inlined at ~190 sites) under PYTHONMALLOC=malloc and pymalloc_debug
   (both forms, every interpreter: tests/test_groundtruth.py). Plain mode
   (--no-inject) on Debian is shown to miss most of it (< 50%) and to say
   why.
2. Injection safety: a target blocked in read() on a pipe, in time.sleep()
   or in a timed lock wait while pytm-bpf attaches completes the call
   correctly and on time.
3. 200 attach/detach cycles against a running workload: its results are
   unchanged, one page remains, no descriptor is left in the target.
4. pytm-bpf SIGKILLed while injected: the target runs on, correctly; a new
   pytm-bpf reuses the page and agrees with tracemalloc.
5. A second pytm-bpf on a traced target fails with exit 1 and one line.

Every process is started through the procs fixture (ended by pid at
teardown); every wait has a timeout. Figures are printed (pytest -s).
"""

import os
import re
import signal
import time

import pytest

from conftest import (T_START, T_STOP, T_WORK,
                      agreement, check_agreement, check_run, finish_traced,
                      pyenv, run_reference, run_traced)

DEBIAN = "/usr/bin/python3.11"
PYENV = {"3.11.7": pyenv("3.11.7"), "3.12.1": pyenv("3.12.1")}
INTERP = dict(PYENV, debian=DEBIAN)

GT_WORKLOADS = ["gt_single.py", "gt_threads.py"]
FRAMES = [1, 25]
PAGE_NAME = "/memfd:pytm-bpf "   # not the ring ("/memfd:pytm-bpf-ring")

# Small maps for the many short runs (attach is faster; the workloads here
# stay far below these).
SMALL_MAPS = ["--max-blocks", 262144, "--max-stacks", 16384]


def interpreter(key):
    """Path of a listed interpreter; a missing one fails the test."""
    path = INTERP[key]
    if not os.access(path, os.X_OK):
        pytest.fail("expected interpreter %s missing: %s" % (key, path))
    return path


# --------------------------------------------------------------------------
# Helpers (conftest's run_traced / run_reference take no environment).

def tracing_line(stderr):
    for line in stderr.splitlines():
        if line.startswith(b"pytm-bpf: tracing"):
            return line.decode("utf-8", "replace")
    return None


def allocator_events(stdout):
    m = re.search(rb"; (\d+) allocator events", stdout)
    return int(m.group(1)) if m else None


def page_mappings(pid):
    """Lines of /proc/PID/maps that map the injected page."""
    with open("/proc/%d/maps" % pid) as fh:
        return [line.rstrip("\n") for line in fh if PAGE_NAME in line]


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def ground_truth(procs, tmp_path, python, workload, frames, form,
                 tool_extra=(), env=None):
    """One ground-truth comparison; returns (run, fig, summary)."""
    ours = str(tmp_path / "ours.pickle")
    ref = str(tmp_path / "ref.pickle")
    tool_args = ["--frames", frames] + list(tool_extra)
    if form == "with_tracemalloc":
        run = run_traced(procs, python, workload, tool_args, out=ours,
                         wl_args=["--tracemalloc", frames, "--dump", ref],
                         env=env)
    else:
        run_reference(procs, python, workload, frames, ref, env=env)
        run = run_traced(procs, python, workload, tool_args, out=ours,
                         env=env)
    check_run(run)
    assert os.path.isfile(ref), "no reference snapshot"
    fig, summary = agreement(python, ours, ref, workload)
    return run, fig, summary


def assert_redirected(run):
    line = tracing_line(run.stderr)
    assert line is not None, run.describe()
    assert "allocator redirected" in line, \
        "not in injected mode: %s\n%s" % (line, run.describe())
    return line


# --------------------------------------------------------------------------
# 1. Ground truth.

# Debian's build and the pyenv ones in both forms, both workloads, frames
# 1 and 25, in this (the default) mode: tests/test_groundtruth.py.

@pytest.mark.parametrize("frames", FRAMES, ids=lambda n: "frames%d" % n)
@pytest.mark.parametrize("workload", GT_WORKLOADS)
@pytest.mark.parametrize("pymalloc", ["malloc", "pymalloc_debug"])
def test_groundtruth_debian_pythonmalloc(procs, tmp_path, pymalloc, workload,
                                         frames):
    """PYTHONMALLOC for both the reference and the traced run; the form
    without tracemalloc in the traced target."""
    python = interpreter("debian")
    run, fig, summary = ground_truth(procs, tmp_path, python, workload,
                                     frames, "without_tracemalloc",
                                     env={"PYTHONMALLOC": pymalloc})
    assert_redirected(run)
    check_agreement("debian python3.11, PYTHONMALLOC=%s, injected, without "
                    "tracemalloc, %s, --frames %d"
                    % (pymalloc, workload, frames), run, fig, summary)


@pytest.mark.parametrize("frames", FRAMES, ids=lambda n: "frames%d" % n)
def test_plain_mode_misses_inlined_debian(procs, tmp_path, frames):
    """--no-inject on Debian's python3.11: the inlined allocator copies are
    not seen, so the agreement is far below the threshold (gt_single.py,
    the form without tracemalloc, as the injected test above), and pytm-bpf
    says so. Shows that the injection is what makes the difference.
    (gt_threads.py is left out: its raw-domain thread calls the exported
    PyMem_RawMalloc, which plain probes do see, which puts it near 0.49.)"""
    python = interpreter("debian")
    workload = "gt_single.py"
    run, fig, summary = ground_truth(procs, tmp_path, python, workload,
                                     frames, "without_tracemalloc",
                                     tool_extra=["--no-inject"])
    line = tracing_line(run.stderr)
    print("\nplain mode, debian python3.11, %s, --frames %d: %s; attach %.2fs"
          % (workload, frames, summary, run.attach_seconds))
    assert line is not None and "plain probes" in line, run.describe()
    assert b"inlined copies" in run.stderr, \
        "no warning about inlined copies:\n" + run.describe()
    assert fig["size_ref"] > 0, summary
    assert fig["bytes_agreement"] < 0.5, \
        "plain mode agrees unexpectedly well: " + summary


# --------------------------------------------------------------------------
# 2. Injection into a target blocked in a system call.

SYSCALL_NR = {"read": 0, "sleep": 230, "lock": 202}   # x86-64 numbers
BLOCK_SECONDS = 2.0
AFTER_EXPECTED = sum(len(str(i * 3)) + i % 64 for i in range(2000))


def current_syscall(pid):
    """First field of /proc/PID/syscall: a number, 'running' or None."""
    try:
        with open("/proc/%d/syscall" % pid) as fh:
            field = fh.read().split()[0]
    except (OSError, IndexError):
        return None
    return int(field) if field.lstrip("-").isdigit() else field


def wait_in_syscall(pid, nr, timeout=10.0):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = current_syscall(pid)
        if seen == nr:
            return
        time.sleep(0.005)
    raise AssertionError("pid %d not blocked in syscall %d within %ss "
                         "(last seen %r)" % (pid, nr, timeout, seen))


@pytest.mark.parametrize("mode", ["read", "sleep", "lock"])
@pytest.mark.parametrize("key", ["debian", "3.11.7"])
def test_attach_while_blocked(procs, key, mode):
    python = interpreter(key)
    args = [mode] if mode == "read" else [mode, BLOCK_SECONDS]
    tgt = procs.target(python, "inj_block.py", args)
    tgt.expect("ready", timeout=T_START)
    tgt.expect("blocking", timeout=T_START)
    wait_in_syscall(tgt.pid, SYSCALL_NR[mode])
    t_blocked = time.monotonic()
    tr = procs.tracer(["-p", tgt.pid] + SMALL_MAPS)
    line = tr.wait_tracing()
    attach = time.monotonic() - t_blocked
    assert "allocator redirected" in line, line
    early = tgt.out.text()
    print("\n%s, blocked in %s: attached (page injected) %.2fs into the "
          "call" % (key, mode, attach))
    if mode == "read":
        assert b"read " not in early, \
            "the read returned during the attach: %r" % early
        # The interrupted read restarted: the thread is in read() again.
        wait_in_syscall(tgt.pid, SYSCALL_NR["read"], timeout=5.0)
        payload = b"written-after-attach:%d" % os.getpid()
        tgt.proc.stdin.write(payload)
        tgt.proc.stdin.flush()
        got = tgt.expect("read ", timeout=30).split()
        print("read returned %r" % bytes.fromhex(got[1] if len(got) > 1
                                                  else ""))
        assert len(got) == 2 and bytes.fromhex(got[1]) == payload, got
    else:
        assert attach < BLOCK_SECONDS - 0.3, \
            "attach took %.2fs: the call was (nearly) over before the " \
            "injection; inconclusive" % attach
        assert b"slept" not in early and b"waited" not in early, early
        if mode == "sleep":
            got = tgt.expect("slept", timeout=BLOCK_SECONDS + 30).split()
            took = float(got[1])
            print("time.sleep(%.1f) took %.4fs" % (BLOCK_SECONDS, took))
        else:
            got = tgt.expect("waited", timeout=BLOCK_SECONDS + 30).split()
            took = float(got[1])
            print("Lock().acquire(timeout=%.1f) took %.4fs, returned %s"
                  % (BLOCK_SECONDS, took, got[2]))
            assert got[2] == "False", got
        assert BLOCK_SECONDS <= took < BLOCK_SECONDS + 0.6, got
    after = tgt.expect("after", timeout=T_WORK).split()
    assert int(after[1]) == AFTER_EXPECTED, after
    rc, stdout, stderr = tr.stop(signal.SIGINT)
    assert rc == 0, stderr
    events = allocator_events(stdout)
    print("pytm-bpf saw %s allocator events" % events)
    assert events and events > 2000, stdout[-500:]
    tgt.send("exit")
    assert tgt.wait(timeout=30) == 0, tgt.err.text()


# --------------------------------------------------------------------------
# 3. Many attach/detach cycles against one running workload.

CHECKSUM_RE = re.compile(r"checksum ([0-9a-f]{64}) rounds (\d+) mismatches "
                         r"(\d+) raw_errors (\d+) zero_errors (\d+)$")


def parse_checksum(line):
    m = CHECKSUM_RE.match(line)
    assert m, "bad checksum line %r" % line
    return m.group(1), [int(g) for g in m.groups()[1:]]


def churn_untraced(procs, python, wl_args=(), run_for=1.0):
    """inj_churn.py without a tracer; returns its checksum line."""
    tgt = procs.target(python, "inj_churn.py", wl_args)
    tgt.expect("ready", timeout=T_START)
    tgt.send("go")
    tgt.expect("warm", timeout=T_WORK)
    if "--rounds" not in [str(a) for a in wl_args]:
        time.sleep(run_for)
        tgt.send("stop")
    line = tgt.expect("checksum", timeout=T_WORK)
    if "--gt" not in [str(a) for a in wl_args]:
        assert tgt.wait(timeout=T_WORK) == 0, tgt.err.text()
    return line, tgt


CYCLES = 200


def test_attach_detach_cycles(procs):
    """200 x (attach, trace 0.05 s, detach) on one running inj_churn.py.
    The time is mostly pytm-bpf's detach: each perf-event uprobe it closes
    costs the kernel 0.1-0.3 s here (14 probes), so a cycle takes ~2-3 s
    and the test ~6-10 minutes, not the 3 minutes aimed at."""
    python = interpreter("debian")
    reference, _ = churn_untraced(procs, python)
    ref_sum, ref_counts = parse_checksum(reference)
    assert ref_counts[1:] == [0, 0, 0], reference

    tgt = procs.target(python, "inj_churn.py")
    tgt.expect("ready", timeout=T_START)
    tgt.send("go")
    tgt.expect("warm", timeout=T_WORK)
    fds_before = fd_count(tgt.pid)
    assert page_mappings(tgt.pid) == [], "a page before the first attach"
    t0 = time.monotonic()
    attach_times = []
    events = []
    silent = []
    first_page = None
    for i in range(CYCLES):
        tr = procs.tracer(["-p", tgt.pid, "--duration", "0.05"] + SMALL_MAPS)
        line = tr.wait_tracing()
        attach_times.append(tr.attach_seconds)
        rc, stdout, stderr = tr.finish()
        assert rc == 0, "cycle %d: rc=%s %r" % (i, rc, stderr)
        assert "allocator redirected" in line, "cycle %d: %s" % (i, line)
        n = allocator_events(stdout)
        assert n is not None, "cycle %d: no report: %r" % (i, stdout[-400:])
        # Known, unexplained and rare (about 1 attach in 100 on a loaded
        # VM): every probe attached, yet no event in a 0.05 s run. Counted
        # and bounded here, reported in the project notes.
        if n == 0:
            silent.append(i)
        events.append(n)
        assert tgt.alive(), "target died in cycle %d: %r" % (
            i, tgt.err.text())
        pages = page_mappings(tgt.pid)
        assert len(pages) == 1, "cycle %d: page mappings %r" % (i, pages)
        if first_page is None:
            first_page = pages[0]
        assert pages[0] == first_page, \
            "cycle %d: page not reused: %r then %r" % (i, first_page, pages)
        # Drop this run's bookkeeping (it has ended; nothing to clean up).
        procs.items.remove(tr)
    total = time.monotonic() - t0
    print("\ncycles with no event: %d of %d %s" % (len(silent), CYCLES, silent))
    assert len(silent) <= CYCLES // 50, "cycles with no event: %r" % silent
    fds_after = fd_count(tgt.pid)
    pages = page_mappings(tgt.pid)
    tgt.send("stop")
    line = tgt.expect("checksum", timeout=T_WORK)
    assert tgt.wait(timeout=T_WORK) == 0, tgt.err.text()
    got_sum, counts = parse_checksum(line)
    print("\n%d attach/detach cycles in %.1fs (%.2fs each; attach median "
          "%.2fs, max %.2fs); events per cycle min %d max %d"
          % (CYCLES, total, total / CYCLES, sorted(attach_times)[CYCLES // 2],
             max(attach_times), min(events), max(events)))
    print("untraced: %s\ncycled:   %s" % (reference, line))
    print("fds before %d after %d; page mappings after: %r"
          % (fds_before, fds_after, pages))
    assert got_sum == ref_sum, (reference, line)
    assert counts[1:] == [0, 0, 0], line
    assert counts[0] > ref_counts[0] // 2, line
    assert len(pages) == 1, pages
    assert fds_after == fds_before, \
        "target had %d fds before, %d after" % (fds_before, fds_after)


# --------------------------------------------------------------------------
# 4. pytm-bpf SIGKILLed while injected, then a new one on the same target.

KILL_ROUNDS = 400


@pytest.mark.parametrize("frames", FRAMES, ids=lambda n: "frames%d" % n)
@pytest.mark.parametrize("key", ["debian", "3.11.7"])
def test_sigkill_then_reattach(procs, tmp_path, key, frames):
    python = interpreter(key)
    wl = ["--rounds", KILL_ROUNDS, "--gt"]
    workload = "gt_single.py"           # what inj_churn.py --gt runs
    ours = str(tmp_path / "ours.pickle")
    ref = str(tmp_path / "ref.pickle")

    # Reference: the same workload with tracemalloc in-process.
    rtgt = procs.target(python, "inj_churn.py",
                        wl + ["--tracemalloc", frames, "--dump", ref])
    rtgt.expect("ready", timeout=T_START)
    rtgt.send("go")
    reference = rtgt.expect("checksum", timeout=T_WORK * 2)
    rtgt.send("go2")
    rtgt.expect("done", timeout=T_WORK)
    rtgt.send("exit")
    assert rtgt.wait(timeout=T_WORK) == 0, rtgt.err.text()
    assert parse_checksum(reference)[1][1:] == [0, 0, 0], reference

    tgt = procs.target(python, "inj_churn.py", wl)
    tgt.expect("ready", timeout=T_START)
    first = procs.tracer(["-p", tgt.pid, "--frames", frames] + SMALL_MAPS)
    line = first.wait_tracing()
    assert "allocator redirected" in line, line
    pages = page_mappings(tgt.pid)
    assert len(pages) == 1, pages
    tgt.send("go")
    tgt.expect("warm", timeout=T_WORK)
    time.sleep(0.5)
    assert b"checksum" not in tgt.out.text(), \
        "the work was over before the kill; inconclusive"
    first.send_signal(signal.SIGKILL)
    rc, _, err = first.finish()
    assert rc == -signal.SIGKILL, "first pytm-bpf rc=%s %r" % (rc, err)
    line = tgt.expect("checksum", timeout=T_WORK * 2)
    print("\n%s: reference: %s\nkilled mid-way: %s" % (key, reference, line))
    assert line == reference
    assert tgt.alive(), tgt.err.text()
    assert page_mappings(tgt.pid) == pages, \
        "page changed: %r -> %r" % (pages, page_mappings(tgt.pid))

    second = procs.tracer(["-p", tgt.pid, "--frames", frames, "-o", ours])
    line = second.wait_tracing()
    assert "allocator redirected" in line, line
    after = page_mappings(tgt.pid)
    assert after == pages, "page not reused: %r -> %r" % (pages, after)
    run = finish_traced(second, tgt, ours, go="go2")
    check_run(run)
    fig, summary = agreement(python, ours, ref, workload)
    check_agreement("%s, re-attach after SIGKILL, page reused, --frames %d"
                    % (key, frames), run, fig, summary)


# --------------------------------------------------------------------------
# 4b. Attached while threads allocate: a call entered while the probes went
# in and whose return went unseen must not make that thread's later calls
# look nested. Plain probes (entry + return probe per function) under
# PYTHONMALLOC=malloc, where they see every call, and injected mode over a
# hook layer (pymalloc_debug: entry sites count nesting).

BUSY_MODES = {
    "plain-malloc": (["--no-inject"], {"PYTHONMALLOC": "malloc"}),
    "injected-debug": ([], {"PYTHONMALLOC": "pymalloc_debug"}),
}


# (Plain probes miss Debian's inlined allocator: not a case here.)
@pytest.mark.parametrize("key,mode", [("3.11.7", "plain-malloc"),
                                      ("3.11.7", "injected-debug"),
                                      ("debian", "injected-debug")])
def test_attach_while_allocating(procs, tmp_path, key, mode):
    python = interpreter(key)
    extra, env = BUSY_MODES[mode]
    workload = "gt_single.py"           # what gt_busy.py's thread runs
    ours = str(tmp_path / "ours.pickle")
    ref = str(tmp_path / "ref.pickle")
    frames = 25

    rtgt = procs.target(python, "gt_busy.py",
                        ["--tracemalloc", frames, "--dump", ref], env=env)
    rtgt.expect("ready", timeout=T_START)
    rtgt.send("go")
    rtgt.expect("busy", timeout=T_WORK)
    rtgt.send("go2")
    rtgt.expect("done", timeout=T_WORK)
    rtgt.send("exit")
    assert rtgt.wait(timeout=T_WORK) == 0, rtgt.err.text()

    tgt = procs.target(python, "gt_busy.py", env=env)
    tgt.expect("ready", timeout=T_START)
    tgt.send("go")
    tgt.expect("busy", timeout=T_WORK)
    tracer = procs.tracer(["-p", tgt.pid, "--frames", frames, "-o", ours]
                          + extra)
    tracer.wait_tracing()
    time.sleep(0.3)                     # churn on under the probes
    run = finish_traced(tracer, tgt, ours, go="go2")
    check_run(run)
    assert "Lost events: none" in run.report_tail(), run.describe()
    fig, summary = agreement(python, ours, ref, workload)
    check_agreement("%s, %s (%s), attached while two threads allocate"
                    % (key, mode, env["PYTHONMALLOC"]), run, fig, summary)


# --------------------------------------------------------------------------
# 5. Two tracers on one target.

@pytest.mark.parametrize("first_mode,second_mode", [
    ("injected", "injected"), ("injected", "no-inject"),
    ("no-inject", "injected")])
@pytest.mark.parametrize("key", ["debian", "3.11.7"])
def test_second_tracer_refused(procs, key, first_mode, second_mode):
    python = interpreter(key)
    tgt = procs.target(python, "inj_churn.py")
    tgt.expect("ready", timeout=T_START)
    first_args = ["-p", tgt.pid] + SMALL_MAPS
    if first_mode == "no-inject":
        first_args.append("--no-inject")
    first = procs.tracer(first_args)
    first.wait_tracing()
    args = ["-p", tgt.pid, "--duration", 5] + SMALL_MAPS
    if second_mode == "no-inject":
        args.append("--no-inject")
    second = procs.tracer(args)
    rc, stdout, stderr = second.finish(timeout=T_STOP)
    lines = stderr.decode("utf-8", "replace").splitlines()
    print("\nsecond pytm-bpf (%s): rc=%s, stderr %r" % (second_mode, rc,
                                                         lines))
    assert rc == 1, (rc, stderr, stdout)
    assert len(lines) == 1, lines
    assert lines[0].startswith("pytm-bpf: "), lines
    assert "already traced by another pytm-bpf" in lines[0], lines
    assert stdout == b"", stdout
    # The first one is undisturbed. Under plain probes (uprobe + uretprobe,
    # ~20 us an event on this VM) the warm-up alone takes ~110 s on an
    # idle machine with pyenv 3.11.7: give it room for a loaded one.
    tgt.send("go")
    tgt.expect("warm", timeout=T_WORK * (3 if first_mode == "no-inject" else 1))
    tgt.send("stop")
    tgt.expect("checksum", timeout=T_WORK)
    rc, stdout, stderr = first.stop(signal.SIGINT)
    assert rc == 0, stderr
    events = allocator_events(stdout)
    assert events and events > 10000, stdout[-400:]
    assert tgt.wait(timeout=T_WORK) == 0, tgt.err.text()
