"""gRPC test peer for the HTTP/2 tests (grpcio, no generated code: messages are raw bytes).

server PORT          serves test.Echo/{Unary,ServerStream,ClientStream,Bidi} and grpc.health.v1.Health/Check
                     (SERVING) on 127.0.0.1:PORT, prints "ready" once listening
client TARGET KIND [AUTHORITY]
                     calls KIND through TARGET (host:port), with AUTHORITY as :authority if given (the
                     activator routes by it), and prints one JSON line with what it saw

Timing is reported so the Swift tests can prove that nothing buffered a stream: each message carries its
send time, and arrivals are compared against sends.
"""
import json
import sys
import time
from concurrent import futures

import grpc

GAP = 0.2  # seconds between streamed messages
COUNT = 5


def now_ms():
    return time.monotonic() * 1000.0


def unary(request, context):
    if request == b"fail":
        context.set_trailing_metadata((("x-detail", "trailer-kept"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: fail")
    context.set_trailing_metadata((("x-detail", "trailer-kept"),))
    return b"echo:" + request


def server_stream(request, context):
    for i in range(COUNT):
        if i:
            time.sleep(GAP)
        yield json.dumps({"i": i, "sent": now_ms()}).encode()


def client_stream(request_iterator, context):
    arrivals = []
    for message in request_iterator:
        sent = json.loads(message)["sent"]
        arrivals.append(now_ms() - sent)  # one clock: both peers run on this machine (monotonic is system-wide)
    return json.dumps({"delays": arrivals}).encode()


def bidi(request_iterator, context):
    for message in request_iterator:
        yield b"pong:" + message


class Gauge:
    """Calls of Slow in progress, and the most seen at once."""

    def __init__(self):
        import threading
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


GAUGE = Gauge()


def slow(request, context):
    """Sleeps the request's milliseconds; answers with the most Slow calls seen in progress at once."""
    GAUGE.enter()
    try:
        time.sleep(int(request) / 1000.0)
    finally:
        GAUGE.leave()
    return b"%d" % GAUGE.max


def long_stream(request, context):
    """int(request) messages, GAP apart."""
    for i in range(int(request)):
        if i:
            time.sleep(GAP)
        yield b"%d" % i


def big(request, context):
    """int(request) messages of 1 MiB, as fast as the peer takes them."""
    chunk = b"x" * (1 << 20)
    for _ in range(int(request)):
        yield chunk


def headers(request, context):
    """The request's metadata (its non-pseudo header fields) as JSON."""
    return json.dumps(dict(context.invocation_metadata())).encode()


def health(request, context):
    return b"\x08\x01"  # HealthCheckResponse{status: SERVING}


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "LongStream": grpc.unary_stream_rpc_method_handler(long_stream),
        "Big": grpc.unary_stream_rpc_method_handler(big),
        "Headers": grpc.unary_unary_rpc_method_handler(headers),
    }
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("test.Echo", handlers),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)}),
    ))
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def client(target, kind, authority=None):
    options = [("grpc.default_authority", authority)] if authority else []
    channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=10)
    out = {"kind": kind}
    if kind == "unary":
        reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hello", timeout=10)
        out["reply"] = reply.decode()
        out["trailers"] = dict(call.trailing_metadata())
        out["code"] = call.code().name
    elif kind == "unary-error":
        try:
            channel.unary_unary("/test.Echo/Unary")(b"fail", timeout=10)
            out["code"] = "OK"
        except grpc.RpcError as error:
            out["code"] = error.code().name
            out["details"] = error.details()
            out["trailers"] = dict(error.trailing_metadata())
    elif kind == "server-stream":
        delays = []
        for message in channel.unary_stream("/test.Echo/ServerStream")(b"go", timeout=10):
            delays.append(now_ms() - json.loads(message)["sent"])
        out["delays"] = delays
    elif kind == "client-stream":
        def messages():
            for i in range(COUNT):
                if i:
                    time.sleep(GAP)
                yield json.dumps({"i": i, "sent": now_ms()}).encode()
        reply = channel.stream_unary("/test.Echo/ClientStream")(messages(), timeout=10)
        out["delays"] = json.loads(reply)["delays"]
    elif kind == "bidi":
        # Ping-pong: the next ping leaves only after the previous pong came back, so a proxy that held
        # either direction until the end would deadlock (and time out) instead of passing.
        import queue
        outbox = queue.Queue()
        rtts = []

        def pings():
            while True:
                item = outbox.get()
                if item is None:
                    return
                yield item

        responses = channel.stream_stream("/test.Echo/Bidi")(pings(), timeout=10)
        for i in range(COUNT):
            start = now_ms()
            outbox.put(b"%d" % i)
            reply = next(responses)
            rtts.append(now_ms() - start)
            assert reply == b"pong:%d" % i, reply
        outbox.put(None)
        out["rtts"] = rtts
    elif kind == "headers":
        reply = channel.unary_unary("/test.Echo/Headers")(
            b"", metadata=(("knative-serving-revision", "grpc-00001"), ("knative-serving-namespace", "default"),
                           ("x-forwarded-for", "10.0.0.1")), timeout=10)
        out["headers"] = json.loads(reply)
    elif kind.startswith("concurrent-"):
        # N calls at once on this one channel (one HTTP/2 connection): how many did the app see together?
        n = int(kind.split("-")[1])
        calls = [channel.unary_unary("/test.Echo/Slow").future(b"200", timeout=20) for _ in range(n)]
        replies = [int(call.result()) for call in calls]
        out["max"] = max(replies)
        out["ok"] = len(replies)
    elif kind.startswith("slow-"):
        try:
            channel.unary_unary("/test.Echo/Slow")(kind.split("-")[1].encode(), timeout=20)
            out["code"] = "OK"
        except grpc.RpcError as error:
            out["code"] = error.code().name
            out["details"] = error.details()
    elif kind.startswith("long-"):
        got = []
        try:
            for message in channel.unary_stream("/test.Echo/LongStream")(kind.split("-")[1].encode(), timeout=20):
                if not got:
                    print("first", flush=True)  # the stream is flowing (tests wait for this line)
                got.append(int(message))
            out["code"] = "OK"
        except grpc.RpcError as error:
            out["code"] = error.code().name
            out["details"] = error.details()
        out["received"] = len(got)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(*sys.argv[2:5])
