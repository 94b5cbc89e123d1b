# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Write the seed corpus of the fuzz targets (tests/fuzz/corpus/), from real
interpreters: tracemalloc's own snapshot files (3.8 and 3.9+ layouts), line
tables of real code objects of 3.8-3.13, the _Py_DebugOffsets of a 3.13 and
the code of its PyRefTracer_SetTracer,
a small ELF file with the symbols discovery looks up, and command lines.

    python3 tools/gen_fuzz_corpus.py [PYENV_ROOT]

It runs each pyenv CPython 3.8-3.13 (default root: $PYENV_ROOT or
~/.pyenv) and cc. Seeds are named by what they are (seed-...); inputs that
a fuzzer found are added by hand as regress-... and kept when this is run
again.
"""

import glob
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]

PICKLE_SRC = r"""
import sys, tracemalloc
frames = (("app/main.py", 12), ("lib/\u00e9t\u00e9.py", 3), ("<frozen importlib._bootstrap>", 241))
if sys.version_info >= (3, 9):
    raw = ((0, 4096, frames, 7), (0, 56, frames[:1], 1), (2, 1024, (("np.py", 9),), 1),
           (0, 33, (("<unknown>", 0),), 0))
else:
    raw = ((0, 4096, frames), (0, 56, frames[:1]), (2, 1024, (("np.py", 9),)),
           (0, 33, (("<unknown>", 0),)))
tracemalloc.Snapshot(raw, 3).dump(sys.argv[1])
"""

LINETABLE_SRC = r"""
import sys
def f(a, b):
    x = a + b
    if x > 3:
        for i in range(x):
            x += i * 2
    try:
        return [y for y in range(x) if y % 3]
    except Exception as e:
        raise ValueError(
            "long %s" % e) from None
code = f.__code__
table = code.co_linetable if sys.version_info >= (3, 10) else code.co_lnotab
sys.stdout.write("%d %d %s\n" % (code.co_firstlineno, len(code.co_code), table.hex()))
"""

DEBUG_SRC = r"""
import ctypes, sys
r = ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime")
sys.stdout.buffer.write(ctypes.string_at(ctypes.addressof(r), 2048))
"""

# The code of PyRefTracer_SetTracer (where discovery finds the reference tracer).
SETTRACER_SRC = r"""
import ctypes, sys
f = ctypes.cast(ctypes.pythonapi.PyRefTracer_SetTracer, ctypes.c_void_p).value
sys.stdout.buffer.write(ctypes.string_at(f, 64))
"""

ELF_SRC = r"""
char _PyRuntime[256] __attribute__((section(".PyRuntime"))) = "xdebugpy";
const char Py_Version[] = "3.13.0";
void PyMem_SetAllocator(void) {}
"""

INPUTS = [
    b"\x00snapshot /tmp/heap.pytm", b"\x00snapshot /tmp/a b.pytm 3.8", b"\x00traced",
    b"\x00reset-peak", b"\x00clear", b"\x00limit", b"\x00stop", b"\x00 \t ", b"\x00nope x",
    b"\x01512k", b"\x01-3", b"\x010x1f", b"\x0199999999999999999999", b"\x011.5M",
    b"\x02127.0.0.1:9464", b"\x02:0", b"\x02[::1]:80", b"\x02host:65536",
    b"\x03*/app/*.py:12", b"\x03<frozen *>", b"\x03a:b:c", b"\x03[!a-]x?.py",
    b"\x04[a-z]*.py\x00abc.py", b"\x04**\x00x", b"\x04[\x00[", b"\x04*.py[co]\x00m.pyc",
    b"\x05\xc3\xa9*\x00\xc3\xa9t\xc3\xa9", b"\x05[]]\x00]",
]


def pyenv_python(root, v):
    found = sorted(glob.glob(os.path.join(root, "versions", v + ".*", "bin", "python" + v)))
    if not found:
        sys.exit("no pyenv CPython %s under %s" % (v, root))
    return found[-1]


def write(kind, name, data):
    d = os.path.join(CORPUS, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else \
        os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for kind in ("pickle", "linetable", "debugoffsets", "elf", "input"):
        for old in glob.glob(os.path.join(CORPUS, kind, "seed-*")):
            os.unlink(old)
    with tempfile.TemporaryDirectory() as tmp:
        for i, v in enumerate(VERSIONS):
            py = pyenv_python(root, v)
            out = os.path.join(tmp, "s.pickle")
            if v in ("3.8", "3.13"):
                subprocess.run([py, "-c", PICKLE_SRC, out], check=True)
                with open(out, "rb") as fh:
                    write("pickle", "seed-tracemalloc-%s" % v, fh.read())
            first, ncode, table = subprocess.run(
                [py, "-c", LINETABLE_SRC], check=True, capture_output=True,
                text=True).stdout.split()
            for addrq in (0, int(ncode) // 2, int(ncode) - 2):
                write("linetable", "seed-%s-%d" % (v, addrq),
                      bytes([i]) + struct.pack("<ii", int(first), addrq) + bytes.fromhex(table))
        dbg = subprocess.run([pyenv_python(root, "3.13"), "-c", DEBUG_SRC], check=True,
                             capture_output=True).stdout
        write("debugoffsets", "seed-3.13", dbg)
        write("debugoffsets", "seed-3.13-short", dbg[:64])
        code = subprocess.run([pyenv_python(root, "3.13"), "-c", SETTRACER_SRC], check=True,
                              capture_output=True).stdout
        write("debugoffsets", "seed-3.13-settracer", code)
        src, so = os.path.join(tmp, "e.c"), os.path.join(tmp, "e.so")
        with open(src, "w") as fh:
            fh.write(ELF_SRC)
        subprocess.run(["cc", "-shared", "-fPIC", "-nostdlib", "-Wl,--build-id=none",
                        "-o", so, src], check=True)
        subprocess.run(["strip", "--strip-debug", so], check=True)
        with open(so, "rb") as fh:
            write("elf", "seed-small-so", fh.read())
    for i, data in enumerate(INPUTS):
        write("input", "seed-%02d" % i, data)


if __name__ == "__main__":
    main()
