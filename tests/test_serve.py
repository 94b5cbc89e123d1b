# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""--serve (Prometheus /metrics, pprof /debug/pprof/heap and /allocs,
/snapshot) and pprof files (-o FILE.pb.gz, -o DIR/ --interval --keep), read
by the real peers: Debian's `prometheus` server scraping us every second,
`go tool pprof` (golang-go) reading our profiles from files and over HTTP,
tracemalloc loading /snapshot. No hand-written pprof or exposition parser:
figures come from Prometheus's HTTP API and from pprof's own output.

- test_fleet: three CPython versions, one in its own pid and mount
  namespaces, traced with --serve and -o DIR/. Prometheus has every
  process's traced bytes with the right labels, equal (within 1%) to the
  final report; the process that exits is gone from the next scrape.
  go tool pprof's -top and -traces totals (file and HTTP) equal the report's,
  its frames carry file, function and line; /snapshot loads in tracemalloc
  with the same totals. 100 concurrent clients, a client that never sends
  and one that never reads: every answer comes, the tracer's memory stays
  bounded; bad requests get 4xx with one line.
- test_sampled_profile: --sample: alloc_objects/alloc_space since attach,
  period = the rate, /allocs defaults to alloc_space; inuse equals the report.
- test_output_files: -o x.pb.gz, --output-format, -o DIR/ --interval --keep.
- test_serve_usage_errors: one line and a non-zero exit for each bad input.
"""

import gzip
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import (INTERPRETERS, T_ATTACH, T_CMD, T_STOP, T_WORK, _show,
                      ready_pid, run_cmd, start_namespaced)

GT = "gt_single.py"
GT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "workloads", GT)
PROMETHEUS = "/usr/bin/prometheus"
GO = "/usr/bin/go"


def need(path, package):
    # CI installs them (make deps): missing is a failure, not a skip.
    assert os.access(path, os.X_OK), \
        "%s missing: install Debian's %s (make deps)" % (path, package)


def serving_url(tracer, timeout=T_ATTACH):
    """The URL of the 'pytm-bpf: serving URL/metrics, ...' stderr line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(rb"pytm-bpf: serving (http://[^/\s]+)/metrics",
                      tracer.err.text())
        if m:
            return m.group(1).decode()
        if tracer.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("no serving line: %s" % _show(tracer.err.text()))


def get(url, headers=None, timeout=30):
    """(status, headers, body) of GET url; 4xx/5xx are answers too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def go_env(tmp_path):
    home = tmp_path / "gohome"
    home.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({"HOME": str(home), "GOCACHE": str(home / "cache"),
                "GOFLAGS": "", "PPROF_TMPDIR": str(home)})
    return env


def pprof(tmp_path, *args):
    _, out, _ = run_cmd([GO, "tool", "pprof"] + [str(a) for a in args],
                        env=go_env(tmp_path), timeout=120)
    return out.decode()


def pprof_total(tmp_path, source, index):
    """go tool pprof -top's 'Total samples = N' (unit B / count)."""
    args = ["-top", "-sample_index=" + index]
    if index.endswith("space"):
        args.append("-unit=B")
    out = pprof(tmp_path, *(args + [source]))
    m = re.search(r"Total samples = (\d+)(B?)\s", out)
    assert m, "no total in pprof -top of %s:\n%s" % (source, out[:2000])
    return int(m.group(1))


def pprof_traces_total(tmp_path, source):
    """The sum of go tool pprof -traces' values (bytes), and its traces."""
    out = pprof(tmp_path, "-traces", "-unit=B", source)
    total, traces = 0, []
    for block in out.split("-----------+")[1:]:
        m = re.search(r"^\s+(\d+)B\s+(\S.*)$", block, re.M)
        if not m:
            continue
        total += int(m.group(1))
        traces.append(block)
    return total, traces


def raw_locations(tmp_path, source):
    """{location id: (function, file, line, start line)} of pprof -raw."""
    out = pprof(tmp_path, "-raw", source)
    locs = {}
    for m in re.finditer(r"^\s+(\d+): 0x0 M=1 (\S+) (.+):(\d+) s=(\d+)\(\)$",
                         out, re.M):
        locs[int(m.group(1))] = (m.group(2), m.group(3), int(m.group(4)),
                                 int(m.group(5)))
    return out, locs


def final_reports(out):
    reps = {}
    for line in out.decode().splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        if doc.get("type") == "report":
            reps.setdefault(doc["process"]["pid"], []).append(doc)
    return reps


def stat_totals(doc):
    return (sum(s["size"] for s in doc["statistics"]),
            sum(s["count"] for s in doc["statistics"]))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Debian's prometheus on loopback, scraping TARGET every second."""

    def __init__(self, procs, tmp_path, target):
        need(PROMETHEUS, "prometheus")
        d = tmp_path / "prometheus"
        d.mkdir()
        (d / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            "scrape_configs:\n  - job_name: pytm\n    static_configs:\n"
            "      - targets: ['%s']\n" % target)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = procs.popen(
            [PROMETHEUS, "--config.file=%s" % (d / "prometheus.yml"),
             "--storage.tsdb.path=%s" % (d / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=open(d / "log", "wb"))
        self.log = d / "log"

    def query(self, q):
        status, _, body = get(self.url + "/api/v1/query?" +
                              urllib.parse.urlencode({"query": q}))
        assert status == 200, body
        return json.loads(body)["data"]["result"]

    def wait(self, q, pred, timeout=60, what=""):
        deadline = time.monotonic() + timeout
        res = None
        while time.monotonic() < deadline:
            try:
                res = self.query(q)
                if pred(res):
                    return res
            except (OSError, AssertionError, ValueError):
                pass
            time.sleep(0.5)
        with open(self.log, "rb") as fh:
            log = fh.read()
        raise AssertionError("prometheus: %s: %r not reached (last %r)\nlog: %s"
                             % (what, q, res, _show(log[-3000:])))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1))


def test_fleet(procs, tmp_path):
    need(GO, "golang-go")
    py_a, py_b, py_c = (INTERPRETERS["3.9"], INTERPRETERS["3.13"],
                        INTERPRETERS["debian-3.11"])
    a = procs.target(py_a, GT)
    b = procs.target(py_b, GT)
    c, c_nspid, c_pid = start_namespaced(procs, py_c, GT, [], None)
    assert ready_pid(a) == a.pid and ready_pid(b) == b.pid
    assert c_nspid != c_pid
    versions = {}
    for pid, py in ((a.pid, py_a), (b.pid, py_b), (c_pid, py_c)):
        _, out, _ = run_cmd([py, "-c", "import platform; "
                             "print(platform.python_version())"])
        versions[pid] = out.decode().strip()

    outdir = tmp_path / "profiles"
    tr = procs.tracer(["-p", a.pid, "-p", b.pid, "-p", c_pid, "--frames", 5,
                       "--serve", "127.0.0.1:0", "--metrics-top", 5,
                       "--format", "json", "--top", 0, "-o", str(outdir) + "/"])
    tr.wait_tracing()
    url = serving_url(tr)
    for t in (a, b, c):
        t.send("go")
    for t in (a, b, c):
        t.expect("done", timeout=T_WORK)
    pids = [a.pid, b.pid, c_pid]

    # ---- Prometheus scrapes us; its API has every process, labelled.
    prom = Prometheus(procs, tmp_path, url[len("http://"):])
    res = prom.wait("pytm_traced_memory_bytes",
                    lambda r: {int(x["metric"]["pid"]) for x in r} >= set(pids)
                    and all(float(x["value"][1]) > 0 for x in r),
                    what="all three processes scraped")
    scraped = {}
    for x in res:
        m = x["metric"]
        pid = int(m["pid"])
        scraped[pid] = float(x["value"][1])
        assert m["python"] == versions[pid], m
        assert m["mode"] == "exact" and m["sample_rate"] == "0", m
        assert GT in m["command"], m
        assert m["cgroup"].startswith("/"), m
        assert int(m["nspid"]) == (c_nspid if pid == c_pid else pid), m
    print("prometheus: %s" % scraped)
    lines = prom.query('pytm_line_memory_bytes{pid="%d"}' % b.pid)
    named = [x for x in lines if x["metric"]["filename"] != "<other>"]
    rest = [x for x in lines if x["metric"]["filename"] == "<other>"]
    assert len(named) == 5 and len(rest) == 1, lines
    assert all(x["metric"]["filename"] == GT_PATH or
               x["metric"]["filename"].startswith("<") or
               x["metric"]["filename"].endswith(".py") for x in named), named
    assert any(x["metric"]["filename"] == GT_PATH for x in named), named
    # The top lines and the rest add up to the process's traced bytes.
    assert sum(float(x["value"][1]) for x in lines) == scraped[b.pid], lines
    for q in ("pytm_allocator_events_total", "pytm_live_blocks",
              "pytm_processes_traced", "process_resident_memory_bytes",
              "pytm_bpf_map_memory_bytes", 'pytm_lost_events_total'
              '{reason="blocks_full"}'):
        assert prom.query(q), q
    assert float(prom.query("pytm_processes_traced")[0]["value"][1]) == 3

    # ---- pprof over HTTP, while it runs (the workloads hold still now).
    http_totals = {}
    for pid in (b.pid, c_pid):
        src = "%s/debug/pprof/heap?pid=%d" % (url, pid)
        http_totals[pid] = (pprof_total(tmp_path, src, "inuse_space"),
                            pprof_total(tmp_path, src, "inuse_objects"))
    all_space = pprof_total(tmp_path, url + "/debug/pprof/heap", "inuse_space")

    # ---- /snapshot loads in tracemalloc.
    status, hdr, body = get("%s/snapshot?pid=%d" % (url, b.pid))
    assert status == 200, body
    snap_path = tmp_path / "b.pytm"
    snap_path.write_bytes(body)
    _, out, _ = run_cmd([py_b, "-c", "import sys, tracemalloc; s = tracemalloc."
                         "Snapshot.load(sys.argv[1]); st = s.statistics('lineno'); "
                         "print(sum(x.size for x in st), sum(x.count for x in st))",
                         str(snap_path)])
    snap_totals = tuple(int(v) for v in out.split())

    # ---- Bad requests: 4xx and one line each.
    for path, code in (("/nope", 404), ("/snapshot", 400),
                       ("/snapshot?pid=abc", 400), ("/snapshot?pid=1", 404),
                       ("/debug/pprof/heap?pid=0", 400),
                       ("/metrics?bogus=1", 400),
                       ("/debug/pprof/heap?debug=1", 400)):
        status, _, body = get(url + path)
        assert status == code, (path, status, body)
        assert body.count(b"\n") == 1 and body.startswith(b"error: "), body
    req = urllib.request.Request(url + "/metrics", data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=30)
        assert False, "POST answered 2xx"
    except urllib.error.HTTPError as e:
        assert e.code == 405

    # ---- A crowd: a silent client, a client that never reads, 100 at once.
    host, port = url[len("http://"):].rsplit(":", 1)
    silent = socket.create_connection((host, int(port)))
    reader = socket.create_connection((host, int(port)))
    reader.sendall(b"GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\n\r\n")
    rss0 = rss_kib(tr.pid)
    errors, answers = [], []

    def client(i):
        path = ("/metrics", "/debug/pprof/heap",
                "/snapshot?pid=%d" % b.pid)[i % 3]
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request("GET", path)
            r = conn.getresponse()
            data = r.read()
            conn.close()
            if r.status != 200:
                errors.append((path, r.status, data[:200]))
            elif path == "/metrics" and b"pytm_traced_memory_bytes{" not in data:
                errors.append((path, "bad body", data[:200]))
            elif path.startswith("/debug") and gzip.decompress(data)[:1] == b"":
                errors.append((path, "empty profile"))
            else:
                answers.append(path)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append((path, repr(e)))

    for round_ in range(3):
        threads = [threading.Thread(target=client, args=(i,))
                   for i in range(100)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        print("round %d: 100 clients in %.2f s, tracer RSS %d KiB"
              % (round_, time.monotonic() - t0, rss_kib(tr.pid)))
    assert not errors, errors[:5]
    assert len(answers) == 300
    rss1 = rss_kib(tr.pid)
    # Answers are shared and freed: growth is bounded by the cache (8
    # answers), not by the number of clients.
    assert rss1 - rss0 < 64 * 1024, (rss0, rss1)
    # Still answering with the silent and the non-reading client connected.
    assert get(url + "/metrics")[0] == 200
    silent.close()
    reader.close()

    # ---- One process exits: gone from the next scrape, the others stay.
    a.send("exit")
    a.wait()
    # (One condition: a scrape that fails on a loaded machine empties every
    # series for a moment, which alone would look like "gone".)
    prom.wait("pytm_traced_memory_bytes",
              lambda r: {int(x["metric"]["pid"]) for x in r} == {b.pid, c_pid},
              timeout=30, what="exited process gone, the others there")
    assert float(prom.query("pytm_processes_exited_total")[0]["value"][1]) == 1

    rc, out, err = tr.stop()
    assert rc == 0, _show(err)
    reps = final_reports(out)
    for pid in (b.pid, c_pid):
        final = [r for r in reps[pid] if r["final"]]
        assert len(final) == 1, reps[pid]
        doc = final[0]
        assert doc["lost"]["blocks_full"] == 0 and doc["lost"]["stacks_full"] == 0
        current = doc["traced"]["current"]
        size, count = stat_totals(doc)
        # Prometheus: within 1% of the report for the same (still) moment.
        assert abs(scraped[pid] - current) <= 0.01 * current, (pid, scraped, current)
        # pprof over HTTP, then the file written with the final report.
        assert http_totals[pid] == (size, count), (pid, http_totals, size, count)
        files = sorted(outdir.glob("heap-%d-*.pb.gz" % pid))
        assert len(files) == 1, files
        assert pprof_total(tmp_path, files[0], "inuse_space") == size
        assert pprof_total(tmp_path, files[0], "inuse_objects") == count
        traces_total, traces = pprof_traces_total(tmp_path, files[0])
        assert traces_total == size, (traces_total, size)
        assert all("pid:  %d" % pid in t for t in traces), traces[:2]
        if pid == b.pid:
            assert snap_totals == (size, count), (snap_totals, size, count)
    # The exited one had its report and its file.
    assert any(r["exited"] for r in reps[a.pid])
    assert len(list(outdir.glob("heap-%d-*.pb.gz" % a.pid))) == 1
    assert all_space >= http_totals[b.pid][0] + http_totals[c_pid][0]

    # ---- Frames: function, file and line as the workload's source says.
    src = open(GT_PATH).read().splitlines()
    _, locs = raw_locations(tmp_path, sorted(outdir.glob("heap-%d-*" % b.pid))[0])
    assert locs, "no locations"
    mine = [l for l in locs.values() if l[1] == GT_PATH]
    assert mine, locs
    for func, fname, line, start in mine:
        name = func.split(".")[-1]
        if name.startswith("<"):
            continue
        assert 1 <= start <= line <= len(src), (func, line, start)
        assert re.match(r"\s*(async\s+)?def %s\b|\s*class %s\b"
                        % (re.escape(name), re.escape(name)),
                        src[start - 1]), (func, start, src[start - 1])
    funcs = {l[0] for l in mine}
    assert "make_list" in funcs and "make_dict" in funcs, funcs
    for func, fname, line, start in mine:
        if func == "make_list":
            assert "range(n)" in src[line - 1], src[line - 1]


def test_sampled_profile(procs, tmp_path):
    need(GO, "golang-go")
    py = INTERPRETERS["3.12"]
    t = procs.target(py, GT)
    ready_pid(t)
    tr = procs.tracer(["-p", t.pid, "--sample", "16k", "--frames", 5,
                       "--serve", "127.0.0.1:0", "--format", "json",
                       "--top", "0"])
    tr.wait_tracing()
    url = serving_url(tr)
    t.send("go")
    t.expect("done", timeout=T_WORK)
    src = url + "/debug/pprof/allocs"
    raw, _ = raw_locations(tmp_path, src)
    assert "PeriodType: space bytes" in raw and "Period: 16384" in raw, raw[:500]
    assert re.search(r"alloc_objects/count alloc_space/bytes\[dflt\] "
                     r"inuse_objects/count inuse_space/bytes", raw), raw[:500]
    heap_raw, _ = raw_locations(tmp_path, url + "/debug/pprof/heap")
    assert re.search(r"inuse_space/bytes\[dflt\]", heap_raw), heap_raw[:500]
    alloc_space = pprof_total(tmp_path, src, "alloc_space")
    inuse_space = pprof_total(tmp_path, src, "inuse_space")
    inuse_objects = pprof_total(tmp_path, src, "inuse_objects")
    status, _, body = get(url + "/metrics")
    assert b'mode="sampled",sample_rate="16384"' in body, body[:500]
    rc, out, err = tr.stop()
    assert rc == 0, _show(err)
    doc = [r for r in final_reports(out)[t.pid] if r["final"]][0]
    size, count = stat_totals(doc)
    assert doc["sampling"]["rate"] == 16384
    # The same blocks, the same deterministic estimates.
    assert (inuse_space, inuse_objects) == (size, count), \
        (inuse_space, inuse_objects, size, count)
    # Everything allocated since attach, freed or not: more than what lives.
    assert alloc_space > inuse_space, (alloc_space, inuse_space)


def test_output_files(procs, tmp_path):
    need(GO, "golang-go")
    py = INTERPRETERS["3.11"]
    # One tracer per process: three targets, three tracers.
    ts = [procs.target(py, GT) for _ in range(3)]
    for t in ts:
        ready_pid(t)
    outdir = tmp_path / "ring"
    single = tmp_path / "heap.pb.gz"
    forced = tmp_path / "heap.bin"
    pickle = tmp_path / "heap.pytm"
    trs = [procs.tracer(["-p", ts[0].pid, "--interval", "0.4", "-o",
                         str(outdir) + "/", "--keep", 3]),
           procs.tracer(["-p", ts[1].pid, "-o", single]),
           procs.tracer(["-p", ts[2].pid, "-o", forced, "--output-format",
                         "pprof"])]
    for tr in trs:
        tr.wait_tracing()
    for t in ts:
        t.send("go")
    for t in ts:
        t.expect("done", timeout=T_WORK)
    time.sleep(2.5)
    for tr in trs:
        rc, out, err = tr.stop()
        assert rc == 0, _show(err)
    files = sorted(os.listdir(outdir))
    assert len(files) == 3, files
    assert all(re.match(r"heap-%d-\d{8}T\d{6}\.\d{3}Z\.pb\.gz$" % ts[0].pid, f)
               for f in files), files
    # Every one a profile pprof reads, with the work in it.
    for path in [outdir / f for f in files] + [single, forced]:
        assert pprof_total(tmp_path, path, "inuse_space") > 100000, path
    with open(forced, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"       # gzip, whatever the name
    # A name without a profile suffix is still tracemalloc's pickle.
    tr = procs.tracer(["-p", ts[1].pid, "-o", pickle, "--duration", "0.5"])
    rc, out, err = tr.finish()
    assert rc == 0, _show(err)
    _, out, _ = run_cmd([py, "-c", "import sys, tracemalloc; "
                         "tracemalloc.Snapshot.load(sys.argv[1]); print('ok')",
                         str(pickle)])
    assert out.strip() == b"ok"


@pytest.mark.parametrize("args,pattern,code", [
    (["--serve", "nohost:x"], r"invalid --serve", 2),
    (["--serve", "127.0.0.1:70000"], r"invalid --serve", 2),
    (["--metrics-top", "-1"], r"invalid --metrics-top", 2),
    (["--output-format", "xml"], r"invalid --output-format", 2),
    (["--keep", "3"], r"--keep goes with -o DIR/", 2),
    (["--serve", "0", "--control"], r"exclude each other", 2),
])
def test_serve_usage_errors(procs, args, pattern, code):
    rc, out, err = run_cmd(["./pytm-bpf", "-p", str(os.getpid())] + args,
                           check=False, cwd=os.path.dirname(os.path.dirname(
                               os.path.abspath(__file__))))
    lines = err.decode().strip().splitlines()
    assert rc == code, (rc, err)
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines


def test_serve_port_in_use(procs, tmp_path):
    py = INTERPRETERS["3.11"]
    t = procs.target(py, GT)
    ready_pid(t)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        tr = procs.tracer(["-p", t.pid, "--serve", "127.0.0.1:%d" % port])
        rc, out, err = tr.finish(timeout=T_STOP)
    assert rc == 1, (rc, err)
    msg = [l for l in err.decode().splitlines() if "serve" in l]
    assert msg and "Address already in use" in msg[0], err
    # It said so before touching the target.
    assert b"tracing" not in err, err
    t.send("go")
    t.expect("done", timeout=T_WORK)
