# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Children forked from a traced process live (injected mode, the default).

On this kernel a probed 5-byte NOP is rewritten into a call to a
per-process [uprobes-trampoline] mapping that fork() does not copy: a child
that ran the parent's probe site died with SIGSEGV on its first allocation.
The sites now sit behind a fork guard (a data page the kernel zeroes in
forked children), and a page a child inherited is replaced when the child
is traced in turn.

One traced run per interpreter (Debian's python3.11, pyenv 3.8, 3.11, 3.12,
3.13; Debian again with --probe-site nop6; Debian and 3.12 in sampled mode,
whose sampler and sites sit behind the same guard) of
tests/workloads/fork_children.py:
os.fork() children right after attach, a multiprocessing pool (fork start
method), subprocess.run and os.posix_spawn (CLONE_VM|CLONE_VFORK), forks
while another thread allocates, forks after
detach, and a child forked while traced that is then traced itself (its
allocations must be reported). Every child's exit status is checked, and
the kernel log (dmesg) must gain no segfault line for any of their pids.
The runs go concurrently; each test item checks its own.
"""

import json
import os
import re
import subprocess

import pytest

from conftest import (T_START, T_WORK, WORKLOADS, batch_result, isolated,
                      pyenv)

DEBIAN = "/usr/bin/python3.11"
INTERP = {
    "debian-3.11": DEBIAN,
    "3.8": pyenv("3.8.18"),
    "3.11": pyenv("3.11.7"),
    "3.12": pyenv("3.12.1"),
    "3.13": pyenv("3.13.0"),
}
# "sample": sampled mode (--sample 4k), the sampler's sites behind the same guard
CASES = [(k, "auto") for k in sorted(INTERP)] + [("debian-3.11", "nop6"),
                                                 ("debian-3.11", "sample"),
                                                 ("3.12", "sample")]
ROUNDS = ["fork", "pool", "subprocess", "thread", "after-detach"]
# fork 3, pool >= 2, spawn 1, thread 8, after-detach 3, held 1
MIN_CHILDREN = 18
WORKLOAD = os.path.join(WORKLOADS, "fork_children.py")
HELD_BLOCKS = 20000


def held_line():
    """Line of the held child's allocation in the workload."""
    with open(WORKLOAD) as fh:
        for n, line in enumerate(fh, 1):
            if line.strip().startswith("held = ["):
                return n
    raise AssertionError("no 'held = [' line in " + WORKLOAD)


def kernel_log():
    r = subprocess.run(["dmesg"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, "dmesg failed: %r" % r.stderr
    return r.stdout.decode("utf-8", "replace").splitlines()


def fork_run(procs, python, site):
    res = {"log_before": len(kernel_log())}
    tgt = procs.target(python, WORKLOAD)
    tgt.expect("ready", timeout=T_START)
    res["pid"] = tgt.pid
    how = ["--sample", "4k"] if site == "sample" else ["--probe-site", site]
    tr = procs.tracer(["-p", tgt.pid, "-v", "--format", "json"] + how)
    tr.wait_tracing()
    tgt.send("go")                              # forks right after attach
    tgt.expect("done", timeout=T_WORK)
    res["rc"], res["out"], res["err"] = tr.stop()
    tgt.send("after")
    tgt.expect("done2", timeout=T_WORK)
    held = int([l for l in tgt.seen if l.startswith("held ")][0].split()[1])
    res["held"] = held
    tr2 = procs.tracer(["-p", held, "--top", "3", "-v", "--format", "json"])
    tr2.wait_tracing()
    tgt.send("child-go")
    tgt.expect("held-done", timeout=T_WORK)
    res["rc2"], res["out2"], res["err2"] = tr2.stop()
    tgt.send("exit")
    tgt.expect("child %d " % held, timeout=T_WORK)
    res["target_rc"] = tgt.wait(timeout=T_WORK)
    res["target_err"] = tgt.err.text()
    res["lines"] = list(tgt.seen)
    res["log"] = kernel_log()[res["log_before"]:]
    return res


@pytest.mark.parametrize("key,site", CASES,
                         ids=["py%s-%s" % c for c in CASES])
def test_forked_children_live(key, site):
    python = INTERP[key]
    if not os.access(python, os.X_OK):
        pytest.fail("expected interpreter %s missing: %s" % (key, python))

    def make_jobs():
        jobs = {}
        for k, s in CASES:
            if os.access(INTERP[k], os.X_OK):
                jobs[(k, s)] = isolated(fork_run, INTERP[k], s)
        return jobs
    r = batch_result(("fork",), (key, site), make_jobs)
    lines = r["lines"]
    detail = "workload said:\n  %s\ntarget stderr: %s\ntracer stderr (tail): %s" % (
        "\n  ".join(lines), r["target_err"][-2000:],
        r["err"].decode("utf-8", "replace")[-3000:])

    children = {}
    for line in lines:
        m = re.match(r"child (\d+) (\d+) (\S+)$", line)
        if m:
            children[int(m.group(1))] = (int(m.group(2)), m.group(3))
    print("\n%s --probe-site %s: %d children, statuses %s" % (
        key, site, len(children),
        sorted(set(st for st, _ in children.values()))))
    for name in ROUNDS:
        assert "round %s ok" % name in lines, detail
    assert len(children) >= MIN_CHILDREN, detail
    bad = {pid: v for pid, v in children.items() if v[0] != 0}
    assert not bad, "children that did not exit 0 (pid: status, round): %s\n%s" % (
        bad, detail)
    assert r["target_rc"] == 0, detail

    # The kernel log: no segfault of the target or of any child.
    pids = set(children) | {r["pid"], r["held"]}
    faults = [l for l in r["log"] if "segfault" in l and
              any("[%d]" % p in l for p in pids)]
    assert not faults, "kernel log: %s\n%s" % ("\n".join(faults), detail)

    # The parent was traced, through the site kind asked for.
    assert r["rc"] == 0, detail
    # (auto: whichever this kernel allows; -v and the report agree on it)
    m = re.search(rb"probe sites: (\d)-byte NOP", r["err"])
    assert m, detail
    used = "nop" + m.group(1).decode()
    assert site in ("auto", "sample") or used == site, detail
    # Children are followed (the default): one report each, the parent's too.
    docs = [json.loads(l) for l in r["out"].decode().splitlines() if l.strip()]
    reports = {d["process"]["pid"]: d for d in docs if d.get("type") == "report"}
    assert r["pid"] in reports, detail
    doc = reports[r["pid"]]
    assert doc["mode"] == "injected"
    followed = [d for p, d in reports.items() if d["process"]["ppid"] == r["pid"]]
    print("%s %s: children followed and reported: %d" % (key, site, len(followed)))
    # Every child, from its first allocation (sampled too: from its first
    # sample), short-lived ones included.
    missing = sorted(p for p, (st, rnd) in children.items()
                     if rnd not in ("spawn", "after-detach") and p not in reports)
    err = r["err"].decode("utf-8", "replace").splitlines()
    assert not missing, "children not reported: %s\ntracer on them:\n%s\n%s" % (
        missing, "\n".join(l for l in err if any(str(p) in l for p in missing)),
        detail)
    assert doc["probe_site"] == used, doc
    if site == "sample":
        assert doc["sampling"]["rate"] == 4096, doc["sampling"]
        assert doc["traced"]["events"] > 10, detail
    else:
        assert doc["traced"]["events"] > 1000, detail

    # The held child, forked while traced, then traced itself.
    err2 = r["err2"].decode("utf-8", "replace")
    assert r["rc2"] == 0, err2
    doc = json.loads(r["out2"].decode().splitlines()[-1])
    assert doc["process"]["pid"] == r["held"], doc["process"]
    counts = [st["count"] for st in doc["statistics"]
              if st["traceback"][-1] == {"filename": WORKLOAD,
                                         "lineno": held_line()}]
    assert counts and counts[0] >= HELD_BLOCKS, \
        "held child's report:\n%s\n%s" % (doc, err2[-3000:])
    print("held child %d: %d blocks reported at its line" % (r["held"],
                                                             counts[0]))
