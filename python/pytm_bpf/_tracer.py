# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The Tracer: one ``pytm-bpf -p PID --control`` child, driven line by line.

The child prints ``pytm-bpf: tracing ...`` on stderr once its probes are live,
then answers one line on stdout (``ok ...`` / ``error MESSAGE``) for each
command line on stdin. It exits by itself when the target exits, and on
``stop`` or EOF on stdin.
"""

import collections
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import weakref

from ._errors import (AttachTimeout, NotPermitted, NotTracing, PytmError,
                      TargetExited, error_line, from_tool)

ENV_VAR = "PYTM_BPF"
EXE_NAME = "pytm-bpf"
TRACING_PREFIX = "pytm-bpf: tracing"
MAX_FRAMES = 128

ATTACH_TIMEOUT = 60.0       # seconds until the tracing line
COMMAND_TIMEOUT = 60.0      # seconds for one reply (a snapshot can be large)
STOP_TIMEOUT = 30.0         # seconds for the child to exit after "stop"

_STDERR_KEEP = 200          # stderr lines kept for messages


def _executable_file(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_executable(executable=None):
    """Path of the pytm-bpf executable to drive.

    In order: EXECUTABLE if given; $PYTM_BPF; ./pytm-bpf at the root of the
    checkout this package lives in (python/pytm_bpf/ -> ../../pytm-bpf);
    pytm-bpf on PATH; PREFIX/sbin/pytm-bpf next to an installed package
    (PREFIX/lib/python3/dist-packages/pytm_bpf/). Raises PytmError when
    an explicitly given path (argument or $PYTM_BPF) is not an executable
    file, or when none is found.
    """
    if executable is not None:
        path = os.fspath(executable)
        if os.sep not in path:
            found = shutil.which(path)
            if found:
                return found
        if not _executable_file(path):
            raise PytmError("pytm-bpf executable not found or not "
                            "executable: %s" % path)
        return os.path.abspath(path)
    env = os.environ.get(ENV_VAR)
    if env:
        if not _executable_file(env):
            raise PytmError("$%s=%s is not an executable file"
                            % (ENV_VAR, env))
        return os.path.abspath(env)
    here = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.join(os.path.dirname(os.path.dirname(here)), EXE_NAME)
    if _executable_file(checkout):
        return checkout
    found = shutil.which(EXE_NAME)
    if found:
        return found
    # here = PREFIX/lib/python3/dist-packages/pytm_bpf
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(here))))
    for d in ("sbin", "bin"):
        installed = os.path.join(prefix, d, EXE_NAME)
        if _executable_file(installed):
            return installed
    raise PytmError("cannot find the pytm-bpf executable: pass "
                    "executable=, set $%s, build it with make, or put it "
                    "on PATH" % ENV_VAR)


_CAP_SYS_ADMIN = 21
_CAP_BPF = 39


def _unprivileged(executable):
    """True when the executable surely runs without BPF privileges: we are
    not root, hold neither CAP_BPF nor CAP_SYS_ADMIN, and it is neither
    set-uid nor given file capabilities."""
    if os.geteuid() == 0:
        return False
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
                    break
            else:
                return False
        st = os.stat(executable)
    except (OSError, ValueError):
        return False
    if eff & ((1 << _CAP_BPF) | (1 << _CAP_SYS_ADMIN)):
        return False
    if st.st_mode & 0o4000:
        return False
    try:
        if os.getxattr(executable, "security.capability"):
            return False
    except OSError:
        pass
    return True


def _check_pid(pid):
    if isinstance(pid, bool) or not isinstance(pid, int):
        try:
            pid = int(pid.__index__())
        except (AttributeError, TypeError):
            raise TypeError("pid must be an int, not %s"
                            % type(pid).__name__)
    if pid <= 0:
        raise ValueError("pid must be positive, not %d" % pid)
    return pid


def _check_sample(sample):
    if sample is None:
        return None
    if isinstance(sample, bool) or not isinstance(sample, int) or \
            not 0 <= sample <= 1 << 40:
        raise ValueError("sample must be a number of bytes from 0 to 2**40, "
                         "not %r" % (sample,))
    return sample


def _check_frames(frames):
    if isinstance(frames, bool) or not isinstance(frames, int):
        raise TypeError("frames must be an int, not %s"
                        % type(frames).__name__)
    if not 1 <= frames <= MAX_FRAMES:
        # tracemalloc.start() says the same for < 1
        raise ValueError("the number of frames must be in range [1; %d]"
                         % MAX_FRAMES)
    return frames


class _LineReader(threading.Thread):
    """Drains one pipe of the child so that it never blocks on it."""

    def __init__(self, pipe, name, keep=None):
        threading.Thread.__init__(self, name=name, daemon=True)
        self.pipe = pipe
        self.lines = queue.Queue()
        self.kept = collections.deque(maxlen=keep) if keep else None
        self.lock = threading.Lock()
        self.start()

    def run(self):
        try:
            for raw in iter(self.pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if self.kept is not None:
                    with self.lock:
                        self.kept.append(line)
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)        # EOF

    def recent(self):
        with self.lock:
            return list(self.kept or ())


def _finalize(proc, tmpdir):
    """Last resort (garbage collection, interpreter exit): end our own
    child by its pid, remove our temporary directory."""
    try:
        if proc.poll() is None:
            try:
                proc.stdin.close()      # EOF: the tool stops and detaches
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
    except Exception:
        pass
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)


class Tracer(object):
    """tracemalloc for process PID, traced from outside by pytm-bpf.

    Use attach() (or the class itself) as a context manager::

        with pytm_bpf.attach(pid, frames=25) as t:
            ...
            snapshot = t.take_snapshot()        # a tracemalloc.Snapshot

    Only allocations made after attach are traced, as with
    tracemalloc.start().
    """

    def __init__(self, pid, frames=1, executable=None, timeout=ATTACH_TIMEOUT,
                 extra_args=(), command_timeout=COMMAND_TIMEOUT, sample=None):
        self.pid = _check_pid(pid)
        self.frames = _check_frames(frames)
        self.sample = _check_sample(sample)
        if self.sample is not None:
            extra_args = ["--sample", str(self.sample)] + list(extra_args)
        self.executable = find_executable(executable)
        self.command_timeout = command_timeout
        self.tracing_line = None
        self.returncode = None
        self._lock = threading.RLock()
        self._stopped = False
        self._nsnap = 0
        self._tmpdir = None
        self._proc = None
        self._finalizer = None
        self._start(timeout, [str(a) for a in extra_args])

    # -- the child ---------------------------------------------------------

    def _start(self, timeout, extra):
        cmd = [self.executable, "-p", str(self.pid), "--frames",
               str(self.frames), "--control"] + extra
        tmpdir = tempfile.mkdtemp(prefix="pytm-bpf-")
        if any(c.isspace() for c in tmpdir):
            # Command arguments are whitespace-separated: no room for
            # blanks in the snapshot path.
            shutil.rmtree(tmpdir, ignore_errors=True)
            tmpdir = tempfile.mkdtemp(prefix="pytm-bpf-", dir="/tmp")
        self._tmpdir = tmpdir
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, close_fds=True,
                # Its own session: a Ctrl-C meant for the caller does not
                # kill it behind the Tracer's back (stop() and EOF on its
                # stdin end it).
                start_new_session=True)
        except FileNotFoundError as e:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise PytmError("cannot run %s: %s" % (self.executable,
                                                   e.strerror))
        except OSError:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _finalize, self._proc,
                                           tmpdir)
        self._out = _LineReader(self._proc.stdout, "pytm-bpf-stdout")
        self._err = _LineReader(self._proc.stderr, "pytm-bpf-stderr",
                                keep=_STDERR_KEEP)
        try:
            self._wait_tracing(timeout)
        except BaseException:
            self._shutdown(kill=True)
            raise

    def _wait_tracing(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AttachTimeout(
                    "pytm-bpf did not start tracing pid %d within %gs%s"
                    % (self.pid, timeout, self._said()),
                    None, self._err.recent())
            try:
                line = self._err.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:            # stderr closed: the child exited
                rc = self._reap(STOP_TIMEOUT)
                lines = self._err.recent()
                exc = from_tool(lines, rc, "pytm-bpf exited with status %s "
                                "before tracing pid %d" % (rc, self.pid))
                if type(exc) is PytmError and rc == 1 and \
                        _unprivileged(self.executable):
                    # The tool's message may blame something else (a
                    # kernel feature probe fails without privileges).
                    exc = NotPermitted(
                        "%s (pytm-bpf ran without privileges: it needs "
                        "root, or CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE)"
                        % exc.message, rc, lines)
                raise exc
            if line.startswith(TRACING_PREFIX):
                self.tracing_line = line
                return

    def _said(self):
        line = error_line(self._err.recent())
        return ": " + line if line else ""

    def _reap(self, timeout):
        try:
            self.returncode = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self.returncode = self._proc.wait()
        self._err.join(timeout=5)
        return self.returncode

    def _shutdown(self, kill=False):
        """Close the pipes, reap the child (killing it if asked or if it
        hangs), remove the temporary directory."""
        proc = self._proc
        self._stopped = True
        if proc is not None:
            if kill and proc.poll() is None:
                proc.kill()
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.returncode = proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.returncode = proc.wait()
            self._out.join(timeout=5)
            self._err.join(timeout=5)
            for pipe in (proc.stdout, proc.stderr):
                try:
                    pipe.close()
                except (OSError, ValueError):
                    pass
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _exited_error(self):
        """The exception for a child that is gone (or going)."""
        rc = self._reap(STOP_TIMEOUT)
        lines = self._err.recent()
        self._shutdown()
        if rc == 0 and any("exited" in l for l in lines):
            return TargetExited("process %d exited; pytm-bpf stopped "
                                "tracing it" % self.pid, rc, lines)
        return from_tool(lines, rc, "pytm-bpf exited with status %s"
                         % rc)

    def _command(self, line, timeout=None):
        """Send one command, return the words after "ok"."""
        if timeout is None:
            timeout = self.command_timeout
        with self._lock:
            if self._stopped:
                raise NotTracing("not tracing pid %d: the tracer was "
                                 "stopped" % self.pid, self.returncode)
            if self._proc.poll() is not None:
                raise self._exited_error()
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise self._exited_error()
            try:
                reply = self._out.lines.get(timeout=timeout)
            except queue.Empty:
                self._shutdown(kill=True)
                raise AttachTimeout("pytm-bpf did not answer %r within %gs"
                                    % (line.split()[0], timeout),
                                    self.returncode, self._err.recent())
            if reply is None:
                raise self._exited_error()
        if reply == "ok" or reply.startswith("ok "):
            return reply[3:].split()
        if reply.startswith("error"):
            raise PytmError(reply[5:].strip() or "pytm-bpf: error",
                            None, self._err.recent())
        raise PytmError("unexpected reply from pytm-bpf: %r" % reply,
                        None, self._err.recent())

    # -- tracemalloc's API -------------------------------------------------

    def take_snapshot(self, version=None):
        """A tracemalloc.Snapshot of the blocks allocated since attach (or
        the last clear_traces()) that are still alive.

        VERSION ("X.Y") chooses the pickle layout; the default is this
        interpreter's, which is what tracemalloc here loads.
        """
        if version is None:
            version = "%d.%d" % sys.version_info[:2]
        with self._lock:
            if self._stopped or self._tmpdir is None:
                raise NotTracing("not tracing pid %d: cannot take a "
                                 "snapshot" % self.pid, self.returncode)
            self._nsnap += 1
            path = os.path.join(self._tmpdir, "snapshot-%d.pickle"
                                % self._nsnap)
            try:
                self._command("snapshot %s %s" % (path, version))
                return tracemalloc.Snapshot.load(path)
            finally:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def get_traced_memory(self):
        """(current, peak): bytes of the traced blocks now, and at most
        since attach, clear_traces() or reset_peak()."""
        words = self._command("traced")
        return int(words[0]), int(words[1])

    def reset_peak(self):
        """Set the peak to the current traced size."""
        self._command("reset-peak")

    def clear_traces(self):
        """Forget every traced block; current and peak drop to 0."""
        self._command("clear")

    def get_traceback_limit(self):
        """Frames kept per traceback (the frames= given to attach)."""
        if self._stopped:
            return self.frames
        return int(self._command("limit")[0])

    def is_tracing(self):
        """True while pytm-bpf traces the process (False after stop(), or
        once the target, and with it pytm-bpf, has exited)."""
        if self._stopped or self._proc is None:
            return False
        return self._proc.poll() is None

    def stop(self):
        """Detach from the process and end pytm-bpf. Safe to call twice.
        Raises PytmError if pytm-bpf fails on the way out (status != 0)."""
        with self._lock:
            if self._stopped:
                return
            if self._proc.poll() is None:
                try:
                    self._command("stop", timeout=STOP_TIMEOUT)
                except TargetExited:
                    return
                except PytmError:
                    pass
            rc = self._reap(STOP_TIMEOUT)
            lines = self._err.recent()
            self._shutdown()
        if rc != 0:
            raise from_tool(lines, rc, "pytm-bpf exited with status %s"
                            % rc)

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            try:
                self.stop()
            except PytmError:
                pass            # keep the exception that is propagating
        return False

    def __repr__(self):
        state = "tracing" if self.is_tracing() else "stopped"
        return "<pytm_bpf.Tracer pid=%d frames=%d %s>" % (
            self.pid, self.frames, state)


def attach(pid, frames=1, executable=None, timeout=ATTACH_TIMEOUT,
           extra_args=(), sample=None):
    """Start tracing process PID with FRAMES frames per traceback; returns
    a Tracer once every probe is live.

    SAMPLE: sample by bytes, one sample per SAMPLE bytes allocated on
    average (e.g. 512 * 1024); the snapshots' sizes are then unbiased
    estimates and each trace is one sampled block (see pytm-bpf(8),
    --sample). None or 0: every allocation, exactly.

    EXECUTABLE: the pytm-bpf to run (default: see find_executable()).
    TIMEOUT: seconds to wait for the probes. EXTRA_ARGS: more options for
    pytm-bpf (e.g. ["--max-blocks", "4194304"]).

    Raises ProcessLookupError (no such process), PermissionError (not
    privileged), UnsupportedPython, or PytmError; all of them are
    PytmError.
    """
    return Tracer(pid, frames=frames, executable=executable, timeout=timeout,
                  extra_args=extra_args, sample=sample)
