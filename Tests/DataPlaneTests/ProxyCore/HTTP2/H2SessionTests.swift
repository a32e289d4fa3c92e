// The HTTP/2 codec over libnghttp2, client and server sessions talking in memory: headers, bodies in pieces,
// trailers, manual flow control (a reader that does not consume stops the sender), resets, GOAWAY, garbage.
import Glibc
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

/// Records what a session reports.
final class H2Recorder: H2SessionDelegate {
    var headers: [(Int32, [H2Field], Bool, Bool)] = []
    var data: [Int32: [UInt8]] = [:]
    var chunks: [[UInt8]] = []
    var ended: [Int32] = []
    var closed: [(Int32, H2ErrorCode)] = []
    var autoConsume = true

    func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
        let fields = block.fields
        headers.append((stream, fields, isTrailers, endStream))
    }
    func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
        data[stream, default: []] += bytes
        chunks.append(Array(bytes))
        if autoConsume { session.consume(stream: stream, count: bytes.count) }
    }
    func h2EndStream(_ session: H2Session, stream: Int32) { ended.append(stream) }
    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) {
        closed.append((stream, errorCode))
    }
}

/// A client and a server session joined by in-memory pumping.
struct H2Pair {
    let client: H2Session
    let server: H2Session
    let clientEvents = H2Recorder()
    let serverEvents = H2Recorder()

    init() throws {
        client = try H2Session(role: .client, delegate: nil)
        server = try H2Session(role: .server, delegate: nil)
        client.delegate = clientEvents
        server.delegate = serverEvents
    }

    /// Moves bytes both ways until neither side has anything to send.
    func pump() throws {
        for _ in 0..<1000 {
            var toServer: [UInt8] = []
            var toClient: [UInt8] = []
            try client.writeOutput { toServer += $0 }
            if !toServer.isEmpty { try toServer.withUnsafeBytes { _ = try server.receive($0) } }
            try server.writeOutput { toClient += $0 }
            if !toClient.isEmpty { try toClient.withUnsafeBytes { _ = try client.receive($0) } }
            if toServer.isEmpty && toClient.isEmpty { return }
        }
    }
}

func text(_ fields: [H2Field], _ name: String) -> String? {
    fields.first { $0.name == Array(name.utf8) }.map { String(decoding: $0.value, as: UTF8.self) }
}

@Suite struct H2SessionTests {
    static let get = [
        H2Field(":method", "GET"), H2Field(":scheme", "http"), H2Field(":authority", "h"), H2Field(":path", "/x"),
    ]

    @Test func requestResponseWithBodyInPiecesAndTrailers() throws {
        let pair = try H2Pair()
        let id = try pair.client.submitRequest(Self.get, endStream: true)
        try pair.pump()
        let request = try #require(pair.serverEvents.headers.first)
        #expect(request.0 == id && text(request.1, ":path") == "/x" && request.3)
        try pair.server.submitResponse(
            stream: id, [H2Field(":status", "200"), H2Field("content-type", "application/grpc")], endStream: false)
        Array("hello ".utf8).withUnsafeBytes { pair.server.send(stream: id, $0) }
        try pair.pump()
        #expect(pair.clientEvents.data[id] == Array("hello ".utf8))  // the first piece arrives on its own
        #expect(pair.clientEvents.closed.isEmpty)
        Array("world".utf8).withUnsafeBytes {
            pair.server.send(stream: id, $0, end: true, trailers: [H2Field("grpc-status", "0")])
        }
        try pair.pump()
        #expect(pair.clientEvents.data[id] == Array("hello world".utf8))
        let response = try #require(pair.clientEvents.headers.first)
        #expect(text(response.1, ":status") == "200" && !response.2)
        let trailers = try #require(pair.clientEvents.headers.last)
        #expect(trailers.2 && trailers.3 && text(trailers.1, "grpc-status") == "0")
        #expect(pair.clientEvents.closed.map(\.1) == [.noError])
        #expect(pair.client.openStreamCount == 0 && pair.server.openStreamCount == 0)
    }

    @Test func requestBodyStreamsPieceByPiece() throws {
        let pair = try H2Pair()
        let id = try pair.client.submitRequest(
            [
                H2Field(":method", "POST"), H2Field(":scheme", "http"),
                H2Field(":authority", "h"), H2Field(":path", "/upload"),
            ], endStream: false)
        for piece in ["one", "two", "three"] {
            Array(piece.utf8).withUnsafeBytes { pair.client.send(stream: id, $0) }
            try pair.pump()
            #expect(pair.serverEvents.chunks.last == Array(piece.utf8))
        }
        #expect(pair.serverEvents.ended.isEmpty)
        pair.client.send(stream: id, UnsafeRawBufferPointer(start: nil, count: 0), end: true)
        try pair.pump()
        #expect(pair.serverEvents.ended == [id])
        #expect(pair.serverEvents.data[id] == Array("onetwothree".utf8))
    }

    @Test func aReaderThatDoesNotConsumeStopsTheSender() throws {
        let pair = try H2Pair()
        pair.clientEvents.autoConsume = false
        let id = try pair.client.submitRequest(Self.get, endStream: true)
        try pair.pump()
        try pair.server.submitResponse(stream: id, [H2Field(":status", "200")], endStream: false)
        let body = [UInt8](repeating: 0x61, count: 200_000)
        body.withUnsafeBytes { pair.server.send(stream: id, $0, end: true) }
        try pair.pump()
        let received = pair.clientEvents.data[id]?.count ?? 0
        #expect(received == 65_535)  // the initial window, no more
        #expect(pair.server.queuedBytes(stream: id) == 200_000 - 65_535)
        pair.client.consume(stream: id, count: received)
        try pair.pump()
        #expect((pair.clientEvents.data[id]?.count ?? 0) > received)
        while let count = pair.clientEvents.data[id]?.count, count < 200_000, pair.clientEvents.closed.isEmpty {
            pair.client.consume(stream: id, count: 65_535)
            try pair.pump()
        }
        #expect(pair.clientEvents.data[id]?.count == 200_000)
        #expect(pair.clientEvents.ended == [id])
    }

    @Test func resetAndGoAway() throws {
        let pair = try H2Pair()
        let first = try pair.client.submitRequest(Self.get, endStream: true)
        let second = try pair.client.submitRequest(Self.get, endStream: true)
        try pair.pump()
        pair.client.reset(stream: first, code: .cancel)
        try pair.pump()
        #expect(pair.serverEvents.closed.contains { $0.0 == first && $0.1 == .cancel })
        // Drain: GOAWAY, and the open stream still completes.
        pair.server.goAway()
        try pair.server.submitResponse(stream: second, [H2Field(":status", "204")], endStream: true)
        try pair.pump()
        #expect(pair.clientEvents.headers.contains { $0.0 == second && text($0.1, ":status") == "204" })
        #expect(pair.clientEvents.closed.contains { $0.0 == second && $0.1 == .noError })
        // A stream opened after the GOAWAY is refused, never served.
        let before = pair.serverEvents.headers.count
        if let late = try? pair.client.submitRequest(Self.get, endStream: true) {
            try pair.pump()
            #expect(pair.clientEvents.closed.contains { $0.0 == late && $0.1 != .noError })
        }
        #expect(pair.serverEvents.headers.count == before)
    }

    @Test func aFinalHeadAfterAnInformationalOneIsNotTrailers() throws {
        let pair = try H2Pair()
        let id = try pair.client.submitRequest(Self.get, endStream: true)
        try pair.pump()
        try pair.server.submitInformational(stream: id, [H2Field(":status", "103"), H2Field("link", "</a.css>")])
        try pair.server.submitResponse(stream: id, [H2Field(":status", "204")], endStream: true)
        try pair.pump()
        #expect(pair.clientEvents.headers.map { text($0.1, ":status") } == ["103", "204"])
        #expect(pair.clientEvents.headers.allSatisfy { !$0.2 })  // neither is trailers
    }

    @Test func garbageIsAnErrorNotACrash() throws {
        let server = try H2Session(role: .server, delegate: nil)
        let junk = Array("GET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8)
        #expect(throws: H2Error.self) { try junk.withUnsafeBytes { _ = try server.receive($0) } }
        var out: [UInt8] = []
        try server.writeOutput { out += $0 }
        #expect(!out.isEmpty)  // SETTINGS and the GOAWAY that explains the error
    }
}

/// A gRPC health server on h2c (grpc.health.v1.Health/Check) built on our own codec, for the queue-proxy's
/// gRPC readiness probe. Answers `status` (1 SERVING, 2 NOT_SERVING) and records the services asked about.
final class FakeGRPCHealthServer: @unchecked Sendable {
    let server: ScriptedUpstream
    let services = Seen<String>()
    var port: UInt16 { server.port }

    /// One connection's session: answers each finished Check call.
    final class Handler: H2SessionDelegate {
        let status: UInt8
        let services: Seen<String>
        var requests: [Int32: (path: String, body: [UInt8])] = [:]
        init(status: UInt8, services: Seen<String>) {
            self.status = status
            self.services = services
        }

        func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
            let fields = block.fields
            requests[stream] = (text(fields, ":path") ?? "", [])
            if endStream { answer(session, stream) }
        }
        func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
            requests[stream]?.body += bytes
            session.consume(stream: stream, count: bytes.count)
        }
        func h2EndStream(_ session: H2Session, stream: Int32) { answer(session, stream) }
        func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) {}

        func answer(_ session: H2Session, _ stream: Int32) {
            guard let request = requests[stream] else { return }
            // HealthCheckRequest: 5-byte prefix, then field 1 (service) if any.
            let body = request.body
            services.add(body.count > 7 ? String(decoding: body[7...], as: UTF8.self) : "")
            guard request.path == "/grpc.health.v1.Health/Check" else {
                try? session.submitResponse(
                    stream: stream,
                    [
                        H2Field(":status", "200"), H2Field("content-type", "application/grpc"),
                        H2Field("grpc-status", "12"),
                    ], endStream: true)
                return
            }
            try? session.submitResponse(
                stream: stream, [H2Field(":status", "200"), H2Field("content-type", "application/grpc")],
                endStream: false)
            [0, 0, 0, 0, 2, 0x08, status].withUnsafeBytes {
                session.send(stream: stream, $0, end: true, trailers: [H2Field("grpc-status", "0")])
            }
        }
    }

    init(status: UInt8) throws {
        let services = self.services
        server = try ScriptedUpstream { conn, _ in try serveH2(conn, Handler(status: status, services: services)) }
    }
}

@Suite(.serialized, .timeLimit(.minutes(1)))
struct GRPCReadinessProbeTests {
    static func probeJSON(_ port: UInt16, service: String) -> String {
        #"{"grpc":{"port":\#(port),"service":"\#(service)"},"successThreshold":1}"#
    }

    @Test func servingMeansReadyAndNotServingMeansNot() throws {
        let serving = try FakeGRPCHealthServer(status: 1)
        defer { serving.server.stop() }
        let qp = try QueueProxyFixture(
            env: [
                "USER_PORT": "\(serving.port)",
                "SERVING_READINESS_PROBE": Self.probeJSON(serving.port, service: "helloworld.Greeter"),
            ], app: nil)
        let ready = try qp.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"])
        #expect(
            ready.status == 200 && ready.bodyText == "queue", "\(ready.status) \(ready.bodyText) \(qp.proxy.stderr)")
        #expect(serving.services.all.contains("helloworld.Greeter"))

        let notServing = try FakeGRPCHealthServer(status: 2)
        defer { notServing.server.stop() }
        let qp2 = try QueueProxyFixture(
            env: [
                "USER_PORT": "\(notServing.port)",
                "SERVING_READINESS_PROBE":
                    #"{"grpc":{"port":\#(notServing.port)},"periodSeconds":1,"timeoutSeconds":1}"#,
            ], app: nil)
        let unready = try qp2.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"])
        #expect(unready.status == 503)
        // no service: an empty request
        #expect(!notServing.services.all.isEmpty && notServing.services.all.allSatisfy { $0.isEmpty })

        // Nothing listening (or not speaking h2c): not ready, and the queue-proxy carries on.
        let dead = freePort()
        let qp3 = try QueueProxyFixture(
            env: ["SERVING_READINESS_PROBE": #"{"grpc":{"port":\#(dead)},"periodSeconds":1,"timeoutSeconds":1}"#],
            app: nil)
        #expect(try qp3.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"]).status == 503)
    }
}
