// The heads the proxy sends on, checked byte for byte: hop-by-hop fields, X-Forwarded-For, Host edits, the
// Forwarded shim, repeated Content-Length, and the response side's framing and Connection fields.
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

struct HeadRewriterTests {
    /// Parses `text` as a request (or response) head and returns what `write` produced from it.
    private func rewrite(
        _ text: String, request: Bool = true,
        _ write: (HTTPHead, UnsafeRawBufferPointer, ByteBuffer) -> Void
    ) throws -> String {
        let bytes = Array(text.utf8)
        let out = ByteBuffer(capacity: 64)
        try bytes.withUnsafeBytes { raw in
            var parser = HTTP1Parser()
            var head = HTTPHead()
            let length = try #require(try parser.findHeadEnd(raw))
            let slice = UnsafeRawBufferPointer(rebasing: raw[0..<length])
            if request {
                try parser.parseRequest(slice, into: &head)
            } else {
                try parser.parseResponse(slice, into: &head)
            }
            HTTP1Parser.markConnectionListed(slice, &head)
            write(head, raw, out)
        }
        return String(decoding: out.readable, as: UTF8.self)
    }

    /// The range of the first occurrence of `needle` in `text` (byte offsets), for rewrite fields.
    private func range(of needle: String, in text: String) -> Range<Int> {
        let hay = Array(text.utf8)
        let n = Array(needle.utf8)
        for start in 0...(hay.count - n.count) where Array(hay[start..<start + n.count]) == n {
            return start..<start + n.count
        }
        preconditionFailure("\(needle) not in the head")
    }

    private func request(
        _ text: String, rewrite options: RequestRewrite = RequestRewrite(), upgrade: Bool = false,
        peer: String = "10.1.2.3"
    ) throws -> String {
        try rewrite(text) { head, bytes, out in
            HeadRewriter.writeRequest(
                head, bytes: bytes, peerIP: Array(peer.utf8), into: out, upgrade: upgrade, rewrite: options,
                defaultHost: Array("default.example".utf8))
        }
    }

    // MARK: - Requests

    @Test func hopByHopFieldsAreDroppedAndTheClientIsAppended() throws {
        let out = try request(
            "POST /a?b HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 5\r\nX-Hop: 1\r\n"
                + "Proxy-Authorization: x\r\nTE: gzip\r\nX-Keep: yes\r\nContent-Length: 3\r\n\r\n")
        #expect(
            out
                == "POST /a?b HTTP/1.1\r\nHost: h\r\nX-Keep: yes\r\nContent-Length: 3\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"
        )
    }

    @Test func teTrailersAndChunkedFramingGoOn() throws {
        let out = try request(
            "POST / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n")
        #expect(
            out == "POST / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n"
                + "X-Forwarded-For: 10.1.2.3\r\n\r\n")
    }

    @Test func priorForwardedForValuesAreJoinedBeforeThePeer() throws {
        let out = try request(
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: h\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n")
        #expect(out == "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3\r\n\r\n")
    }

    @Test func absoluteFormGoesOnInOriginForm() throws {
        #expect(try request("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n").hasPrefix("GET / HTTP/1.1\r\n"))
        #expect(try request("GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n").hasPrefix("GET /?q=1 HTTP/1.1\r\n"))
        #expect(try request("GET http://h/p HTTP/1.1\r\nHost: h\r\n\r\n").hasPrefix("GET /p HTTP/1.1\r\n"))
    }

    @Test func http10WithoutHostGetsTheDefaultHost() throws {
        let out = try request("GET / HTTP/1.0\r\n\r\n")
        #expect(out == "GET / HTTP/1.1\r\nHost: default.example\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
    }

    @Test func aRepeatedContentLengthIsWrittenOnce() throws {
        let out = try request("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
        #expect(out == "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
    }

    @Test func anUpgradeKeepsUpgradeAndSaysConnectionUpgrade() throws {
        let text = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        #expect(
            try request(text, upgrade: true)
                == "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: Upgrade\r\n\r\n"
        )
        #expect(try request(text, upgrade: false) == "GET /ws HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
    }

    @Test func droppedFieldsAndExtraLines() throws {
        let text = "GET / HTTP/1.1\r\nHost: h\r\nK-Proxy-Request: activator\r\nX-Keep: 1\r\n\r\n"
        var options = RequestRewrite()
        options.dropped.insert(1)  // the second field
        options.extraLines = Array("X-Added: 1\r\n".utf8)
        #expect(
            try request(text, rewrite: options)
                == "GET / HTTP/1.1\r\nHost: h\r\nX-Keep: 1\r\nX-Added: 1\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
    }

    @Test func aReplacementHostMovesTheOriginalAside() throws {
        let text = "GET / HTTP/1.1\r\nHost: svc.example\r\nK-Original-Host: inner.example\r\n\r\n"
        var options = RequestRewrite()
        options.host = range(of: "inner.example", in: text)
        options.dropped.insert(1)
        #expect(
            try request(text, rewrite: options)
                == "GET / HTTP/1.1\r\nHost: inner.example\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n")
        // The activator: the pod's address as Host, the request's Host kept in K-Original-Host.
        var activator = RequestRewrite()
        activator.hostLiteral = Array("10.0.0.1:8012".utf8)
        activator.originalHostField = "K-Original-Host: "
        #expect(
            try request("GET / HTTP/1.1\r\nHost: svc.example\r\n\r\n", rewrite: activator)
                == "GET / HTTP/1.1\r\nK-Original-Host: svc.example\r\nHost: 10.0.0.1:8012\r\n"
                + "X-Forwarded-For: 10.1.2.3\r\n\r\n")
    }

    @Test func theForwardedShimWalksEveryNode() throws {
        let text =
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1 , ::1,\r\nX-Forwarded-Host: a.example\r\n"
            + "X-Forwarded-Proto: https\r\n\r\n"
        var options = RequestRewrite()
        options.fieldWriter = ForwardedShim()
        options.writerValues = (
            range(of: "1.1.1.1 , ::1,", in: text), range(of: "a.example", in: text), range(of: "https", in: text)
        )
        let out = try request(text, rewrite: options)
        #expect(out.contains("\r\nForwarded: for=1.1.1.1;host=a.example;proto=https, for=\"[::1]\"\r\n"))
        var hostOnly = RequestRewrite()
        hostOnly.fieldWriter = ForwardedShim()
        hostOnly.writerValues = (nil, range(of: "a.example", in: text), nil)
        #expect(try request(text, rewrite: hostOnly).contains("\r\nForwarded: host=a.example\r\n"))
    }

    // MARK: - Responses

    private func response(_ text: String, dropFraming: Bool = false, close: Bool = false, upgrade: Bool = false) throws
        -> String
    {
        try rewrite(text, request: false) { head, bytes, out in
            HeadRewriter.writeResponse(
                head, bytes: bytes, into: out, dropFraming: dropFraming, close: close, upgrade: upgrade)
        }
    }

    @Test func responsesLoseHopByHopFieldsAndKeepTheReason() throws {
        let text =
            "HTTP/1.1 404 Not Here\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-App: 1\r\nContent-Length: 0\r\n\r\n"
        #expect(try response(text) == "HTTP/1.1 404 Not Here\r\nX-App: 1\r\nContent-Length: 0\r\n\r\n")
        #expect(
            try response(text, close: true)
                == "HTTP/1.1 404 Not Here\r\nX-App: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    @Test func deChunkingDropsTransferEncoding() throws {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\n"
        #expect(try response(text) == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\n")
        #expect(
            try response(text, dropFraming: true, close: true)
                == "HTTP/1.1 200 OK\r\nX-App: 1\r\nConnection: close\r\n\r\n")
    }

    @Test func switchingProtocolsKeepsUpgrade() throws {
        let text =
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: k\r\n\r\n"
        #expect(
            try response(text, upgrade: true)
                == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: k\r\nConnection: Upgrade\r\n\r\n"
        )
    }

    @Test func aRepeatedResponseContentLengthIsWrittenOnce() throws {
        #expect(
            try response("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n")
                == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    }
}
