# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Sampled mode (--sample BYTES) against exact ground truth.

The workload (tests/workloads/sampled_sites.py) builds ten sites of known
live bytes: tiny to 1 MiB blocks, pymalloc's large blocks (nested raw
calls), a site that frees 90% of what it allocates, bytearrays grown by
realloc, list item arrays, raw-domain blocks allocated by threads without
the GIL. The ground truth is tracemalloc in a reference run of the same
interpreter with the same PYTHONHASHSEED; it also gives each site's
standard error under the sampling model, sqrt(sum S^2 (1 - p) / p) with
p = 1 - exp(-S/R) over the site's live blocks. "Within 4 standard errors"
allows two more steps of the estimator where it is discrete, i.e. far from
normal: a site whose variance comes from a few small blocks (one sampled
20-byte object counts ~R), or from a few blocks sampled with p near 1 (each
miss costs a whole block). The step is the largest weight S / p among the
site's blocks with p < 0.99.

- Debian's python3.11: 20 builds in one traced process at R = 64 KiB
  (the Poisson process makes each build's samples independent): every
  site holding >= 2% of the heap is within 4 standard errors of exact in
  every build, and its mean over the 20 builds is within 3% of exact.
- Every other CPython 3.8-3.13 (pyenv) and Debian's python3.11 under
  PYTHONMALLOC=malloc and with tracemalloc running in the target: two
  builds each, every site within 4 standard errors (runs concurrently).
- The sampled-block set full (--sample-set 16): the lost samples are
  counted and reported in text and JSON, the live estimate drops back to
  zero when everything is freed, and the target is unharmed.
- A SIGKILLed sampled tracer: the target runs on, and the next tracer
  (exact mode) takes over the page and reports exactly.
"""

import json
import math
import os
import signal
import subprocess
import sys

import pytest

from conftest import (INTERPRETERS, PYTM, ROOT, T_START, T_WORK, WORKLOADS,
                      batch_result, isolated, run_cmd)

sys.path.insert(0, os.path.join(ROOT, "python"))
import pytm_bpf                                          # noqa: E402

WORKLOAD = os.path.join(WORKLOADS, "sampled_sites.py")
RATE = 65536
SHARE = 0.02            # sites holding at least this share of the heap
Z_MAX = 4.0             # standard errors
MEAN_TOL = 0.03         # mean over the repeated builds, relative
BUILDS_MAIN = 20
BUILDS_OTHER = 2
SCALE_OTHER = "0.3"     # the other interpreters' heaps, relative


def reference(python, env):
    _, out, _ = run_cmd([python, WORKLOAD, "--reference", str(RATE)],
                        timeout=600, env=env, cwd=WORKLOADS)
    return json.loads(out)


def wl_env(scale, extra=None):
    env = dict(os.environ)
    env.update({"PYTHONHASHSEED": "0", "SCALE": scale,
                "PYTHONDONTWRITEBYTECODE": "1"})
    for k in ("PYTHONTRACEMALLOC", "PYTHONMALLOC", "PYTHONPATH"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def sampled_run(procs, python, builds, scale, extra_env=None, wl_args=()):
    """Reference, then BUILDS builds traced at RATE: per build, the
    sampled estimate of each line of the workload."""
    env = wl_env(scale, extra_env)
    ref = reference(python, env)
    tgt = procs.target(python, WORKLOAD, args=wl_args, env=env)
    tgt.expect("ready", timeout=T_START)
    tracer = pytm_bpf.attach(tgt.pid, executable=PYTM, sample=RATE)
    try:
        estimates = []
        for _ in range(builds):
            tgt.send("build")
            tgt.expect("built", timeout=T_WORK * 2)
            snap = tracer.take_snapshot()
            per_line = {}
            for st in snap.statistics("lineno"):
                f = st.traceback[0]
                if os.path.abspath(f.filename) == WORKLOAD:
                    per_line[str(f.lineno)] = st.size
            estimates.append(per_line)
            tgt.send("drop")
            tgt.expect("dropped", timeout=T_WORK)
        after_drop = tracer.get_traced_memory()[0]
        line = tracer.tracing_line
    finally:
        tracer.stop()
    tgt.send("quit")
    rc = tgt.wait(timeout=T_WORK)
    return {"ref": ref, "estimates": estimates, "after_drop": after_drop,
            "line": line, "rc": rc, "stderr": tgt.err.text()}


def check_sites(name, res, builds, mean_tol=None):
    """Every site >= SHARE of the heap within Z_MAX standard errors in every
    build; with MEAN_TOL, the mean over the builds within it. Prints the
    table."""
    ref = res["ref"]
    total = ref["total"]
    sites = {line: (b, math.sqrt(v), step)
             for line, (b, v, step) in ref["sites"].items()
             if b >= SHARE * total}
    assert len(sites) >= 10, "only %d sites hold %.0f%% of the heap: %s" % (
        len(sites), 100 * SHARE, ref)
    assert len(res["estimates"]) == builds
    print("\n%s: R = %d, %d builds, heap %.1f MB" % (name, RATE, builds,
                                                     total / 1e6))
    print("%6s %12s %8s %12s %9s %8s" % ("line", "exact B", "SE %",
                                         "mean est B", "mean err", "max |z|"))
    bad = []
    for line in sorted(sites, key=int):
        exact, se, step = sites[line]
        ests = [e.get(line, 0) for e in res["estimates"]]
        zs = [(x - exact) / se for x in ests]
        off = [abs(x - exact) > Z_MAX * se + 2 * step for x in ests]
        mean = sum(ests) / len(ests)
        rel = (mean - exact) / exact
        print("%6s %12d %7.2f%% %12.0f %+8.2f%% %8.2f" % (
            line, exact, 100 * se / exact, mean, 100 * rel,
            max(abs(z) for z in zs)))
        if any(off):
            bad.append("line %s: z-scores %s (steps of %.0f B)" % (
                line, ["%.2f" % z for z in zs], step))
        if mean_tol is not None and abs(rel) > mean_tol:
            bad.append("line %s: mean %.0f is %.2f%% off exact %d" % (
                line, mean, 100 * rel, exact))
    assert not bad, "\n".join(bad)
    assert res["rc"] == 0, res["stderr"][-2000:]
    # Everything was freed: only blocks in flight may remain.
    assert abs(res["after_drop"]) < 0.01 * total, res["after_drop"]


def test_sampling_accuracy_debian_20_builds(procs):
    python = INTERPRETERS["debian-3.11"]
    res = sampled_run(procs, python, BUILDS_MAIN, "1")
    assert "sampled: 1 per 64.0 KiB" in res["line"], res["line"]
    check_sites("debian-3.11", res, BUILDS_MAIN, MEAN_TOL)


OTHERS = {k: (INTERPRETERS[k], {}, ()) for k in INTERPRETERS
          if k != "debian-3.11"}
OTHERS["debian-3.11-malloc"] = (INTERPRETERS["debian-3.11"],
                                {"PYTHONMALLOC": "malloc"}, ())
OTHERS["debian-3.11-debug"] = (INTERPRETERS["debian-3.11"],
                               {"PYTHONMALLOC": "debug"}, ())
OTHERS["3.12-tracemalloc"] = (INTERPRETERS["3.12"],
                              {"PYTHONTRACEMALLOC": "1"}, ())


@pytest.mark.parametrize("key", sorted(OTHERS))
def test_sampling_accuracy_versions(key):
    python = OTHERS[key][0]
    if not os.access(python, os.X_OK):
        pytest.fail("expected interpreter %s missing: %s" % (key, python))

    def make_jobs():
        return {k: isolated(sampled_run, p, BUILDS_OTHER, SCALE_OTHER, env)
                for k, (p, env, _) in OTHERS.items()
                if os.access(p, os.X_OK)}
    res = batch_result(("sampling-versions",), key, make_jobs)
    check_sites(key, res, BUILDS_OTHER)


def json_docs(out):
    return [json.loads(l) for l in out.decode().splitlines() if l.strip()]


def test_sample_set_full_counted(procs):
    """16 slots for thousands of live samples: lost samples are counted and
    shown; what was recorded is freed to zero; the target is unharmed."""
    python = INTERPRETERS["debian-3.11"]
    tgt = procs.target(python, WORKLOAD, env=wl_env("0.05"))
    tgt.expect("ready", timeout=T_START)
    tracer = procs.tracer(["-p", tgt.pid, "--sample", "4k", "--sample-set",
                           "16", "--format", "json", "--interval", "0.5"])
    tracer.wait_tracing()
    tgt.send("build")
    tgt.expect("built", timeout=T_WORK)
    tgt.send("drop")
    tgt.expect("dropped", timeout=T_WORK)
    rc, out, err = tracer.stop()
    assert rc == 0, err
    final = [d for d in json_docs(out) if d.get("final")][-1]
    lost = final["lost"]
    samp = final["sampling"]
    print("\nset of 16: %d samples recorded, %d lost (~%d B), %d sampled frees"
          % (samp["samples"], lost["sample_set_full"],
             lost["sample_set_full_bytes"], samp["sampled_frees"]))
    assert samp["rate"] == 4096 and samp["set_slots"] == 16, samp
    assert lost["sample_set_full"] > 1000, lost
    assert lost["sample_set_full_bytes"] > lost["sample_set_full"] * 4096, lost
    assert samp["samples"] > 16, samp
    assert final["traced"]["estimated"] is True
    # All freed: the recorded samples all came back through the free site.
    assert samp["sampled_frees"] >= samp["samples"] - 16, samp
    assert abs(final["traced"]["current"]) < 64 * 4096, final["traced"]
    tgt.send("quit")
    assert tgt.wait(timeout=T_WORK) == 0, tgt.err.text()

    # The text footer says it too.
    tgt = procs.target(python, WORKLOAD, env=wl_env("0.02"))
    tgt.expect("ready", timeout=T_START)
    tracer = procs.tracer(["-p", tgt.pid, "--sample", "4k", "--sample-set",
                           "16"])
    tracer.wait_tracing()
    tgt.send("build")
    tgt.expect("built", timeout=T_WORK)
    rc, out, err = tracer.stop()
    text = out.decode()
    assert rc == 0, err
    assert "Sampled: 1 sample per 4096 B allocated on average" in text, text
    assert "Traced memory (estimated): current=" in text, text
    assert "sampled-block set full=" in text, text
    tgt.send("quit")
    assert tgt.wait(timeout=T_WORK) == 0


def test_sampled_tracer_killed_then_exact(procs):
    """SIGKILL a sampled tracer: the target keeps computing; the next tracer
    (exact) takes the page over and its report matches the build exactly."""
    python = INTERPRETERS["debian-3.11"]
    tgt = procs.target(python, WORKLOAD, env=wl_env("0.05"))
    tgt.expect("ready", timeout=T_START)
    tracer = procs.tracer(["-p", tgt.pid, "--sample", "64k"])
    tracer.wait_tracing()
    tgt.send("build")
    tgt.expect("built", timeout=T_WORK)
    tracer.send_signal(signal.SIGKILL)
    tracer.finish()
    tgt.send("drop")
    tgt.expect("dropped", timeout=T_WORK)
    tgt.send("build")                   # through the dead tracer's sampler
    tgt.expect("built", timeout=T_WORK)
    tgt.send("drop")
    tgt.expect("dropped", timeout=T_WORK)
    tracer = procs.tracer(["-p", tgt.pid, "-v", "--format", "json"])
    tracer.wait_tracing()
    tgt.send("build")
    tgt.expect("built", timeout=T_WORK)
    rc, out, err = tracer.stop()
    assert rc == 0, err
    doc = json_docs(out)[-1]
    assert doc["sampling"] is None and doc["mode"] == "injected", doc
    assert doc["traced"]["estimated"] is False
    tiny = [st for st in doc["statistics"]
            if st["traceback"][-1]["filename"] == WORKLOAD]
    # The largest site: 60000 bytes(16) at 49 B each, exactly.
    assert any(st["count"] >= 60000 and st["size"] >= 60000 * 49
               for st in tiny), doc["statistics"]
    tgt.send("quit")
    assert tgt.wait(timeout=T_WORK) == 0, tgt.err.text()


@pytest.mark.parametrize("args,message", [
    (["--sample", "12q"], "invalid --sample: 12q"),
    (["--sample", "-5"], "invalid --sample: -5"),
    (["--sample", "64k", "--no-inject"], "--sample needs the redirected"),
    (["--sample-set", "100"], "invalid --sample-set: 100"),
    (["--sample-set", "8"], "invalid --sample-set: 8"),
])
def test_sample_usage_errors(args, message):
    r = subprocess.run([PYTM, "-p", str(os.getpid())] + args,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert message in err and len(err.strip().splitlines()) == 1, err
