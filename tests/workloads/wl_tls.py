# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""3.12+: where _Py_tss_tstate lies from the thread pointer, as this
process finds it for itself (tests/unit/rec_hook.c, rec_tls_offset), for
tests/test_recorder.py to compare with what pytm-bpf finds from outside.
A thread spins in Python (its thread state attached) while the main
thread waits on stdin. Prints "tls OFFSET", then "ready PID"; "exit" ends.
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


t = threading.Thread(target=spin)
t.start()
os.write(1, ("tls %d\nready %d\n" % (offset, os.getpid())).encode())
while os.read(0, 64).strip() != b"exit":
    pass
stop.append(1)
t.join()
