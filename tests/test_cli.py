# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Bad input: one line on stderr, nothing on stdout, exit 1 (runtime) or 2
(usage), and no tracing line."""

import os
import signal

import pytest

from conftest import (DEFAULT_INTERPRETER, INTERPRETERS, PYENV_ROOT, PYTM,
                      T_ATTACH, TRACING_PREFIX, run_cmd)


def run_pytm(args, timeout=T_ATTACH):
    assert os.access(PYTM, os.X_OK), "%s is not built (run make)" % PYTM
    rc, out, err = run_cmd([PYTM] + [str(a) for a in args], timeout=timeout,
                           check=False)
    return rc, out, err


def check_error(args, want_rc):
    rc, out, err = run_pytm(args)
    shown = "pytm-bpf %s -> rc=%s\nstdout: %r\nstderr: %r" % (
        " ".join(map(str, args)), rc, out, err)
    print("\n" + shown)
    assert rc == want_rc, shown
    assert out == b"", shown
    assert TRACING_PREFIX not in err, shown
    assert err.endswith(b"\n") and err.count(b"\n") == 1, \
        "stderr is not exactly one line: " + shown
    assert err.strip(), shown
    return err


def free_pid():
    """A pid no process has (now)."""
    with open("/proc/sys/kernel/pid_max") as fh:
        pid_max = int(fh.read())
    for pid in range(pid_max - 1, 300, -1):
        if not os.path.exists("/proc/%d" % pid):
            return pid
    pytest.fail("no free pid")


@pytest.fixture
def idle_python(procs):
    """A Python process that only sleeps (a valid -p for usage tests)."""
    path = INTERPRETERS[DEFAULT_INTERPRETER]
    if not os.access(path, os.X_OK):
        pytest.fail("listed interpreter missing: %s" % path)
    p = procs.popen([path, "-c", "import time; time.sleep(60)"])
    return p.pid


def test_no_such_pid():
    check_error(["-p", free_pid()], 1)


def test_not_python(procs):
    p = procs.popen(["sleep", "30"])
    try:
        check_error(["-p", p.pid], 1)
    finally:
        p.kill()
        p.wait(timeout=10)


def test_unsupported_python(procs):
    """Python 2.7 is not supported: runtime error, exit 1."""
    old = os.path.join(PYENV_ROOT, "versions", "2.7.18", "bin", "python2.7")
    if not os.access(old, os.X_OK):
        pytest.skip("no pyenv 2.7.18 to play an unsupported interpreter")
    p = procs.popen([old, "-c", "import time; time.sleep(30)"])
    try:
        check_error(["-p", p.pid], 1)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)


@pytest.mark.parametrize("frames", ["0", "129", "abc", "-1", ""])
def test_bad_frames(idle_python, frames):
    check_error(["-p", idle_python, "--frames", frames], 2)


def test_no_target():
    check_error([], 2)


def test_no_target_with_options():
    check_error(["--frames", "5", "--duration", "1"], 2)


@pytest.mark.parametrize("args", [["-p", "abc"], ["--key", "nosuchkey"],
                                  ["--bogus-option"], ["--leaks"],
                                  ["--interval", "1", "--leaks=5"],
                                  ["--interval", "1", "--leaks=x"],
                                  ["--interval", "1", "--leaks", "--compare"],
                                  ["--interval", "1", "--leaks", "--format", "folded"],
                                  ["top", "--control"], ["top", "--leaks"],
                                  ["top", "--format", "json"], ["top", "--peak"],
                                  ["--recorder", "--sample", "4096"],
                                  ["--recorder", "--no-inject"],
                                  ["--bpf-walk", "--ring-slots", "1024"],
                                  ["--recorder", "--bpf-walk"], ["--bpf-walk", "--no-inject"],
                                  ["--recorder", "--ring-slots", "1000"]],
                         ids=["pid-abc", "bad-key", "unknown-option", "leaks-no-interval",
                              "leaks-window-small", "leaks-window-bad", "leaks-compare",
                              "leaks-folded", "top-control", "top-leaks", "top-json",
                              "top-peak", "recorder-sample", "recorder-no-inject",
                              "ring-slots-bpf-walk", "recorder-bpf-walk",
                              "bpf-walk-no-inject", "ring-slots-not-power"])
def test_other_usage_errors(idle_python, args):
    if args[0] == "top":
        args = ["top", "-p", idle_python] + args[1:]
    elif args[0] != "-p":
        args = ["-p", idle_python] + args
    check_error(args, 2)


def test_frames_bounds_accepted(procs, idle_python):
    """--frames 1 and --frames 128 are valid: the tool gets to tracing."""
    for n in (1, 128):
        tr = procs.tracer(["-p", idle_python, "--frames", n,
                           "--duration", 1])
        tr.wait_tracing()
        rc, out, err = tr.finish()
        assert rc == 0, (n, err)
        assert out.startswith(b"[ Top "), (n, out[:200])
