# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Snapshot helper run by the tests inside the *target's* interpreter (so
that stock tracemalloc of that version is the judge). Python 3.6+.

    snaptool.py compare OURS REF FILE        agreement per traceback (JSON)
    snaptool.py top SNAP KEY CUMULATIVE N    tracemalloc's own [ Top N ] block
    snaptool.py check SNAP FRAMES FILE [REF] usability of SNAP (JSON)
    snaptool.py summary SNAP [FILE]          counts (JSON)
    snaptool.py stats SNAP KEY CUMULATIVE [OLD]
                                             statistics(key, cumulative), or
                                             compare_to(OLD, ...), as JSON:
                                             figures, frames and str(stat)
"""

import json
import sys
import tracemalloc


def load(path):
    return tracemalloc.Snapshot.load(path)


def only(snapshot, path):
    return snapshot.filter_traces([tracemalloc.Filter(True, path)])


def by_traceback(snapshot):
    return dict((s.traceback, (s.size, s.count))
                for s in snapshot.statistics("traceback"))


def fmt_tb(tb, limit=4):
    frames = ["%s:%d" % (f.filename.rsplit("/", 1)[-1], f.lineno)
              for f in list(tb)[::-1][:limit]]     # most recent first
    more = "" if len(tb) <= limit else " <- ...(%d frames)" % len(tb)
    return " <- ".join(frames) + more


def nframes(snapshot):
    """{traceback: {total_nframe: traces}} (None before 3.9)."""
    out = {}
    for trace in snapshot.traces:
        tb = trace.traceback
        counts = out.setdefault(tb, {})
        n = getattr(tb, "total_nframe", None)
        counts[n] = counts.get(n, 0) + 1
    return out


def nframe_agreement(ours, ref):
    """Of the traces under tracebacks both have, the share whose frame
    count (total_nframe: the stack's depth, beyond the limit too) agrees."""
    same = both = 0
    for tb in set(ours) & set(ref):
        o, r = ours[tb], ref[tb]
        same += sum(min(c, r.get(n, 0)) for n, c in o.items())
        both += min(sum(o.values()), sum(r.values()))
    return same / float(both or 1)


def compare(ours_path, ref_path, path):
    ours_snap = only(load(ours_path), path)
    ref_snap = only(load(ref_path), path)
    ours = by_traceback(ours_snap)
    ref = by_traceback(ref_snap)
    total_ours = sum(v[0] for v in ours.values())
    total_ref = sum(v[0] for v in ref.values())
    count_ours = sum(v[1] for v in ours.values())
    count_ref = sum(v[1] for v in ref.values())
    keys = set(ours) | set(ref)
    min_size = min_count = 0
    diffs = []
    for k in keys:
        so, co = ours.get(k, (0, 0))
        sr, cr = ref.get(k, (0, 0))
        min_size += min(so, sr)
        min_count += min(co, cr)
        if so != sr or co != cr:
            diffs.append((abs(so - sr), fmt_tb(k), so, co, sr, cr))
    diffs.sort(key=lambda d: (-d[0], d[1]))
    return {
        "bytes_agreement": min_size / float(max(total_ours, total_ref) or 1),
        "count_agreement": min_count / float(max(count_ours, count_ref) or 1),
        "size_ours": total_ours, "size_ref": total_ref,
        "count_ours": count_ours, "count_ref": count_ref,
        "tracebacks_ours": len(ours), "tracebacks_ref": len(ref),
        "tracebacks_common": len(set(ours) & set(ref)),
        "nframe_agreement": nframe_agreement(nframes(ours_snap),
                                             nframes(ref_snap)),
        "worst": ["%s: ours size=%d count=%d, ref size=%d count=%d"
                  % (d[1], d[2], d[3], d[4], d[5]) for d in diffs[:12]],
    }


def top(snap_path, key, cumulative, n):
    snapshot = load(snap_path)
    print("[ Top %d ]" % n)
    for stat in snapshot.statistics(key, cumulative)[:n]:
        print(stat)


def check(snap_path, frames, path, ref_path=None):
    """Exercise the public API on the snapshot; raise on anything wrong."""
    snapshot = load(snap_path)
    problems = []
    if snapshot.traceback_limit != frames:
        problems.append("traceback_limit %r != %d"
                        % (snapshot.traceback_limit, frames))
    ntraces = 0
    for trace in snapshot.traces:
        ntraces += 1
        tb = trace.traceback
        if not isinstance(trace.domain, int) or trace.domain < 0:
            problems.append("bad domain %r" % (trace.domain,))
        if not isinstance(trace.size, int) or trace.size < 0:
            problems.append("bad size %r" % (trace.size,))
        if not 1 <= len(tb) <= frames:
            problems.append("traceback of %d frames (limit %d)"
                            % (len(tb), frames))
        total = getattr(tb, "total_nframe", None)
        if total is not None and total < len(tb):
            problems.append("total_nframe %d < %d frames" % (total, len(tb)))
        for f in tb:
            if not isinstance(f.filename, str) or not isinstance(f.lineno,
                                                                 int):
                problems.append("bad frame %r" % (f,))
        if len(problems) > 20:
            break
    stats_lineno = snapshot.statistics("lineno")
    stats_tb = snapshot.statistics("traceback")
    stats_file = snapshot.statistics("filename", cumulative=True)
    stats_lineno_cum = snapshot.statistics("lineno", cumulative=True)
    mine = only(snapshot, path)
    mine_lineno = mine.statistics("lineno")
    formatted = []
    if stats_tb:
        formatted = stats_tb[0].traceback.format()
    diff_self = snapshot.compare_to(snapshot, "lineno")
    if any(d.size_diff or d.count_diff for d in diff_self):
        problems.append("compare_to(itself) is not all zero")
    result = {
        "traces": ntraces,
        "problems": problems[:20],
        "lineno": len(stats_lineno),
        "traceback": len(stats_tb),
        "filename_cumulative": len(stats_file),
        "lineno_cumulative": len(stats_lineno_cum),
        "file_in_filename_stats": any(s.traceback[0].filename == path
                                      for s in stats_file),
        "workload_lines": len(mine_lineno),
        "workload_size": sum(s.size for s in mine_lineno),
        "top_formatted": formatted,
        "sum_matches": sum(s.size for s in stats_lineno)
        == sum(t.size for t in snapshot.traces),
    }
    if ref_path:
        ref = load(ref_path)
        diffs = only(snapshot, path).compare_to(only(ref, path), "lineno")
        result["compare_to_ref"] = len(diffs)
        result["compare_to_ref_top"] = [str(d) for d in diffs[:3]]
        result["compare_to_ref_abs_size_diff"] = sum(abs(d.size_diff)
                                                    for d in diffs)
    return result


def summary(snap_path, path=None):
    snapshot = load(snap_path)
    if path:
        snapshot = only(snapshot, path)
    sizes = [t.size for t in snapshot.traces]
    return {"traces": len(sizes), "size": sum(sizes),
            "traceback_limit": snapshot.traceback_limit}


def stats(snap_path, key, cumulative, old_path=None):
    snapshot = load(snap_path)
    if old_path:
        got = snapshot.compare_to(load(old_path), key, cumulative)
    else:
        got = snapshot.statistics(key, cumulative)
    out = []
    for st in got:
        d = {"size": st.size, "count": st.count, "str": str(st),
             "traceback": [[f.filename, f.lineno] for f in st.traceback]}
        if old_path:
            d["size_diff"] = st.size_diff
            d["count_diff"] = st.count_diff
        out.append(d)
    return out


def main(argv):
    cmd = argv[0]
    if cmd == "compare":
        out = compare(argv[1], argv[2], argv[3])
    elif cmd == "top":
        top(argv[1], argv[2], argv[3] in ("1", "true", "True"), int(argv[4]))
        return
    elif cmd == "check":
        out = check(argv[1], int(argv[2]), argv[3],
                    argv[4] if len(argv) > 4 else None)
    elif cmd == "summary":
        out = summary(argv[1], argv[2] if len(argv) > 2 else None)
    elif cmd == "stats":
        out = stats(argv[1], argv[2], argv[3] in ("1", "true", "True"),
                    argv[4] if len(argv) > 4 else None)
    else:
        sys.exit("snaptool: unknown command %r" % cmd)
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
