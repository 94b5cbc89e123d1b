# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Runs last (file order): nothing of ours may outlive the suite — no
pytm-bpf process, no BPF program/map/link of the tool, no uprobe perf event
(those vanish with their fd), no pinned object — compared with the state
the session fixture recorded before the first test.

Other pytm-bpf runs may be live on the host at the same time (other users of
this tree): an object is a leftover of ours only if it is new, carries one
of the tool's names, and is held by no process or only by processes this
suite started. Holders come from /proc/*/fdinfo (prog_id / map_id /
link_id), since this bpftool does not report pids."""

import os
import time

from conftest import (BASELINE, bpf_state, own_pytm_processes, started_pids,
                      still_running, tool_bpf_names)

SETTLE = 15         # seconds for exited processes' BPF objects to go away


def fd_holders():
    """{("prog"|"map"|"link", id): {pid, ...}} for every open BPF fd."""
    held = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
                if not target.startswith("anon_inode:bpf"):
                    continue
                with open("/proc/%d/fdinfo/%s" % (pid, fd)) as fh:
                    info = fh.read()
            except OSError:
                continue
            for line in info.splitlines():
                k, _, v = line.partition(":")
                v = v.strip()
                if k in ("prog_id", "map_id", "link_id") and v.isdigit():
                    held.setdefault((k[:-3], int(v)), set()).add(pid)
    return held


def holders_of(state, held):
    """Pids holding each prog / map / link, directly or through a link or a
    program (a map is held by whoever holds a program that uses it)."""
    progs = {p["id"]: set(held.get(("prog", p["id"]), ()))
             for p in state["prog"]}
    links = {k["id"]: set(held.get(("link", k["id"]), ()))
             for k in state["link"]}
    for k in state["link"]:
        if k.get("prog_id") in progs:
            progs[k["prog_id"]] |= links[k["id"]]
    maps = {m["id"]: set(held.get(("map", m["id"]), ())) for m in state["map"]}
    for p in state["prog"]:
        for mid in p.get("map_ids", []):
            if mid in maps:
                maps[mid] |= progs[p["id"]]
    return {"prog": progs, "map": maps, "link": links}


def is_tool_name(name, names):
    return name in names or name.startswith("pytm")


def leftovers():
    ours = started_pids()
    prog_names, map_names = tool_bpf_names()
    state = bpf_state()
    held = holders_of(state, fd_holders())
    found = {}
    old = {kind: {o["id"] for o in BASELINE[kind]}
           for kind in ("prog", "map", "link")}
    tool_progs = {p["id"] for p in state["prog"]
                  if is_tool_name(p.get("name", ""), prog_names)}
    for kind, names in (("prog", prog_names), ("map", map_names)):
        for o in state[kind]:
            if o["id"] in old[kind] or not is_tool_name(o.get("name", ""),
                                                        names):
                continue
            pids = held[kind].get(o["id"], set())
            if not pids or pids <= ours:
                found.setdefault(kind, []).append(
                    "%s %d %s held by %s" % (kind, o["id"], o.get("name"),
                                             sorted(pids) or "nobody"))
    for k in state["link"]:
        if k["id"] in old["link"] or k.get("prog_id") not in tool_progs:
            continue
        pids = held["link"].get(k["id"], set())
        if not pids or pids <= ours:
            found.setdefault("link", []).append("link %r" % (k,))
    perf = [e for e in state["perf"] if e.get("pid") in ours]
    if perf:
        found["perf"] = perf
    pins = sorted(set(state["pins"]) - set(BASELINE["pins"]))
    if pins:
        found["pins"] = pins
    return found, state, prog_names


def test_no_leftovers():
    assert BASELINE.get("taken"), "session baseline missing"
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        if not still_running() and not own_pytm_processes():
            break
        time.sleep(0.2)
    running = still_running()
    assert not running, "processes started by the suite still run: %r" \
        % running
    assert not own_pytm_processes(), "pytm-bpf processes left: %r" \
        % own_pytm_processes()

    # Objects of an exited process are freed asynchronously: settle first.
    while True:
        found, state, names = leftovers()
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print("\nBPF objects before the suite: %d progs, %d maps, %d links, "
          "%d perf; after: %d, %d, %d, %d; tool program names: %s"
          % (len(BASELINE["prog"]), len(BASELINE["map"]),
             len(BASELINE["link"]), len(BASELINE["perf"]),
             len(state["prog"]), len(state["map"]), len(state["link"]),
             len(state["perf"]), ", ".join(sorted(names))))
    assert not found, "left behind by the suite: %r" % found
