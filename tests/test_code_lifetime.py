# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Code objects that live for one call, in both exact modes (the in-target
recorder, the default, and the BPF walk): tests/workloads/wl_shortcode.py
makes 3,000 functions,
each from its own source (file dyn-I.py), calls each once to allocate a
kept bytearray of 1000 + I bytes at line 2, and drops it: its code object
is freed at once and its address is reused by the next one, long before
the tracer reads it. What the resolver needs of a code object is copied by
BPF when it first shows (the page's code site, into the process's own ring
buffer that the drain reads before the event; the BPF walk's announcement):
every block must be at its own file and line (none at <unknown>, none at
another dyn-J.py), on every interpreter. Before the copies, 21-124 of the
3,000 were right with the recorder, 10-128 with the BPF walk."""

import json
import os
import re

import pytest

from conftest import T_START, T_WORK

WORKLOAD = os.path.join(os.path.dirname(__file__), "workloads", "wl_shortcode.py")
N = 3000


@pytest.mark.parametrize("mode", ["recorder", "bpf-walk"])
def test_short_lived_code_objects(procs, python, mode):
    tgt = procs.target(python, WORKLOAD, [str(N)])
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--format", "json", "--top", "0"] +
                      (["--bpf-walk"] if mode == "bpf-walk" else []))
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("built", timeout=T_WORK)
    rc, out, err = tr.stop()
    tgt.send("end")
    assert rc == 0 and tgt.wait(timeout=T_WORK) == 0, err.decode(errors="replace")[-2000:]
    docs = [json.loads(l) for l in out.decode().splitlines() if l.strip()]
    report = [d for d in docs if d.get("type") == "report"][-1]
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
    wrong = [i for i in range(N) if not 1000 + i <= sizes.get(i, 0) < 1000 + i + 1000]
    rec = report["recorder"] or {}
    print("%s, %s: %d of %d functions' blocks at their line, %d bytes at <unknown>; "
          "code objects %s, copied at first sight %s"
          % (python, mode, N - len(wrong), N, unknown, rec.get("code_objects"),
             rec.get("code_objects_early")))
    assert not wrong and unknown == 0, (len(wrong), wrong[:10], unknown)
    if mode == "bpf-walk":
        assert not report["recorder"], report["recorder"]
        return
    # Every dyn-I.py code object (the module's and the function's) came
    # through BPF's copy, not a late read of the target's memory.
    assert rec["code_objects_early"] >= 2 * N, rec
