"""Conformance test app `protocols` (after Knative's `runtime` image's proto fields): answers JSON
{"protocol": "HTTP/1.1"} or {"protocol": "HTTP/2.0"}, saying how the request reached it. HTTP/1.1 and h2c with
prior knowledge (what the queue-proxy speaks to an h2c port) on the same port. The HTTP/2 side is a minimal
hand-written one (stdlib only): it answers each stream once the request ended, never decodes the request's
header block and ignores frames it does not need. Listens on $PORT (8080)."""
import http.server
import json
import os
import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0, 1, 4, 6, 7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle(self):
        head = b""
        while len(head) < len(PREFACE) and PREFACE.startswith(head):
            more = self.connection.recv(len(PREFACE), socket.MSG_PEEK)
            if len(more) == len(head):
                return  # closed
            head = more
        if head == PREFACE:
            self.rfile.read(len(PREFACE))
            self.serve_h2()
        else:
            super().handle()

    def serve_h2(self):
        self.wfile.write(frame(SETTINGS, 0, 0))
        self.wfile.flush()
        while True:
            header = self.rfile.read(9)
            if len(header) < 9:
                return
            length = struct.unpack(">I", b"\0" + header[:3])[0]
            kind, flags = header[3], header[4]
            stream = struct.unpack(">I", header[5:9])[0] & 0x7FFFFFFF
            payload = self.rfile.read(length)
            if kind == SETTINGS and not flags & ACK:
                self.wfile.write(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.wfile.write(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                return
            elif kind in (HEADERS, DATA) and flags & END_STREAM:
                body = json.dumps({"protocol": "HTTP/2.0"}).encode()
                # :status 200 (static table index 8), content-type (index 31, literal value, not indexed).
                block = b"\x88\x0f\x10" + bytes([len("application/json")]) + b"application/json"
                self.wfile.write(frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, body))
            self.wfile.flush()

    def do_GET(self):
        body = json.dumps({"protocol": self.request_version}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
