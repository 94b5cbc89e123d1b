# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Ground-truth workload, several threads allocating at once, deterministic
per traceback (run with PYTHONHASHSEED=0):

- each thread allocates in its own functions, kept in RESULTS[slot];
- one thread allocates in the raw domain without holding the GIL:
  PyMem_RawMalloc / PyMem_RawFree called through ctypes.CDLL(None) (a CDLL
  call releases the GIL), keeping some blocks and freeing others;
- the main thread allocates at the same time, then joins in a fixed order.

Objects kept across threads avoid the types with free lists (tuple, list,
dict, float) except for one container per thread, so that which thread
reuses whose freed memory cannot move bytes between tracebacks from one run
to the next. Protocol: see wlproto.py."""

import threading

import wlproto
from rawmem import RAW_FREE, RAW_MALLOC

NTHREADS = 5
RESULTS = [None] * (NTHREADS + 1)
BARRIER = threading.Barrier(NTHREADS + 1)



# ---- thread 0: bytes and bytearrays ------------------------------------
def bytes_chunk(i):
    return bytes(32 + (i * 13) % 1500)


def bytes_grow(i):
    buf = bytearray(b"z" * 10)
    for _ in range(i % 9 + 1):
        buf += b"q" * (i % 200 + 1)
    return buf


def bytes_phase():
    keep = []
    for i in range(4000):
        keep.append(bytes_chunk(i))
        if i % 4 == 0:
            keep.append(bytes_grow(i))
    for i in range(0, len(keep), 3):
        keep[i] = None                          # frees a third
    return keep


def bytes_worker(slot):
    BARRIER.wait()
    RESULTS[slot] = bytes_phase()


# ---- thread 1: strings ----------------------------------------------------
def str_make(i):
    return "s%07d:" % i + "abc" * (i % 120)


def str_join(i):
    return "/".join([str_make(i), str_make(i + 1), "tail"])


def str_phase():
    keep = []
    for i in range(5000):
        keep.append(str_make(i))
        if i % 3 == 0:
            keep.append(str_join(i))
    del keep[::4]
    return keep


def str_worker(slot):
    BARRIER.wait()
    RESULTS[slot] = str_phase()


# ---- thread 2: instances ----------------------------------------------------
class Record(object):
    def __init__(self, ident, name):
        self.ident = ident
        self.name = name
        self.blob = bytearray(ident % 300 + 8)


def rec_make(i):
    return Record(i + 1000000, "rec-%d" % i)


def rec_phase():
    keep = []
    for i in range(3000):
        keep.append(rec_make(i))
    for i in range(0, len(keep), 5):
        keep[i] = None
    return keep


def rec_worker(slot):
    BARRIER.wait()
    RESULTS[slot] = rec_phase()


# ---- thread 3: deep calls --------------------------------------------------
def deep_alloc(n, i):
    if n == 0:
        return "deep-%d-" % i + "d" * (i % 64)
    return deep_alloc(n - 1, i)


def deep_phase():
    keep = []
    for i in range(800):
        keep.append(deep_alloc(20 + i % 15, i))
    return keep


def deep_worker(slot):
    BARRIER.wait()
    RESULTS[slot] = deep_phase()


# ---- thread 4: raw domain, without the GIL ------------------------------------
def raw_alloc(n):
    return RAW_MALLOC(n)                        # GIL released during the call


def raw_release(p):
    RAW_FREE(p)


def raw_phase():
    ptrs = []
    for i in range(3000):
        ptrs.append(raw_alloc(24 + (i * 29) % 2000))
    kept = []
    for i in range(len(ptrs)):
        if i % 3 == 0:
            raw_release(ptrs[i])
        else:
            kept.append(ptrs[i])
    return kept


def raw_worker(slot):
    BARRIER.wait()
    RESULTS[slot] = raw_phase()


# ---- main thread ---------------------------------------------------------------
def main_chunk(i):
    return bytearray(b"m" * (i % 700 + 1))


def main_phase():
    keep = []
    for i in range(3000):
        keep.append(main_chunk(i))
        keep.append("main-%d" % (i * 7))
    return keep


WORKERS = [bytes_worker, str_worker, rec_worker, deep_worker, raw_worker]


def work():
    threads = []
    for slot, fn in enumerate(WORKERS):
        threads.append(threading.Thread(target=fn, args=(slot,),
                                        name="w%d" % slot))
    for t in threads:
        t.start()
    BARRIER.wait()
    RESULTS[NTHREADS] = main_phase()
    for t in threads:                           # fixed order
        t.join()


if __name__ == "__main__":
    wlproto.main(work)
