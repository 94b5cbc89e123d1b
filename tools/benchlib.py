# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Helpers shared by the benchmark drivers tools/bench.py,
tools/bench_events.py and tools/bench_procs.py: reading a child's output
line by line, ending a child by pid, starting and stopping pytm-bpf,
finding a pyenv interpreter and its version, the environment of a target
interpreter.

Driver side only. Each driver file is also run as the child workload by
other interpreters (Python 3.6+), and that part never imports this module.
"""

import os
import queue
import signal
import subprocess
import threading
import time

# Variables of the caller's environment that would change what a target
# interpreter allocates or runs before the workload.
TARGET_ENV_DROP = ("PYTHONTRACEMALLOC", "PYTHONMALLOC", "PYTHONSTARTUP",
                   "PYTHONPATH")


class Failed(RuntimeError):
    """A run went wrong: a child's output ended or timed out before an
    awaited line, or pytm-bpf failed. A RuntimeError, so that a handler of
    either catches it."""


class Lines(threading.Thread):
    """Reads one pipe to its end; keeps every line (.all) and hands them
    out in order (wait_for)."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.q = queue.Queue()
        self.all = []
        self.start()

    def run(self):
        for raw in iter(self.pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.all.append(line)
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, prefix, timeout):
        """The next line that starts with PREFIX; skips the lines before
        it. Raises Failed when TIMEOUT seconds pass or the stream ends
        first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed("timeout (%ss) waiting for %r; last lines %r"
                             % (timeout, prefix, self.all[-5:]))
            try:
                line = self.q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.q.put(None)        # the end, again for a later call
                raise Failed("stream ended before %r (last lines %r)"
                             % (prefix, self.all[-5:]))
            if line.startswith(prefix):
                return line


def end(proc):
    """End one process we started (a Popen or None), by pid; reap it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    except ProcessLookupError:
        pass                            # ended meanwhile


def pyenv_python(version="3.11.7"):
    """Path of pyenv's interpreter VERSION (it may not exist): under
    $PYENV_ROOT, else `pyenv root`, else ~/.pyenv."""
    root = os.environ.get("PYENV_ROOT")
    if not root:
        try:
            root = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL,
                                  timeout=20).stdout.decode().strip()
        except (OSError, subprocess.SubprocessError):
            root = ""
    root = root or os.path.expanduser("~/.pyenv")
    return os.path.join(root, "versions", version, "bin",
                        "python" + ".".join(version.split(".")[:2]))


def python_version(python):
    """The version of interpreter PYTHON ("3.11.7"); "?" when it cannot
    tell."""
    try:
        return subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"],
            stdout=subprocess.PIPE, timeout=30).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def target_env(**extra):
    """The environment for a target interpreter: ours with a fixed hash
    seed, EXTRA set and TARGET_ENV_DROP removed."""
    env = dict(os.environ, PYTHONHASHSEED="0", **extra)
    for k in TARGET_ENV_DROP:
        env.pop(k, None)
    return env


TRACING = "pytm-bpf: tracing"       # pytm-bpf's stderr line once attached


def start_tracer(cmd, timeout):
    """Starts pytm-bpf (the command line CMD) and waits up to TIMEOUT
    seconds for its TRACING line. Returns (Popen, stdout Lines, stderr
    Lines, that line). When the line does not come, ends it and raises
    Failed with its exit status and last stderr lines."""
    tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        tout, terr = Lines(tracer.stdout), Lines(tracer.stderr)
        try:
            line = terr.wait_for(TRACING, timeout)
        except Failed as e:
            try:
                tracer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            raise Failed("pytm-bpf (rc=%s): %s" % (
                tracer.returncode, " | ".join(terr.all[-3:]) or str(e)))
    except BaseException:
        end(tracer)
        raise
    return tracer, tout, terr, line


def stop_tracer(tracer, tout, terr, timeout=300):
    """SIGINT to pytm-bpf, as Ctrl-C: it detaches and prints its report.
    Waits up to TIMEOUT seconds for it, then for the end of its output.
    Raises Failed when it does not stop or exits other than 0."""
    tracer.send_signal(signal.SIGINT)
    try:
        rc = tracer.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed("pytm-bpf did not stop within %ds" % timeout)
    tout.join(timeout=30)
    terr.join(timeout=30)
    if rc != 0:
        raise Failed("pytm-bpf exited %d: %s" % (
            rc, " | ".join(terr.all[-3:])))
