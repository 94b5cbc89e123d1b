# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""numpy's array buffers (PyTraceMalloc_Track, domain 389047) on Debian's
python3.11 with Debian's python3-numpy: they appear under their domain with
the right lines and sizes equal to arr.nbytes, and freeing an array removes
its trace. Snapshots are taken mid-trace through --control. The BPF walk
and --recorder (the arrays' objects through the ring, their buffers
through PyTraceMalloc_Track's probe)."""

import os
import subprocess

import pytest

from conftest import PYTM, ROOT, T_ATTACH, T_CMD, WORKLOADS

DEBIAN = "/usr/bin/python3.11"
NUMPY_DOMAIN = 389047
SCRIPT = os.path.join(WORKLOADS, "np_arrays.py")


def line_of(marker):
    with open(SCRIPT) as fh:
        for n, text in enumerate(fh, 1):
            if marker in text:
                return n
    raise AssertionError("no %s in %s" % (marker, SCRIPT))


def domain_traces(path):
    """(lineno, size) of the numpy-domain traces: the most recent frame in
    SCRIPT (Traceback lists the oldest frame first)."""
    code = ("import sys, tracemalloc\n"
            "s = tracemalloc.Snapshot.load(sys.argv[1])\n"
            "for t in s.traces:\n"
            "    mine = [f for f in t.traceback if f.filename == sys.argv[2]]\n"
            "    if t.domain == %d and mine:\n"
            "        print(mine[-1].lineno, t.size)\n" % NUMPY_DOMAIN)
    out = subprocess.run([DEBIAN, "-c", code, path, SCRIPT], check=True,
                         capture_output=True, timeout=T_CMD).stdout.decode()
    return sorted(tuple(int(x) for x in l.split()) for l in out.splitlines())


def command(tracer, cmd):
    tracer.stdin.write((cmd + "\n").encode())
    tracer.stdin.flush()
    reply = tracer.stdout.readline().decode().strip()
    assert reply.startswith("ok"), "%s -> %r" % (cmd, reply)
    return reply


@pytest.mark.parametrize("mode", ["bpf-walk", "recorder"])
def test_numpy_domain(procs, tmp_path, mode):
    assert os.path.exists(DEBIAN), "Debian's python3.11 is missing"
    check = subprocess.run([DEBIAN, "-c", "import numpy"], capture_output=True)
    assert check.returncode == 0, "python3-numpy is missing: %s" % check.stderr
    tgt = procs.target(DEBIAN, SCRIPT)
    tgt.expect("ready", timeout=30)
    extra = ["--recorder"] if mode == "recorder" else ["--bpf-walk"]
    tracer = subprocess.Popen([PYTM, "-p", str(tgt.pid), "--frames", "3",
                               "--control"] + extra, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=ROOT)
    try:
        line = tracer.stderr.readline()
        assert line.startswith(b"pytm-bpf: tracing"), line
        tgt.send("alloc")
        sizes = [int(x) for x in tgt.expect("sizes").split()[1:]]
        first = str(tmp_path / "alloc.pickle")
        command(tracer, "snapshot " + first)
        tgt.send("free")
        tgt.expect("freed")
        second = str(tmp_path / "freed.pickle")
        command(tracer, "snapshot " + second)
        command(tracer, "stop")
        assert tracer.wait(timeout=T_ATTACH) == 0
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait()
    line_a, line_b = line_of("LINE_A"), line_of("LINE_B")
    got = domain_traces(first)
    print("numpy traces after alloc:", got, "nbytes:", sizes)
    assert got == sorted([(line_a, sizes[0]), (line_b, sizes[1])])
    got = domain_traces(second)
    print("numpy traces after free:", got)
    assert got == [(line_b, sizes[1])]
    # --domain is DomainFilter: the same lines as tracemalloc prints.
    ours = subprocess.run([PYTM, "report", first, "--domain", str(NUMPY_DOMAIN),
                           "--top", "5"], capture_output=True, check=True,
                          timeout=T_CMD).stdout.decode()
    code = ("import sys, tracemalloc\n"
            "s = tracemalloc.Snapshot.load(sys.argv[1]).filter_traces("
            "[tracemalloc.DomainFilter(True, %d)])\n"
            "stats = s.statistics('lineno')\n"
            "print('[ Top %%d ]' %% 5)\n"
            "for st in stats[:5]: print(st)\n" % NUMPY_DOMAIN)
    ref = subprocess.run([DEBIAN, "-c", code, first], capture_output=True,
                         check=True, timeout=T_CMD).stdout.decode()
    print(ours)
    assert ours == ref
    assert "size=7812 KiB, count=1" in ours
