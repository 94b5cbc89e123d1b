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

from conftest import ROOT, WORKLOADS, run_cmd

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
