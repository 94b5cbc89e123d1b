"""--leaks workload: steady churn on many lines, one burst that stays, one slow leak.

Prints "ready"; on "go" (stdin) starts its timeline: the leak (one 2000-byte
bytes object every 0.1 s, kept) from DELAY/2 s, the burst (3000 blocks of
1000 bytes, kept) at DELAY s, and all along CHURN lines (each in a file of
its own) that replace random blocks of a pool, so that their sizes wander
about a mean. Prints "leak T" and "burst T" (time.time() of their first
block) and runs until killed.
"""
import random
import sys
import time

rng = random.Random(1234)
CHURN = 12
CHURN_SRC = """
def churn(pool, rng):
    for _ in range(8):
        pool[rng.randrange(len(pool))] = bytes(rng.randrange(100, 4000))
"""


def make_churners():
    out = []
    for i in range(CHURN):
        ns = {}
        exec(compile(CHURN_SRC, "<churn%d>" % i, "exec"), ns)
        out.append(ns["churn"])
    return out


def burst():
    return [bytes(1000) for _ in range(3000)]  # BURST_LINE


def leak(held):
    held.append(bytes(2000))  # LEAK_LINE


def main():
    delay = float(sys.argv[1]) if len(sys.argv) > 1 else 2.5
    churners = make_churners()
    pools = [[b""] * 100 for _ in range(CHURN)]
    for fn, p in zip(churners, pools):
        for _ in range(20):
            fn(p, rng)
    held, kept = [], None
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    leak_at = start + delay / 2
    while True:
        now = time.time()
        if kept is None and now >= start + delay:
            kept = burst()
            print("burst %.6f" % now, flush=True)
        if now >= leak_at:
            if not held:
                print("leak %.6f" % now, flush=True)
            leak(held)
            leak_at += 0.1
        for fn, p in zip(churners, pools):
            fn(p, rng)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
