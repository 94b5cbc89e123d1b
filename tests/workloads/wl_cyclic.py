"""Hostile target: a thread-state chain made cyclic through ctypes.

A second thread is started and parked; its PyThreadState heads the
interpreter's list (head -> parked -> main). "cycle" points the parked
thread's `next` at itself: the main thread's state is no longer on the
list, which a walk from the head would follow for ever. "go" allocates
while it is so: 300 raw-domain blocks of 1000 bytes through ctypes without
the GIL (RAW_LINE) and 2000 bytes objects of 3000 (OBJ_LINE); "restore"
puts the chain back; "quit" frees the raw blocks and prints their checksum.

    -> "ready"  <- "cycle" -> "cyclic"  <- "go" -> "built"
    <- "restore" -> "restored"  <- "quit" -> "sum N"
"""
import ctypes
import sys
import threading
import time

from rawmem import RAW_FREE, RAW_MALLOC

GET = ctypes.pythonapi.PyThreadState_Get
GET.restype = ctypes.c_void_p
NEXT = 8            # PyThreadState.next, after prev, on 3.8-3.13
HELD, RAW = [], []


def main():
    ev, box = threading.Event(), []

    def parked():
        box.append(GET())
        ev.wait()
    t = threading.Thread(target=parked)
    t.start()
    while not box:
        time.sleep(0.01)
    slot = ctypes.c_void_p.from_address(box[0] + NEXT)
    saved = slot.value
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "cycle":
            slot.value = box[0]
            print("cyclic", flush=True)
        elif cmd == "go":
            for i in range(300):
                p = RAW_MALLOC(1000)  # RAW_LINE
                ctypes.memset(p, i % 251, 1000)
                RAW.append(p)
            HELD.append([bytes(3000) for _ in range(2000)])  # OBJ_LINE
            print("built", flush=True)
        elif cmd == "restore":
            slot.value = saved
            print("restored", flush=True)
        elif cmd == "quit":
            break
    total = sum(ctypes.string_at(p, 1000)[999] for p in RAW)
    for p in RAW:
        RAW_FREE(p)
    ev.set()
    t.join()
    print("sum %d" % total, flush=True)


if __name__ == "__main__":
    main()
