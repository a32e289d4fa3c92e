"""Conformance test app `timeout` (after Knative's test image of that name): GET ?initialTimeout=MS&timeout=MS
sleeps initialTimeout, sends the status line, headers and a first chunk (flushed), sleeps timeout, then
sends the rest. Listens on $PORT (8080)."""
import http.server
import os
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        initial = int(query.get("initialTimeout", ["0"])[0])
        rest = int(query.get("timeout", ["0"])[0])
        time.sleep(initial / 1000)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.chunk(b"initial\n")
            time.sleep(rest / 1000)
            self.chunk(b"Slept for %d milliseconds\n" % (initial + rest))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the proxy gave up on us (the revision timeout)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
