# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Flame graphs: --format flamegraph (one self-contained HTML page),
--format folded, and -o FILE.html / FILE.folded.

One traced run of tests/workloads/wl_flame.py (Debian's python3.11,
--frames 25, three leaves of 8, 4 and 1 MiB under a call tree) with
--format flamegraph on stdout and -o heap.pytm, and one of pyenv 3.13 with
--format folded on stdout and -o heap.html, side by side:
- folded stacks, from the live run and from `pytm-bpf report heap.pytm
  --format folded`, sum per traceback to what Python's own
  Snapshot.statistics("traceback") of heap.pytm gives;
- the page holds no URL and is opened by headless Chromium (Debian's
  chromium) with every network request refused; a script added to a copy
  of it reads the DOM: the widest leaves are the workload's three lines,
  every frame's width is its share of the bytes (to a pixel), typing in
  the search box highlights exactly the frames that match and says their
  bytes, clicking a frame zooms it to the full width and clicking it again
  zooms back out. A screenshot is left in the test's directory.
"""

import base64
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import (INTERPRETERS, PYTM, T_CMD, T_START, T_WORK, WORKLOADS,
                      batch_result, isolated, marked_line, run_cmd, snaptool)

WORKLOAD = os.path.join(WORKLOADS, "wl_flame.py")
CHROMIUM = "/usr/bin/chromium"
MiB = 1 << 20


def flame_run(procs, python, outdir, stdout_format, output):
    tgt = procs.target(python, WORKLOAD)
    tgt.expect("ready", timeout=T_START)
    tr = procs.tracer(["-p", tgt.pid, "--frames", 25, "--format", stdout_format,
                       "-o", os.path.join(outdir, output)])
    tr.wait_tracing()
    tgt.send("go")
    tgt.expect("built", timeout=T_WORK)
    rc, out, err = tr.stop()
    tgt.send("quit")
    return {"rc": rc, "out": out, "err": err, "target_rc": tgt.wait(timeout=T_WORK),
            "dir": outdir}


def run(tmp_path_factory, which):
    """The two traced runs, side by side on first use: WHICH one's result."""
    def make_jobs():
        a = str(tmp_path_factory.mktemp("flame-html"))
        b = str(tmp_path_factory.mktemp("flame-folded"))
        return {"html": isolated(flame_run, INTERPRETERS["debian-3.11"], a,
                                 "flamegraph", "heap.pytm"),
                "folded": isolated(flame_run, INTERPRETERS["3.13"], b,
                                   "folded", "heap.html")}
    r = batch_result(("flame",), which, make_jobs)
    assert r["rc"] == 0 and r["target_rc"] == 0, r["err"].decode(errors="replace")[-2000:]
    return r


def parse_folded(text):
    """{stack (tuple of frames, oldest first): bytes}."""
    stacks = {}
    for line in text.splitlines():
        stack, _, weight = line.rpartition(" ")
        assert stack and weight.isdigit(), line
        key = tuple(stack.split(";"))
        stacks[key] = stacks.get(key, 0) + int(weight)
    return stacks


def frame_text(f):
    return "%s:%d" % (f[0], f[1])


def python_stacks(python, path):
    """Snapshot.statistics("traceback") of PATH, as folded stacks (frames
    'file:line', oldest first, as a Traceback iterates) with their sizes."""
    st = snaptool(python, "stats", path, "traceback", 0)
    out = {}
    for s in st:
        key = tuple(frame_text(f) for f in s["traceback"])
        out[key] = out.get(key, 0) + s["size"]
    return out


def strip_names(stacks):
    """'function (file:line)' frames as 'file:line'."""
    out = {}
    for key, v in stacks.items():
        k = tuple(re.sub(r"^.* \((.*:\d+)\)$", r"\1", f) for f in key)
        out[k] = out.get(k, 0) + v
    return out


def test_folded_matches_snapshot(tmp_path_factory):
    r = run(tmp_path_factory, "html")
    pickle = os.path.join(r["dir"], "heap.pytm")
    python = INTERPRETERS["debian-3.11"]
    truth = python_stacks(python, pickle)
    _, out, _ = run_cmd([PYTM, "report", pickle, "--format", "folded"], timeout=T_CMD)
    ours = parse_folded(out.decode())
    assert ours == truth, (sorted(ours.items())[:5], sorted(truth.items())[:5])
    big = [k for k, v in ours.items() if v >= MiB]
    assert len(big) == 3, big
    print("report --format folded: %d stacks, %d B, as Snapshot.statistics('traceback')"
          % (len(ours), sum(ours.values())))


def test_folded_live_and_html_file(tmp_path_factory):
    r = run(tmp_path_factory, "folded")
    ours = parse_folded(r["out"].decode())
    # Live frames are named: "leaf_big (file:line)", oldest first.
    line = marked_line(WORKLOAD, "BIG_LINE")
    big = [k for k in ours if k[-1] == "leaf_big (%s:%d)" % (WORKLOAD, line)]
    assert big and ours[big[0]] >= 2000 * 4096, sorted(ours.items(), key=lambda kv: -kv[1])[:3]
    assert [f.split(" (")[0] for f in big[0][-2:]] == ["top", "leaf_big"], big[0]
    # -o heap.html: the page, with the same figures.
    page = open(os.path.join(r["dir"], "heap.html"), encoding="utf-8").read()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>',
                                page, re.S).group(1))
    assert data["nodes"][0][2] == sum(ours.values()), (data["nodes"][0], sum(ours.values()))
    assert "pid" in data["title"] and "CPython 3.13" in data["title"], data["title"]


DRIVER = r"""
<script>
(function () {
  const out = {};
  const graph = document.getElementById('graph');
  const W = graph.getBoundingClientRect().width;
  const frames = () => Array.from(graph.querySelectorAll('.f'));
  const info = (d) => ({label: d.textContent, bytes: +d.dataset.bytes,
    depth: +d.dataset.depth, w: d.getBoundingClientRect().width,
    x: d.getBoundingClientRect().left,
    title: d.title, anc: d.classList.contains('anc'),
    match: d.classList.contains('match')});
  out.width = W;
  out.frames = frames().map(info);
  const search = document.getElementById('search');
  search.value = 'medium';
  search.dispatchEvent(new Event('input'));
  out.search = frames().map(info);
  out.matched = document.getElementById('matched').textContent;
  search.value = '';
  search.dispatchEvent(new Event('input'));
  const target = frames().find((d) => d.textContent.startsWith('middle '));
  target.click();
  out.zoomed = frames().map(info);
  frames().find((d) => d.textContent.startsWith('middle ')).click();
  out.unzoomed = frames().map(info);
  const pre = document.createElement('pre');
  pre.id = 'result';
  pre.textContent = btoa(unescape(encodeURIComponent(JSON.stringify(out))));
  document.body.appendChild(pre);
})();
</script>
</body>"""


def chromium(args, timeout=120):
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--window-size=1400,900",
            # No network: every host unresolvable, every proxy refused.
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]
    return subprocess.run(base + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


def test_flamegraph_in_chromium(tmp_path_factory, tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("chromium missing (make deps installs it): %s" % CHROMIUM)
    r = run(tmp_path_factory, "html")
    page = r["out"].decode("utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Self-contained: nothing to fetch.
    assert not re.search(r"https?:|\bsrc=|\bhref=|@import|url\(", page), \
        re.search(r".{40}(https?:|\bsrc=|\bhref=|@import|url\().{40}", page).group(0)
    path = tmp_path / "flame.html"
    path.write_text(page)
    shot = tmp_path / "flame.png"
    p = chromium(["--screenshot=%s" % shot, "file://%s" % path])
    assert shot.exists(), p.stderr.decode(errors="replace")[-2000:]
    print("screenshot: %s" % shot)
    driven = tmp_path / "driven.html"
    driven.write_text(page.replace("</body>", DRIVER, 1))
    p = chromium(["--dump-dom", "file://%s" % driven])
    m = re.search(rb'<pre id="result">([A-Za-z0-9+/=]+)</pre>', p.stdout)
    assert m, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(base64.b64decode(m.group(1)).decode("utf-8"))

    W = res["width"]
    frames = res["frames"]
    root = frames[0]
    assert root["label"] == "all" and abs(root["w"] - W) < 1, root
    # Every frame as wide as its share of the bytes, to a pixel.
    for f in frames:
        assert abs(f["w"] - W * f["bytes"] / root["bytes"]) < 1.0, (f, W, root["bytes"])
    # The widest leaves (no frame drawn under them) are the workload's
    # three lines, biggest first.
    lines = {marked_line(WORKLOAD, m): m for m in ("BIG_LINE", "MEDIUM_LINE", "SMALL_LINE")}
    at = lambda f: re.search(r":(\d+)\)$", f["label"])
    leaves = sorted((f for f in frames if f["depth"] and not any(
        g["depth"] == f["depth"] + 1 and f["x"] - 0.5 <= g["x"] < f["x"] + f["w"] - 0.5
        for g in frames)), key=lambda f: -f["bytes"])
    assert [lines.get(int(at(f).group(1))) if at(f) and WORKLOAD in f["label"] else None
            for f in leaves[:3]] == ["BIG_LINE", "MEDIUM_LINE", "SMALL_LINE"], \
        [f["label"] for f in leaves[:5]]
    big, med, small = leaves[:3]
    assert big["bytes"] >= 2000 * 4096 and med["bytes"] >= 2000 * 2048 and \
        small["bytes"] >= 1000 * 1024, (big, med, small)
    assert abs(big["w"] / med["w"] - big["bytes"] / med["bytes"]) < 0.01
    # Tooltips: bytes, blocks and share.
    assert re.search(r"\d+ B, [\d.]+% of live memory\), \d+ blocks", big["title"]), big["title"]

    # Search: exactly the frames whose label matches, and their bytes.
    hits = [f for f in res["search"] if f["match"]]
    assert hits and all("medium" in f["label"] for f in hits), hits
    assert all(f["match"] for f in res["search"] if "medium" in f["label"] and f["depth"])
    med_fn = [f for f in res["search"] if f["label"].startswith("medium ")][0]
    assert res["matched"].startswith("Matched: ") and "%.2f%%" % (
        100 * med_fn["bytes"] / root["bytes"]) in res["matched"], res["matched"]

    # Zoom: the clicked frame spans the graph, its callers shown above it.
    z = res["zoomed"]
    mid = [f for f in z if f["label"].startswith("middle ") and not f["anc"]][0]
    assert abs(mid["w"] - W) < 1, mid
    assert any(f["anc"] and f["label"].startswith("top ") for f in z), [f["label"] for f in z]
    assert not any(f["label"].startswith("leaf_big ") for f in z)
    kids = [f for f in z if f["depth"] == mid["depth"] + 1 and not f["anc"]]
    for f in kids:
        assert abs(f["w"] - W * f["bytes"] / mid["bytes"]) < 1.0, f
    # ...and clicked again, back out to its caller.
    u = res["unzoomed"]
    top_ = [f for f in u if f["label"].startswith("top ") and not f["anc"]][0]
    assert abs(top_["w"] - W) < 1, top_
    print("chromium: %d frames, graph %d px; search 'medium': %s; zoom ok" % (
        len(frames), W, res["matched"]))


def test_svg_from_snapshot(tmp_path_factory):
    """`pytm-bpf report heap.pytm --format svg`: a static picture (no
    script, no URL but the SVG namespace) whose boxes are as wide as their
    bytes, the workload's 8, 4 and 1 MiB lines the widest leaves."""
    import xml.dom.minidom
    r = run(tmp_path_factory, "html")
    pickle = os.path.join(r["dir"], "heap.pytm")
    _, out, _ = run_cmd([PYTM, "report", pickle, "--format", "svg"], timeout=T_CMD)
    assert b"<script" not in out and out.count(b"http") == 1, out[:500]
    doc = xml.dom.minidom.parseString(out)
    svg = doc.documentElement
    width = float(svg.getAttribute("width"))
    boxes = []
    for g in doc.getElementsByTagName("g"):
        title = g.getElementsByTagName("title")[0].firstChild.data
        rect = g.getElementsByTagName("rect")[0]
        m = re.search(r"\((\d+) B, ([\d.]+)%\) in (\d+) blocks", title)
        assert m, title
        boxes.append((title.split("\n")[0], int(m.group(1)), float(rect.getAttribute("width")),
                      float(rect.getAttribute("y"))))
    total = boxes[0][1]
    assert boxes[0][0] == "all" and abs(boxes[0][2] - width) < 0.01
    for label, size, w, _ in boxes:
        assert abs(w - width * size / total) < 0.01, (label, size, w)
    # Leaves: boxes with nothing below them (the next box is not deeper).
    leaves = [b for i, b in enumerate(boxes)
              if i + 1 == len(boxes) or boxes[i + 1][3] <= b[3]]
    leaves.sort(key=lambda b: -b[1])
    lines = [int(re.search(r":(\d+)\)?$", b[0]).group(1)) for b in leaves[:3]]
    assert lines == [marked_line(WORKLOAD, m) for m in ("BIG_LINE", "MEDIUM_LINE",
                                                         "SMALL_LINE")], leaves[:3]
