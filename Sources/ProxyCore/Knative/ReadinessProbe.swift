// The user container's readiness probe (spec §1.5): the `SERVING_READINESS_PROBE` JSON, and a prober that
// runs it on a loop with non-blocking sockets. Probe rounds are single-flight: callers arriving during a round
// wait for its result.
import Glibc

/// One Kubernetes `core/v1 Probe`, reduced to what the queue-proxy executes.
public struct ProbeSpec: Sendable, Equatable {
    public enum Handler: Sendable, Equatable {
        case tcp(port: UInt16)
        /// `target` is the path (with leading slash) and query.
        case http(port: UInt16, target: String, headers: [String])
        case grpc(port: UInt16, service: String)
        /// exec, or no handler: always fails, at once and without polling (upstream's `ProbeContainer` returns
        /// false before any attempt).
        case unusable(String)
    }

    /// A handler that can never succeed: a round ends with "not ready" at once, even in aggressive mode.
    public var isUnusable: Bool {
        if case .unusable = handler { return true }
        return false
    }

    public var handler: Handler
    public var periodSeconds = 0
    public var timeoutSeconds = 0
    public var successThreshold = 1

    /// Aggressive mode (period 0): an attempt every 50 ms with a 100 ms timeout, for at most 10 s.
    public var isAggressive: Bool { periodSeconds == 0 }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses `SERVING_READINESS_PROBE`: "" → no probe (always ready); an object, or an array of objects when
    /// multi-container probing is on.
    public static func parse(_ text: String, userPort: UInt16, multiContainer: Bool) throws(ParseError) -> [ProbeSpec] {
        if text.isEmpty { return [] }
        let json: JSON
        do { json = try JSON.parse(text) } catch {
            throw ParseError(description: "SERVING_READINESS_PROBE: invalid JSON (\(error))")
        }
        if multiContainer, let items = json.arrayValue {
            return try items.map { (item) throws(ParseError) in try parse(item, userPort) }
        }
        return [try parse(json, userPort)]
    }

    private static func parse(_ json: JSON, _ userPort: UInt16) throws(ParseError) -> ProbeSpec {
        guard json.objectValue != nil else {
            throw ParseError(description: "SERVING_READINESS_PROBE: expected a JSON object (a Kubernetes Probe)")
        }
        func port(_ handler: JSON) throws(ParseError) -> UInt16 {
            if let n = handler["port"]?.intValue, let p = UInt16(exactly: n), p > 0 { return p }
            if let s = handler["port"]?.stringValue, let p = UInt16(s), p > 0 { return p }
            if handler["port"] == nil { return userPort }
            throw ParseError(description: "SERVING_READINESS_PROBE: port must be a number 1-65535")
        }
        let handler: Handler
        if let tcp = json["tcpSocket"] {
            handler = .tcp(port: try port(tcp))
        } else if let http = json["httpGet"] {
            var path = http["path"]?.stringValue ?? "/"
            if !path.hasPrefix("/") { path = "/" + path }
            if let scheme = http["scheme"]?.stringValue, scheme.uppercased() != "HTTP" {
                handler = .unusable("httpGet scheme \(scheme) is not supported (HTTP only)")
            } else {
                var headers: [String] = []
                for header in http["httpHeaders"]?.arrayValue ?? [] {
                    guard let name = header["name"]?.stringValue, let value = header["value"]?.stringValue else {
                        throw ParseError(description: "SERVING_READINESS_PROBE: httpHeaders need name and value")
                    }
                    headers.append("\(name): \(value)")
                }
                handler = .http(port: try port(http), target: path, headers: headers)
            }
        } else if let grpc = json["grpc"] {
            handler = .grpc(port: try port(grpc), service: grpc["service"]?.stringValue ?? "")
        } else if json["exec"] != nil {
            handler = .unusable("exec probe not supported")  // upstream's words
        } else {
            handler = .unusable("no probe found")  // upstream's words: no httpGet, tcpSocket or grpc
        }
        var spec = ProbeSpec(handler: handler)
        spec.periodSeconds = json["periodSeconds"]?.intValue ?? 0
        spec.timeoutSeconds = json["timeoutSeconds"]?.intValue ?? 0
        spec.successThreshold = max(1, json["successThreshold"]?.intValue ?? 1)
        if spec.periodSeconds > 0 && spec.timeoutSeconds < 1 { spec.timeoutSeconds = 1 }
        return spec
    }
}

/// Runs probe rounds on one loop.
public final class ReadinessProber {
    public static let aggressiveIntervalMs: Int64 = 50
    public static let aggressiveAttemptTimeoutMs: Int64 = 100
    public static let aggressiveLimitMs: Int64 = 10_000

    private let specs: [ProbeSpec]
    private unowned(unsafe) let loop: EventLoop  // the loop owns its responders and they own us
    /// Consecutive successes per probe; persists across rounds, reset by a failure (upstream's habit).
    private var consecutive: [Int]
    private var roundResults: [Bool?] = []
    private var roundRunning = false
    private var waiters: [(Bool) -> Void] = []

    /// ENABLE_HTTP2_AUTO_DETECTION: HTTP probes try h2c first (spec §1.5).
    private let autodetectHTTP2: Bool

    public init(specs: [ProbeSpec], loop: EventLoop, autodetectHTTP2: Bool = false) {
        self.specs = specs
        self.loop = loop
        self.autodetectHTTP2 = autodetectHTTP2
        consecutive = Array(repeating: 0, count: specs.count)
    }

    public var isAlwaysReady: Bool { specs.isEmpty }

    /// Runs (or joins) a probe round; `completion` gets the verdict on the loop thread.
    public func probe(_ completion: @escaping (Bool) -> Void) {
        if specs.isEmpty {
            completion(true)
            return
        }
        waiters.append(completion)
        guard !roundRunning else { return }
        roundRunning = true
        roundResults = Array(repeating: nil, count: specs.count)
        let startMs = loop.nowMs
        for index in specs.indices { runAttempt(index, roundStartMs: startMs) }
    }

    private func runAttempt(_ index: Int, roundStartMs: Int64) {
        let spec = specs[index]
        let timeoutMs = spec.isAggressive ? Self.aggressiveAttemptTimeoutMs : Int64(spec.timeoutSeconds) * 1000
        ProbeAttempt.run(spec.handler, timeoutMs: timeoutMs, loop: loop, autodetectHTTP2: autodetectHTTP2) {
            [unowned self] ok in
            self.attemptFinished(index, ok: ok, roundStartMs: roundStartMs)
        }
    }

    private func attemptFinished(_ index: Int, ok: Bool, roundStartMs: Int64) {
        let spec = specs[index]
        if ok { consecutive[index] += 1 } else { consecutive[index] = 0 }
        if consecutive[index] >= spec.successThreshold {
            finish(index, true)
        } else if !spec.isAggressive || spec.isUnusable || loop.nowMs - roundStartMs >= Self.aggressiveLimitMs {
            finish(index, false)
        } else {
            let timer = LoopTimer { [unowned self] _ in self.runAttempt(index, roundStartMs: roundStartMs) }
            loop.schedule(timer, at: loop.nowMs + Self.aggressiveIntervalMs)
        }
    }

    private func finish(_ index: Int, _ ok: Bool) {
        roundResults[index] = ok
        guard roundResults.allSatisfy({ $0 != nil }) else { return }
        let ready = roundResults.allSatisfy { $0 == true }
        roundRunning = false
        let pending = waiters
        waiters.removeAll()
        for waiter in pending { waiter(ready) }
    }
}

/// The shared shape of a probe attempt: connect to a loopback address within a deadline, then the subclass
/// talks; exactly one verdict reaches `completion` (on failure, timeout or the loop's drain).
class ProbeConnection: Channel {
    private let completion: (Bool) -> Void
    private var isConnected = false
    private(set) var isDone = false

    init(completion: @escaping (Bool) -> Void) {
        self.completion = completion
    }

    /// Connects to `address`; `connected()` follows once the connection is up.
    final func start(address: SocketAddress, timeoutMs: Int64, loop: EventLoop) {
        do {
            let (fd, connected) = try Socket.connect(to: address)
            try loop.register(self, fd: fd)
            isConnected = connected
            loop.schedule(self, at: loop.nowMs + timeoutMs)
            if connected { self.connected() }
        } catch {
            done(false)
        }
    }

    /// The connection is up: send the request (subclasses).
    func connected() { done(true) }

    /// The socket is readable (subclasses).
    func readable() {}

    final override func handleEvent(_ events: UInt32) {
        guard !isDone else { return }
        if !isConnected {
            if Socket.pendingError(fd) != 0 { return done(false) }
            isConnected = true
            connected()
            return
        }
        readable()
    }

    final override func timerFired(nowMs: Int64) { done(false) }

    /// The loop is draining: end with a verdict, so that the prober's round (and its waiters) completes.
    final override func beginDrain() { done(false) }

    final func done(_ ok: Bool) {
        guard !isDone else { return }
        isDone = true
        close()
        finished()
        completion(ok)
    }

    /// After the verdict, before `completion` (subclasses let go of what they hold).
    func finished() {}
}

/// One probe attempt: a TCP connect, or an HTTP/1.1 GET whose status decides (200 ≤ status < 400), or — for the
/// activator's pod probes — a GET that must answer exactly 200 with a given body.
final class ProbeAttempt: ProbeConnection {
    private let request: [UInt8]?
    private let requiredBody: [UInt8]?
    private var response: [UInt8] = []

    private init(request: [UInt8]?, requiredBody: [UInt8]?, completion: @escaping (Bool) -> Void) {
        self.request = request
        self.requiredBody = requiredBody
        super.init(completion: completion)
    }

    /// A readiness-probe attempt against the user container on 127.0.0.1.
    static func run(
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
    static func run(
        address: SocketAddress, request: [UInt8]?, requiredBody: [UInt8]?, timeoutMs: Int64, loop: EventLoop,
        completion: @escaping (Bool) -> Void
    ) {
        ProbeAttempt(request: request, requiredBody: requiredBody, completion: completion)
            .start(address: address, timeoutMs: timeoutMs, loop: loop)
    }

    override func readable() { readResponse() }

    override func connected() {
        guard let request else { return done(true) }
        let sent = request.withUnsafeBytes { try? Socket.write(fd, from: $0) }
        guard case .processed(let n) = sent, n == request.count else { return done(false) }
        readResponse()
    }

    private func readResponse() {
        var chunk = [UInt8](repeating: 0, count: 1024)
        while true {
            let result = chunk.withUnsafeMutableBytes { try? Socket.read(fd, into: $0) }
            guard let result else { return done(requiredBody == nil ? false : verdict(closed: true) ?? false) }
            switch result {
            case .wouldBlock: return
            case .processed(0): return done(verdict(closed: true) ?? false)
            case .processed(let n):
                response.append(contentsOf: chunk[0..<n])
                if let known = verdict(closed: false) { return done(known) }
                if response.count > 64 * 1024 { return done(false) }
            }
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

    override func readable() { readAndAnswer() }

    override func connected() {
        guard let session else { return done(false) }
        do {
            stream = try session.submitRequest(fields, endStream: body == nil)
            body?.withUnsafeBytes { session.send(stream: stream, $0, end: true) }
        } catch {
            return done(false)
        }
        flush()
        readAndAnswer()
    }

    /// Everything nghttp2 wants to send; the probe's few hundred bytes fit a socket buffer, a short write fails it.
    private func flush() {
        guard let session, !isDone else { return }
        var ok = true
        _ = try? session.writeOutput { bytes in
            guard ok else { return }
            if case .processed(let n)? = try? Socket.write(fd, from: bytes), n == bytes.count { return }
            ok = false
        }
        if !ok { done(false) }
    }

    private func readAndAnswer() {
        guard let session else { return done(false) }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !isDone {
            let result = chunk.withUnsafeMutableBytes { try? Socket.read(fd, into: $0) }
            guard let result else { return done(false) }
            switch result {
            case .wouldBlock:
                return flush()
            case .processed(0):
                return done(false)
            case .processed(let n):
                // The delegate may end the attempt (and drop the loop's reference) inside `receive`.
                let ok = withExtendedLifetime(self) {
                    (try? chunk[0..<n].withUnsafeBytes { try session.receive($0) }) != nil
                }
                if !ok { return done(false) }
                flush()
            }
        }
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
