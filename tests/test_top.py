# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""pytm-bpf top: the full-screen view, driven in tmux.

tests/workloads/wl_top.py (Debian's python3.11) holds a few lines of known
size and allocates only when told. `pytm-bpf top -p PID --frames 5 -o
DIR/top.pytm` runs in a tmux pane of a server of the test's own (its own
socket); the test types keys (send-keys) and reads the screen
(capture-pane):
- header and table: the header names the process, mode and frames, the
  rows are what `pytm-bpf report` of the snapshot that 's' wrote at the
  same moment says (line, size, count, average: the report's JSON), and
  the header's traced current is that snapshot's total;
- p pauses (new allocations do not show until p again), G sorts by growth
  (the line that just grew is first, its growth the bytes it grew by), C
  by count, S by size; k cycles lineno -> filename -> traceback -> lineno
  (each checked against the report with that key); Enter on a line shows
  its tracebacks, biggest first, and Esc closes them;
- resizing the pane to 72x14 and back keeps every line within the width
  with the header, the column titles and rows in place;
- q leaves the terminal as it was (the view's screen gone, the shell's
  back, echo and canonical input on), pytm-bpf exits 0, and the target runs on untouched: no allocator
  slot leads into our page, its checksum is the one it computed untraced.
A second run (pyenv 3.13, sampled at 64 KiB, side by side) has stdout on a
pipe: plain text tables every interval, no escape sequence, the header
saying the figures are estimates.
"""

import json
import os
import re
import subprocess
import threading
import time

import pytest

from conftest import (INTERPRETERS, PYTM, T_START, T_STOP, T_WORK, WORKLOADS,
                      Procs, marked_line, run_cmd)

WORKLOAD = os.path.join(WORKLOADS, "wl_top.py")
TMUX = "/usr/bin/tmux"
ROW = re.compile(r"^\s*(\d+(?:\.\d+)? [KMGT]?i?B)\s+(\d+)\s+(\S+ \S+|-)\s+"
                 r"([+-]?\d+(?:\.\d+)? [KMGT]?i?B)\s+([+-]?\d+(?:\.\d+)? [KMGT]?i?B)\s+(.+)$")


def format_size(size, sign=False):
    """tracemalloc._format_size, which the view's figures follow."""
    import tracemalloc
    return tracemalloc._format_size(size, sign)


def to_bytes(text):
    num, unit = text.split()
    return float(num) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]


class Pane:
    """One tmux server (a socket of its own) with one window running CMD."""

    def __init__(self, cmd, width, height, cwd):
        self.sock = "pytm-test-%d" % os.getpid()
        self.tmux(["-f", "/dev/null", "new-session", "-d", "-s", "v", "-x", str(width),
                   "-y", str(height), "-c", cwd, cmd])

    def tmux(self, args):
        return run_cmd([TMUX, "-L", self.sock] + args)[1].decode(errors="replace")

    def text(self):
        return self.tmux(["capture-pane", "-p", "-t", "v"])

    def keys(self, *keys):
        self.tmux(["send-keys", "-t", "v"] + list(keys))

    def resize(self, width, height):
        self.tmux(["resize-window", "-t", "v", "-x", str(width), "-y", str(height)])

    def wait(self, pred, what, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            got = pred(text)
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError("%s: not seen in %ss; screen:\n%s" % (what, timeout, text))
            time.sleep(0.2)

    def kill(self):
        subprocess.run([TMUX, "-L", self.sock, "kill-server"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)


def rows_of(text):
    """[(size, count, average, growth, since start, label)] below the column titles."""
    lines = text.splitlines()
    heads = [i for i, l in enumerate(lines) if "SIZE" in l and "LINE" in l]
    if not heads:
        return []
    out = []
    for l in lines[heads[0] + 1:]:
        m = ROW.match(l)
        if not m:
            break
        out.append(m.groups())
    return out


def label_of(tb, key):
    f = tb[-1]
    return f["filename"] if key == "filename" else "%s:%d" % (f["filename"], f["lineno"])


def report_json(path, key):
    _, out, _ = run_cmd([PYTM, "report", path, "--format", "json", "--top", "0", "--key", key])
    return json.loads(out)


def check_rows(rows, report, key, n=4):
    """The first N rows are the report's first N statistics, figure for figure."""
    stats = report["statistics"]
    assert len(rows) >= min(n, len(stats)), (rows, stats[:n])
    for row, st in list(zip(rows, stats))[:n]:
        size, count, avg, _, _, label = row
        assert size == format_size(st["size"]), (row, st)
        assert int(count) == st["count"], (row, st)
        assert avg == format_size(st["size"] / st["count"]), (row, st)
        want = label_of(st["traceback"], key)
        if key == "traceback" and len(st["traceback"]) > 1:
            want += " (+%d frame%s)" % (len(st["traceback"]) - 1,
                                        "s" if len(st["traceback"]) > 2 else "")
        assert label == want, (row, st)


def first_label_ends(text, suffix):
    rows = rows_of(text)
    return rows and rows[0][5].endswith(suffix) and rows


def save(pane, snap):
    """Press s; the screen once the new file is there."""
    if os.path.exists(snap):
        os.unlink(snap)
    pane.keys("s")
    deadline = time.monotonic() + 20
    while not os.path.exists(snap):
        assert time.monotonic() < deadline, "s wrote no file; screen:\n" + pane.text()
        time.sleep(0.1)
    return pane.wait(lambda t: "wrote pid" in t and t, "the snapshot written")


def scenario(procs, tmp):
    py = INTERPRETERS["debian-3.11"]
    lines = {m: marked_line(WORKLOAD, m) for m in
             ("BIG_LINE", "MANY_LINE", "LEAF_LINE", "GROW_LINE", "CALL_A", "CALL_B")}
    obs = {"lines": lines}
    tgt = procs.target(py, WORKLOAD)
    tgt.expect("ready", timeout=T_START)
    snap = os.path.join(tmp, "top.pytm")
    # After the view: its exit status, and the terminal's modes (echo, canonical input).
    cmd = ("%s top -p %d --frames 5 -o %s; echo EXITED $?; echo MODES $(stty -a | tr ' ;' "
           "'\\n\\n' | grep -E '^-?(icanon|echo|isig)$'); sleep 3600") % (PYTM, tgt.pid, snap)
    pane = Pane(cmd, 150, 35, tmp)
    try:
        pane.wait(lambda t: ("pytm-bpf top - pid %d" % tgt.pid) in t, "the view", 60)
        tgt.send("go")
        tgt.expect("built", timeout=T_WORK)
        tgt.send("sum")
        obs["sum_before"] = tgt.expect("sum ")
        big = ":%d" % lines["BIG_LINE"]
        pane.wait(lambda t: first_label_ends(t, big), "the big line first")
        time.sleep(1.5)                 # a refresh with nothing new
        # Paused, the screen and the snapshot 's' writes are one moment.
        pane.keys("p")
        pane.wait(lambda t: "[PAUSED]" in t, "paused")
        obs["main"] = save(pane, snap)
        obs["report_lineno"] = report_json(snap, "lineno")
        _, out, _ = run_cmd([py, "-c", "import sys, tracemalloc; s = tracemalloc.Snapshot."
                             "load(sys.argv[1]); print(sum(t.size for t in s.traces))", snap])
        obs["loaded_total"] = int(out)

        # Paused: a growth does not show.
        pane.keys("G")
        tgt.send("grow")
        tgt.expect("grown 5")
        time.sleep(2.5)
        obs["paused"] = pane.text()
        pane.keys("p")
        grow = ":%d" % lines["GROW_LINE"]
        obs["growth"] = pane.wait(lambda t: first_label_ends(t, grow) and t, "growth first")

        pane.keys("C")
        obs["count"] = pane.wait(lambda t: "sort: count" in t and t, "sorted by count")
        pane.keys("S")
        obs["size"] = pane.wait(lambda t: "sort: size" in t and t, "sorted by size")

        for key in ("filename", "traceback"):
            pane.keys("k")
            pane.wait(lambda t: ("key: " + key) in t, "key " + key)
            time.sleep(1.2)
            obs[key] = save(pane, snap)
            obs["report_" + key] = report_json(snap, key)
        pane.keys("k")
        pane.wait(lambda t: "key: lineno" in t and rows_of(t), "key lineno again")

        # Enter on the leaf line: its two tracebacks.
        rows = rows_of(pane.text())
        leaf = [i for i, r in enumerate(rows) if r[5].endswith(":%d" % lines["LEAF_LINE"])]
        assert leaf, rows
        for _ in range(leaf[0]):
            pane.keys("Down")
        pane.keys("Enter")
        obs["expanded"] = pane.wait(lambda t: "Tracebacks of" in t and "in caller_b" in t and t,
                                    "the tracebacks")
        pane.keys("Escape")
        obs["closed"] = pane.wait(lambda t: "Tracebacks of" not in t and t, "closed")

        pane.resize(72, 14)
        obs["small"] = pane.wait(lambda t: len(t.splitlines()) <= 14 and rows_of(t) and t,
                                 "the small layout")
        time.sleep(1.2)
        obs["small"] = pane.text()
        pane.resize(150, 35)
        obs["big"] = pane.wait(lambda t: len(rows_of(t)) >= 5 and
                               max(len(l) for l in t.splitlines()) > 72 and t, "the big layout")

        pane.keys("q")
        obs["quit"] = pane.wait(lambda t: "MODES" in t and t, "pytm-bpf exits", T_STOP)
        tgt.send("hooks")
        obs["hooks"] = tgt.expect("hooks ")
        tgt.send("sum")
        obs["sum_after"] = tgt.expect("sum ")
        tgt.send("quit")
        obs["target_rc"] = tgt.wait(timeout=T_WORK)
    finally:
        pane.kill()
    return obs


def plain_run(procs):
    tgt = procs.target(INTERPRETERS["3.13"], WORKLOAD)
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["top", "-p", tgt.pid, "--frames", 5, "--duration", 4.5,
                       "--sample", "64k"])
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("built", timeout=T_WORK)
    rc, out, err = tr.finish(timeout=T_STOP)
    tgt.send("quit")
    return {"rc": rc, "out": out.decode(errors="replace"), "err": err.decode(errors="replace"),
            "target_rc": tgt.wait(timeout=T_WORK)}


_OBS = {}


def obs(tmp_path_factory):
    if not _OBS:
        assert os.access(TMUX, os.X_OK), "tmux is not installed (make deps)"
        res = {}

        def job(name, fn, *args):
            procs = Procs()
            try:
                res[name] = fn(procs, *args)
            except BaseException as e:
                res[name] = e
            finally:
                procs.end_all()
        th = threading.Thread(target=job, args=("plain", plain_run))
        th.start()
        job("view", scenario, str(tmp_path_factory.mktemp("top")))
        th.join(timeout=T_STOP + T_WORK)
        _OBS.update(res)
    return _OBS


def get(tmp_path_factory, name):
    r = obs(tmp_path_factory).get(name)
    if isinstance(r, BaseException):
        raise r
    assert r is not None, name + " did not finish"
    return r


def test_header_and_table(tmp_path_factory):
    o = get(tmp_path_factory, "view")
    text, rep = o["main"], o["report_lineno"]
    head = text.splitlines()[:3]
    assert "pytm-bpf top - pid" in head[0] and "CPython 3.11" in head[0], head
    assert "exact" in head[0] and "5 frames" in head[0] and "every 1 s" in head[0], head
    total = sum(s["size"] for s in rep["statistics"])
    assert total == o["loaded_total"]
    m = re.search(r"traced: current (.+?), peak (.+?); (\d+) events/s; lost (\d+)", head[1])
    assert m, head
    assert m.group(1) == format_size(total), (head[1], total)
    assert to_bytes(m.group(2)) >= to_bytes(m.group(1))
    assert m.group(4) == "0"
    check_rows(rows_of(text), rep, "lineno")
    print(text)


def test_keys(tmp_path_factory):
    o = get(tmp_path_factory, "view")
    lines = o["lines"]
    # Paused: no growth shown though the target grew.
    assert "[PAUSED]" in o["paused"] and "sort: growth" in o["paused"]
    assert not any(r[5].endswith(":%d" % lines["GROW_LINE"]) for r in rows_of(o["paused"]))
    # Growth: the grown line first, by what it grew (5 x 100,033 B and its list).
    r = rows_of(o["growth"])[0]
    assert 5 * 100033 <= to_bytes(r[3].lstrip("+")) <= 5 * 100033 * 1.01, r
    assert r[3] == r[4], r
    assert rows_of(o["count"])[0][5].endswith(":%d" % lines["MANY_LINE"])
    assert rows_of(o["size"])[0][5].endswith(":%d" % lines["BIG_LINE"])
    for key in ("filename", "traceback"):
        assert "key: " + key in o[key]
        check_rows(rows_of(o[key]), o["report_" + key], key, n=2 if key == "filename" else 4)
    # Enter: the leaf's tracebacks, the bigger (from caller_a) first.
    ex = o["expanded"]
    a = ex.index('line %d, in caller_a' % lines["CALL_A"])
    b = ex.index('line %d, in caller_b' % lines["CALL_B"])
    assert ex.index("Tracebacks of") < a < b, ex
    assert "Tracebacks of" not in o["closed"] and rows_of(o["closed"])


def test_resize(tmp_path_factory):
    o = get(tmp_path_factory, "view")
    small = o["small"].splitlines()
    assert len(small) <= 14 and max(len(l) for l in small) <= 72, o["small"]
    assert small[0].startswith("pytm-bpf top"), o["small"]
    rows = rows_of(o["small"])
    assert rows and all(re.search(r":\d+$", r[5]) for r in rows), o["small"]
    assert len(rows_of(o["big"])) >= 5


def test_quit_leaves_all_as_it_was(tmp_path_factory):
    o = get(tmp_path_factory, "view")
    q = o["quit"]
    assert "EXITED 0" in q, q
    modes = re.search(r"MODES (.*)", q).group(1).split()
    assert sorted(modes) == ["echo", "icanon", "isig"], q
    assert "pytm-bpf top -" not in q and "SIZE" not in q, q
    assert "pytm-bpf: tracing pid" in q, q
    assert o["hooks"] == "hooks 0", o["hooks"]
    # What it computes: its own figure untraced, plus the five blocks it grew by.
    assert int(o["sum_after"].split()[1]) == int(o["sum_before"].split()[1]) + 5 * 100000 + 5, o
    assert o["target_rc"] == 0


def test_plain_text_when_not_a_terminal(tmp_path_factory):
    r = get(tmp_path_factory, "plain")
    assert r["rc"] == 0 and r["target_rc"] == 0, r["err"][-2000:]
    out = r["out"]
    assert "\x1b" not in out, repr(out[:500])
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) >= 4, out
    big = ":%d" % marked_line(WORKLOAD, "BIG_LINE")
    last = blocks[-1].splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d pid \d+ \(.*\), CPython 3\.13", last[0]), last
    assert "sampled at 1 per 64.0 KiB" in last[0], last
    assert last[1].startswith("traced (estimated): current ") and " samples/s" in last[1], last
    rows = rows_of(blocks[-1])
    assert rows and rows[0][5].endswith(big), blocks[-1]
    assert len(rows) <= 10
