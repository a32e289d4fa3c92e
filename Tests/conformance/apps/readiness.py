"""Conformance test app `readiness`: /healthz answers 200 while ready, 503 while not. It starts ready unless
$READY is "false", and not before $READY_AFTER_MS ms have passed; /toggle flips the state (answering the new
one). Any other path answers 200 with "$TEXT $pid" (TEXT defaults to "ready"; the pid tells pods apart) and is
logged on stdout as "request PATH" (the pod's user-container.log), so a test can tell that traffic reached it.
Listens on $PORT (8080)."""
import http.server
import os
import time

started = time.monotonic()
after = int(os.environ.get("READY_AFTER_MS", "0")) / 1000
state = {"ready": os.environ.get("READY", "true") != "false"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            ready = state["ready"] and time.monotonic() - started >= after
            self.answer(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
            return
        print("request", self.path, flush=True)
        if self.path == "/toggle":
            state["ready"] = not state["ready"]
            self.answer(200, b"ready=%s %d\n" % (str(state["ready"]).lower().encode(), os.getpid()))
        else:
            self.answer(200, b"%s %d\n" % (os.environ.get("TEXT", "ready").encode(), os.getpid()))

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
