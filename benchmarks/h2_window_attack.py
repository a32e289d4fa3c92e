#!/usr/bin/python3
"""HTTP/2 clients that never read: CONNECTIONS connections, each advertising SETTINGS_INITIAL_WINDOW_SIZE=0 and
opening STREAMS streams for PATH, held for HOLD seconds while the proxy's RSS is sampled (issue 11 item 2).

    h2_window_attack.py PORT PID [--connections 40] [--streams 250] [--path /big] [--hold 10]

Prints `peak_kb=`, `held_kb=` (RSS at the end of the hold) and `after_kb=` (RSS 3 s after the clients left),
read from /proc/PID/status. Uses Debian's python3-h2 (apt-get install python3-h2).
"""
import argparse
import select
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("pid", type=int)
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--streams", type=int, default=250)
    parser.add_argument("--path", default="/big")
    parser.add_argument("--hold", type=float, default=10)
    args = parser.parse_args()

    before = rss_kb(args.pid)
    clients = []
    for _ in range(args.connections):
        sock = socket.create_connection(("127.0.0.1", args.port))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        clients.append((sock, conn))

    # The server's SETTINGS first (its stream limit), then the streams.
    for sock, conn in clients:
        while conn.remote_settings.max_concurrent_streams == 100 and not any(
                isinstance(e, h2.events.RemoteSettingsChanged) for e in conn.receive_data(sock.recv(65536))):
            pass
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "attack"), (":path", args.path)]
        for _ in range(args.streams):
            conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
        sock.sendall(conn.data_to_send())

    peak = before
    heads = 0
    deadline = time.monotonic() + args.hold
    socks = {sock.fileno(): (sock, conn) for sock, conn in clients}
    while time.monotonic() < deadline:
        readable, _, _ = select.select(list(socks), [], [], 0.2)
        for fd in readable:
            sock, conn = socks[fd]
            data = sock.recv(65536)
            if not data:
                del socks[fd]
                continue
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    heads += 1
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        peak = max(peak, rss_kb(args.pid))
    held = rss_kb(args.pid)
    for sock, _ in clients:
        sock.close()
    time.sleep(3)  # the proxy's trim runs a second after a burst of closes
    after = rss_kb(args.pid)
    print(f"streams={args.connections * args.streams} response_heads={heads} before_kb={before} "
          f"peak_kb={peak} held_kb={held} after_kb={after}")


if __name__ == "__main__":
    main()
