"""Conformance test app `runtime` (after Knative's test image of that name): GET answers one JSON object
with what the container sees: its env, the request as received (method, path, Host, headers in arrival
order, protocol), its uid/gid/groups and hostname. /healthz answers 200 (a readiness probe path).
Listens on $PORT (8080)."""
import http.server
import json
import os
import socket


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok"
        else:
            body = json.dumps({
                "env": dict(os.environ),
                "request": {
                    "method": self.command,
                    "path": self.path,
                    "protocol": self.request_version,
                    "host": self.headers.get("Host", ""),
                    "headers": [[k, v] for k, v in self.headers.items()],
                },
                "user": {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()},
                "hostname": socket.gethostname(),
            }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
