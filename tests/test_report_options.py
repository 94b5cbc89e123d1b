# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Live report options (filters, domains, --all-frames, --compare=FILE,
--interval with --compare and --reset-peak) against the same computation
done by stock tracemalloc on the snapshot pytm-bpf wrote: the printed block
must be byte for byte what tracemalloc prints."""

import os
import re
import subprocess

import pytest

from conftest import WORKLOADS, T_CMD, run_traced, run_reference

WORKLOAD = "gt_single.py"
FRAMES = 10
PATH = os.path.join(WORKLOADS, WORKLOAD)

# Python code run in the target's interpreter on our snapshot: argv[1] the
# snapshot, argv[2] the old one for compare (or ""), then the filter specs.
REF = r'''
import sys, tracemalloc
snap = tracemalloc.Snapshot.load(sys.argv[1])
filters = []
for spec in sys.argv[4:]:
    kind, _, rest = spec.partition("=")
    if kind in ("domain", "exclude-domain"):
        filters.append(tracemalloc.DomainFilter(kind == "domain", int(rest)))
        continue
    all_frames = kind.endswith("+all")
    inclusive = kind.startswith("include")
    pattern, lineno = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and tail.isdigit():
        pattern, lineno = head, int(tail)
    filters.append(tracemalloc.Filter(inclusive, pattern, lineno, all_frames))
if filters:
    snap = snap.filter_traces(filters)
key = sys.argv[3]
if sys.argv[2]:
    old = tracemalloc.Snapshot.load(sys.argv[2])
    if filters:
        old = old.filter_traces(filters)
    stats = snap.compare_to(old, key)
    print("[ Top 12 differences ]")
else:
    stats = snap.statistics(key)
    print("[ Top 12 ]")
for s in stats[:12]:
    print(s)
'''

CASES = {
    "include": (["--include", PATH], ["include=" + PATH]),
    "exclude-lineno": (["--exclude", "*/wlproto.py", "--exclude", PATH + ":40"],
                       ["exclude=*/wlproto.py", "exclude=%s:40" % PATH]),
    "include-all-frames": (["--include", "*/gt_*.py", "--all-frames",
                            "--key", "traceback"],
                           ["include+all=*/gt_*.py"]),
    "domain": (["--domain", "0"], ["domain=0"]),
    "exclude-domain": (["--exclude-domain", "0"], ["exclude-domain=0"]),
}


def reference(python, snap, old, key, specs):
    out = subprocess.run([python, "-c", REF, snap, old or "", key] + specs,
                         capture_output=True, timeout=T_CMD)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def first_block(stdout):
    """The first [ Top ... ] block of a report, up to its blank line."""
    text = stdout.decode("utf-8", "replace")
    return text.split("\n\n", 1)[0] + "\n"


def key_of(args):
    return args[args.index("--key") + 1] if "--key" in args else "lineno"


@pytest.mark.parametrize("case", sorted(CASES))
def test_filters_match_tracemalloc(procs, python, tmp_path, case):
    args, specs = CASES[case]
    ours = str(tmp_path / "ours.pytm")
    run = run_traced(procs, python, WORKLOAD,
                     ["--frames", FRAMES, "--top", 12] + args, out=ours)
    assert run.rc == 0, run.describe()
    got = first_block(run.stdout)
    want = reference(python, ours, None, key_of(args), specs)
    print("\n" + got)
    assert got == want


def test_compare_file_matches_tracemalloc(procs, python, tmp_path):
    """--compare=OLD, OLD being a stock tracemalloc dump of the same
    workload: the [ Top N differences ] block is compare_to()'s."""
    old = str(tmp_path / "ref.pickle")
    run_reference(procs, python, WORKLOAD, FRAMES, old)
    ours = str(tmp_path / "ours.pytm")
    run = run_traced(procs, python, WORKLOAD,
                     ["--frames", FRAMES, "--top", 12, "--compare=" + old,
                      "--include", PATH], out=ours)
    assert run.rc == 0, run.describe()
    got = first_block(run.stdout)
    want = reference(python, ours, old, "lineno", ["include=" + PATH])
    print("\n" + got)
    assert got.startswith("[ Top 12 differences ]\n")
    assert got == want


def test_interval_compare_reset_peak(procs, python):
    """--interval with --compare and --reset-peak: stamped reports, the
    later ones as differences, and the peak reset after each."""
    tgt = procs.target(python, os.path.join(WORKLOADS, WORKLOAD))
    tgt.expect("ready")
    tr = procs.tracer(["-p", tgt.pid, "--interval", "0.5", "--compare",
                       "--reset-peak"])
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("done")
    import time
    time.sleep(1.6)
    rc, out, err = tr.stop()
    tgt.send("exit")
    tgt.wait()
    text = out.decode()
    assert rc == 0, err
    stamps = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", text, re.M)
    assert len(stamps) >= 2, text[:2000]
    assert text.count("[ Top 10 ]") == 1, text[:2000]
    assert text.count("[ Top 10 differences ]") >= 2, text[:2000]
    # After a reset and no new allocation, the peak is the current size.
    last = re.findall(r"Traced memory: current=.*? \((\d+) B, (\d+) B\)", text)
    assert last and last[-1][0] == last[-1][1], last
