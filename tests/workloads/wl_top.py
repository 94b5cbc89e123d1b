"""Top view workload: a few lines of known size, then commands on stdin.

Prints "ready"; on "go" builds its lines and prints "built"; then, one
command per line:
    grow   -> five more 100,000-byte blocks at GROW_LINE, "grown N" (N in all)
    hooks  -> "hooks N": allocator table slots that lead into a pytm-bpf page
    sum    -> "sum S": a checksum of everything it holds (what it computes)
    quit   -> exits
It allocates nothing while it waits for a command.
"""
import sys

from wl_prefork import hooks

HELD = {}


def big():
    return [bytes(4000) for _ in range(2000)]  # BIG_LINE


def many():
    return [(i, i + 1) for i in range(30000)]  # MANY_LINE


def leaf(n):
    return [bytes(1000) for _ in range(n)]  # LEAF_LINE


def caller_a():
    return leaf(1000)  # CALL_A


def caller_b():
    return leaf(500)  # CALL_B


def grow(held):
    for _ in range(5):
        held.append(bytes(100000))  # GROW_LINE


def checksum():
    return sum(len(x) for v in HELD.values() for x in v) + len(HELD["grow"])


def main():
    print("ready", flush=True)
    sys.stdin.readline()
    HELD.update(big=big(), many=many(), a=caller_a(), b=caller_b(), grow=[])
    print("built", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "grow":
            grow(HELD["grow"])
            print("grown %d" % len(HELD["grow"]), flush=True)
        elif cmd == "hooks":
            print("hooks %d" % hooks(), flush=True)
        elif cmd == "sum":
            print("sum %d" % checksum(), flush=True)
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
