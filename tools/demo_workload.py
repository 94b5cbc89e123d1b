# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A small "service" for `make demo`: handles fake requests forever and
leaks a little at a few places, at different rates, so that a few seconds of
pytm-bpf show clear winners:

- handle_request() caches every response in RESPONSE_CACHE (never evicted),
- audit() appends a formatted line per request to AUDIT_LOG,
- Session objects are registered in SESSIONS and never removed,
- render() builds a temporary page that is freed again (no leak).

Prints "ready PID" once running. Runs until killed (the demo kills it by
pid), or for --seconds S.
"""

import os
import sys
import time

RESPONSE_CACHE = {}
AUDIT_LOG = []
SESSIONS = {}


class Session(object):
    def __init__(self, user):
        self.user = user
        self.history = []
        self.token = os.urandom(16).hex()


def render(request_id, user):
    rows = ["<tr><td>%d</td><td>%s</td></tr>" % (i, user) for i in range(20)]
    return "<table>%s</table>" % "".join(rows)      # temporary


def audit(request_id, user, size):
    AUDIT_LOG.append("req=%d user=%s bytes=%d t=%.3f"
                     % (request_id, user, size, time.time()))


def session_for(user):
    s = SESSIONS.get(user)
    if s is None:
        s = SESSIONS[user] = Session(user)
    s.history.append(len(s.history))
    return s


def handle_request(request_id):
    user = "user%d" % (request_id % 997)
    session_for(user)
    page = render(request_id, user)
    RESPONSE_CACHE[(user, request_id)] = bytearray(page.encode() * 2)
    audit(request_id, user, len(page))


def main():
    seconds = None
    if len(sys.argv) > 2 and sys.argv[1] == "--seconds":
        seconds = float(sys.argv[2])
    start = time.monotonic()
    os.write(1, ("ready %d\n" % os.getpid()).encode())
    request_id = 0
    while seconds is None or time.monotonic() - start < seconds:
        for _ in range(20):                  # a burst of requests
            handle_request(request_id)
            request_id += 1
        time.sleep(0.02)


if __name__ == "__main__":
    main()
