# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Version handling: unsupported interpreters are refused by name, offsets
that do not match the process are refused instead of giving wrong stacks,
and snapshots load in the Pythons they are written for."""

import os
import subprocess

import pytest

from conftest import PYTM, T_CMD, pyenv, run_traced

# Runs on 2.7 too: says ready, then blocks until stdin closes.
IDLE = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"


def start_idle(procs, python):
    assert os.path.exists(python), "missing interpreter " + python
    p = procs.popen([python, "-c", IDLE], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE)
    line = p.stdout.readline()
    assert line.startswith(b"ready"), line
    return p


def run_tool(args):
    r = subprocess.run([PYTM] + [str(a) for a in args], capture_output=True,
                       timeout=T_CMD)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


@pytest.mark.parametrize("version", ["2.7.18", "3.6.15", "3.7.16"])
def test_unsupported_version(procs, version):
    p = start_idle(procs, pyenv(version))
    rc, out, err = run_tool(["-p", p.pid, "--duration", 1])
    print(err)
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert "unsupported CPython %s" % version in err, err


@pytest.mark.parametrize("field,value", [("frame_code", "8"),
                                          ("code_filename", "16"),
                                          ("tstate_interp", "0")])
def test_wrong_offsets_refused(procs, field, value):
    """A deliberately wrong offset: a clear refusal, not wrong stacks."""
    p = start_idle(procs, pyenv("3.11.7"))
    rc, out, err = run_tool(["-p", p.pid, "--duration", 1,
                             "--debug-offset", "%s=%s" % (field, value)])
    print(err)
    assert rc == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert "do not match this process" in err and "not tracing" in err, err


def loads_in(python, path):
    code = ("import sys, tracemalloc\n"
            "s = tracemalloc.Snapshot.load(sys.argv[1])\n"
            "st = s.statistics('lineno')\n"
            "print(len(s.traces), sum(x.size for x in st))\n")
    r = subprocess.run([python, "-c", code, path], capture_output=True,
                       timeout=T_CMD)
    return r.returncode, r.stdout.decode().strip(), r.stderr.decode()


def test_snapshot_layouts(procs, tmp_path):
    """A 3.12 target's snapshot loads in 3.9-3.13; with --pickle-version 3.8
    it loads in 3.8; a 3.8 target's default snapshot loads in 3.8."""
    ours = str(tmp_path / "t312.pytm")
    run = run_traced(procs, pyenv("3.12.1"), "gt_single.py", ["--frames", 5],
                     out=ours)
    assert run.rc == 0, run.describe()
    results = {}
    for v in ("3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"):
        results[v] = loads_in(pyenv(v), ours)
    print(results)
    first = results["3.12.1"][1]
    for v, (rc, out, err) in results.items():
        assert rc == 0, (v, err)
        assert out == first, (v, out, first)
    # The 3.9+ layout is refused by 3.8's tracemalloc (4-tuples).
    rc, _, err = loads_in(pyenv("3.8.18"), ours)
    assert rc != 0, "3.8 loaded a 3.9-layout snapshot?"
    ours38 = str(tmp_path / "t312-for38.pytm")
    run = run_traced(procs, pyenv("3.12.1"), "gt_single.py",
                     ["--frames", 5, "--pickle-version", "3.8"], out=ours38)
    assert run.rc == 0, run.describe()
    rc, out, err = loads_in(pyenv("3.8.18"), ours38)
    assert rc == 0, err
    mine = str(tmp_path / "t38.pytm")
    run = run_traced(procs, pyenv("3.8.18"), "gt_single.py", ["--frames", 5],
                     out=mine)
    assert run.rc == 0, run.describe()
    rc, out, err = loads_in(pyenv("3.8.18"), mine)
    assert rc == 0, err
    assert int(out.split()[0]) > 100, out
