#!/usr/bin/env python3
"""Open N keep-alive connections to a proxy, send one GET on each, read the
responses, keep every connection open, then report the proxy's RSS.

Usage: idle_conns.py PORT COUNT TIMEOUT_S PID [PID ...]
Prints one line:  ok=<connections answered with 2xx> open=<connections opened> rss_kb=<sum of VmRSS>
Everything is bounded by TIMEOUT_S; connections are closed on exit.
"""
import selectors
import socket
import sys
import time


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


def main():
    port, count, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    pids = sys.argv[4:]
    deadline = time.monotonic() + timeout
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle-conns\r\n\r\n"

    socks = []
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            break
        s.setblocking(False)
        socks.append(s)

    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        try:
            s.send(request)
        except OSError:
            continue
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)

    ok = 0
    pending = len(bufs)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            done = False
            if not data:
                done = True  # closed by the proxy: not an idle keep-alive connection
            else:
                bufs[s] += data
                head, sep, body = bufs[s].partition(b"\r\n\r\n")
                if sep:
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip())
                    if len(body) >= length:
                        done = True
                        if head[9:10] == b"2":
                            ok += 1
            if done:
                sel.unregister(s)
                pending -= 1

    time.sleep(1.0)  # let the proxy settle with all connections idle
    print(f"ok={ok} open={len(socks)} rss_kb={rss_kb(pids)}", flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
