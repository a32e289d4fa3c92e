// What HTTP/2 streams may make the proxy hold (issue 11 item 2): a client that advertises a zero stream window
// and opens many streams for big responses must not make the queue-proxy buffer a window per stream, while the
// same connection's other streams and other connections keep working.
import Foundation
import Glibc
import Synchronization
import Testing

@testable import ProxyCore

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
        #expect(grown < 8_000, "queue-proxy grew by \(grown) kB while \(stalled) streams were stalled")

        // A stalled stream whose client starts reading gets its whole body.
        let late = ids[17]
        client.read(stream: late)
        try client.flush()
        try client.pump(seconds: 10) { client.ended.contains(late) }
        #expect(client.bodies[late] == 128 * 1024 && client.ended.contains(late))
    }
}

/// An HTTP/2 client whose SETTINGS_INITIAL_WINDOW_SIZE is 0: the server may send it response heads but no body
/// until `read(stream:)` opens a stream's window.
final class WindowlessH2Client: H2SessionDelegate {
    let socket: TestSocket
    var session: H2Session!
    var statuses: [Int32: String] = [:]
    var bodies: [Int32: Int] = [:]
    var ended: Set<Int32> = []
    private var reading: Set<Int32> = []

    init(port: UInt16) throws {
        socket = try TestSocket.connect(port: port)
        session = try H2Session(role: .client, delegate: self, initialWindowSize: 0)
    }

    func get(_ path: String) throws -> Int32 {
        try session.submitRequest([
            H2Field(":method", "GET"), H2Field(":scheme", "http"), H2Field(":authority", "test"), H2Field(":path", path),
        ], endStream: true)
    }

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
        if reading.contains(stream) { session.consume(stream: stream, count: bytes.count) }
    }
    func h2EndStream(_ session: H2Session, stream: Int32) { ended.insert(stream) }
    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: UInt32) {}
}

/// An h2c app: `/big` answers with `bodySize` bytes (no length), anything else with `ok`. When a non-big request
/// arrives it notes how many bytes the proxy had let it send on the open big streams (sent + window left).
final class BigBodyH2App: Sendable {
    final class Record: Sendable {
        let state = Mutex<(big: Int, granted: Int?)>((0, nil))
    }

    let server: ScriptedUpstream
    private let record = Record()
    var port: UInt16 { server.port }
    var bigRequests: Int { record.state.withLock { $0.big } }
    var grantedWhenSmallArrived: Int? { record.state.withLock { $0.granted } }

    final class Handler: H2SessionDelegate {
        let record: Record
        let body: [UInt8]
        var sent: [Int32: Int] = [:]
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
            let granted = sent.reduce(0) { $0 + $1.value + max(0, session.sendWindow(stream: $1.key)) }
            record.state.withLock { if $0.granted == nil { $0.granted = granted } }
            try? session.submitResponse(stream: stream, [H2Field(":status", "200"), H2Field("content-length", "2")], endStream: false)
            Array("ok".utf8).withUnsafeBytes { session.send(stream: stream, $0, end: true) }
        }
        func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
            session.consume(stream: stream, count: bytes.count)
        }
        func h2DataSent(_ session: H2Session, stream: Int32, count: Int) {
            if sent[stream] != nil { sent[stream]! += count }
        }
        func h2EndStream(_ session: H2Session, stream: Int32) {}
        func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: UInt32) {}
    }

    init(bodySize: Int) throws {
        let record = self.record
        server = try ScriptedUpstream { conn, _ in try serveH2(conn, Handler(record: record, bodySize: bodySize)) }
    }
}
