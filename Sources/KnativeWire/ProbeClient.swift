// Probe attempts, as both products make them: the queue-proxy's readiness probe against its user container
// (TCP, HTTP/1.1, h2c, gRPC health) and the activator's probe of a pod's queue-proxy (a GET that must answer
// exactly 200 with a given body). Built on the engine's `ClientConnection`.
import ProxyCore

/// The shared shape of a probe attempt: connect to a loopback address within a deadline (the engine's
/// `ClientConnection`), then the subclass talks; exactly one verdict reaches `completion` (on failure, timeout
/// or the loop's drain).
package class ProbeConnection: ClientConnectionDelegate {
    private let completion: (Bool) -> Void
    private var connection: ClientConnection?
    private(set) var isDone = false

    init(completion: @escaping (Bool) -> Void) {
        self.completion = completion
    }

    /// Connects to `address`; `connected()` follows once the connection is up.
    final func start(address: SocketAddress, timeoutMs: Int64, loop: EventLoop) {
        let connection = ClientConnection.connect(
            to: address, on: loop, deadlineMs: loop.nowMs + timeoutMs, delegate: self)
        if !isDone { self.connection = connection }
    }

    /// The connection is up: send the request (subclasses).
    func connected() { done(true) }

    /// Bytes arrived (subclasses).
    func received(_ bytes: UnsafeRawBufferPointer) {}

    /// The connection ended before a verdict. Default: failure.
    func ended(_ ending: ClientConnection.Ending) { done(false) }

    final func send(_ bytes: UnsafeRawBufferPointer) { connection?.send(bytes) }

    package final func clientConnected(_ connection: ClientConnection) {
        self.connection = connection  // `connect` may report before it returns
        guard !isDone else { return }
        connected()
    }

    package final func clientReceived(_ connection: ClientConnection, _ bytes: UnsafeRawBufferPointer) {
        guard !isDone else { return }
        received(bytes)
    }

    package final func clientEnded(_ connection: ClientConnection, _ ending: ClientConnection.Ending) {
        self.connection = nil
        guard !isDone else { return }
        ended(ending)
    }

    final func done(_ ok: Bool) {
        guard !isDone else { return }
        isDone = true
        connection?.close()
        connection = nil
        finished()
        completion(ok)
    }

    /// After the verdict, before `completion` (subclasses let go of what they hold).
    func finished() {}
}

/// One probe attempt: a TCP connect, or an HTTP/1.1 GET whose status decides (200 ≤ status < 400), or — for the
/// activator's pod probes — a GET that must answer exactly 200 with a given body.
package final class ProbeAttempt: ProbeConnection {
    private let request: [UInt8]?
    private let requiredBody: [UInt8]?
    private var response: [UInt8] = []

    private init(request: [UInt8]?, requiredBody: [UInt8]?, completion: @escaping (Bool) -> Void) {
        self.request = request
        self.requiredBody = requiredBody
        super.init(completion: completion)
    }

    /// A readiness-probe attempt against the user container on 127.0.0.1.
    package static func run(
        _ handler: ProbeSpec.Handler, timeoutMs: Int64, loop: EventLoop, autodetectHTTP2: Bool = false,
        completion: @escaping (Bool) -> Void
    ) {
        switch handler {
        case .tcp(let port):
            run(
                address: SocketAddress(ip: "127.0.0.1", port: port)!, request: nil, requiredBody: nil,
                timeoutMs: timeoutMs, loop: loop, completion: completion)
        case .http(let port, let target, let headers) where autodetectHTTP2:
            // Upstream's auto-detection: a plain h2c GET first; if it answers 2xx/3xx, an h2c GET with the probe's
            // headers decides; otherwise an HTTP/1.1 GET without the custom headers decides.
            H2ProbeAttempt.get(port: port, target: target, headers: [], timeoutMs: timeoutMs, loop: loop) { h2c in
                if h2c {
                    H2ProbeAttempt.get(
                        port: port, target: target, headers: headers, timeoutMs: timeoutMs, loop: loop,
                        completion: completion)
                } else {
                    run(
                        .http(port: port, target: target, headers: []), timeoutMs: timeoutMs, loop: loop,
                        completion: completion)
                }
            }
        case .http(let port, let target, let headers):
            var text = "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUser-Agent: kube-probe//\r\n"
            for header in headers { text += header + "\r\n" }
            text += "Connection: close\r\n\r\n"
            run(
                address: SocketAddress(ip: "127.0.0.1", port: port)!, request: Array(text.utf8), requiredBody: nil,
                timeoutMs: timeoutMs, loop: loop, completion: completion)
        case .grpc(let port, let service):
            H2ProbeAttempt.grpcHealth(
                port: port, service: service, timeoutMs: timeoutMs, loop: loop, completion: completion)
        case .unusable(let reason):
            Log.rateLimited("readiness probe: \(reason)")
            completion(false)
        }
    }

    /// Connects to `address`; sends `request` if any. Without a request, a connect is success. With
    /// `requiredBody`, success is status 200 and exactly that body (read until the server closes).
    package static func run(
        address: SocketAddress, request: [UInt8]?, requiredBody: [UInt8]?, timeoutMs: Int64, loop: EventLoop,
        completion: @escaping (Bool) -> Void
    ) {
        ProbeAttempt(request: request, requiredBody: requiredBody, completion: completion)
            .start(address: address, timeoutMs: timeoutMs, loop: loop)
    }

    override func connected() {
        guard let request else { return done(true) }
        request.withUnsafeBytes { send($0) }
    }

    override func received(_ bytes: UnsafeRawBufferPointer) {
        response.append(contentsOf: bytes)
        if let known = verdict(closed: false) { return done(known) }
        if response.count > 64 * 1024 { done(false) }
    }

    override func ended(_ ending: ClientConnection.Ending) {
        switch ending {
        case .peerClosed: done(verdict(closed: true) ?? false)
        // A reset after the whole body (the activator's probe reads until the server closes) still decides.
        case .failed: done(requiredBody == nil ? false : verdict(closed: true) ?? false)
        default: done(false)
        }
    }

    /// The verdict once the bytes read decide it (nil: not yet). Without a required body the status decides as soon
    /// as the head is in; with one, status 200 and exactly that body, once the server closed.
    private func verdict(closed: Bool) -> Bool? {
        let head: ResponseHead?
        do { head = try ResponseHead.parse(response) } catch { return false }
        guard let head else { return closed ? false : nil }
        guard let requiredBody else { return head.status >= 200 && head.status < 400 }
        guard head.status == 200 else { return false }
        guard closed else { return nil }
        return head.body(in: response) == requiredBody
    }
}

/// A probe attempt over h2c (prior knowledge) to 127.0.0.1:port, UA `kube-probe//`:
/// - gRPC (spec §1.5): `grpc.health.v1.Health/Check` for `service`; ready iff the reply says SERVING and the
///   call ends with grpc-status 0;
/// - HTTP auto-detection: a GET; ready iff 200 ≤ status < 400.
final class H2ProbeAttempt: ProbeConnection, H2SessionDelegate {
    enum Kind { case grpc, http }

    private let kind: Kind
    private let fields: [H2Field]
    private let body: [UInt8]?
    private var session: H2Session?
    private var stream: Int32 = -1
    private var httpStatus = ""
    private var grpcStatus: String?
    private var message: [UInt8] = []

    private init(kind: Kind, fields: [H2Field], body: [UInt8]?, completion: @escaping (Bool) -> Void) {
        self.kind = kind
        self.fields = fields
        self.body = body
        super.init(completion: completion)
    }

    static func grpcHealth(
        port: UInt16, service: String, timeoutMs: Int64, loop: EventLoop, completion: @escaping (Bool) -> Void
    ) {
        let fields = [
            H2Field(":method", "POST"), H2Field(":scheme", "http"), H2Field(":authority", "127.0.0.1:\(port)"),
            H2Field(":path", "/grpc.health.v1.Health/Check"), H2Field("content-type", "application/grpc"),
            H2Field("te", "trailers"), H2Field("user-agent", "kube-probe//"),
        ]
        run(
            H2ProbeAttempt(kind: .grpc, fields: fields, body: requestMessage(service: service), completion: completion),
            port: port, timeoutMs: timeoutMs, loop: loop)
    }

    /// `headers` are the probe's `Name: value` lines.
    static func get(
        port: UInt16, target: String, headers: [String], timeoutMs: Int64, loop: EventLoop,
        completion: @escaping (Bool) -> Void
    ) {
        var fields = [
            H2Field(":method", "GET"), H2Field(":scheme", "http"), H2Field(":authority", "127.0.0.1:\(port)"),
            H2Field(":path", target), H2Field("user-agent", "kube-probe//"),
        ]
        for line in headers {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].drop { $0 == " " }
            fields.append(H2Field(name, String(value)))
        }
        run(
            H2ProbeAttempt(kind: .http, fields: fields, body: nil, completion: completion), port: port,
            timeoutMs: timeoutMs, loop: loop)
    }

    private static func run(_ attempt: H2ProbeAttempt, port: UInt16, timeoutMs: Int64, loop: EventLoop) {
        do {
            attempt.session = try H2Session(role: .client, delegate: attempt)
        } catch {
            return attempt.done(false)
        }
        attempt.start(address: SocketAddress(ip: "127.0.0.1", port: port)!, timeoutMs: timeoutMs, loop: loop)
    }

    /// HealthCheckRequest { string service = 1; } in a gRPC length-prefixed message.
    static func requestMessage(service: String) -> [UInt8] {
        var body: [UInt8] = []
        if !service.isEmpty {
            let bytes = Array(service.utf8)
            body = [0x0A] + varint(bytes.count) + bytes
        }
        let n = UInt32(body.count)
        return [0, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + body
    }

    private static func varint(_ value: Int) -> [UInt8] {
        var v = UInt64(value)
        var out: [UInt8] = []
        repeat {
            var byte = UInt8(v & 0x7F)
            v >>= 7
            if v != 0 { byte |= 0x80 }
            out.append(byte)
        } while v != 0
        return out
    }

    /// HealthCheckResponse { ServingStatus status = 1; } → SERVING is 1.
    static func isServing(_ framed: [UInt8]) -> Bool {
        guard framed.count >= 5, framed[0] == 0 else { return false }
        let length = Int(framed[1]) << 24 | Int(framed[2]) << 16 | Int(framed[3]) << 8 | Int(framed[4])
        guard framed.count >= 5 + length else { return false }
        let end = 5 + length
        var i = 5
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while i < end && shift < 64 {
                let b = framed[i]
                i += 1
                value |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        var status: UInt64 = 0  // proto3 default: UNKNOWN
        while i < end {
            guard let key = varint() else { return false }
            switch key & 0x07 {  // unknown fields are skipped, as proto3 readers do
            case 0:
                guard let value = varint() else { return false }
                if key >> 3 == 1 { status = value }
            case 1: i += 8
            case 2:
                guard let n = varint(), n <= UInt64(end - i) else { return false }
                i += Int(n)
            case 5: i += 4
            default: return false
            }
        }
        return i == end && status == 1
    }

    override func connected() {
        guard let session else { return done(false) }
        do {
            stream = try session.submitRequest(fields, endStream: body == nil)
            body?.withUnsafeBytes { session.send(stream: stream, $0, end: true) }
        } catch {
            return done(false)
        }
        flush()
    }

    /// Everything nghttp2 wants to send (a few hundred bytes; the connection queues what the socket refuses).
    private func flush() {
        guard let session, !isDone else { return }
        if (try? session.writeOutput { bytes in send(bytes) }) == nil { done(false) }
    }

    override func received(_ bytes: UnsafeRawBufferPointer) {
        guard let session else { return done(false) }
        // The session's delegate (this attempt) may reach its verdict inside `receive`.
        if (try? session.receive(bytes)) == nil { return done(false) }
        flush()
    }

    func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
        if let value = block.value(of: ":status") { httpStatus = String(decoding: value, as: UTF8.self) }
        if let value = block.value(of: "grpc-status") { grpcStatus = String(decoding: value, as: UTF8.self) }
    }

    func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
        if message.count < 64 * 1024 { message += bytes }
        session.consume(stream: stream, count: bytes.count)
    }

    func h2EndStream(_ session: H2Session, stream: Int32) {}

    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) {
        guard stream == self.stream else { return }
        switch kind {
        case .grpc: done(errorCode == .noError && httpStatus == "200" && grpcStatus == "0" && Self.isServing(message))
        case .http: done(errorCode == .noError && httpStatus.count == 3 && httpStatus >= "200" && httpStatus < "400")
        }
    }

    override func finished() { session?.delegate = nil }
}
