#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Generate user/discovery/pyoffsets_table.h: struct offsets of CPython 3.8-3.13.

For every pyenv CPython 3.8-3.13 installed, write a small C probe that
prints offsetof()/sizeof() of the fields in struct pytm_offsets
(bpf/pytm.h), compile it against that version's headers (internal ones
included, -DPy_BUILD_CORE), run it and emit one designated initializer
per minor version.  3.8-3.12 are used at run time; 3.13 is a cross-check
for the _Py_DebugOffsets reader (tests/unit/test_pyoffsets.c).

    python3 tools/gen_offsets.py > user/discovery/pyoffsets_table.h

Options: --cc CC (default: $CC or cc); --allow-missing writes a table
without the minor versions that are not installed (by default that is an
error: a regenerated table must not lose entries silently).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

MINORS = (8, 9, 10, 11, 12, 13)

# enum pytm_frame_layout / pytm_lasti_kind (bpf/pytm.h)
LAYOUT = {8: "PYTM_LAYOUT_FRAMEOBJ", 9: "PYTM_LAYOUT_FRAMEOBJ",
          10: "PYTM_LAYOUT_FRAMEOBJ", 11: "PYTM_LAYOUT_CFRAME",
          12: "PYTM_LAYOUT_CFRAME", 13: "PYTM_LAYOUT_DIRECT"}
LASTI = {8: "PYTM_LASTI_INT_BYTES", 9: "PYTM_LASTI_INT_BYTES",
         10: "PYTM_LASTI_INT_UNITS", 11: "PYTM_LASTI_PREV_INSTR",
         12: "PYTM_LASTI_PREV_INSTR", 13: "PYTM_LASTI_INSTR_PTR"}


def headers(minor):
    """Headers that declare the structs we probe, per minor version."""
    h = ["Python.h", "frameobject.h"]
    if minor == 8:
        h += ["internal/pycore_pystate.h"]
    else:
        h += ["internal/pycore_runtime.h", "internal/pycore_interp.h"]
    if minor >= 11:
        h += ["internal/pycore_frame.h", "internal/pycore_code.h"]
    return h


def fields(minor):
    """(field, C expression) of struct pytm_offsets; None = absent."""
    ge = lambda m, a, b=None: a if minor >= m else b  # noqa: E731
    return [
        ("runtime_interpreters_head",
         "offsetof(_PyRuntimeState, interpreters.head)"),
        ("interp_next", "offsetof(PyInterpreterState, next)"),
        ("interp_threads_head",
         ge(11, "offsetof(PyInterpreterState, threads.head)",
            "offsetof(PyInterpreterState, tstate_head)")),
        ("tstate_next", "offsetof(PyThreadState, next)"),
        ("tstate_interp", "offsetof(PyThreadState, interp)"),
        ("tstate_thread_id", "offsetof(PyThreadState, thread_id)"),
        ("tstate_native_thread_id",
         ge(11, "offsetof(PyThreadState, native_thread_id)")),
        ("tstate_frame",
         "offsetof(PyThreadState, current_frame)" if minor >= 13 else
         "offsetof(PyThreadState, cframe)" if minor >= 11 else
         "offsetof(PyThreadState, frame)"),
        ("cframe_current_frame",
         "offsetof(_PyCFrame, current_frame)" if minor in (11, 12) else None),
        ("frame_back",
         ge(11, "offsetof(_PyInterpreterFrame, previous)",
            "offsetof(PyFrameObject, f_back)")),
        ("frame_code",
         "offsetof(_PyInterpreterFrame, f_executable)" if minor >= 13 else
         "offsetof(_PyInterpreterFrame, f_code)" if minor >= 11 else
         "offsetof(PyFrameObject, f_code)"),
        ("frame_lasti",
         "offsetof(_PyInterpreterFrame, instr_ptr)" if minor >= 13 else
         "offsetof(_PyInterpreterFrame, prev_instr)" if minor >= 11 else
         "offsetof(PyFrameObject, f_lasti)"),
        ("frame_owner", ge(11, "offsetof(_PyInterpreterFrame, owner)")),
        ("owner_generator", ge(11, "FRAME_OWNED_BY_GENERATOR")),
        ("owner_cstack", ge(12, "FRAME_OWNED_BY_CSTACK")),
        # f_executable is an untagged PyObject * before 3.14
        ("frame_tag_bits", "0"),
        ("object_type", "offsetof(PyObject, ob_type)"),
        ("varobject_size", "offsetof(PyVarObject, ob_size)"),
        ("code_filename", "offsetof(PyCodeObject, co_filename)"),
        ("code_name", "offsetof(PyCodeObject, co_name)"),
        ("code_qualname", ge(11, "offsetof(PyCodeObject, co_qualname)")),
        ("code_firstlineno", "offsetof(PyCodeObject, co_firstlineno)"),
        ("code_linetable",
         ge(10, "offsetof(PyCodeObject, co_linetable)",
            "offsetof(PyCodeObject, co_lnotab)")),
        ("code_firsttraceable",
         ge(11, "offsetof(PyCodeObject, _co_firsttraceable)")),
        ("code_adaptive", ge(11, "offsetof(PyCodeObject, co_code_adaptive)")),
        ("code_code",
         "offsetof(PyCodeObject, co_code)" if minor <= 10 else None),
        ("bytes_sval", "offsetof(PyBytesObject, ob_sval)"),
        ("unicode_length", "offsetof(PyASCIIObject, length)"),
        ("unicode_state", "offsetof(PyASCIIObject, state)"),
        ("unicode_ascii_size", "sizeof(PyASCIIObject)"),
        ("unicode_compact_size", "sizeof(PyCompactUnicodeObject)"),
        # Py_TSS_t is {int _is_initialized; pthread_key_t _key;}: point at
        # the key itself, what pthread_getspecific() takes.
        ("runtime_tss_key",
         ge(12, "offsetof(_PyRuntimeState, autoTSSkey._key)",
            "offsetof(_PyRuntimeState, gilstate.autoTSSkey._key)")),
        # The thread state of the thread holding the GIL (an atomic
        # pointer), until 3.11: the recorder's thread state in obj/mem calls.
        ("runtime_tstate_current",
         "offsetof(_PyRuntimeState, gilstate.tstate_current)"
         if minor <= 11 else None),
    ]


# u8 fields: absent = 0xff (no valid enum value), the rest: PYTM_OFF_NONE.
U8_FIELDS = ("owner_generator", "owner_cstack")
PYTM_OFF_NONE = 0xffff


def find_pythons():
    """{minor: (version, prefix)} of pyenv CPython 3.8-3.13, newest patch."""
    try:
        out = subprocess.run(["pyenv", "versions", "--bare"], check=True,
                             capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        root = os.environ.get("PYENV_ROOT",
                              os.path.expanduser("~/.pyenv"))
        d = os.path.join(root, "versions")
        out = os.listdir(d) if os.path.isdir(d) else []
    found = {}
    for v in out:
        m = re.fullmatch(r"3\.(\d+)\.(\d+)", v)
        if not m or int(m.group(1)) not in MINORS:
            continue
        minor, patch = int(m.group(1)), int(m.group(2))
        if minor in found and found[minor][2] >= patch:
            continue
        try:
            prefix = subprocess.run(["pyenv", "prefix", v], check=True,
                                    capture_output=True,
                                    text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            root = os.environ.get("PYENV_ROOT",
                                  os.path.expanduser("~/.pyenv"))
            prefix = os.path.join(root, "versions", v)
        found[minor] = (v, prefix, patch)
    return {k: (v[0], v[1]) for k, v in found.items()}


def probe(cc, minor, prefix, tmp):
    """Compile and run the probe; return (hexversion, {field: value})."""
    inc = os.path.join(prefix, "include", "python3.%d" % minor)
    src = ["#define Py_BUILD_CORE 1", "#include <stddef.h>",
           "#include <stdio.h>"]
    src += ['#include "%s"' % h for h in headers(minor)]
    src += ["int main(void)", "{",
            '\tprintf("hexversion %lu\\n", (unsigned long)PY_VERSION_HEX);']
    for name, expr in fields(minor):
        if expr is not None:
            src.append('\tprintf("%s %%lu\\n", (unsigned long)(%s));'
                       % (name, expr))
    src += ["\treturn 0;", "}", ""]
    c = os.path.join(tmp, "probe%d.c" % minor)
    exe = os.path.join(tmp, "probe%d" % minor)
    with open(c, "w") as f:
        f.write("\n".join(src))
    subprocess.run([cc, "-w", "-I", inc, "-I", os.path.join(inc, "internal"),
                    c, "-o", exe], check=True)
    out = subprocess.run([exe], check=True, capture_output=True,
                         text=True).stdout
    vals = dict((k, int(v)) for k, v in (l.split() for l in out.splitlines()))
    return vals.pop("hexversion"), vals


def emit(results):
    w = sys.stdout.write
    w("/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */\n")
    w("/*\n"
      " * GENERATED by tools/gen_offsets.py -- do not edit. Regenerate with\n"
      " *   python3 tools/gen_offsets.py > user/discovery/pyoffsets_table.h\n"
      " * offsetof()/sizeof() probes compiled against each pyenv CPython's\n"
      " * headers (internal ones too, -DPy_BUILD_CORE), x86-64 LP64.\n"
      " * Included by user/discovery/pyoffsets.c and its unit test only: everyone\n"
      " * else asks pyoffsets__lookup().\n"
      " * Sources: %s.\n"
      " *\n"
      " * Patch releases: only _Py_DebugOffsets (3.13+) is promised stable\n"
      " * within a minor version. The public-header structs read here\n"
      " * (PyThreadState, PyFrameObject, PyCodeObject, the object heads) are\n"
      " * compiled into extensions and have not moved within a minor version\n"
      " * as far as we know; _PyInterpreterFrame is internal but other\n"
      " * out-of-process readers key it by minor version too.\n"
      " * _PyRuntimeState and PyInterpreterState are internal and could move:\n"
      " * runtime_tss_key, deep in _PyRuntimeState, is the most exposed.\n"
      " * Validate on live memory before trusting an entry (tstate->interp\n"
      " * points back, f_code's ob_type is &PyCode_Type).\n"
      " */\n" % ", ".join(results[m][0] for m in sorted(results)))
    w("#ifndef __PYTM_PYOFFSETS_TABLE_H\n#define __PYTM_PYOFFSETS_TABLE_H\n\n")
    w('#include "pytm.h"\n\n')
    notes = {
        8: "_PyRuntimeState and PyInterpreterState come from\n"
           " * pycore_pystate.h; the TSS key is inside runtime->gilstate.",
        9: "f_lasti counts bytes, -1 before the first instruction.",
        10: "f_lasti counts code units now (was bytes), -1 before the\n"
            " * first instruction.",
        11: "f_code is not the first field (f_func is); no C-stack\n"
            " * owner: 3.11 flags entry frames with is_entry and they are\n"
            " * ordinary Python frames. prev_instr = code - 1 before the\n"
            " * first instruction.",
        12: "the C entry frame is owned by FRAME_OWNED_BY_CSTACK and\n"
            " * its f_code is the interpreter trampoline code object (no\n"
            " * RESUME, so it also fails the _co_firsttraceable test).",
        13: "cross-check only, not used at run time (3.13+ read\n"
            " * _Py_DebugOffsets). f_executable of the C entry frame\n"
            " * (FRAME_OWNED_BY_CSTACK) is Py_None, not a code object;\n"
            " * instr_ptr is the instruction running, not the previous one.",
    }
    w("/*\n"
      " * One entry per minor version, oldest first. Entries for 3.13+ are\n"
      " * cross-checks of the _Py_DebugOffsets reader: pyoffsets__lookup()\n"
      " * never returns them.\n"
      " */\n")
    w("static const struct pytm_offsets pyoffsets_table[] = {\n")
    for minor in sorted(results):
        version, hexv, vals = results[minor]
        w("\t/* 3.%d, from %s: %s */\n"
          % (minor, version, notes[minor].replace("\n *", "\n\t *")))
        w("\t{\n")
        w("\t\t.hexversion = 0x%08x,\n" % hexv)
        w("\t\t.layout = %s,\n" % LAYOUT[minor])
        w("\t\t.lasti_kind = %s,\n" % LASTI[minor])
        for fname, expr in fields(minor):
            if expr is None:
                v = "0xff" if fname in U8_FIELDS else "PYTM_OFF_NONE"
            else:
                n = vals[fname]
                lim = 0xff if fname in U8_FIELDS else PYTM_OFF_NONE
                if n >= lim:
                    sys.exit("gen_offsets: 3.%d %s = %d does not fit"
                             % (minor, fname, n))
                v = "%d" % n
            w("\t\t.%s = %s,\n" % (fname, v))
        w("\t},\n")
    w("};\n\n")
    w("#endif /* __PYTM_PYOFFSETS_TABLE_H */\n")



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--allow-missing", action="store_true",
                    help="emit a table without the missing minor versions")
    args = ap.parse_args()
    pythons = find_pythons()
    missing = [m for m in MINORS if m not in pythons]
    if missing:
        print("gen_offsets: no pyenv CPython for 3.%s" %
              ", 3.".join(str(m) for m in missing), file=sys.stderr)
        if not args.allow_missing or not pythons:
            sys.exit(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for minor, (version, prefix) in sorted(pythons.items()):
            hexv, vals = probe(args.cc, minor, prefix, tmp)
            if hexv >> 16 != 0x0300 | minor:
                sys.exit("gen_offsets: %s has PY_VERSION_HEX %#x"
                         % (prefix, hexv))
            results[minor] = (version, hexv, vals)
    emit(results)


if __name__ == "__main__":
    main()
