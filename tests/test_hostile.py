# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Hostile targets: what a process controls never drives a terminal or
corrupts an output, and never crashes the tracer.

tests/workloads/wl_hostile.py allocates under a file name made of terminal
escape sequences (CSI, an OSC title), newline, carriage return, C1 controls
(raw bytes and UTF-8) and bytes that are not UTF-8; under a function named
with 10,000 characters; in a function whose line table it overwrote with
0xff through ctypes; and in 400 code objects it frees before the tracer
may have read them (their arenas go back to the system). Traced on Debian's
python3.11 (report on a pseudo-terminal), pyenv 3.10 and 3.13 (JSON), each
with --serve and -o heap.pytm, side by side:
- no output carries a raw control character (C0 but newline, DEL, C1) or a
  byte that is not UTF-8: the text report on a terminal, the JSON
  documents, /metrics, the pprof profile's strings, the folded stacks and
  flame graph page that `pytm-bpf report` makes of the snapshot file;
- the escaped file name is still recognisable, its 2000 blocks counted;
  the 10,000-character name is in the profile; the blocks of the corrupted
  function and of the freed code objects are all reported (under some line,
  or <unknown>), and unreadable code objects are counted;
- the tracer and the target exit 0; the snapshot loads in tracemalloc.
Also: a target SIGKILLed at 13 moments of its attach (one line, exit 1, or
traced and reported), and a target whose thread-state list was made
cyclic (wl_cyclic.py) while it was attached and allocating: no hang, its
blocks reported (under <unknown> where its thread state could not be
found, counted as such), its own results unchanged.
"""

import gzip
import json
import os
import pty
import re
import select
import subprocess
import threading
import time

from conftest import (INTERPRETERS, PYTM, ROOT, T_START, T_STOP, T_WORK, Procs,
                      _register, batch_result, isolated, marked_line, run_cmd)
from test_serve import get, serving_url

WORKLOAD = "wl_hostile.py"
CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def clean(data, what, allow=b""):
    """DATA has no control character (but newline and ALLOW) and is UTF-8."""
    for m in CONTROL.finditer(data):
        assert m.group(0) in allow, "%s: raw %r at %d: %r" % (
            what, m.group(0), m.start(), data[max(0, m.start() - 60):m.start() + 60])
    data.decode("utf-8")        # raises on a byte that is not UTF-8


def pb_strings(data):
    """The string table (field 6) of a perftools.profiles.Profile."""
    out, i = [], 0

    def varint(i):
        v = s = 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7f) << s
            s += 7
            if b < 0x80:
                return v, i
    while i < len(data):
        key, i = varint(i)
        wire = key & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 2:
            n, i = varint(i)
            if key >> 3 == 6:
                out.append(data[i:i + n])
            i += n
        else:
            raise AssertionError("wire type %d in a profile" % wire)
    return out


class PtyTracer:
    """pytm-bpf with its stdout on a pseudo-terminal (escaping on)."""

    def __init__(self, args):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen([PYTM] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                                     stdout=slave, stderr=subprocess.PIPE, cwd=ROOT)
        _register("tracer on a pty", self.proc)
        os.close(slave)
        self.master, self.out, self.err = master, bytearray(), bytearray()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.e = threading.Thread(target=self._read_err, daemon=True)
        self.e.start()

    def _read_err(self):
        while True:
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                return
            self.err.extend(chunk)

    def _read(self):
        # poll, not select: a whole suite's run may hold descriptors past
        # select's 1024 by then.
        p = select.poll()
        p.register(self.master, select.POLLIN)
        while True:
            try:
                if p.poll(500):
                    chunk = os.read(self.master, 65536)
                    if not chunk:
                        return
                    self.out.extend(chunk)
                elif self.proc.poll() is not None:
                    return
            except OSError:
                return

    def finish(self):
        rc = self.proc.wait(timeout=T_STOP)
        self.t.join(timeout=10)
        self.e.join(timeout=10)
        os.close(self.master)
        return rc


def hostile_run(procs, python, tmp, on_pty):
    tgt = procs.target(python, WORKLOAD)
    tgt.expect("ready", timeout=T_START)
    snap = os.path.join(tmp, "heap.pytm")
    args = ["-p", tgt.pid, "--frames", 3, "--serve", "127.0.0.1:0", "-o", snap]
    if on_pty:
        tr = PtyTracer(args)

        class Err:
            def text(self):
                return bytes(tr.err)
        tr.err_view = Err()
        view = type("V", (), {"err": tr.err_view, "proc": tr.proc})
    else:
        tr = procs.tracer(args + ["--format", "json"])
        view = tr
    url = serving_url(view)
    tgt.send("go")
    tgt.expect("built", timeout=T_WORK)
    r = {"metrics": get(url + "/metrics")[2],
         "pprof": gzip.decompress(get(url + "/debug/pprof/heap")[2])}
    tr.proc.send_signal(2)
    if on_pty:
        r["rc"] = tr.finish()
        r["out"], r["err"] = bytes(tr.out), bytes(tr.err)
    else:
        r["rc"], r["out"], r["err"] = tr.finish(timeout=T_STOP)
    tgt.send("quit")
    r["target_rc"] = tgt.wait(timeout=T_WORK)
    r["json"] = run_cmd([PYTM, "report", snap, "--format", "json", "--top", "0"])[1]
    r["folded"] = run_cmd([PYTM, "report", snap, "--format", "folded"])[1]
    r["html"] = run_cmd([PYTM, "report", snap, "--format", "flamegraph"])[1]
    r["loaded"] = run_cmd([python, "-c", "import sys, tracemalloc; s = tracemalloc.Snapshot."
                           "load(sys.argv[1]); print(len(s.traces))", snap])[1]
    return r


RUNS = {"debian-3.11": True, "3.10": False, "3.13": False}


def run(tmp_path_factory, which):
    def make_jobs():
        return {k: isolated(hostile_run, INTERPRETERS[k], str(tmp_path_factory.mktemp(k)), pty)
                for k, pty in RUNS.items()}
    r = batch_result(("hostile",), which, make_jobs)
    assert r["rc"] == 0 and r["target_rc"] == 0, r["err"][-3000:]
    return r


def check(r, python):
    on_pty = RUNS[python]
    # Every output: no raw control character, UTF-8 throughout.
    if on_pty:
        # A terminal's own line discipline ends lines with \r\n.
        clean(r["out"], "text report on a terminal", allow=(b"\r",))
        # Escaped when read from the target (\x1b as text), its backslash again
        # for the terminal.
        assert b"evil\\\\x1b[31m" in r["out"], r["out"][-3000:]
    else:
        clean(r["out"], "JSON documents")
    clean(r["metrics"], "/metrics")
    for s in pb_strings(r["pprof"]):
        clean(s, "a pprof string")
    clean(r["json"], "report JSON")
    clean(r["folded"], "folded stacks")
    clean(r["html"], "flame graph page", allow=(b"\t",))
    assert b"evil\\\\x1b[31m" in r["metrics"] or b"evil" not in r["metrics"]
    # What each hostile part allocated is there.
    rep = json.loads(r["json"])
    stats = rep["statistics"]

    def where(s):
        return s["traceback"][-1]["filename"]
    evil = [s for s in stats if where(s).startswith("evil")]
    assert evil and evil[0]["count"] >= 2000 and where(evil[0]).endswith("x.py"), \
        [where(s) for s in stats[:10]]
    corrupt = [s for s in stats if s["count"] >= 1000 and 700 < s["average"] < 800]
    assert corrupt, stats[:10]
    assert where(corrupt[0]).endswith(WORKLOAD) or where(corrupt[0]) == "<unknown>"
    churn = sum(s["size"] for s in stats if where(s).startswith("<churn-") or
                where(s) == "<unknown>")
    assert churn >= 0.9 * 400 * 5 * 300, churn
    names = [s for s in pb_strings(r["pprof"]) if s.startswith(b"f" * 1000)]
    assert names, "the 10,000-character function name is not in the profile"
    assert int(r["loaded"]) == sum(s["count"] for s in stats)
    print("%s: evil line %r, %d blocks; corrupt-table blocks at %s:%d; freed code objects' "
          "blocks %d B; long name %d characters in the profile" % (
              python, where(evil[0])[:60], evil[0]["count"], where(corrupt[0]),
              corrupt[0]["traceback"][-1]["lineno"], churn, len(names[0])))


def test_hostile_debian_311_terminal(tmp_path_factory):
    check(run(tmp_path_factory, "debian-3.11"), "debian-3.11")


def test_hostile_310(tmp_path_factory):
    check(run(tmp_path_factory, "3.10"), "3.10")


def test_hostile_313(tmp_path_factory):
    r = run(tmp_path_factory, "3.13")
    check(r, "3.13")
    lost = [json.loads(l)["lost"] for l in r["out"].splitlines() if l.strip()][-1]
    print("3.13 lost counts: %s" % {k: v for k, v in lost.items() if v})


# A target that dies while it is being attached, at every moment of it:
# discovery, the offset checks, the BPF load, the page injection, the table
# swap, the probes. SIGKILL after DELAY seconds of pytm-bpf's run, for a
# spread of delays over a whole attach (measured first, on the same kind
# of target).
DELAYS = [0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3]
CRASH = re.compile(rb"Segmentation|AddressSanitizer|Aborted|core dumped|runtime error|"
                   rb"Assertion|double free")


def dying_run(procs, python, delay):
    tgt = procs.target(python, "inj_churn.py")
    tgt.expect("ready", timeout=T_START)
    tgt.send("go")
    tr = procs.tracer(["-p", tgt.pid, "--frames", 5])
    time.sleep(delay)
    os.kill(tgt.pid, 9)
    tgt.wait(timeout=T_WORK)
    rc, out, err = tr.finish(timeout=T_STOP)
    return {"delay": delay, "rc": rc, "out": out, "err": err,
            "traced": b"pytm-bpf: tracing" in err}


def test_target_exits_during_attach():
    import conftest
    jobs = {}
    for py in ("debian-3.11", "3.13"):
        for d in DELAYS:
            jobs[(py, d)] = isolated(dying_run, INTERPRETERS[py], d)
    results = {}
    keys = sorted(jobs)
    for i in range(0, len(keys), 4):      # four at a time: two cores
        results.update(conftest.run_parallel({k: jobs[k] for k in keys[i:i + 4]}))
    seen = {}
    for k in keys:
        r = results[k]
        if isinstance(r, BaseException):
            raise r
        shown = "%s after %.2f s: rc=%s\nstderr: %r" % (k[0], k[1], r["rc"], r["err"][-2000:])
        assert r["rc"] in (0, 1), shown
        assert not CRASH.search(r["err"]), shown
        for line in r["err"].splitlines():
            assert line.startswith(b"pytm-bpf: "), shown
        if r["rc"] == 1:
            assert not r["traced"] and r["err"].count(b"\n") == 1, shown
        else:
            assert r["out"].startswith(b"[ Top ") or not r["traced"], shown
        seen.setdefault(k[0], []).append("%.2f:%s" % (k[1], "traced" if r["traced"] else
                                                       "rc%d" % r["rc"]))
    for py, s in seen.items():
        print("%s: %s" % (py, " ".join(s)))


def cyclic_run(procs, python):
    tgt = procs.target(python, "wl_cyclic.py")
    tgt.expect("ready", timeout=T_START)
    tgt.send("cycle")
    tgt.expect("cyclic")
    tr = procs.tracer(["-p", tgt.pid, "--frames", 3, "--format", "json"])
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("built", timeout=T_WORK)
    tgt.send("restore")
    tgt.expect("restored")
    rc, out, err = tr.stop()
    tgt.send("quit")
    total = tgt.expect("sum ")
    return {"rc": rc, "out": out, "err": err, "sum": total, "target_rc": tgt.wait(T_WORK)}


def test_cyclic_thread_states():
    """The tracer neither hangs nor crashes on a cyclic chain: it attaches,
    reports what the GIL holder allocated exactly, counts what it could not
    place, and the target computes what it computes untraced."""
    import conftest
    res = conftest.run_parallel({py: isolated(cyclic_run, INTERPRETERS[py])
                                 for py in ("debian-3.11", "3.13")})
    obj = marked_line(os.path.join(conftest.WORKLOADS, "wl_cyclic.py"), "OBJ_LINE")
    for py, r in sorted(res.items()):
        if isinstance(r, BaseException):
            raise r
        shown = "%s: rc=%s\nstderr: %r" % (py, r["rc"], r["err"][-2000:])
        assert r["rc"] == 0 and r["target_rc"] == 0, shown
        assert not CRASH.search(r["err"]), shown
        assert r["sum"] == "sum %d" % sum(i % 251 for i in range(300)), (py, r["sum"])
        doc = json.loads(r["out"].splitlines()[-1])
        stats = doc["statistics"]
        lost = {k: v for k, v in doc["lost"].items() if v}
        line = [s for s in stats if s["traceback"][-1]["lineno"] == obj and
                s["traceback"][-1]["filename"].endswith("wl_cyclic.py")]
        # Where its thread state was found (the GIL holder's, <= 3.11), the
        # blocks are at their line; where it was not, under <unknown>, each
        # counted as an event without a thread state.
        unknown = [s for s in stats if s["traceback"][-1]["filename"] == "<unknown>"]
        if not line:
            assert unknown and unknown[0]["count"] >= 2000, (py, stats[:5])
            assert lost.get("no_thread_state", 0) >= 2000, (py, lost)
        else:
            assert line[0]["count"] >= 2000, (py, stats[:5])
        print("%s: %d blocks at OBJ_LINE, %d under <unknown>; lost %s" % (
            py, line[0]["count"] if line else 0, unknown[0]["count"] if unknown else 0, lost))
