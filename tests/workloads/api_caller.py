# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The checks of tests/test_python_api.py, as a library (pytest imports it)
and as a script that any Python 3.9+ runs with PYTHONPATH=python/.

Script protocol, on stdin/stdout (the test relays between this caller and
the target, tests/workloads/api_target.py, whose stdin it holds):

    caller -> test:  "step WORD"     the test sends WORD to the target and
    test -> caller:  "ok"            waits for "WORD done" (for "exit": for
                                     the target to exit), then says ok
    caller -> test:  "result JSON"   last line: {"figures": {...},
                                     "failures": [...]} or, for the error
                                     mode, what attach() raised

Usage: api_caller.py scenario PID FRAMES TARGET_FILE
       api_caller.py target-exit PID FRAMES TARGET_FILE
       api_caller.py error PID [FRAMES]
The pytm-bpf executable comes from $PYTM_BPF or the checkout (the package's
own lookup).
"""

import json
import os
import sys
import time
import tracemalloc

import pytm_bpf

COUNT = 1000                    # api_target.py's COUNT x SIZE
SIZE = 1000
ALLOC_BYTES = COUNT * SIZE
PEAK_SLACK = 8192               # reset_peak(): peak - current at most this
LIVE_SLACK = 64 * 1024          # what an idle target may allocate meanwhile


def marker_line(path, marker):
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if line.rstrip().endswith("# " + marker):
                return n
    raise LookupError("no line marked %r in %s" % (marker, path))


def line_stat(snapshot, filename, lineno):
    """(count, size) of snapshot.statistics('lineno') at filename:lineno."""
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        if frame.filename == filename and frame.lineno == lineno:
            return stat.count, stat.size
    return 0, 0


class Checks(object):
    def __init__(self):
        self.failures = []
        self.figures = {}

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)
        return cond

    def result(self):
        return {"figures": self.figures, "failures": self.failures,
                "caller": "%d.%d.%d" % sys.version_info[:3]}


def scenario(pid, frames, target_file, drive, executable=None):
    """Every method of the tracer against a target sitting in its command
    loop. DRIVE(word) makes the target run a command and returns when it
    is done."""
    c = Checks()
    fig = c.figures
    check = c.check
    alloc_line = marker_line(target_file, "API-ALLOC")
    call_line = marker_line(target_file, "API-CALL")
    t0 = time.monotonic()
    t = pytm_bpf.attach(pid, frames=frames, executable=executable)
    fig["attach_seconds"] = round(time.monotonic() - t0, 2)
    fig["tracing_line"] = t.tracing_line
    tmpdir = t._tmpdir
    try:
        check(t.is_tracing(), "is_tracing() is False after attach")
        limit = t.get_traceback_limit()
        fig["traceback_limit"] = limit
        check(limit == frames, "get_traceback_limit() = %r, not %d"
              % (limit, frames))
        fig["traced_at_attach"] = t.get_traced_memory()

        # allocate: the snapshot shows the line
        drive("alloc")
        snap = t.take_snapshot()
        check(isinstance(snap, tracemalloc.Snapshot),
              "take_snapshot() returned %r" % type(snap))
        check(snap.traceback_limit == frames,
              "snapshot.traceback_limit = %r" % snap.traceback_limit)
        fig["ntraces"] = len(snap.traces)
        count, size = line_stat(snap, target_file, alloc_line)
        fig["alloc_line"] = [alloc_line, count, size]
        check(count >= COUNT and size >= ALLOC_BYTES,
              "statistics('lineno') at %s:%d: count=%d size=%d (want >= %d, "
              ">= %d); top: %s" % (target_file, alloc_line, count, size,
                                   COUNT, ALLOC_BYTES,
                                   [str(s) for s in
                                    snap.statistics("lineno")[:3]]))
        # tracebacks: the caller's line below the allocating one
        if frames >= 2:
            found = None
            for stat in snap.statistics("traceback"):
                tb = stat.traceback
                if tb[-1].filename == target_file and \
                        tb[-1].lineno == alloc_line:
                    found = tb
                    break
            shown = [str(f) for f in found] if found is not None else None
            fig["alloc_traceback"] = shown
            check(found is not None and len(found) >= 2 and
                  found[-2].filename == target_file and
                  found[-2].lineno == call_line,
                  "traceback of the allocation: %s (want ...:%d then :%d)"
                  % (shown, call_line, alloc_line))
        else:
            check(all(len(tr.traceback) == 1 for tr in snap.traces),
                  "frames=1 but a trace has more than one frame")
        mine = snap.filter_traces([tracemalloc.Filter(True, target_file)])
        fsize = sum(s.size for s in mine.statistics("filename"))
        fig["filtered_size"] = fsize
        check(fsize >= ALLOC_BYTES, "filter_traces(target file) keeps "
              "%d B" % fsize)

        cur, peak = t.get_traced_memory()
        fig["traced_after_alloc"] = [cur, peak]
        check(cur >= ALLOC_BYTES and peak >= cur,
              "get_traced_memory() after alloc = %r" % ((cur, peak),))

        # free: current drops, peak stays
        drive("free")
        cur2, peak2 = t.get_traced_memory()
        fig["traced_after_free"] = [cur2, peak2]
        check(cur2 <= cur - ALLOC_BYTES + LIVE_SLACK,
              "current did not drop on free: %d -> %d" % (cur, cur2))
        check(peak2 >= cur, "peak %d below the earlier current %d"
              % (peak2, cur))
        snap2 = t.take_snapshot()
        count2, size2 = line_stat(snap2, target_file, alloc_line)
        fig["alloc_line_after_free"] = [count2, size2]
        check(size2 < LIVE_SLACK, "freed blocks still in the snapshot: "
              "count=%d size=%d" % (count2, size2))
        diff = [d for d in snap2.compare_to(snap, "lineno")
                if d.traceback[0].filename == target_file and
                d.traceback[0].lineno == alloc_line]
        fig["compare_to"] = str(diff[0]) if diff else None
        check(diff and diff[0].size_diff <= -ALLOC_BYTES + LIVE_SLACK,
              "compare_to(): %s" % fig["compare_to"])

        # reset_peak: peak == current
        t.reset_peak()
        cur3, peak3 = t.get_traced_memory()
        fig["traced_after_reset_peak"] = [cur3, peak3]
        check(cur3 <= peak3 <= cur3 + PEAK_SLACK and peak3 < peak2,
              "reset_peak(): current=%d peak=%d (peak before %d)"
              % (cur3, peak3, peak2))

        # clear_traces: everything goes, even live blocks
        drive("alloc")
        cur4, peak4 = t.get_traced_memory()
        fig["traced_after_realloc"] = [cur4, peak4]
        check(cur4 >= cur3 + ALLOC_BYTES - LIVE_SLACK,
              "second alloc not traced: %d -> %d" % (cur3, cur4))
        t.clear_traces()
        cur5, peak5 = t.get_traced_memory()
        fig["traced_after_clear"] = [cur5, peak5]
        check(0 <= cur5 <= PEAK_SLACK and 0 <= peak5 <= PEAK_SLACK,
              "clear_traces(): current=%d peak=%d" % (cur5, peak5))
        snap5 = t.take_snapshot()
        count5, size5 = line_stat(snap5, target_file, alloc_line)
        fig["alloc_line_after_clear"] = [count5, size5, len(snap5.traces)]
        check(size5 == 0, "cleared blocks in the snapshot: count=%d size=%d"
              % (count5, size5))
        # freeing blocks it no longer knows must not make it negative
        drive("free")
        cur6, peak6 = t.get_traced_memory()
        fig["traced_after_free_cleared"] = [cur6, peak6]
        check(0 <= cur6 <= peak6 and cur6 <= PEAK_SLACK,
              "free after clear: current=%d peak=%d" % (cur6, peak6))
        check(t.is_tracing(), "is_tracing() is False before stop()")
    finally:
        t.stop()
    check(not t.is_tracing(), "is_tracing() is True after stop()")
    fig["returncode"] = t.returncode
    check(t.returncode == 0, "pytm-bpf exited %r" % t.returncode)
    check(not os.path.exists(tmpdir), "temporary directory left: %s"
          % tmpdir)
    t.stop()                        # twice: no error
    check(t.get_traceback_limit() == frames, "limit after stop")
    try:
        t.take_snapshot()
        check(False, "take_snapshot() after stop() did not raise")
    except pytm_bpf.PytmError as e:
        fig["after_stop"] = "%s: %s" % (type(e).__name__, e)
    return c.result()


def target_exit(pid, frames, target_file, drive, executable=None):
    """The target exits under the tracer: a snapshot just before works,
    commands after fail with a PytmError that says so."""
    c = Checks()
    fig = c.figures
    check = c.check
    alloc_line = marker_line(target_file, "API-ALLOC")
    t = pytm_bpf.attach(pid, frames=frames, executable=executable)
    tmpdir = t._tmpdir
    try:
        drive("alloc")
        count, size = line_stat(t.take_snapshot(), target_file, alloc_line)
        fig["alloc_line"] = [count, size]
        check(count >= COUNT and size >= ALLOC_BYTES,
              "snapshot before exit: count=%d size=%d" % (count, size))
        drive("exit")
        deadline = time.monotonic() + 30
        while t.is_tracing() and time.monotonic() < deadline:
            time.sleep(0.1)
        check(not t.is_tracing(), "is_tracing() still True 30 s after the "
              "target exited")
        try:
            t.get_traced_memory()
            check(False, "get_traced_memory() after the target exited "
                  "did not raise")
        except pytm_bpf.PytmError as e:
            fig["error"] = "%s: %s" % (type(e).__name__, e)
            check(isinstance(e, pytm_bpf.TargetExited) and
                  "exited" in str(e), "after exit: %s" % fig["error"])
        try:
            t.take_snapshot()
            check(False, "take_snapshot() after the target exited did not "
                  "raise")
        except pytm_bpf.PytmError as e:
            fig["snapshot_error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        t.stop()
    fig["returncode"] = t.returncode
    check(t.returncode == 0, "pytm-bpf exited %r" % t.returncode)
    check(not os.path.exists(tmpdir), "temporary directory left")
    return c.result()


def attach_error(pid, frames=1, executable=None):
    """What attach() raises, as plain data."""
    try:
        t = pytm_bpf.attach(pid, frames=frames, executable=executable)
    except Exception as e:
        return {"raised": True, "type": type(e).__name__, "message": str(e),
                "returncode": getattr(e, "returncode", None),
                "ProcessLookupError": isinstance(e, ProcessLookupError),
                "PermissionError": isinstance(e, PermissionError),
                "UnsupportedPython": isinstance(e,
                                                pytm_bpf.UnsupportedPython),
                "PytmError": isinstance(e, pytm_bpf.PytmError),
                "ValueError": isinstance(e, ValueError),
                "caller": "%d.%d.%d" % sys.version_info[:3]}
    t.stop()
    return {"raised": False}


# -- script ----------------------------------------------------------------

def _say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _relay(word):
    _say("step " + word)
    reply = sys.stdin.readline().strip()
    if reply != "ok":
        raise SystemExit("api_caller: the test said %r to step %s"
                         % (reply, word))


def main(argv):
    mode = argv[1]
    pid = int(argv[2])
    frames = int(argv[3]) if len(argv) > 3 else 1
    if mode == "scenario":
        result = scenario(pid, frames, argv[4], _relay)
    elif mode == "target-exit":
        result = target_exit(pid, frames, argv[4], _relay)
    elif mode == "error":
        result = attach_error(pid, frames)
    else:
        raise SystemExit("api_caller: unknown mode %r" % mode)
    _say("result " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
