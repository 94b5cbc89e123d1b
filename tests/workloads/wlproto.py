# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Line protocol shared by the test workloads (kept out of their files so
that its own allocations never match Filter(True, <workload file>)).

    workload -> test:  "ready PID"
    test -> workload:  "go"
    workload:          [tracemalloc.clear_traces()] work() [dump snapshot]
    workload -> test:  "done"
    test -> workload:  "exit"

Options (argv): --tracemalloc N   tracemalloc.start(N) at startup
                --dump PATH       tracemalloc's own snapshot after the work
Reads and writes go straight to fds 0 and 1 (os.read/os.write), so no I/O
buffer is allocated between "go" and the snapshot.
"""

import gc
import os
import sys
import tracemalloc   # imported in every mode: identical module state


class Options(object):
    def __init__(self, argv):
        self.trace = 0
        self.dump = None
        self.extra = []
        it = iter(argv)
        for a in it:
            if a == "--tracemalloc":
                self.trace = int(next(it))
            elif a == "--dump":
                self.dump = next(it)
            else:
                self.extra.append(a)


def emit(msg):
    os.write(1, (msg + "\n").encode())


def expect(word):
    data = b""
    while not data.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            sys.exit("wlproto: stdin closed while waiting for %r" % word)
        data += c
    got = data.decode().strip()
    if got != word:
        sys.exit("wlproto: expected %r, got %r" % (word, got))


def begin(opts):
    """Everything up to "go"; returns once the test says go."""
    gc.disable()                # no collection at an allocation-count whim
    if opts.trace:
        tracemalloc.start(opts.trace)
    emit("ready %d" % os.getpid())
    expect("go")
    if opts.trace:
        tracemalloc.clear_traces()


def finish(opts):
    """Reference snapshot, "done", wait for "exit"."""
    if opts.dump:
        snap = tracemalloc.take_snapshot()
        snap.dump(opts.dump)
        del snap
    emit("done")
    expect("exit")


def main(work):
    """A workload's whole run: options, "go", work(), snapshot, "exit"."""
    opts = Options(sys.argv[1:])
    begin(opts)
    work()
    finish(opts)
