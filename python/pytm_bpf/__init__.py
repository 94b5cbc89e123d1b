# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""pytm_bpf: Python's tracemalloc for another, running CPython process.

It drives the ``pytm-bpf`` executable (eBPF uprobes on the target's
allocator; run as root), and hands back real ``tracemalloc.Snapshot``
objects::

    import pytm_bpf

    with pytm_bpf.attach(pid, frames=25) as t:
        ...                                   # let the process work
        snapshot = t.take_snapshot()          # a tracemalloc.Snapshot
        current, peak = t.get_traced_memory()
    for stat in snapshot.statistics("lineno")[:10]:
        print(stat)

The tracer also has reset_peak(), clear_traces(), is_tracing(),
get_traceback_limit() and stop(). Module-level functions mirror the
tracemalloc module for one process at a time::

    pytm_bpf.start(pid, 25)
    snapshot = pytm_bpf.take_snapshot()
    pytm_bpf.stop()

and trace(pid, seconds) is a one-shot: attach, wait, snapshot, detach.

Errors: ProcessLookupError (no such process), PermissionError (no
privileges), pytm_bpf.UnsupportedPython (not CPython, or 2.7/3.6/3.7), and
pytm_bpf.PytmError for everything else -- all of them are PytmError.
The executable is found through the executable= argument, $PYTM_BPF, the
checkout this package lives in, or PATH (see find_executable()).
"""

import threading
import time
from tracemalloc import (DomainFilter, Filter, Frame, Snapshot, Statistic,
                         StatisticDiff, Trace, Traceback)

from ._errors import (AttachTimeout, NoSuchProcess, NotPermitted, NotTracing,
                      PytmError, TargetExited, UnsupportedPython, UsageError)
from ._tracer import Tracer, attach, find_executable

__version__ = "0.1"

__all__ = [
    "attach", "Tracer", "find_executable", "trace",
    "start", "stop", "is_tracing", "take_snapshot", "get_traced_memory",
    "reset_peak", "clear_traces", "get_traceback_limit", "get_tracer",
    "PytmError", "UnsupportedPython", "NoSuchProcess", "NotPermitted",
    "UsageError", "TargetExited", "NotTracing", "AttachTimeout",
    "Snapshot", "Statistic", "StatisticDiff", "Filter", "DomainFilter",
    "Frame", "Trace", "Traceback",
]

_current = None
_current_lock = threading.Lock()


def trace(pid, seconds, frames=1, **kwargs):
    """Attach to PID, let it run SECONDS, return a snapshot of what it
    allocated meanwhile and still holds, detach."""
    with attach(pid, frames=frames, **kwargs) as t:
        time.sleep(seconds)
        return t.take_snapshot()


def start(pid, nframe=1, **kwargs):
    """Like tracemalloc.start(nframe), for process PID: the module-level
    functions below then act on it. Only one process at a time."""
    global _current
    with _current_lock:
        if _current is not None and _current.is_tracing():
            raise PytmError("already tracing pid %d: stop() first"
                            % _current.pid)
        _current = attach(pid, frames=nframe, **kwargs)
        return _current


def get_tracer():
    """The Tracer of start(), or None."""
    return _current


def _tracer():
    t = _current
    if t is None:
        raise NotTracing("not tracing: call pytm_bpf.start(pid) first")
    return t


def stop():
    """Stop tracing the process of start() (nothing if none)."""
    global _current
    with _current_lock:
        t, _current = _current, None
    if t is not None:
        t.stop()


def is_tracing():
    t = _current
    return t is not None and t.is_tracing()


def take_snapshot():
    return _tracer().take_snapshot()


def get_traced_memory():
    return _tracer().get_traced_memory()


def reset_peak():
    _tracer().reset_peak()


def clear_traces():
    _tracer().clear_traces()


def get_traceback_limit():
    t = _current
    if t is None:
        return 1        # tracemalloc's default before start()
    return t.get_traceback_limit()
