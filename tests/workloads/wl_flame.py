# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Three leaves of known live bytes under a call tree, for flame graphs:

    top -> leaf_big                         2000 x 4 KiB   (BIG_LINE)
        -> middle -> medium -> leaf_medium  2000 x 2 KiB   (MEDIUM_LINE)
                  -> leaf_small             1000 x 1 KiB   (SMALL_LINE)

    -> "ready PID"   <- "go"   -> "built"   <- "quit"
"""

import os
import sys

KEEP = []


def leaf_big():
    return [bytes(4096) for _ in range(2000)]           # BIG_LINE


def leaf_medium():
    return [bytes(2048) for _ in range(2000)]           # MEDIUM_LINE


def leaf_small():
    return [bytes(1024) for _ in range(1000)]           # SMALL_LINE


def medium():
    return leaf_medium()


def middle():
    return medium(), leaf_small()


def top():
    KEEP.append((leaf_big(), middle()))


def main():
    print("ready %d" % os.getpid(), flush=True)
    if sys.stdin.readline() != "go\n":
        sys.exit("expected go")
    top()
    print("built", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
