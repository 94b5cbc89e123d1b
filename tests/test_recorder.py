# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The in-target recorder (page/recorder.c: the stack walk, page/ring.c:
the ring it writes), run inside each real interpreter without injection
(tests/unit/rec_hook.c, a library the interpreter loads with ctypes;
tests/workloads/rec_check.py drives it and drains the ring), against
tracemalloc object by object: the same frames (file, line) and the same
frame count, at --frames 1 and 25, in nested calls, a generator, a
comprehension, methods, a lambda, a thread, and stacks deeper than the
limit; events read in clock order, none lost, no free after a live
object's allocation."""

import json
import os

import pytest

from conftest import INTERPRETERS, ROOT, T_START, WORKLOADS, run_cmd

LIB = os.path.join(ROOT, ".output", "tests", "librec_hook.so")


@pytest.mark.parametrize("frames", [1, 25], ids=lambda n: "frames%d" % n)
def test_recorder_walk(python, frames):
    assert os.path.isfile(LIB), "%s is not built (make %s)" % (LIB, LIB)
    _, out, _ = run_cmd([python, os.path.join(WORKLOADS, "rec_check.py"),
                         LIB, str(frames)])
    res = json.loads(out.decode())
    print("\n%s" % res)
    assert "error" not in res, res
    assert res["events"] > res["objects"], res      # the ring was read
    assert res["checked"] == res["objects"] >= 130 and not res["missing"] \
        and not res["freed"] and not res["dropped"], res
    assert res["nmismatches"] == 0, res
    # The thread state without the kernel: the GIL holder until 3.11, the
    # thread-local variable from 3.12, right at every event.
    minor = int(res["version"].split(".")[1])
    want = "tls" if minor >= 12 else "gil"
    assert res["tstate_way"] == want and res["tstate_wrong"] == 0, res


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_tls_offset_from_outside(procs, version):
    """pytm-bpf finds _Py_tss_tstate's offset from the thread pointer from
    outside (user/discovery/tls.c, said under -v) where the process finds
    it for itself, with a thread running Python (tests/workloads/
    wl_tls.py)."""
    python = INTERPRETERS[version]
    if not os.access(python, os.X_OK):
        pytest.fail("listed interpreter %s missing: %s" % (version, python))
    assert os.path.isfile(LIB), "%s is not built" % LIB
    tgt = procs.target(python, "wl_tls.py", [LIB])
    inside = int(tgt.expect("tls ", timeout=T_START).split()[1])
    tgt.expect("ready", timeout=T_START)
    assert inside < 0, "the process did not find its own offset"
    tracer = procs.tracer(["-p", tgt.pid, "-v", "--duration", "1"])
    rc, _, err = tracer.finish()
    tgt.send("exit")
    assert tgt.wait() == 0
    assert rc == 0, err
    said = [l for l in err.decode().splitlines() if "_Py_tss_tstate" in l]
    print("\ninside: %d; pytm-bpf: %s" % (inside, said))
    assert said and said[0].endswith("at %+d from the thread pointer" % inside), said
