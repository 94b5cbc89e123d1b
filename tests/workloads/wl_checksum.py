# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Self-checking workload: allocates heavily (lists, dicts, strings,
bytearrays, raw-domain blocks through ctypes without the GIL, several
threads) and prints a checksum of everything it built, so that a run whose
tracer was killed mid-way can be compared with an untraced run.

    -> "ready PID"   <- "go"   -> "phase1"   -> "checksum HEX"
    -> "hooked N"    (exit 0)

N: allocator table slots that still lead into a pytm-bpf page at the end,
after up to a few million more allocations while any does (a page whose
tracer was killed puts them back once it finds its ring undrained).
"""

import ctypes
import hashlib
import os
import sys
import threading

_lib = ctypes.CDLL(None)
RAW_MALLOC = _lib.PyMem_RawMalloc
RAW_MALLOC.restype = ctypes.c_void_p
RAW_MALLOC.argtypes = [ctypes.c_size_t]
RAW_FREE = _lib.PyMem_RawFree
RAW_FREE.restype = None
RAW_FREE.argtypes = [ctypes.c_void_p]


def emit(msg):
    os.write(1, (msg + "\n").encode())


def expect(word):
    data = b""
    while not data.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            sys.exit("stdin closed")
        data += c
    if data.strip().decode() != word:
        sys.exit("expected %r" % word)


def build(seed, n):
    table = {}
    for i in range(n):
        key = "k%d-%d" % (seed, i)
        table[key] = [i, str(i * seed), bytearray(b"x" * (i % 97))]
    buf = bytearray()
    for i in range(n // 10):
        buf += ("%d," % (i * seed)).encode()
    return table, buf


def digest(h, table, buf):
    for key in sorted(table):
        v = table[key]
        h.update(key.encode())
        h.update(repr(v[0]).encode())
        h.update(v[1].encode())
        h.update(bytes(v[2]))
    h.update(bytes(buf))


def raw_roundtrip(n):
    """Raw blocks written and read back through ctypes (no GIL held)."""
    total = 0
    ptrs = []
    for i in range(n):
        size = 16 + i % 512
        p = RAW_MALLOC(size)
        if not p:
            raise MemoryError
        ctypes.memset(p, i % 251, size)
        ptrs.append((p, size, i % 251))
        if i % 3 == 0:
            q, qsize, val = ptrs.pop(0)
            total += sum(ctypes.string_at(q, qsize)) - qsize * val
            RAW_FREE(q)
    for q, qsize, val in ptrs:
        total += sum(ctypes.string_at(q, qsize)) - qsize * val
        RAW_FREE(q)
    return total                     # 0 when every block held its bytes


class Allocator(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("malloc", ctypes.c_void_p),
                ("calloc", ctypes.c_void_p), ("realloc", ctypes.c_void_p),
                ("free", ctypes.c_void_p)]


def hooked_slots():
    """Allocator table slots (3 domains x 4) that point into a pytm-bpf page."""
    pages = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "pytm-bpf" in line and "ring" not in line:
                lo, hi = line.split()[0].split("-")
                pages.append((int(lo, 16), int(hi, 16)))
    n = 0
    for domain in range(3):
        a = Allocator()
        _lib.PyMem_GetAllocator(domain, ctypes.byref(a))
        for fn in (a.malloc, a.calloc, a.realloc, a.free):
            n += any(lo <= (fn or 0) < hi for lo, hi in pages)
    return n


def worker(seed, n, out, idx):
    h = hashlib.sha256()
    for rnd in range(3):
        table, buf = build(seed + rnd, n)
        digest(h, table, buf)
    out[idx] = (h.hexdigest(), raw_roundtrip(n // 2))


def phase(seed, n, nthreads):
    out = [None] * nthreads
    threads = [threading.Thread(target=worker, args=(seed + i, n, out, i))
               for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def main():
    emit("ready %d" % os.getpid())
    expect("go")
    results = phase(1, 3000, 3)
    emit("phase1")
    for k in range(3):
        results += phase(100 + k, 5000, 3)
    h = hashlib.sha256()
    for digest_hex, raw_err in results:
        if raw_err != 0:
            emit("raw memory corrupted: %d" % raw_err)
            sys.exit(3)
        h.update(digest_hex.encode())
    emit("checksum %s" % h.hexdigest())
    hooked = hooked_slots()
    for _ in range(40):
        if not hooked:
            break
        keep = [str(i) for i in range(50000)]
        del keep
        hooked = hooked_slots()
    emit("hooked %d" % hooked)


if __name__ == "__main__":
    main()
