# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""3.12+: where _Py_tss_tstate lies from the thread pointer, as this
process finds it for itself (tests/unit/rec_hook.c, rec_tls_offset), for
tests/test_recorder.py to compare with what pytm-bpf finds from outside.
The main thread spins in Python (its thread state attached part of the
time), and so do two other threads: each of those also keeps its state in
a slot of its start function's frame, right below its TLS, a place that
holds it as steadily as the variable does (the trap the search must not
fall in). A fourth thread waits on stdin. Prints "tls OFFSET", then
"ready PID"; "exit" ends.
"""

import ctypes
import os
import sys
import threading

lib = ctypes.PyDLL(sys.argv[1])         # calls keep the GIL: attached
lib.rec_tls_offset.restype = ctypes.c_longlong
offset = lib.rec_tls_offset()
stop = []


def spin():
    n = 0
    while not stop:
        n += 1


def wait_exit():
    while os.read(0, 64).strip() != b"exit":
        pass
    stop.append(1)


threads = [threading.Thread(target=spin) for _ in range(2)]
threads.append(threading.Thread(target=wait_exit))
for t in threads:
    t.start()
os.write(1, ("tls %d\nready %d\n" % (offset, os.getpid())).encode())
spin()
for t in threads:
    t.join()
