# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Runs last (file order): nothing of ours may outlive the suite — no
pytm-bpf process, no BPF program/map/link of the tool, no uprobe perf event
(those vanish with their fd), no pinned object — compared with the state
the session fixture recorded before the first test."""

import time

from conftest import (BASELINE, bpf_state, own_pytm_processes, started_pids,
                      still_running, tool_bpf_names)


def _holders(obj):
    return {p.get("pid") for p in obj.get("pids", [])}


def _leftovers(before, after, names, ours):
    """Objects that were not there before, carry one of the tool's names,
    and are held by nobody or by a process this suite started."""
    old = {o.get("id") for o in before}
    found = []
    for o in after:
        if o.get("id") in old:
            continue
        named = o.get("name", "")
        if names and named not in names and not named.startswith("pytm"):
            continue
        if not names and not named.startswith("pytm"):
            continue
        holders = _holders(o)
        if not holders or holders & ours:
            found.append(o)
    return found


def test_no_leftovers():
    assert BASELINE.get("taken"), "session baseline missing"
    # Give exiting processes a moment to drop their fds.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not still_running() and not own_pytm_processes():
            break
        time.sleep(0.2)
    running = still_running()
    assert not running, "processes started by the suite still run: %r" \
        % running
    assert not own_pytm_processes(), "pytm-bpf processes left: %r" \
        % own_pytm_processes()

    ours = started_pids()
    prog_names, map_names = tool_bpf_names()
    after = bpf_state()
    progs = _leftovers(BASELINE["prog"], after["prog"], prog_names, ours)
    # (libbpf names internal maps "pytm_bpf.rodata" etc.: the prefix rule.)
    maps = _leftovers(BASELINE["map"], after["map"], map_names, ours)
    prog_ids = {p.get("id") for p in after["prog"]
                if p.get("name") in prog_names}
    old_links = {k.get("id") for k in BASELINE["link"]}
    links = [k for k in after["link"] if k.get("id") not in old_links
             and k.get("prog_id") in prog_ids
             and (not _holders(k) or _holders(k) & ours)]
    perf = [e for e in after["perf"]
            if e.get("pid") in ours or e.get("prog_id") in
            {p.get("id") for p in progs}]
    pins = sorted(set(after["pins"]) - set(BASELINE["pins"]))
    print("\nBPF before: %d progs, %d maps, %d links, %d perf; after: "
          "%d, %d, %d, %d; tool names: %s / %s"
          % (len(BASELINE["prog"]), len(BASELINE["map"]),
             len(BASELINE["link"]), len(BASELINE["perf"]),
             len(after["prog"]), len(after["map"]), len(after["link"]),
             len(after["perf"]), sorted(prog_names), sorted(map_names)))
    assert not progs, "BPF programs left: %r" % progs
    assert not maps, "BPF maps left: %r" % maps
    assert not links, "BPF links left: %r" % links
    assert not perf, "perf/uprobe attachments left: %r" % perf
    assert not pins, "pinned BPF objects left: %r" % pins
