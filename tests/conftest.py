# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Shared fixtures for the integration tests of ./pytm-bpf.

The tests drive real CPython processes ("targets") and the real ./pytm-bpf
(built by `make`), as root. Every process a test starts is registered here and
ended by pid when the test finishes (pass or fail); nothing is killed by name.
"""

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PYTM_BPF=/path overrides the executable under test (default: ./pytm-bpf).
PYTM = os.environ.get("PYTM_BPF") or os.path.join(ROOT, "pytm-bpf")
WORKLOADS = os.path.join(ROOT, "tests", "workloads")
SNAPTOOL = os.path.join(WORKLOADS, "snaptool.py")
TRACING_PREFIX = b"pytm-bpf: tracing"


def _pyenv_root():
    root = os.environ.get("PYENV_ROOT")
    if root:
        return root
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True,
                             timeout=20, check=True).stdout.decode().strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.expanduser("~/.pyenv")


PYENV_ROOT = _pyenv_root()

# The target interpreters, in ONE place: id -> path. Every listed interpreter
# must exist (a missing one fails the tests that use it; it is not skipped).
# To extend: "3.8": pyenv("3.8.18"), ..., "3.13": pyenv("3.13.0"),
# "debian-3.11": "/usr/bin/python3.11".
def pyenv(version):
    major_minor = ".".join(version.split(".")[:2])
    return os.path.join(PYENV_ROOT, "versions", version, "bin",
                        "python" + major_minor)


INTERPRETERS = {
    "3.8": pyenv("3.8.18"),
    "3.9": pyenv("3.9.18"),
    "3.10": pyenv("3.10.13"),
    "3.11": pyenv("3.11.7"),
    "3.12": pyenv("3.12.1"),
    "3.13": pyenv("3.13.0"),
    "debian-3.11": "/usr/bin/python3.11",
}

# The interpreter the benchmark and single-interpreter tests use.
DEFAULT_INTERPRETER = "3.11"

# Timeouts (seconds) for every wait; generous for a loaded 2-core VM.
T_START = 30        # a target prints its first line
T_ATTACH = 60       # pytm-bpf prints its tracing line
T_WORK = 120        # a workload finishes its allocation phase
T_STOP = 90         # pytm-bpf exits after SIGINT / --duration / target exit
T_CMD = 60          # a helper command (snaptool, bpftool, ...)


# --------------------------------------------------------------------------
# Process bookkeeping: every process the suite starts, for the final check.

STARTED = []        # list of (description, Popen)
_started_lock = threading.Lock()


def _register(desc, proc):
    with _started_lock:
        STARTED.append((desc, proc))


def _end(proc, grace=5.0):
    """End one process we started, by pid: SIGTERM, then SIGKILL; reap it."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    except ProcessLookupError:
        pass


class _Reader(threading.Thread):
    """Drains one pipe; keeps every byte and hands out complete lines."""

    def __init__(self, pipe, name):
        super().__init__(name=name, daemon=True)
        self.pipe = pipe
        self.data = bytearray()
        self.lines = queue.Queue()
        self.lock = threading.Lock()
        self.start()

    def run(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.pipe.fileno(), 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            with self.lock:
                self.data += chunk
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self.lines.put(line)
        if pending:
            self.lines.put(pending)
        self.lines.put(None)            # EOF marker
        # Done with it: a whole suite's pipes would otherwise stay open (the
        # registry keeps every Popen) past select()'s 1024 descriptors.
        try:
            self.pipe.close()
        except OSError:
            pass

    def text(self):
        with self.lock:
            return bytes(self.data)


def _show(b, limit=4000):
    s = b.decode("utf-8", "replace")
    return s if len(s) <= limit else s[:limit] + "...[truncated]"


class Target:
    """A Python workload speaking the line protocol of tests/workloads."""

    def __init__(self, python, script, args=(), env=None, desc=None):
        self.python = python
        self.script = script
        full_env = dict(os.environ)
        full_env.update({"PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1",
                         "PYTHONDONTWRITEBYTECODE": "1"})
        for k in ("PYTHONTRACEMALLOC", "PYTHONSTARTUP", "PYTHONPATH"):
            full_env.pop(k, None)
        if env:
            full_env.update(env)
        self.cmd = [python, script] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full_env,
                                     cwd=WORKLOADS)
        _register(desc or "target " + " ".join(self.cmd), self.proc)
        self.pid = self.proc.pid
        self.out = _Reader(self.proc.stdout, "target-out")
        self.err = _Reader(self.proc.stderr, "target-err")
        self.seen = []

    def expect(self, prefix, timeout=T_WORK):
        """Next stdout line that starts with prefix (other lines are kept)."""
        deadline = time.monotonic() + timeout
        want = prefix.encode() if isinstance(prefix, str) else prefix
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "timeout (%ss) waiting for %r from %s; stdout so far %r; "
                    "stderr %s" % (timeout, prefix, " ".join(self.cmd),
                                   self.seen, _show(self.err.text())))
            try:
                line = self.out.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.out.lines.put(None)
                rc = self.proc.poll()
                raise AssertionError(
                    "%s ended (rc=%s) before printing %r; stdout %r; stderr %s"
                    % (" ".join(self.cmd), rc, prefix, self.seen,
                       _show(self.err.text())))
            text = line.decode("utf-8", "replace")
            self.seen.append(text)
            if line.startswith(want):
                return text

    def send(self, word):
        self.proc.stdin.write(word.encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, timeout=T_WORK):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %ss"
                                 % (" ".join(self.cmd), timeout))
        self.out.join(timeout=10)
        self.err.join(timeout=10)
        return rc

    def alive(self):
        return self.proc.poll() is None

    def end(self):
        _end(self.proc)
        for p in (self.proc.stdin,):
            try:
                p.close()
            except OSError:
                pass


class Tracer:
    """One ./pytm-bpf run."""

    def __init__(self, args, desc=None):
        self.cmd = [PYTM] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=ROOT)
        _register(desc or "tracer " + " ".join(self.cmd), self.proc)
        self.pid = self.proc.pid
        self.out = _Reader(self.proc.stdout, "pytm-out")
        self.err = _Reader(self.proc.stderr, "pytm-err")
        self.t_start = time.monotonic()
        self.attach_seconds = None

    def wait_tracing(self, timeout=T_ATTACH):
        """Wait for the stderr line that starts with 'pytm-bpf: tracing'."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "no 'pytm-bpf: tracing' line within %ss: %s\nstderr: %s"
                    % (timeout, " ".join(self.cmd), _show(self.err.text())))
            try:
                line = self.err.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.err.lines.put(None)
                rc = self.proc.wait(timeout=T_STOP)
                raise AssertionError(
                    "pytm-bpf exited (rc=%s) before its tracing line: %s\n"
                    "stderr: %s\nstdout: %s" % (
                        rc, " ".join(self.cmd), _show(self.err.text()),
                        _show(self.out.text())))
            if line.startswith(TRACING_PREFIX):
                self.attach_seconds = time.monotonic() - self.t_start
                return line.decode("utf-8", "replace")

    def send_signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def finish(self, timeout=T_STOP):
        """Wait for exit; return (rc, stdout bytes, stderr bytes)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "pytm-bpf still running %ss later: %s\nstderr: %s"
                % (timeout, " ".join(self.cmd), _show(self.err.text())))
        self.out.join(timeout=10)
        self.err.join(timeout=10)
        return rc, self.out.text(), self.err.text()

    def stop(self, sig=signal.SIGINT, timeout=T_STOP):
        self.send_signal(sig)
        return self.finish(timeout)

    def end(self):
        _end(self.proc)


class Procs:
    """Per-test process factory; ends what is still running at teardown."""

    def __init__(self):
        self.items = []

    def target(self, python, workload, args=(), env=None):
        script = workload if os.path.isabs(workload) else \
            os.path.join(WORKLOADS, workload)
        t = Target(python, script, args, env)
        self.items.append(t)
        return t

    def tracer(self, args):
        assert os.access(PYTM, os.X_OK), \
            "%s is not built (run make)" % PYTM
        t = Tracer(args)
        self.items.append(t)
        return t

    def popen(self, cmd, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(cmd, **kw)
        _register("popen " + " ".join(map(str, cmd)), p)
        self.items.append(p)
        return p

    def end_all(self):
        # Tracers first (they hold ptrace/uprobes on the targets), then targets.
        order = [i for i in self.items if isinstance(i, Tracer)] + \
                [i for i in self.items if not isinstance(i, Tracer)]
        for item in order:
            if isinstance(item, subprocess.Popen):
                _end(item)
            else:
                item.end()


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.end_all()


@pytest.fixture(params=sorted(INTERPRETERS), ids=lambda k: "py" + k)
def python(request):
    """Path of each listed target interpreter; a missing one is a failure."""
    path = INTERPRETERS[request.param]
    if not os.access(path, os.X_OK):
        pytest.fail("listed interpreter %s missing: %s" % (request.param, path))
    return path


def ready_pid(target):
    """The pid the workload reports for itself (os.getpid())."""
    return int(target.expect("ready", timeout=T_START).split()[1])


def start_namespaced(procs, python, script, args, env):
    """PYTHON SCRIPT ARGS as pid 1 of new mount and pid namespaces, under
    `unshare --kill-child` (which takes the child down with it). Returns
    (the unshare Target, the interpreter's pid on the host)."""
    # Target runs [python, script] + args: here /usr/bin/unshare and its
    # options, then the interpreter and the workload.
    t = Target("/usr/bin/unshare", "--mount",
               ["--pid", "--fork", "--mount-proc", "--kill-child", python,
                os.path.join(WORKLOADS, script)] + list(args), env=env,
               desc="namespaced %s %s" % (python, script))
    procs.items.append(t)
    nspid = ready_pid(t)
    host_pid = None
    deadline = time.monotonic() + T_START
    while host_pid is None and time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                if ppid == t.pid and os.readlink("/proc/%s/exe" % entry) \
                        == python:
                    host_pid = int(entry)
            except (OSError, ValueError):
                continue
        if host_pid is None:
            time.sleep(0.1)
    assert host_pid, "no child %s of unshare %d" % (python, t.pid)
    return t, nspid, host_pid


def marked_line(path, mark):
    """Number of the line of PATH that ends with the comment '# MARK'."""
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if line.rstrip().endswith("# " + mark):
                return n
    raise AssertionError("no line marked %r in %s" % (mark, path))


def run_cmd(cmd, timeout=T_CMD, check=True, **kw):
    """subprocess.run with a timeout; registered like every other process."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, **kw)
    _register("cmd " + " ".join(map(str, cmd)), p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=10)
        raise AssertionError("timeout (%ss): %s" % (timeout, " ".join(cmd)))
    if check and p.returncode != 0:
        raise AssertionError("%s failed (rc=%d)\nstdout: %s\nstderr: %s" % (
            " ".join(map(str, cmd)), p.returncode, _show(out), _show(err)))
    return p.returncode, out, err


def snaptool(python, *args, timeout=T_CMD):
    """Run tests/workloads/snaptool.py in the target interpreter; JSON out."""
    _, out, _ = run_cmd([python, SNAPTOOL] + [str(a) for a in args],
                        timeout=timeout)
    return json.loads(out.decode())


def snaptool_raw(python, *args, timeout=T_CMD):
    _, out, _ = run_cmd([python, SNAPTOOL] + [str(a) for a in args],
                        timeout=timeout)
    return out


def top_block(report):
    """The '[ Top N ]' block of a report: everything before the first blank
    line, newline-terminated."""
    head, sep, _ = report.partition(b"\n\n")
    return head + b"\n" if sep else report


# --------------------------------------------------------------------------
# BPF objects of the tool, for the leftover check.

def tool_bpf_names():
    """(program names, map names) declared by the tool's BPF objects, from the
    generated skeletons (names as the kernel truncates them: 15 chars)."""
    progs, maps = set(), set()
    out_dir = os.path.join(ROOT, ".output")
    try:
        skels = [f for f in os.listdir(out_dir) if f.endswith(".skel.h")]
    except OSError:
        skels = []
    for f in skels:
        with open(os.path.join(out_dir, f), errors="replace") as fh:
            text = fh.read()
        for m in re.finditer(r'progs\[\d+\]\.name\s*=\s*"([^"]+)"', text):
            progs.add(m.group(1)[:15])
        for m in re.finditer(r'maps\[\d+\]\.name\s*=\s*"([^"]+)"', text):
            maps.add(m.group(1)[:15])
    return progs, maps


def bpftool_json(*args):
    try:
        _, out, _ = run_cmd(["bpftool", "-j"] + list(args), timeout=T_CMD)
    except AssertionError:
        return []
    try:
        return json.loads(out.decode() or "[]")
    except ValueError:
        return []


def bpf_state():
    """Programs, maps, links, perf attachments and bpffs entries now."""
    state = {
        "prog": bpftool_json("prog", "show"),
        "map": bpftool_json("map", "show"),
        "link": bpftool_json("link", "show"),
        "perf": bpftool_json("perf", "show"),
        "pins": [],
    }
    if os.path.isdir("/sys/fs/bpf"):
        for d, _, files in os.walk("/sys/fs/bpf"):
            state["pins"] += [os.path.join(d, f) for f in files]
    return state


def started_pids():
    with _started_lock:
        return {p.pid for _, p in STARTED}


def still_running():
    with _started_lock:
        return [(d, p.pid) for d, p in STARTED if p.poll() is None]


def own_pytm_processes():
    """Live processes running this tree's pytm-bpf that this suite started
    (directly, or as descendants of what it started)."""
    ours = started_pids()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
            with open("/proc/%d/stat" % pid) as fh:
                stat = fh.read()
        except OSError:
            continue
        state = stat.rsplit(")", 1)[1].split()
        if exe.replace(" (deleted)", "") != PYTM:
            continue
        ppid = int(state[1])
        if pid in ours or ppid in ours or ppid == os.getpid():
            found.append(pid)
    return found


BASELINE = {}


@pytest.fixture(scope="session", autouse=True)
def bpf_baseline():
    """Snapshot of the host's BPF objects before the first test, for
    tests/test_zz_leftovers.py."""
    BASELINE.update(bpf_state())
    BASELINE["taken"] = True
    yield BASELINE
    # Last-resort cleanup by pid of anything this session started.
    with _started_lock:
        items = list(STARTED)
    for _, p in items:
        _end(p, grace=2.0)


# --------------------------------------------------------------------------
# One traced run of a protocol workload (see tests/workloads/wlproto.py).

class TracedRun(object):
    rc = None
    stdout = b""
    stderr = b""
    target_rc = None
    attach_seconds = None
    snapshot = None

    def report_tail(self):
        """The lines after the [ Top N ] block (traced memory, lost events)."""
        return self.stdout.partition(b"\n\n")[2].decode("utf-8", "replace")

    def describe(self):
        return ("pytm-bpf rc=%s, attach %.2fs\nstderr: %s\nreport tail: %s"
                % (self.rc, self.attach_seconds or -1, _show(self.stderr),
                   self.report_tail().strip()))


def run_traced(procs, python, workload, tool_args, wl_args=(), out=None,
               sig=signal.SIGINT, env=None):
    """Start the workload (with env added to its environment), attach
    pytm-bpf, send "go", wait for "done", stop pytm-bpf with sig, tell the
    workload to exit. Returns a TracedRun."""
    tgt = procs.target(python, workload, wl_args, env=env)
    tgt.expect("ready", timeout=T_START)
    args = ["-p", tgt.pid] + list(tool_args)
    if out:
        args += ["-o", out]
    tr = procs.tracer(args)
    tr.wait_tracing()
    return finish_traced(tr, tgt, out, sig=sig)


def finish_traced(tracer, tgt, out, go="go", sig=signal.SIGINT):
    """With tracer attached to tgt: send go, wait for "done", stop the
    tracer with sig, tell the workload to exit. Returns a TracedRun."""
    run = TracedRun()
    run.attach_seconds = tracer.attach_seconds
    run.snapshot = out
    tgt.send(go)
    tgt.expect("done", timeout=T_WORK)
    run.rc, run.stdout, run.stderr = tracer.stop(sig)
    tgt.send("exit")
    run.target_rc = tgt.wait(timeout=T_WORK)
    run.target_stderr = tgt.err.text()
    return run


def run_reference(procs, python, workload, frames, dump, wl_args=(),
                  env=None):
    """The same workload with in-process tracemalloc only (no pytm-bpf)."""
    tgt = procs.target(python, workload,
                       list(wl_args) + ["--tracemalloc", frames,
                                        "--dump", dump], env=env)
    tgt.expect("ready", timeout=T_START)
    tgt.send("go")
    tgt.expect("done", timeout=T_WORK)
    tgt.send("exit")
    rc = tgt.wait(timeout=T_WORK)
    assert rc == 0, "reference run failed: %s" % _show(tgt.err.text())
    return dump


# --------------------------------------------------------------------------
# Ground-truth comparison (see tests/test_groundtruth.py).

THRESHOLD = 0.99


def agreement(python, ours, ref, workload):
    path = os.path.join(WORKLOADS, workload)
    fig = snaptool(python, "compare", ours, ref, path)
    summary = ("bytes %.5f (ours %d B, ref %d B), counts %.5f (ours %d, "
               "ref %d), tracebacks ours %d ref %d common %d, frame counts "
               "%.5f"
               % (fig["bytes_agreement"], fig["size_ours"], fig["size_ref"],
                  fig["count_agreement"], fig["count_ours"], fig["count_ref"],
                  fig["tracebacks_ours"], fig["tracebacks_ref"],
                  fig["tracebacks_common"], fig["nframe_agreement"]))
    return fig, summary


def check_agreement(label, run, fig, summary):
    print("\n%s: %s; attach %.2fs" % (label, summary, run.attach_seconds))
    detail = "%s\n%s\nworst tracebacks:\n  %s\n%s" % (
        label, summary, "\n  ".join(fig["worst"]), run.describe())
    assert fig["size_ours"] > 0 and fig["size_ref"] > 0, detail
    assert fig["bytes_agreement"] >= THRESHOLD, detail
    assert fig["count_agreement"] >= THRESHOLD, detail


def check_run(run):
    assert run.rc == 0, run.describe()
    assert run.stdout.startswith(b"[ Top "), run.describe()
    assert run.target_rc == 0, "target failed: %r" % run.target_stderr
    assert os.path.isfile(run.snapshot), "no -o file: " + run.describe()


# --------------------------------------------------------------------------
# Several independent traced runs at once. pytm-bpf spends ~3 s detaching
# (one uprobe after the other), idle time that overlaps well: the variants
# of one test function for one interpreter run together, the first time one
# of them is asked for, and each test item then checks its own result.

_BATCHES = {}
_batches_lock = threading.Lock()


def run_parallel(jobs):
    """jobs: {key: callable()}. Runs them in threads; returns {key: result
    or the exception it raised}."""
    results = {}

    def work(key, fn):
        try:
            results[key] = fn()
        except BaseException as e:       # re-raised by the test that asks
            results[key] = e

    threads = [threading.Thread(target=work, args=(k, fn), daemon=True)
               for k, fn in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=T_START + T_ATTACH + 2 * T_WORK + T_STOP + 3 * T_CMD)
    for k in jobs:
        results.setdefault(k, AssertionError("job %r did not finish" % (k,)))
    return results


def batch_result(batch_key, item_key, make_jobs):
    """The result of item_key in the batch batch_key, running the whole batch
    (make_jobs() -> {item_key: callable}) on first use. Exceptions of the
    item are raised here, in the test that owns it."""
    with _batches_lock:
        if batch_key not in _BATCHES:
            _BATCHES[batch_key] = run_parallel(make_jobs())
        res = _BATCHES[batch_key][item_key]
    if isinstance(res, BaseException):
        raise res
    return res


def isolated(fn, *args, **kw):
    """fn(procs, *args, **kw) with its own Procs, ended afterwards."""
    def job():
        procs = Procs()
        try:
            return fn(procs, *args, **kw)
        finally:
            procs.end_all()
    return job


# --------------------------------------------------------------------------
# The ground-truth runs (tests/test_groundtruth.py), shared with
# tests/test_snapshot.py: every run also prints its report with --top 15 and
# one of the report keys, so that the report and snapshot checks need no
# pytm-bpf runs of their own (each run costs ~3 s of uprobe detaching).

GT_WORKLOADS = ["gt_single.py", "gt_threads.py"]
GT_FRAMES = [1, 25]
GT_TOP = 15
# (mode, workload, frames) -> (--key, --cumulative)
GT_REPORT = {
    ("without", "gt_single.py", 1): ("lineno", False),
    ("without", "gt_threads.py", 25): ("filename", False),
    ("with", "gt_single.py", 25): ("traceback", False),
    ("with", "gt_threads.py", 25): ("lineno", True),
    ("without", "gt_single.py", 25): ("filename", True),
}


def gt_run(procs, python, outdir, mode, workload, frames, extra=(), env=None):
    """One ground-truth run (pytm-bpf given extra options too, both runs of
    the workload env added to their environment); returns (TracedRun,
    figures, summary)."""
    ours = os.path.join(outdir, "ours.pickle")
    ref = os.path.join(outdir, "ref.pickle")
    key, cumulative = GT_REPORT.get((mode, workload, frames),
                                    ("lineno", False))
    args = ["--frames", frames, "--top", GT_TOP, "--key", key] + list(extra)
    if cumulative:
        args.append("--cumulative")
    if mode == "with":
        run = run_traced(procs, python, workload, args, out=ours,
                         wl_args=["--tracemalloc", frames, "--dump", ref], env=env)
    else:
        run_reference(procs, python, workload, frames, ref, env=env)
        run = run_traced(procs, python, workload, args, out=ours, env=env)
    run.ref = ref
    run.key, run.cumulative = key, cumulative
    check_run(run)
    assert os.path.isfile(ref), "no reference snapshot"
    fig, summary = agreement(python, ours, ref, workload)
    return run, fig, summary


def gt_result(python, tmp_path_factory, mode, workload, frames):
    """Every (workload, frames) of one interpreter and mode runs at once;
    returns (TracedRun, figures, summary) of the one asked for."""
    if workload not in GT_WORKLOADS:             # a run of its own
        outdir = str(tmp_path_factory.mktemp("gt-%s-%s-%d" % (
            mode, workload.split(".")[0], frames)))
        return isolated(gt_run, python, outdir, mode, workload, frames)()

    def make_jobs():
        jobs = {}
        for wl in GT_WORKLOADS:
            for n in GT_FRAMES:
                outdir = str(tmp_path_factory.mktemp(
                    "gt-%s-%s-%d" % (mode, wl.split(".")[0], n)))
                jobs[(wl, n)] = isolated(gt_run, python, outdir, mode, wl, n)
        return jobs
    return batch_result(("gt", python, mode), (workload, frames), make_jobs)
