"""Conformance test app `singlethreaded` (after Knative's test image of that name): a request that overlaps
another one in flight fails with 500; otherwise it sleeps a little and answers 200. Listens on $PORT (8080)."""
import http.server
import os
import threading
import time

busy = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if not busy.acquire(blocking=False):
            self.answer(500, b"concurrent request\n")
            return
        try:
            time.sleep(0.05)
        finally:
            busy.release()
        self.answer(200, b"one at a time\n")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
