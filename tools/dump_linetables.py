# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Dump the line tables of every code object of this interpreter's stdlib,
with the line the interpreter itself gives for every instruction offset.

Run it under the interpreter to test (3.8 to 3.13):

    python3.X tools/dump_linetables.py [DIR_OR_FILE ...]

Without arguments it compiles every .py file under the stdlib directory
(sysconfig's "stdlib" path, site-packages excluded); files that do not
compile (bad-syntax test data, Python 2 files for lib2to3) are skipped.
One line per code object, printed as it is found:

    HEXVERSION FIRSTLINENO TABLE LINES<TAB>FILE:NAME

HEXVERSION is sys.hexversion in hex, TABLE the hex of co_lnotab (3.8, 3.9)
or co_linetable (3.10+), "-" when empty; LINES is a comma-separated list of
PyCode_Addr2Line(code, addrq) for addrq = -2, 0, 2, ..., len(co_code),
both ends included (the last one is one past the code). With
PYTM_LINETABLE_EVERY=N in the environment, only every Nth file. The test
tests/unit/test_linetable.c checks user/resolution/linetable.c against it.
"""

import ctypes
import os
import sys
import sysconfig
import types
import warnings

addr2line = ctypes.pythonapi.PyCode_Addr2Line
addr2line.argtypes = (ctypes.py_object, ctypes.c_int)
addr2line.restype = ctypes.c_int



def table_of(code):
    if sys.version_info >= (3, 10):
        return code.co_linetable
    return code.co_lnotab


def dump_code(code, filename, out):
    table = table_of(code)
    # One past the end too: what the interpreter does there is part of
    # the contract (no crash, and the same answer).
    lines = [addr2line(code, addrq)
             for addrq in range(-2, len(code.co_code) + 1, 2)]
    name = getattr(code, "co_qualname", code.co_name)
    out.write("%x %d %s %s\t%s:%s\n" % (
        sys.hexversion, code.co_firstlineno,
        table.hex() if table else "-",
        ",".join(map(str, lines)),
        filename, name))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            dump_code(const, filename, out)


def source_files(roots):
    for root in roots:
        if os.path.isfile(root):
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            # The stdlib only: not what pip installed next to it.
            dirnames[:] = sorted(d for d in dirnames
                                 if d not in ("site-packages",
                                              "dist-packages",
                                              "__pycache__"))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    yield os.path.join(dirpath, name)


def main():
    roots = sys.argv[1:] or [sysconfig.get_paths()["stdlib"]]
    warnings.simplefilter("ignore")
    out = sys.stdout
    # PYTM_LINETABLE_EVERY=N: every Nth file only (the sanitizer run).
    every = int(os.environ.get("PYTM_LINETABLE_EVERY", "1"))
    for i, path in enumerate(source_files(roots)):
        if i % every:
            continue
        try:
            with open(path, "rb") as f:
                source = f.read()
            code = compile(source, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, UnicodeDecodeError, OSError,
                MemoryError, RecursionError, OverflowError):
            continue
        dump_code(code, path, out)
    out.flush()


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # The reader went away (a failed test stops early): not an error.
        sys.stderr.close()
        sys.exit(1)
