#!/bin/sh
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# `make demo`: trace a small leaking "service" for 5 seconds with pytm-bpf,
# print the report, then open the snapshot with stock tracemalloc.
# PYTHON_TARGET=/path/to/python overrides the target (default: pyenv 3.11.7).
set -eu
cd "$(dirname "$0")/.."

if [ -n "${PYTHON_TARGET:-}" ]; then
	PY=$PYTHON_TARGET
else
	PYENV_ROOT=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
	PY=$PYENV_ROOT/versions/3.11.7/bin/python3.11
fi
[ -x "$PY" ] || { echo "demo: no interpreter at $PY" >&2; exit 1; }
[ -x ./pytm-bpf ] || { echo "demo: ./pytm-bpf is not built (run make)" >&2; exit 1; }

SNAP=demo.pytm
READY=$(mktemp)
WL_PID=
cleanup() {
	if [ -n "$WL_PID" ]; then kill "$WL_PID" 2>/dev/null || true; fi
	rm -f "$READY"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PY" tools/demo_workload.py >"$READY" &
WL_PID=$!
i=0
until grep -q '^ready' "$READY"; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$WL_PID" 2>/dev/null; then
		echo "demo: the workload did not start" >&2; exit 1
	fi
	sleep 0.1
done

echo "== demo workload: pid $WL_PID ($PY)"
echo "== ./pytm-bpf -p $WL_PID --frames 10 --duration 5 -o $SNAP"
./pytm-bpf -p "$WL_PID" --frames 10 --duration 5 -o "$SNAP"
echo
echo "== the snapshot, opened by stock tracemalloc:"
echo "== $PY -c \"import tracemalloc; s = tracemalloc.Snapshot.load('$SNAP'); ...\""
"$PY" -c "
import tracemalloc
s = tracemalloc.Snapshot.load('$SNAP')
print('%d traces, traceback limit %d' % (len(s.traces), s.traceback_limit))
top = s.statistics('traceback')[0]
print('biggest allocator: %d blocks, %.1f KiB' % (top.count, top.size / 1024))
for line in top.traceback.format():
    print(line)
"
