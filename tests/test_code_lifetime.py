# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Code objects that live for one call, in both exact modes (the in-target
recorder, the default, and the BPF walk): tests/workloads/wl_shortcode.py
makes 3,000 functions, each from its own source (file dyn-I.py), calls each
once to allocate a kept bytearray of 1000 + I bytes at line 2, and drops
it: its code object is freed at once and its address is reused by the next
one, long before the tracer reads it. What the resolver needs of a code
object is copied by BPF when it first shows (the page's code site, into the
process's own ring buffer that the drain reads before the event; the BPF
walk's announcement): every block must be at its own file and line (none at
<unknown>, none at another dyn-J.py), on every interpreter. Before the
copies, 21-124 of the 3,000 were right with the recorder, 10-128 with the
BPF walk.

Also: the tracer stopped (SIGSTOP) while 1,000 such functions run, so that
the copies overflow the process's own ring buffer into the event thread's,
which the drain waits for when it runs again: still all right.
"""

import json
import os
import re
import signal

import pytest

from conftest import INTERPRETERS, T_START, T_WORK

WORKLOAD = os.path.join(os.path.dirname(__file__), "workloads", "wl_shortcode.py")


def traced(procs, python, n, extra, stopped=False):
    """The final report of pytm-bpf -p over wl_shortcode.py N; STOPPED: the
    tracer is stopped while the functions run."""
    tgt = procs.target(python, WORKLOAD, [str(n)])
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--format", "json", "--top", "0"] + extra)
    tr.wait_tracing()
    if stopped:
        tr.send_signal(signal.SIGSTOP)
    tgt.send("go")
    tgt.expect("built", timeout=T_WORK)
    if stopped:
        tr.send_signal(signal.SIGCONT)
    rc, out, err = tr.stop()
    tgt.send("end")
    assert rc == 0 and tgt.wait(timeout=T_WORK) == 0, err.decode(errors="replace")[-2000:]
    docs = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
    return [d for d in docs if d.get("type") == "report"][-1]


def check_lines(report, n, what):
    """Every function's block at its own line, nothing at <unknown>."""
    sizes, unknown = {}, 0
    for s in report["statistics"]:
        frame = s["traceback"][-1]
        m = re.match(r"dyn-(\d+)\.py$", frame["filename"])
        if m and frame["lineno"] == 2:
            sizes[int(m.group(1))] = s["size"]
        elif frame["filename"] == "<unknown>":
            unknown += s["size"]
    # Each line holds its bytearray (1000 + I bytes and its object header),
    # never another function's: that one's size is different.
    wrong = [i for i in range(n) if not 1000 + i <= sizes.get(i, 0) < 1000 + i + 1000]
    rec = report["recorder"] or {}
    print("%s: %d of %d functions' blocks at their line, %d bytes at <unknown>; "
          "code objects %s, from BPF's copy %s, spilled %s"
          % (what, n - len(wrong), n, unknown, rec.get("code_objects"),
             rec.get("code_objects_early"), rec.get("code_objects_spilled")))
    assert not wrong and unknown == 0, (len(wrong), wrong[:10], unknown)


@pytest.mark.parametrize("mode", ["recorder", "bpf-walk"])
def test_short_lived_code_objects(procs, python, mode):
    n = 3000
    report = traced(procs, python, n, ["--bpf-walk"] if mode == "bpf-walk" else [])
    check_lines(report, n, "%s, %s" % (python, mode))
    if mode == "bpf-walk":
        assert not report["recorder"], report["recorder"]
        return
    # Every dyn-I.py code object (the module's and the function's) came
    # through BPF's copy, not a late read of the target's memory.
    assert report["recorder"]["code_objects_early"] >= 2 * n, report["recorder"]


def test_short_lived_code_objects_spilled(procs):
    n = 1000
    # A ring with room for every event: only the copies overflow.
    report = traced(procs, INTERPRETERS["debian-3.11"], n, ["--ring-slots", str(1 << 20)],
                    stopped=True)
    check_lines(report, n, "debian-3.11, tracer stopped")
    rec = report["recorder"]
    assert rec["ring_full"] == 0, rec
    assert rec["code_objects_spilled"] > 0, rec
    assert rec["code_objects_early"] >= 2 * n, rec
