// WebSockets through activator → queue-proxy → app, the real binaries (issue 6, item 6): the upgrade passes
// both proxies, frames flow both ways, the open tunnel holds one of the queue-proxy's containerConcurrency
// slots, and it keeps working through the queue-proxy's drain.
import Foundation
import Glibc
import Testing

@Suite(.serialized, .timeLimit(.minutes(2)))
struct WebSocketThroughProxiesTests {
    /// An app that accepts a websocket upgrade and echoes raw bytes until the client closes; plain requests get 200.
    static func echoApp() -> @Sendable (TestSocket, Int) throws -> Void {
        { conn, _ in
            while true {
                let (_, fields) = try conn.readHead()
                guard fields.contains(where: { $0.0.lowercased() == "upgrade" && $0.1.lowercased() == "websocket" })
                else {
                    try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
                    continue
                }
                try conn.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                var pending = conn.takeBuffered()
                while true {
                    if !pending.isEmpty { try conn.send(pending) }
                    var chunk = [UInt8](repeating: 0, count: 4096)
                    let n = chunk.withUnsafeMutableBytes { recv(conn.fd, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { return }
                    pending = Array(chunk[0..<n])
                }
            }
        }
    }

    @Test func websocketThroughActivatorAndQueueProxyHoldsASlotAndSurvivesDrain() throws {
        let qp = try QueueProxyFixture(env: ["QUEUE_DRAIN_QUIET_PERIOD": "200ms"], app: Self.echoApp())  // cc = 1
        let activator = try ActivatorFixture()
        try activator.revision("ws-00001", cc: 1)
        let put = try activator.admin(
            "PUT", "/v1/revisions/default/ws-00001/endpoints", #"{"addresses": ["127.0.0.1:\#(qp.port)"]}"#)
        #expect(put.status == 200)

        let client = try TestSocket.connect(port: activator.port)
        try client.send(
            "GET /chat HTTP/1.1\r\nHost: ws.example\r\nKnative-Serving-Namespace: default\r\n"
                + "Knative-Serving-Revision: ws-00001\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let (status, fields) = try client.readHead()
        #expect(status.hasPrefix("HTTP/1.1 101"), "\(status)")
        #expect(fields.contains { $0.0.lowercased() == "upgrade" && $0.1 == "websocket" })
        try client.send("ping-1")
        #expect(String(decoding: try client.read(count: 6), as: UTF8.self) == "ping-1")

        // The tunnel holds the only slot (cc = 1): a plain request straight to the queue-proxy waits for it.
        let waiting = try TestSocket.connect(port: qp.port)
        try waiting.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        // A negative check ("not answered"): there is no event to wait for, so give an answer 300 ms to show up.
        waiting.setTimeout(seconds: 0, microseconds: 300_000)
        #expect((try? waiting.readHead()) == nil, "answered while the websocket held the slot")
        waiting.setTimeout(seconds: 10)

        // SIGTERM: the queue-proxy drains but the open tunnel keeps working (up to 60 s).
        qp.proxy.signal(SIGTERM)
        // Past the 200 ms quiet period the loops drain and the listener closes: wait for that, not a guess.
        #expect(eventually { (try? TestSocket.connect(port: qp.port)) == nil })
        try client.send("ping-2")
        #expect(String(decoding: try client.read(count: 6), as: UTF8.self) == "ping-2")

        // Closing the websocket frees the slot: the waiting request gets its answer, then the proxy exits.
        client.close()
        let answer = try waiting.readResponse()
        #expect(answer.status == 200 && answer.bodyText == "plain")
        #expect(qp.proxy.waitForExit(seconds: 10) == 0)
    }

    @Test func theOverallTimeoutEndsAWebsocket() throws {
        // Upstream tears the proxied connection down when the request context ends (timeoutSeconds), websockets
        // included (spec §1.7): a tunnel that is still talking is cut at the revision timeout.
        let qp = try QueueProxyFixture(
            env: ["REVISION_TIMEOUT_SECONDS": "1", "CONTAINER_CONCURRENCY": "0"], app: Self.echoApp())
        let client = try TestSocket.connect(port: qp.port)
        try client.send(
            "GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let (status, _) = try client.readHead()
        #expect(status.hasPrefix("HTTP/1.1 101"), "\(status)")
        let started = Date()
        try client.send("ping")
        #expect(String(decoding: try client.read(count: 4), as: UTF8.self) == "ping")
        client.setTimeout(seconds: 5)
        _ = try? client.readToEnd()
        let elapsed = Date().timeIntervalSince(started)
        #expect(client.isClosedByPeer())
        // Cut at the 1 s timeout: an uncut tunnel would still be open when the client's 5 s read timeout ends.
        #expect(elapsed > 0.7 && elapsed < 5, "closed after \(elapsed) s, timeout 1 s")
    }
    /// Issue 11 item 3: activator → queue-proxy with the same revision timeout, the app writes its first bytes
    /// then stalls. Whichever proxy times out first, the client gets one complete response with the timeout
    /// text once (as behind upstream's Go proxies), for the overall and the idle timer alike.
    @Test(arguments: [
        ("REVISION_TIMEOUT_SECONDS", "timeoutSeconds"), ("REVISION_IDLE_TIMEOUT_SECONDS", "idleTimeoutSeconds"),
    ])
    func aTimeoutThroughBothProxiesEndsTheResponseWithTheTextOnce(_ env: String, _ field: String) throws {
        let qp = try QueueProxyFixture(env: [env: "1", "CONTAINER_CONCURRENCY": "0"]) { conn, _ in
            let (_, fields) = try conn.readHead()
            if fields.contains(where: { $0.0 == "K-Network-Probe" }) {
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nqueue")
                return
            }
            try conn.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            _ = conn.isClosedByPeer()
        }
        let activator = try ActivatorFixture()
        let put = try activator.admin(
            "PUT", "/v1/revisions/default/slow", #"{"containerConcurrency": 0, "\#(field)": 1}"#)
        #expect(put.status == 200, "\(put.bodyText)")
        _ = try activator.admin(
            "PUT", "/v1/revisions/default/slow/endpoints", #"{"addresses": ["127.0.0.1:\#(qp.port)"]}"#)
        let response = try activator.toRevision("slow")
        #expect(response.status == 200 && response.isComplete, "\(response)")
        let body = response.bodyText
        #expect(body.hasPrefix("first") && body.hasSuffix("request timeout"), "\(body)")
        #expect(body.components(separatedBy: "request timeout").count == 2, "\(body)")
    }
}
