# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""--leaks: lines ranked by sustained growth, with their oldest blocks' age.

tests/workloads/wl_leaks.py: twelve lines of steady churn (each in a file of
its own), a one-off burst of 3 MB that stays, and one slow leak of 2033
bytes every 0.1 s. Two traced runs side by side, --interval 1 for 13 s:
Debian's python3.11 exact with --format json, pyenv 3.12 sampled (--sample
1k) with the text report. After 10 intervals the leak ranks first, in
every report from the 7th interval on; the burst never ranks; the age of
the leak's oldest block is the time since the workload's first leaked block
to within one interval; the slope is the leak's rate (exact: within 10%).
"""

import json
import os
import re

from conftest import (INTERPRETERS, T_START, T_STOP, WORKLOADS, batch_result,
                      isolated, marked_line)

WORKLOAD = os.path.join(WORKLOADS, "wl_leaks.py")
INTERVAL = 1.0
RATE = 2033 * 10 * 60          # bytes per minute the leak grows by


def leaks_run(procs, python, args):
    tgt = procs.target(python, WORKLOAD)
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--interval", INTERVAL, "--leaks",
                       "--duration", 13.5] + args)
    tr.wait_tracing()
    tgt.send("go")
    leak_t = float(tgt.expect("leak ").split()[1])
    burst_t = float(tgt.expect("burst ").split()[1])
    rc, out, err = tr.finish(timeout=T_STOP)
    alive = tgt.alive()
    return {"rc": rc, "out": out.decode(), "err": err.decode(errors="replace"),
            "leak_t": leak_t, "burst_t": burst_t, "alive": alive}


def run(which):
    def make_jobs():
        return {"exact": isolated(leaks_run, INTERPRETERS["debian-3.11"],
                                  ["--format", "json"]),
                "sampled": isolated(leaks_run, INTERPRETERS["3.12"],
                                    ["--sample", "1k"])}
    r = batch_result(("leaks",), which, make_jobs)
    assert r["rc"] == 0, r["err"][-2000:]
    assert r["alive"], "the target did not survive tracing"
    return r


def frame(tb):
    return (os.path.basename(tb[-1]["filename"]), tb[-1]["lineno"])


def test_leaks_exact_json():
    r = run("exact")
    leak = ("wl_leaks.py", marked_line(WORKLOAD, "LEAK_LINE"))
    burst = ("wl_leaks.py", marked_line(WORKLOAD, "BURST_LINE"))
    docs = [json.loads(l) for l in r["out"].splitlines() if l.strip()]
    docs = [d for d in docs if d["type"] == "leaks"]
    assert len(docs) >= 13, [d["rounds"] for d in docs]
    churn_ranked = set()
    for d in docs:
        ranked = [frame(x["traceback"]) for x in d["leaks"]]
        assert burst not in ranked, (d["rounds"], ranked)
        churn_ranked.update(f for f in ranked if f[0].startswith("<churn"))
        if d["rounds"] >= 8:
            assert ranked and ranked[0] == leak, (d["rounds"], d["leaks"])
    print("churn lines ranked at some point: %d of 12" % len(churn_ranked))
    last = [d for d in docs if not d["final"] and d["rounds"] >= 11][-1]
    top = last["leaks"][0]
    assert top["intervals"] == 10 and top["grew"] >= 9, top
    # The 2033-byte blocks, and the list's array that holds them.
    assert (top["count"] - 1) * 2033 <= top["size"] <= top["count"] * 2033 + 8 * top["count"] * 2, top
    assert abs(top["slope"] - RATE) <= 0.1 * RATE, (top["slope"], RATE)
    age = last["time"] - r["leak_t"]
    assert abs(top["oldest_age"] - age) <= INTERVAL, (top["oldest_age"], age)
    print("leak: %d B, %.0f B/min (expected %d), oldest %.2f s (workload: %.2f s)"
          % (top["size"], top["slope"], RATE, top["oldest_age"], age))


def test_leaks_sampled_text():
    r = run("sampled")
    lk = marked_line(WORKLOAD, "LEAK_LINE")
    bl = marked_line(WORKLOAD, "BURST_LINE")
    blocks = r["out"].split("\n\n")
    rankings = [b for b in blocks if "[ Top " in b and " leak" in b]
    assert len(rankings) >= 8, r["out"][-3000:]
    for b in blocks:
        assert "wl_leaks.py:%d:" % bl not in b, b
    last = rankings[-1].splitlines()
    head = [i for i, l in enumerate(last) if l.startswith("[ Top ")][0]
    first = last[head + 1]
    m = re.match(r".*/wl_leaks\.py:(\d+): size=.*, count=\d+, \+([\d.]+) (B|KiB|MiB)/min, "
                 r"grew in (\d+) of (\d+) intervals, oldest block ([\d.]+) s old$", first)
    assert m and int(m.group(1)) == lk, first
    slope = float(m.group(2)) * {"B": 1, "KiB": 1024, "MiB": 1 << 20}[m.group(3)]
    assert abs(slope - RATE) <= 0.4 * RATE, (first, RATE)
    assert int(m.group(5)) == 10 and int(m.group(4)) >= 8, first
    # The final report comes at the end of the run; the age is of then.
    print("sampled: " + first)
