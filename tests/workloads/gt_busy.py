# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground truth on a thread that was allocating while pytm-bpf attached.

    -> "ready PID"  <- "go"     two threads churn (allocate and free in a
    -> "busy"                   loop); the test attaches now
    <- "go2"                    the churn stops; thread churn0 then runs
                                [tracemalloc.clear_traces()] gt_single.work()
    -> "done"       <- "exit"   [tracemalloc's snapshot dumped before done]

An allocator call that was entered while the probes were going in, and
whose return went unseen, must not make that thread's later calls look
nested (and go unrecorded). Python 3.6+.
"""

import sys
import threading

import gt_single
import wlproto


def churn(stop):
    n = 0
    while not stop.is_set():
        junk = [str(i) * 3 for i in range(200)]
        junk.append(bytearray(1000 + n % 3000))
        junk.append({"k%d" % i: i for i in range(50)})
        del junk
        n += 1
    return n


class Churner(threading.Thread):
    def __init__(self, wid, stop, gt_go, trace):
        threading.Thread.__init__(self, name="churn%d" % wid)
        self.wid = wid
        self.stop = stop
        self.gt_go = gt_go
        self.trace = trace
        self.error = None

    def run(self):
        try:
            churn(self.stop)
            if self.wid == 0:
                self.gt_go.wait()
                if self.trace:
                    import tracemalloc
                    tracemalloc.clear_traces()
                gt_single.work()
        except BaseException as e:   # reported by the main thread
            self.error = repr(e)


def main():
    opts = wlproto.Options(sys.argv[1:])
    if opts.extra:
        sys.exit("gt_busy: unknown arguments %r" % opts.extra)
    wlproto.begin(opts)
    stop = threading.Event()
    gt_go = threading.Event()
    workers = [Churner(w, stop, gt_go, opts.trace) for w in range(2)]
    for w in workers:
        w.start()
    wlproto.emit("busy")
    wlproto.expect("go2")
    stop.set()
    workers[1].join()
    gt_go.set()                 # churn1 is over: its garbage is freed
    workers[0].join()
    for w in workers:
        if w.error:
            sys.exit("gt_busy: %s failed: %s" % (w.name, w.error))
    wlproto.finish(opts)


if __name__ == "__main__":
    main()
