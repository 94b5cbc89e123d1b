# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Exceptions of pytm_bpf, and the mapping from pytm-bpf's messages to them.

Every exception raised for a failure of the tool is a PytmError; those that
have a natural built-in counterpart also derive from it, so both
``except ProcessLookupError`` and ``except pytm_bpf.PytmError`` catch them.
"""

import errno


class PytmError(Exception):
    """pytm-bpf failed. ``str(e)`` is the tool's one-line message.

    Attributes: ``message`` (that line), ``returncode`` (the tool's exit
    status, or None while it runs), ``stderr`` (the tool's recent stderr
    lines, a list of str).
    """

    def __init__(self, message, returncode=None, stderr=None):
        Exception.__init__(self, message)
        self.message = message
        self.returncode = returncode
        self.stderr = list(stderr or ())

    def __str__(self):
        return self.message


class UnsupportedPython(PytmError):
    """The target is not a CPython process, or one pytm-bpf cannot trace
    (2.7, 3.6, 3.7, an unknown layout)."""


class NoSuchProcess(PytmError, ProcessLookupError):
    """There is no process with that pid."""

    def __init__(self, message, returncode=None, stderr=None):
        ProcessLookupError.__init__(self, errno.ESRCH, message)
        PytmError.__init__(self, message, returncode, stderr)
        self.args = (message,)

    def __str__(self):
        return self.message


class NotPermitted(PytmError, PermissionError):
    """pytm-bpf lacks the privileges it needs (root, or CAP_BPF,
    CAP_PERFMON, CAP_SYS_PTRACE)."""

    def __init__(self, message, returncode=None, stderr=None):
        PermissionError.__init__(self, errno.EPERM, message)
        PytmError.__init__(self, message, returncode, stderr)
        self.args = (message,)

    def __str__(self):
        return self.message


class UsageError(PytmError, ValueError):
    """pytm-bpf refused its arguments (exit status 2)."""


class TargetExited(PytmError):
    """The traced process exited; pytm-bpf stopped with it."""


class NotTracing(PytmError, RuntimeError):
    """The tracer was stopped (or never attached)."""


class AttachTimeout(PytmError, TimeoutError):
    """pytm-bpf did not report its probes live (or answer) in time."""

    def __init__(self, message, returncode=None, stderr=None):
        TimeoutError.__init__(self, message)
        PytmError.__init__(self, message, returncode, stderr)

    def __str__(self):
        return self.message


# Substrings of the tool's one-line startup errors, checked in this order.
_NO_PROCESS = ("no process with pid",)
_UNSUPPORTED = ("is not a CPython process", "unsupported CPython",
                "cannot tell the CPython version", "no _PyRuntime",
                "do not match this process")
_PERMISSION = ("run as root", "Operation not permitted", "Permission denied",
               "CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE")


def _strip_prefix(line):
    for prefix in ("pytm-bpf: ", "pytm-bpf report: "):
        if line.startswith(prefix):
            return line[len(prefix):]
    return line


def error_line(lines):
    """The line that says what went wrong, from the tool's stderr lines."""
    candidates = [l for l in lines
                  if l.strip() and not l.startswith("pytm-bpf: tracing")
                  and not l.startswith("Try ") and not l.startswith("Usage:")]
    own = [l for l in candidates if l.startswith("pytm-bpf")]
    if own:
        return own[-1].strip()
    if candidates:
        return candidates[-1].strip()
    return ""


def from_tool(lines, returncode, default):
    """The exception for a pytm-bpf run that ended with RETURNCODE and said
    LINES on stderr; DEFAULT is the message when it said nothing."""
    line = error_line(lines)
    message = line or default
    text = _strip_prefix(line)
    if returncode == 2:
        cls = UsageError
    elif any(s in text for s in _NO_PROCESS):
        cls = NoSuchProcess
    elif any(s in text for s in _UNSUPPORTED):
        cls = UnsupportedPython
    elif any(s in text for s in _PERMISSION):
        cls = NotPermitted
    else:
        cls = PytmError
    return cls(message, returncode, lines)
