// HTTP/2 stream behaviour of the queue-proxy (issue 11): what streams may make it hold (a client that advertises
// a zero stream window and opens many streams for big responses must not make it buffer a window per stream,
// while other streams keep working), how a timeout after the first byte ends a response (HTTP/2 and the
// HTTP/1.1 → h2c bridge), a bad request chunk in the bridge, and oversized header blocks.
import Foundation
import Glibc
import Synchronization
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

@Suite(.serialized, .timeLimit(.minutes(2)))
struct H2ProxyStreamTests {
    @Test func streamsOfAClientThatDoesNotReadHoldNoResponseBytes() throws {
        let app = try BigBodyH2App(bodySize: 128 * 1024)
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "QUEUE_USER_PROTOCOL": "h2c"], app: nil)
        let before = qp.proxy.memoryKB().rss
        let client = try WindowlessH2Client(port: qp.port)
        let stalled = 200
        var ids: [Int32] = []
        for _ in 0..<stalled { ids.append(try client.get("/big")) }
        try client.flush()
        try client.pump(seconds: 20) { app.bigRequests >= stalled }
        #expect(app.bigRequests == stalled)

        // A healthy stream on the same connection (so the same loop and upstream connection: the app reads its
        // request after the 200 others), then another connection.
        let healthy = try client.get("/small")
        client.read(stream: healthy)
        try client.flush()
        try client.pump(seconds: 10) { client.ended.contains(healthy) }
        #expect(client.statuses[healthy] == "200" && client.bodies[healthy] == 2)
        // What the proxy had let the app send on the stalled streams by then (bytes sent + window left): a window
        // per stream before (200 × 64 KiB), nothing now, as their client's windows are closed.
        let granted = app.grantedWhenSmallArrived ?? -1
        #expect(granted >= 0 && granted <= 64 * 1024, "the app could send \(granted) bytes for streams nobody reads")
        #expect(try nghttp(["http://127.0.0.1:\(qp.port)/small"]) == "ok")
        let grown = qp.proxy.memoryKB().rss - before
        #expect(
            !memoryBoundsApply || grown < 8_000, "queue-proxy grew by \(grown) kB while \(stalled) streams were stalled"
        )

        // A stalled stream whose client starts reading gets its whole body.
        let late = ids[17]
        client.read(stream: late)
        try client.flush()
        try client.pump(seconds: 10) { client.ended.contains(late) }
        #expect(client.bodies[late] == 128 * 1024 && client.ended.contains(late))
    }

    /// Spec §1.7 / Knative's TestRevisionTimeout: the text is appended and the stream ends with END_STREAM.
    /// A response that declared its length cannot take the text: the stream is reset (HTTP/1 closes), never ended
    /// short of its content-length.
    @Test func aTimeoutAfterTheFirstByteResetsAStreamWithADeclaredLength() throws {
        let app = try BigBodyH2App(bodySize: 0)
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "REVISION_TIMEOUT_SECONDS": "1"], app: nil)
        let client = try WindowlessH2Client(port: qp.port)
        let stream = try client.get("/stall-sized")
        client.read(stream: stream)
        try client.flush()
        try client.pump(seconds: 10) { client.closeCodes[stream] != nil }
        #expect(client.statuses[stream] == "200" && client.text(stream) == "partial")
        #expect(!client.ended.contains(stream))
        #expect(client.closeCodes[stream] == .internalError)
    }

    @Test func aTimeoutAfterTheFirstByteEndsTheStreamWithTheText() throws {
        let app = try BigBodyH2App(bodySize: 0)
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "REVISION_TIMEOUT_SECONDS": "1"], app: nil)
        let client = try WindowlessH2Client(port: qp.port)
        let stream = try client.get("/stall")
        client.read(stream: stream)
        try client.flush()
        try client.pump(seconds: 10) { client.closeCodes[stream] != nil }
        #expect(client.statuses[stream] == "200")
        #expect(client.text(stream) == "partialrequest timeout")
        #expect(client.ended.contains(stream), "the stream was not ended with END_STREAM")
        #expect(
            client.closeCodes[stream] == .noError,
            "stream closed with \(client.closeCodes[stream].map(\.name) ?? "nothing"), not NO_ERROR")
        #expect(eventually(seconds: 5) { app.resets >= 1 }, "the upstream stream was not reset")
    }

    /// The same through the HTTP/1.1 → h2c bridge: chunked ends with the final chunk; HTTP/1.0 ends with the close.
    @Test func aTimeoutAfterTheFirstByteEndsABridgedResponseProperly() throws {
        let app = try BigBodyH2App(bodySize: 0)
        let qp = try QueueProxyFixture(
            env: [
                "USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "REVISION_TIMEOUT_SECONDS": "1",
                "QUEUE_USER_PROTOCOL": "h2c",
            ], app: nil)
        let client = try TestSocket.connect(port: qp.port)
        let chunked = try client.exchange("GET /stall HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(chunked.status == 200 && chunked.header("Transfer-Encoding") == "chunked")
        #expect(chunked.bodyText == "partialrequest timeout" && chunked.isComplete, "\(chunked)")
        // The response was complete: the connection takes the next request.
        let next = try client.exchange("GET /small HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(next.status == 200 && next.bodyText == "ok")

        let old = try TestSocket.connect(port: qp.port)
        let closeDelimited = try old.exchange("GET /stall HTTP/1.0\r\nHost: h\r\n\r\n")
        #expect(closeDelimited.status == 200 && closeDelimited.bodyText == "partialrequest timeout")
    }

    /// A client whose connection resets while a bridged response streams to it: the write fails mid-response,
    /// the upstream stream is cancelled, and the proxy goes on serving (the failed write ends the exchange from
    /// the upstream's side of the call stack, where nothing else keeps the client's connection alive).
    @Test func aClientThatResetsMidBridgedResponseCancelsOnlyItsStream() throws {
        let app = try BigBodyH2App(bodySize: 8 << 20)
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "QUEUE_USER_PROTOCOL": "h2c"], app: nil)
        for _ in 0..<3 {
            let client = try TestSocket.connect(port: qp.port)
            try client.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
            _ = try client.read(count: 64 * 1024)  // the response is flowing
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(client.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            client.close()  // RST: the proxy's next writes fail
        }
        #expect(eventually { app.resets >= 3 }, "the three upstream streams are cancelled")
        let next = try TestSocket.connect(port: qp.port).exchange("GET /small HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(next.status == 200 && next.bodyText == "ok")
    }

    /// Issue 11 item 6: a malformed chunk after the head went upstream, before any response byte: 400 and close.
    @Test func aBadRequestChunkInTheBridgeIsA400() throws {
        let app = try BigBodyH2App(bodySize: 0)
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "QUEUE_USER_PROTOCOL": "h2c"], app: nil)
        for bad in ["ZZ\r\n", "ffffffffffffffffff\r\n", "-3\r\n"] {
            let client = try TestSocket.connect(port: qp.port)
            let answer = try client.exchange(
                "POST /stall HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" + bad)
            #expect(answer.status == 400, "\(bad): \(answer)")
            #expect(answer.header("Connection") == "close" && answer.bodyText == "400 Bad Request\n", "\(answer)")
        }
    }

    /// RFC 9113 §8.7: a refused stream was not processed, so it is sent again, once; through HTTP/2 streams and
    /// through the HTTP/1.1 → h2c bridge alike (`ReplayRule`).
    @Test func aRefusedStreamIsSentAgainOnce() throws {
        let app = try BigBodyH2App(bodySize: 0)
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "QUEUE_USER_PROTOCOL": "h2c"], app: nil)
        let bridged = try TestSocket.connect(port: qp.port).exchange("GET /refuse-once HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(bridged.status == 200 && bridged.bodyText == "ok", "\(bridged)")
        #expect(app.refused == 2, "refused once, then served")

        let again = try BigBodyH2App(bodySize: 0)
        let qp2 = try QueueProxyFixture(
            env: ["USER_PORT": "\(again.port)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        let client = try WindowlessH2Client(port: qp2.port)
        let stream = try client.get("/refuse-once")
        client.read(stream: stream)
        try client.flush()
        try client.pump(seconds: 10) { client.closeCodes[stream] != nil }
        #expect(client.statuses[stream] == "200" && client.text(stream) == "ok")
        #expect(again.refused == 2)
    }

    /// A stream refused after a 1xx was processed by the app (whatever its reset says): it is not sent again,
    /// and the client sees one 1xx, then the 502.
    @Test func aRefusedStreamAfterAnInterimResponseIsNotSentAgain() throws {
        let app = try BigBodyH2App(bodySize: 0)
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0", "QUEUE_USER_PROTOCOL": "h2c"], app: nil)
        let socket = try TestSocket.connect(port: qp.port)
        let hint = try socket.exchange("GET /hint-then-refuse HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(hint.status == 103 && hint.header("link") == "</a>", "\(hint)")
        let answer = try socket.readResponse()
        #expect(answer.status == 502 && answer.bodyText.contains("REFUSED_STREAM"), "\(answer)")
        #expect(app.refused == 1, "sent once")
    }

    /// A header block decoded beyond 64 KiB is a 431 on its stream and the connection goes on; one field whose
    /// literal is over 64 KiB on the wire is beyond nghttp2's HPACK decoder (NGHTTP2_HD_MAX_NV): the connection
    /// ends with GOAWAY (COMPRESSION_ERROR), as README says.
    @Test func oversizedHeaderBlocksAre431WhereHPACKAllows() throws {
        let app = try BigBodyH2App(bodySize: 0)
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(app.port)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        let client = try WindowlessH2Client(port: qp.port)
        // 100,000 'a's: 62,500 bytes on the wire (Huffman), 100,000 decoded.
        let one = try client.get("/small", extra: [H2Field("x-big", String(repeating: "a", count: 100_000))])
        // Three fields of 30,000: each small, together over the limit.
        let three = try client.get(
            "/small", extra: (0..<3).map { H2Field("x-part-\($0)", String(repeating: "b", count: 30_000)) })
        let fine = try client.get("/small")
        for id in [one, three, fine] { client.read(stream: id) }
        try client.flush()
        try client.pump(seconds: 10) { [one, three, fine].allSatisfy { client.ended.contains($0) } }
        #expect(client.statuses[one] == "431" && client.statuses[three] == "431", "\(client.statuses)")
        #expect(client.statuses[fine] == "200" && client.text(fine) == "ok")

        // 70,000 '~'s: no shorter in Huffman, so a 70,000-byte literal: a connection error.
        let other = try WindowlessH2Client(port: qp.port)
        _ = try other.get("/small", extra: [H2Field("x-big", String(repeating: "~", count: 70_000))])
        try other.flush()
        #expect(throws: TestError.self) { try other.pump(seconds: 10) { false } }
        #expect(other.goAwayCode == .compressionError, "GOAWAY \(other.goAwayCode?.name ?? "none")")
    }
}

/// Polls `condition` (another process's progress) until it holds or `seconds` pass.

/// An HTTP/2 client whose SETTINGS_INITIAL_WINDOW_SIZE is 0: the server may send it response heads but no body
/// until `read(stream:)` opens a stream's window.
final class WindowlessH2Client: H2SessionDelegate {
    let socket: TestSocket
    var session: H2Session!
    var statuses: [Int32: String] = [:]
    var bodies: [Int32: Int] = [:]
    var ended: Set<Int32> = []
    var closeCodes: [Int32: H2ErrorCode] = [:]
    /// Body bytes of the streams being read.
    var received: [Int32: [UInt8]] = [:]
    private var reading: Set<Int32> = []
    /// The error code of a GOAWAY received, if any.
    var goAwayCode: H2ErrorCode? { session.lastGoAwayCode }

    init(port: UInt16) throws {
        socket = try TestSocket.connect(port: port)
        session = try H2Session(role: .client, delegate: self, initialWindowSize: 0, maxSendHeaderBlock: 1 << 20)
    }

    func get(_ path: String, extra: [H2Field] = []) throws -> Int32 {
        try session.submitRequest(
            [
                H2Field(":method", "GET"), H2Field(":scheme", "http"), H2Field(":authority", "test"),
                H2Field(":path", path),
            ] + extra, endStream: true)
    }

    func text(_ stream: Int32) -> String { String(decoding: received[stream] ?? [], as: UTF8.self) }

    /// Opens `stream`'s window and keeps it open as bytes arrive.
    func read(stream: Int32) {
        reading.insert(stream)
        session.setWindow(stream: stream, 65_535)
    }

    func flush() throws {
        var out: [UInt8] = []
        try session.writeOutput { out += $0 }
        if !out.isEmpty { try socket.send(out) }
    }

    /// Reads and answers frames until `done` holds or `seconds` pass.
    func pump(seconds: Double, until done: () -> Bool) throws {
        socket.setTimeout(seconds: 0, microseconds: 50_000)
        let deadline = Date().addingTimeInterval(seconds)
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while Date() < deadline && !done() {
            let n = chunk.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { throw TestError("the proxy closed the connection") }
            if n > 0 { try chunk[0..<n].withUnsafeBytes { _ = try session.receive($0) } }
            try flush()
        }
    }

    func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
        if let value = block.value(of: ":status") { statuses[stream] = String(decoding: value, as: UTF8.self) }
        if endStream { ended.insert(stream) }
    }
    func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
        bodies[stream, default: 0] += bytes.count
        if reading.contains(stream) {
            received[stream, default: []] += bytes
            session.consume(stream: stream, count: bytes.count)
        }
    }
    func h2EndStream(_ session: H2Session, stream: Int32) { ended.insert(stream) }
    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) { closeCodes[stream] = errorCode }
}

/// An h2c app: `/big` answers with `bodySize` bytes (no length), `/stall` with `partial` and then nothing,
/// anything else with `ok`. When a non-big request
/// arrives it notes how many bytes the proxy had let it send on the open big streams (sent + window left).
final class BigBodyH2App: Sendable {
    final class Record: Sendable {
        let state = Locked<(big: Int, granted: Int?, resets: Int, refused: Int)>((0, nil, 0, 0))
    }

    let server: ScriptedUpstream
    private let record = Record()
    var port: UInt16 { server.port }
    var bigRequests: Int { record.state.withLock { $0.big } }
    var grantedWhenSmallArrived: Int? { record.state.withLock { $0.granted } }
    /// Streams the proxy reset (RST_STREAM received).
    var resets: Int { record.state.withLock { $0.resets } }
    /// Streams refused (REFUSED_STREAM) on `/refuse-once`.
    var refused: Int { record.state.withLock { $0.refused } }

    final class Handler: H2SessionDelegate {
        let record: Record
        let body: [UInt8]
        var sent: [Int32: Int] = [:]
        var refuseOnceWritten: [Int32] = []
        init(record: Record, bodySize: Int) {
            self.record = record
            body = [UInt8](repeating: 0x61, count: bodySize)
        }

        func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
            guard !isTrailers else { return }
            if block.value(of: ":path").map({ Array($0) }) == Array("/big".utf8) {
                sent[stream] = 0
                record.state.withLock { $0.big += 1 }
                try? session.submitResponse(stream: stream, [H2Field(":status", "200")], endStream: false)
                body.withUnsafeBytes { session.send(stream: stream, $0, end: true) }
                return
            }
            if block.value(of: ":path").map({ Array($0) }) == Array("/stall-sized".utf8) {  // as /stall, with a length
                try? session.submitResponse(
                    stream: stream, [H2Field(":status", "200"), H2Field("content-length", "100")], endStream: false)
                Array("partial".utf8).withUnsafeBytes { session.send(stream: stream, $0) }
                return
            }
            if block.value(of: ":path").map({ Array($0) }) == Array("/hint-then-refuse".utf8) {
                // Processed (a 1xx went out), then refused: a broken app. Retrying would send the request twice.
                try? session.submitInformational(stream: stream, [H2Field(":status", "103"), H2Field("link", "</a>")])
                refuseOnceWritten.append(stream)  // a reset queued now would drop the 103 (`refuseWritten`)
                return
            }
            if block.value(of: ":path").map({ Array($0) }) == Array("/refuse-once".utf8),
                record.state.withLock({ state in
                    state.refused += 1
                    return state.refused == 1
                })
            {
                session.reset(stream: stream, code: .refusedStream)  // not processed: the client may retry
                return
            }
            if block.value(of: ":path").map({ Array($0) }) == Array("/stall".utf8) {  // a first byte, then nothing
                try? session.submitResponse(stream: stream, [H2Field(":status", "200")], endStream: false)
                Array("partial".utf8).withUnsafeBytes { session.send(stream: stream, $0) }
                return
            }
            let granted = sent.reduce(0) { $0 + $1.value + max(0, session.sendWindow(stream: $1.key)) }
            record.state.withLock { if $0.granted == nil { $0.granted = granted } }
            try? session.submitResponse(
                stream: stream, [H2Field(":status", "200"), H2Field("content-length", "2")], endStream: false)
            Array("ok".utf8).withUnsafeBytes { session.send(stream: stream, $0, end: true) }
        }
        func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
            session.consume(stream: stream, count: bytes.count)
        }
        /// The 1xx of `/hint-then-refuse` went out: now the REFUSED_STREAM.
        func refuseWritten(_ session: H2Session) {
            for stream in refuseOnceWritten {
                record.state.withLock { $0.refused += 1 }
                session.reset(stream: stream, code: .refusedStream)
            }
            refuseOnceWritten = []
        }
        func h2DataSent(_ session: H2Session, stream: Int32, count: Int) {
            if sent[stream] != nil { sent[stream]! += count }
        }
        func h2EndStream(_ session: H2Session, stream: Int32) {}
        func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) {
            if errorCode != .noError { record.state.withLock { $0.resets += 1 } }
        }
    }

    init(bodySize: Int) throws {
        let record = self.record
        server = try ScriptedUpstream { conn, _ in
            let handler = Handler(record: record, bodySize: bodySize)
            try serveH2(conn, handler, afterWrite: handler.refuseWritten)
        }
    }
}
