# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Live-block workload for the map tests of tests/test_all_procs.py.

Deterministic (PYTHONHASHSEED=0), one thread, Python 3.6+. After "go" it
allocates N small str objects of varied sizes from one line of this file and
keeps them alive until "exit" (N live blocks, plus the list holding them).

Protocol: see wlproto.py, plus

    --blocks N      how many str objects (default 1000)
    --fork          a forked child allocates them instead, says "child PID"
                    before "done", and lives until its parent's "exit"
    --exit-mode M   after "exit": "return" (default) or "_exit" (os._exit(0))
"""

import os
import sys

import wlproto

KEEP = []


def blocks(n):
    return ["blk%07d" % i + "z" * (i % 64) for i in range(n)]


def main():
    n = 1000
    exit_mode = "return"
    fork = False
    rest = []
    it = iter(sys.argv[1:])
    for a in it:
        if a == "--blocks":
            n = int(next(it))
        elif a == "--exit-mode":
            exit_mode = next(it)
        elif a == "--fork":
            fork = True
        else:
            rest.append(a)
    opts = wlproto.Options(rest)
    wlproto.begin(opts)
    if fork:
        built_r, built_w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(built_r)
            os.close(hold_w)
            KEEP.append(blocks(n))
            os.write(built_w, b"x")
            os.read(hold_r, 1)          # EOF when its parent is done
            os._exit(0)
        os.close(built_w)
        os.close(hold_r)
        if os.read(built_r, 1) != b"x":
            sys.exit("the child died")
        wlproto.emit("child %d" % pid)
    else:
        KEEP.append(blocks(n))
    wlproto.finish(opts)
    if fork:
        os.close(hold_w)
        os.waitpid(pid, 0)
    if exit_mode == "_exit":
        os._exit(0)


if __name__ == "__main__":
    main()
