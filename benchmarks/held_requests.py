#!/usr/bin/env python3
"""Hold COUNT requests in the activator for a revision at zero, then report its RSS.

Opens COUNT connections to the activator, sends one request on each for
NAMESPACE/REVISION (a revision with no endpoints, so the activator must buffer
every request), keeps every connection open, polls the activator's metrics
until kn_revision_request_queued for that revision reaches COUNT, then reads
the VmRSS of PID(s).

Usage: held_requests.py PORT COUNT TIMEOUT_S METRICS_URL NAMESPACE REVISION PID [PID ...]
Prints one line:
  open=<connections opened> sent=<requests sent> queued=<last gauge value>
  answered=<connections answered or closed by the activator> rss_kb=<sum of VmRSS> secs=<time to reach COUNT>
(rss_kb is read once queued reached COUNT, or at the deadline otherwise.)
Everything is bounded by TIMEOUT_S; connections are closed on exit.
"""
import re
import resource
import selectors
import socket
import sys
import time
import urllib.request


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def queued(url, key):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return -1
    m = re.search(r'^kn_revision_request_queued\{revision="%s"\} (\d+)' % re.escape(key), text, re.M)
    return int(m.group(1)) if m else -1


def main():
    port, count, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    metrics_url, ns, rev = sys.argv[4], sys.argv[5], sys.argv[6]
    pids = sys.argv[7:]
    start = time.monotonic()
    deadline = start + timeout

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else count + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    request = (f"GET / HTTP/1.1\r\nHost: x\r\nKnative-Serving-Namespace: {ns}\r\n"
               f"Knative-Serving-Revision: {rev}\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    socks = []
    sent = 0
    answered = 0

    def drain(timeout_s):
        # Count connections the activator answers (e.g. 503 when its queue is full) or closes.
        nonlocal answered
        for key, _ in sel.select(timeout=timeout_s):
            s = key.fileobj
            try:
                s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                pass
            sel.unregister(s)
            answered += 1

    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(request)
        except OSError:
            s.close()
            break
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ)
        sent += 1
        if sent % 1000 == 0:
            drain(0)

    q = -1
    reached = None
    while time.monotonic() < deadline:
        drain(0)
        q = queued(metrics_url, f"{ns}/{rev}")
        if q >= count:
            reached = time.monotonic()
            break
        drain(min(0.2, max(0.0, deadline - time.monotonic())))

    if reached is not None:
        time.sleep(0.5)  # let the activator settle with every request buffered
        drain(0)
        q2 = queued(metrics_url, f"{ns}/{rev}")
        if q2 >= 0:
            q = q2
    rss = rss_kb(pids)
    secs = f"{reached - start:.1f}" if reached is not None else "timeout"
    print(f"open={len(socks)} sent={sent} queued={q} answered={answered} rss_kb={rss} secs={secs}", flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
