# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The pytm_bpf Python package (python/pytm_bpf) over ./pytm-bpf --control.

Callers: this interpreter (Debian's /usr/bin/python3, in-process) and a
caller script (tests/workloads/api_caller.py) under each pyenv CPython
3.9-3.13. Targets: pyenv CPython 3.8-3.13 running
tests/workloads/api_target.py, which allocates 1000 x bytearray(1000) at a
known line on request. Every listed interpreter must exist: a missing one
fails its tests.

The checks themselves live in api_caller.py (scenario(), target_exit(),
attach_error()) so that every caller runs exactly the same ones.
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import (PYTM, ROOT, T_ATTACH, T_START, T_STOP, T_WORK,
                      WORKLOADS, pyenv, run_cmd)

PYDIR = os.path.join(ROOT, "python")
for _d in (PYDIR, WORKLOADS):
    if _d not in sys.path:
        sys.path.insert(0, _d)

import api_caller          # noqa: E402  (tests/workloads)
import pytm_bpf            # noqa: E402  (python/)

TARGET_SCRIPT = os.path.join(WORKLOADS, "api_target.py")
CALLER_SCRIPT = os.path.join(WORKLOADS, "api_caller.py")

TARGETS = {
    "3.8": pyenv("3.8.18"),
    "3.9": pyenv("3.9.18"),
    "3.10": pyenv("3.10.13"),
    "3.11": pyenv("3.11.7"),
    "3.12": pyenv("3.12.1"),
    "3.13": pyenv("3.13.0"),
}
CALLERS = {v: TARGETS[v] for v in ("3.9", "3.10", "3.11", "3.12", "3.13")}
UNSUPPORTED = {
    "2.7": pyenv("2.7.18"),
    "3.6": pyenv("3.6.15"),
    "3.7": pyenv("3.7.16"),
}
# The caller x target pairs the pyenv callers run (besides this process
# against every target): each caller against the oldest and the newest
# target, and against its own version.
PAIRS = sorted({(c, t) for c in CALLERS for t in ("3.8", "3.13", c)},
               key=lambda p: (tuple(map(int, p[0].split("."))),
                              tuple(map(int, p[1].split(".")))))
# Interpreters an unprivileged user can run (pyenv lives under /root).
UNPRIVILEGED_PYTHON = "/usr/bin/python3"
NOBODY = 65534

T_CALLER = T_ATTACH + 6 * T_WORK     # a whole scenario in a caller


def need(path):
    """A listed interpreter: a missing one is a failure, not a skip."""
    if not os.access(path, os.X_OK):
        pytest.fail("listed interpreter missing: %s" % path)
    return path


def vkey(v):
    return tuple(int(x) for x in v.split("."))


def sorted_versions(d):
    return sorted(d, key=vkey)


def free_pid():
    """A pid no process has (now)."""
    with open("/proc/sys/kernel/pid_max") as fh:
        pid_max = int(fh.read())
    for pid in range(pid_max - 1, 300, -1):
        if not os.path.exists("/proc/%d" % pid):
            return pid
    pytest.fail("no free pid")


def start_target(procs, python):
    tgt = procs.target(need(python), TARGET_SCRIPT)
    tgt.expect("ready", timeout=T_START)
    return tgt


def driver(tgt):
    """DRIVE(word) for api_caller: the target runs a command."""
    def drive(word):
        tgt.send(word)
        if word == "exit":
            rc = tgt.wait(timeout=T_WORK)
            assert rc == 0, "target exit: rc=%s %r" % (rc, tgt.err.text())
        else:
            tgt.expect(word + " done", timeout=T_WORK)
    return drive


def report(label, result):
    print("\n%s: %s" % (label, json.dumps(result, sort_keys=True)))
    assert not result["failures"], "%s:\n  %s\nfigures: %s" % (
        label, "\n  ".join(result["failures"]),
        json.dumps(result["figures"], sort_keys=True))


def run_caller(procs, caller_python, args, tgt=None, env=None):
    """api_caller.py under CALLER_PYTHON; relays its steps to TGT; returns
    its result."""
    full_env = {"PYTHONPATH": PYDIR, "PYTM_BPF": PYTM}
    full_env.update(env or {})
    caller = procs.target(need(caller_python), CALLER_SCRIPT,
                          [str(a) for a in args], env=full_env)
    drive = driver(tgt) if tgt is not None else None
    while True:
        line = caller.expect("", timeout=T_CALLER)
        if line.startswith("step "):
            assert drive is not None, "caller asked for %r" % line
            drive(line[5:])
            caller.send("ok")
        elif line.startswith("result "):
            result = json.loads(line[7:])
            break
    rc = caller.wait(timeout=T_STOP)
    assert rc == 0, "caller rc=%s; stderr %r" % (rc, caller.err.text())
    return result


# --------------------------------------------------------------------------
# This interpreter as the caller, against every target.

@pytest.mark.parametrize("target", sorted_versions(TARGETS),
                         ids=lambda v: "target" + v)
def test_inprocess_caller(procs, target):
    tgt = start_target(procs, TARGETS[target])
    result = api_caller.scenario(tgt.pid, 25, tgt.script, driver(tgt),
                                 executable=PYTM)
    report("in-process caller %d.%d.%d (%s) x target %s"
           % (sys.version_info[:3] + (sys.executable, target)), result)
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


def test_inprocess_one_frame_verbose(procs):
    """frames=1 (tracemalloc's default), and pytm-bpf -v, whose libbpf
    chatter on stderr must not block it."""
    tgt = start_target(procs, TARGETS["3.11"])
    result = api_caller.scenario(tgt.pid, 1, tgt.script, driver(tgt),
                                 executable=PYTM)
    report("frames=1", result)
    tgt2 = start_target(procs, TARGETS["3.12"])
    with pytm_bpf.attach(tgt2.pid, frames=3, executable=PYTM,
                         extra_args=["-v"]) as t:
        driver(tgt2)("alloc")
        count, size = api_caller.line_stat(
            t.take_snapshot(), tgt2.script,
            api_caller.marker_line(tgt2.script, "API-ALLOC"))
        assert count >= 1000 and size >= 1000 * 1000, (count, size)
    assert t.returncode == 0
    for x in (tgt, tgt2):
        x.send("exit")
        assert x.wait(timeout=T_WORK) == 0


def test_inprocess_target_exits(procs):
    tgt = start_target(procs, TARGETS["3.12"])
    result = api_caller.target_exit(tgt.pid, 5, tgt.script, driver(tgt),
                                    executable=PYTM)
    report("target exits", result)


def test_module_level_functions(procs):
    """start()/take_snapshot()/stop() like tracemalloc's module."""
    tgt = start_target(procs, TARGETS["3.13"])
    line = api_caller.marker_line(tgt.script, "API-ALLOC")
    assert not pytm_bpf.is_tracing()
    try:
        pytm_bpf.start(tgt.pid, 4, executable=PYTM)
        assert pytm_bpf.is_tracing()
        assert pytm_bpf.get_traceback_limit() == 4
        with pytest.raises(pytm_bpf.PytmError):
            pytm_bpf.start(tgt.pid)             # one at a time
        driver(tgt)("alloc")
        snap = pytm_bpf.take_snapshot()
        count, size = api_caller.line_stat(snap, tgt.script, line)
        assert count >= 1000 and size >= 1000 * 1000, (count, size)
        cur, peak = pytm_bpf.get_traced_memory()
        assert cur >= 1000 * 1000 and peak >= cur
        pytm_bpf.clear_traces()
        assert pytm_bpf.get_traced_memory()[0] < 8192
        pytm_bpf.reset_peak()
        tracer = pytm_bpf.get_tracer()
    finally:
        pytm_bpf.stop()
    assert not pytm_bpf.is_tracing()
    assert not tracer.is_tracing() and tracer.returncode == 0
    with pytest.raises(pytm_bpf.NotTracing):
        pytm_bpf.take_snapshot()
    with pytest.raises(RuntimeError):           # as tracemalloc's
        pytm_bpf.get_traced_memory()
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


def test_context_manager_stops_on_exception(procs):
    tgt = start_target(procs, TARGETS["3.10"])
    with pytest.raises(KeyError):
        with pytm_bpf.attach(tgt.pid, executable=PYTM) as t:
            assert t.is_tracing()
            raise KeyError("boom")
    assert not t.is_tracing() and t.returncode == 0
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


def test_second_tracer_refused(procs):
    """One tracer per process: a second attach fails cleanly, the first
    one keeps working."""
    tgt = start_target(procs, TARGETS["3.12"])
    line = api_caller.marker_line(tgt.script, "API-ALLOC")
    with pytm_bpf.attach(tgt.pid, frames=2, executable=PYTM) as t:
        with pytest.raises(pytm_bpf.PytmError) as e:
            pytm_bpf.attach(tgt.pid, executable=PYTM)
        print("\nsecond tracer: %s" % e.value)
        assert e.value.returncode == 1 and "already traced" in str(e.value)
        driver(tgt)("alloc")
        count, size = api_caller.line_stat(t.take_snapshot(), tgt.script,
                                           line)
        assert count >= 1000 and size >= 1000 * 1000, (count, size)
    assert t.returncode == 0
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


# --------------------------------------------------------------------------
# pyenv CPython 3.9-3.13 as callers (subprocesses), cross-version.

@pytest.mark.parametrize("caller,target", PAIRS,
                         ids=["caller%s-target%s" % p for p in PAIRS])
def test_caller_matrix(procs, caller, target):
    tgt = start_target(procs, TARGETS[target])
    result = run_caller(procs, CALLERS[caller],
                        ["scenario", tgt.pid, 25, tgt.script], tgt)
    assert result["caller"].startswith(caller + "."), result["caller"]
    report("caller %s x target %s" % (caller, target), result)
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


@pytest.mark.parametrize("caller", ["3.9", "3.13"])
def test_caller_target_exits(procs, caller):
    tgt = start_target(procs, TARGETS["3.8"])
    result = run_caller(procs, CALLERS[caller],
                        ["target-exit", tgt.pid, 5, tgt.script], tgt)
    report("caller %s, target 3.8 exits" % caller, result)


@pytest.mark.parametrize("caller", sorted_versions(CALLERS),
                         ids=lambda v: "caller" + v)
def test_caller_errors(procs, caller):
    """The exception types do not depend on the caller's version."""
    got = run_caller(procs, CALLERS[caller], ["error", free_pid()])
    print("\ncaller %s, no such pid: %s" % (caller, got))
    assert got["ProcessLookupError"] and got["PytmError"], got
    old = start_target(procs, UNSUPPORTED["3.7"])
    got = run_caller(procs, CALLERS[caller], ["error", old.pid])
    print("caller %s, 3.7 target: %s" % (caller, got))
    assert got["UnsupportedPython"] and "3.7" in got["message"], got
    old.send("exit")
    assert old.wait(timeout=T_WORK) == 0


def test_checkout_lookup_from_caller(procs):
    """No executable= and no $PYTM_BPF: the caller finds ./pytm-bpf of the
    checkout its package comes from."""
    if os.path.realpath(PYTM) != os.path.realpath(os.path.join(ROOT,
                                                               "pytm-bpf")):
        pytest.skip("PYTM_BPF points elsewhere than the checkout")
    tgt = start_target(procs, TARGETS["3.9"])
    result = run_caller(procs, CALLERS["3.13"],
                        ["scenario", tgt.pid, 2, tgt.script], tgt,
                        env={"PYTM_BPF": ""})
    report("caller 3.13 x target 3.9, checkout lookup", result)
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


# --------------------------------------------------------------------------
# Errors, in-process.

def test_no_such_pid():
    pid = free_pid()
    with pytest.raises(ProcessLookupError) as e:
        pytm_bpf.attach(pid, executable=PYTM)
    assert isinstance(e.value, pytm_bpf.PytmError)
    assert "no process with pid %d" % pid in str(e.value), str(e.value)
    assert e.value.returncode == 1


def test_not_python(procs):
    p = procs.popen(["sleep", "30"])
    try:
        with pytest.raises(pytm_bpf.UnsupportedPython) as e:
            pytm_bpf.attach(p.pid, executable=PYTM)
        print("\nsleep: %s" % e.value)
        assert "not a CPython process" in str(e.value), str(e.value)
        assert e.value.returncode == 1
    finally:
        p.kill()
        p.wait(timeout=T_STOP)


@pytest.mark.parametrize("version", sorted_versions(UNSUPPORTED))
def test_unsupported_python(procs, version):
    tgt = start_target(procs, UNSUPPORTED[version])
    with pytest.raises(pytm_bpf.UnsupportedPython) as e:
        pytm_bpf.attach(tgt.pid, frames=10, executable=PYTM)
    print("\n%s: %s" % (version, e.value))
    assert "unsupported CPython " + version in str(e.value), str(e.value)
    assert isinstance(e.value, pytm_bpf.PytmError)
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


def test_bad_frames(procs):
    with pytest.raises(ValueError):
        pytm_bpf.attach(os.getpid(), frames=0, executable=PYTM)
    with pytest.raises(TypeError):
        pytm_bpf.attach(os.getpid(), frames="5", executable=PYTM)
    with pytest.raises(ValueError):
        pytm_bpf.attach(-1, executable=PYTM)
    with pytest.raises(ValueError):
        pytm_bpf.attach(os.getpid(), frames=129, executable=PYTM)


def test_usage_error_from_the_tool(procs):
    """The tool's own exit status 2 becomes a UsageError (a ValueError)."""
    tgt = start_target(procs, TARGETS["3.11"])
    with pytest.raises(pytm_bpf.UsageError) as e:
        pytm_bpf.attach(tgt.pid, executable=PYTM,
                        extra_args=["--max-blocks", "1"])
    print("\nusage: %s" % e.value)
    assert e.value.returncode == 2 and "max-blocks" in str(e.value)
    assert isinstance(e.value, ValueError)
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


def _as_nobody(cmd):
    return ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
            "--clear-groups", "--"] + cmd


def _nobody_error(target_pid):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": PYDIR, "PYTM_BPF": PYTM,
           "HOME": "/", "LANG": "C.UTF-8"}
    rc, out, err = run_cmd(_as_nobody([UNPRIVILEGED_PYTHON, CALLER_SCRIPT,
                                       "error", str(target_pid)]),
                           timeout=T_ATTACH, env=env)
    line = [l for l in out.decode().splitlines() if l.startswith("result ")]
    assert line, "no result: %r %r" % (out, err)
    return json.loads(line[0][7:])


def test_unprivileged_root_target(procs):
    """Not root, target owned by root: PermissionError."""
    need(UNPRIVILEGED_PYTHON)
    tgt = start_target(procs, TARGETS["3.11"])
    got = _nobody_error(tgt.pid)
    print("\nnobody -> root's target: %s" % got)
    assert got["raised"] and got["PermissionError"] and got["PytmError"], \
        got
    tgt.send("exit")
    assert tgt.wait(timeout=T_WORK) == 0


def test_unprivileged_own_target(procs):
    """Not root, target of the same user: the tool gets to BPF, which
    needs privileges: PermissionError."""
    need(UNPRIVILEGED_PYTHON)
    p = procs.popen(_as_nobody([UNPRIVILEGED_PYTHON, TARGET_SCRIPT]),
                    stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
                    cwd="/")
    try:
        # poll, not select: a long session can hold descriptors above 1024.
        poller = select.poll()
        poller.register(p.stdout, select.POLLIN)
        ready = poller.poll(T_START * 1000)
        first = p.stdout.readline().decode() if ready else ""
        assert first.startswith("ready"), "target as nobody: %r" % first
        got = _nobody_error(p.pid)
        print("\nnobody -> nobody's target: %s" % got)
        assert got["raised"] and got["PermissionError"] and \
            got["PytmError"], got
    finally:
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=T_STOP)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=T_STOP)


# --------------------------------------------------------------------------
# Finding the executable.

def test_find_executable(monkeypatch, tmp_path):
    monkeypatch.delenv("PYTM_BPF", raising=False)
    checkout = os.path.join(ROOT, "pytm-bpf")
    assert pytm_bpf.find_executable() == checkout
    assert pytm_bpf.find_executable(PYTM) == os.path.abspath(PYTM)
    fake = tmp_path / "pytm-bpf"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PYTM_BPF", str(fake))
    assert pytm_bpf.find_executable() == str(fake)
    assert pytm_bpf.find_executable(checkout) == checkout  # argument first
    monkeypatch.setenv("PYTM_BPF", str(tmp_path / "missing"))
    with pytest.raises(pytm_bpf.PytmError):
        pytm_bpf.find_executable()
    with pytest.raises(pytm_bpf.PytmError):
        pytm_bpf.attach(os.getpid(), executable=str(tmp_path / "nope"))


def test_find_executable_installed_layout(tmp_path):
    """As `make install` lays it out: PREFIX/sbin/pytm-bpf next to
    PREFIX/lib/python3/dist-packages/pytm_bpf, found with nothing on PATH."""
    prefix = tmp_path / "usr"
    pkg = prefix / "lib" / "python3" / "dist-packages" / "pytm_bpf"
    pkg.mkdir(parents=True)
    for f in os.listdir(os.path.join(PYDIR, "pytm_bpf")):
        if f.endswith(".py"):
            shutil.copy(os.path.join(PYDIR, "pytm_bpf", f), str(pkg / f))
    (prefix / "sbin").mkdir()
    shutil.copy(PYTM, str(prefix / "sbin" / "pytm-bpf"))
    env = {"PATH": "/nonexistent", "PYTHONPATH": str(pkg.parent),
           "PYTM_BPF": ""}
    for v in sorted_versions(CALLERS):
        _, out, _ = run_cmd([need(CALLERS[v]), "-c",
                             "import pytm_bpf; "
                             "print(pytm_bpf.find_executable())"], env=env)
        assert out.decode().strip() == str(prefix / "sbin" / "pytm-bpf"), \
            (v, out)


# --------------------------------------------------------------------------
# The driving logic against stand-ins for the executable (no BPF): a child
# that never starts tracing, one that floods stderr, one that fails.

FAKE_TOOL = r"""#!/bin/sh
# argv: -p PID --frames N --control [MODE]
echo $$ > "$(dirname "$0")/pid"
mode=$6
if [ "$mode" = hang ]; then exec sleep 30; fi
echo "pytm-bpf: tracing pid $2 (fake), $4 frames" >&2
while read cmd rest; do
    case "$cmd" in
    traced)
        # far more than a pipe holds, before the reply
        head -c 2000000 /dev/zero | tr '\0' x | fold -w 100 >&2
        echo >&2
        echo "ok 5 7";;
    limit)
        echo "pytm-bpf: something broke" >&2
        exit 1;;
    stop)
        echo ok
        exit 0;;
    *)
        echo "error unknown command: $cmd";;
    esac
done
exit 0
"""


def _fake_tool(tmp_path):
    path = tmp_path / "fake-pytm-bpf"
    path.write_text(FAKE_TOOL)
    path.chmod(0o755)
    return str(path)


def _fake_pid(tmp_path):
    with open(str(tmp_path / "pid")) as fh:
        return int(fh.read())


def test_fake_tool_attach_timeout(tmp_path):
    fake = _fake_tool(tmp_path)
    with pytest.raises(pytm_bpf.AttachTimeout) as e:
        pytm_bpf.attach(os.getpid(), executable=fake, timeout=2,
                        extra_args=["hang"])
    assert isinstance(e.value, pytm_bpf.PytmError)
    assert isinstance(e.value, TimeoutError)
    pid = _fake_pid(tmp_path)
    # killed and reaped, not left behind
    assert not os.path.exists("/proc/%d" % pid), "child %d left" % pid


def test_fake_tool_stderr_flood_and_errors(tmp_path):
    fake = _fake_tool(tmp_path)
    t = pytm_bpf.attach(os.getpid(), frames=7, executable=fake, timeout=20)
    try:
        assert t.tracing_line.endswith("(fake), 7 frames")
        assert t.get_traced_memory() == (5, 7)      # after 2 MB of stderr
        assert t.get_traced_memory() == (5, 7)
        with pytest.raises(pytm_bpf.PytmError) as e:
            t.reset_peak()                          # "error ..." reply
        assert str(e.value) == "unknown command: reset-peak"
        assert t.is_tracing()                       # still usable
        with pytest.raises(pytm_bpf.PytmError) as e:
            t.get_traceback_limit()                 # the child dies
        assert str(e.value) == "pytm-bpf: something broke"
        assert e.value.returncode == 1
        assert not t.is_tracing()
        with pytest.raises(pytm_bpf.NotTracing):
            t.get_traced_memory()
    finally:
        t.stop()
    assert not os.path.exists("/proc/%d" % _fake_pid(tmp_path))
