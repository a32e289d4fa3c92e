import Glibc
import KnativeWire
// A minimal RFC 6455 client for the activator → autoscaler stats stream: handshake, masked binary frames
// out, pings answered, reconnect with back-off (100 ms × 1.3, capped at 5 s) when the connection drops. A
// host name is looked up (getaddrinfo, off the loop: `HostResolver`) before every dial.
import ProxyCore

public final class WebSocketClient: ClientConnectionDelegate {
    enum State { case idle, connecting, handshaking, open }

    // The loop runs for the process's life and outlives this client; the client holds its connection.
    private unowned(unsafe) var loop: EventLoop!
    private var connection: ClientConnection?

    /// The autoscaler's host (a name or an IP literal) and port; a name is resolved again for every dial.
    let host: String
    let port: UInt16
    /// The address dialled last (the host's first address), for error texts.
    private var address: String
    let hostHeader: String
    let path: String
    private var state = State.idle
    private var key = ""
    private var inbound: [UInt8] = []
    private var backoffMs: Int64 = 100
    private var reconnectTimer: LoopTimer?
    /// Called when the connection opens or closes.
    var onStateChange: (Bool) -> Void = { _ in }
    /// Why the connection is not open, for the log (e.g. `dial tcp 127.0.0.1:8080: connect: connection refused`).
    /// The activator's health answer does not show it: upstream always says `connection has not yet been
    /// established` there.
    public private(set) var lastError = "connection has not yet been established"
    public var isEstablished: Bool { state == .open }
    static let handshakeTimeoutMs: Int64 = 5_000
    static let maxQueuedBytes = 1 << 20

    /// Parses `ws://host[:port][/path]`: host is an IP literal (`[v6]` in brackets) or a DNS name.
    public init?(url: String) {
        guard url.hasPrefix("ws://") else { return nil }
        let rest = url.dropFirst(5)
        let hostPort = rest.prefix { $0 != "/" }
        let pathPart = rest.dropFirst(hostPort.count)
        guard let (host, port) = Self.splitHostPort(hostPort, defaultPort: 80) else { return nil }
        self.host = host
        self.port = port
        address = "\(hostPort)"
        hostHeader = String(hostPort)
        path = pathPart.isEmpty ? "/" : String(pathPart)
    }

    /// `host[:port]` → host and port; host an IP literal (`[v6]`) or a DNS-1123 subdomain. - Returns: nil if malformed.
    public static func splitHostPort(_ text: Substring, defaultPort: UInt16) -> (String, UInt16)? {
        var host = text
        var port = defaultPort
        if let colon = text.lastIndex(of: ":"), !text.hasSuffix("]") {
            guard let p = UInt16(text[text.index(after: colon)...]), p > 0 else { return nil }
            port = p
            host = text[..<colon]
        }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            let inner = String(host.dropFirst().dropLast())
            return SocketAddress(ip: inner, port: port) == nil ? nil : (inner, port)
        }
        let name = String(host)
        guard !name.isEmpty, SocketAddress(ip: name, port: port) != nil || DNSName.dns1123SubdomainProblem(name) == nil
        else { return nil }
        return (name, port)
    }

    /// Starts connecting on `loop` (and keeps reconnecting).
    public func start(on loop: EventLoop) {
        self.loop = loop
        connect()
    }

    private func connect() {
        state = .connecting
        inbound.removeAll()
        // A name is looked up again for every dial (the autoscaler's Service may move), off the loop.
        HostResolver.resolve(host, port: port, on: loop) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let error):
                // Logged when it changes (the health check's own log line is rate-limited process-wide).
                if self.lastError != "dial tcp: \(error)" { Log.warn("autoscaler websocket: dial tcp: \(error)") }
                self.lastError = "dial tcp: \(error)"
                self.closed()
            case .success(let addresses):
                self.address = addresses[0].description
                self.dial(addresses[0])
            }
        }
    }

    private func dial(_ target: SocketAddress) {
        // The connect and the handshake must be done within 5 s (an autoscaler that accepts and never answers
        // would hold us forever); the open connection then has no deadline.
        let connection = ClientConnection.connect(
            to: target, on: loop, deadlineMs: loop.nowMs + Self.handshakeTimeoutMs, delegate: self)
        if state != .idle { self.connection = connection }  // else it ended before `connect` returned
    }

    private func scheduleReconnect() {
        state = .idle
        let timer = reconnectTimer ?? LoopTimer { [unowned self] _ in self.connect() }
        reconnectTimer = timer
        loop.schedule(timer, at: loop.nowMs + backoffMs)
        backoffMs = min(backoffMs * 13 / 10, 5_000)
    }

    private func sendHandshake() {
        state = .handshaking
        var nonce = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { nonce[i] = UInt8.random(in: 0...255) }
        key = Base64.encode(nonce)
        let request =
            "GET \(path) HTTP/1.1\r\nHost: \(hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        write(Array(request.utf8))
    }

    public func clientConnected(_ connection: ClientConnection) {
        self.connection = connection  // `connect` may report before it returns
        sendHandshake()
    }

    public func clientReceived(_ connection: ClientConnection, _ bytes: UnsafeRawBufferPointer) {
        inbound.append(contentsOf: bytes)
        processInbound()
    }

    public func clientEnded(_ connection: ClientConnection, _ ending: ClientConnection.Ending) {
        switch ending {
        case .connectFailed(let code): lastError = "dial tcp \(address): connect: \(SysError.text(code))"
        case .failed(let code): lastError = "connection to the autoscaler failed: \(SysError.text(code))"
        case .deadline: lastError = "websocket handshake with \(address) timed out"
        default: lastError = "connection closed by the autoscaler"
        }
        closed()
    }

    /// Drops the connection (the owner of the protocol decided); the client reconnects.
    private func close() {
        connection?.close()
        closed()
    }

    private func processInbound() {
        if state == .handshaking {
            let parsed: ResponseHead?
            do { parsed = try ResponseHead.parse(inbound) } catch {
                lastError = "websocket handshake failed: malformed response (\(error))"
                return close()
            }
            guard let head = parsed else { return }
            inbound.removeFirst(head.length)
            guard head.status == 101, head.value("Sec-WebSocket-Accept") == webSocketAccept(key: key) else {
                lastError = "websocket handshake failed"
                return close()
            }
            state = .open
            connection?.setDeadline(atMs: nil)
            backoffMs = 100
            onStateChange(true)
        }
        // Frames from the server: answer pings, honour close, ignore the rest.
        while inbound.count >= 2 {
            let opcode = inbound[0] & 0x0F
            var length = Int(inbound[1] & 0x7F)
            let masked = inbound[1] & 0x80 != 0
            var offset = 2
            if length == 126 {
                guard inbound.count >= 4 else { return }
                length = Int(inbound[2]) << 8 | Int(inbound[3])
                offset = 4
            } else if length == 127 {
                guard inbound.count >= 10 else { return }
                length = (2..<10).reduce(0) { $0 << 8 | Int(inbound[$1]) }
                offset = 10
            }
            if masked { offset += 4 }
            guard inbound.count >= offset + length else { return }
            var payload = Array(inbound[offset..<(offset + length)])
            if masked {
                let mask = Array(inbound[(offset - 4)..<offset])
                for i in payload.indices { payload[i] ^= mask[i & 3] }
            }
            inbound.removeFirst(offset + length)
            switch opcode {
            case 0x9: write(frame(opcode: 0xA, payload: payload))
            case 0x8:
                lastError = "connection closed by the autoscaler"
                return close()
            default: break
            }
        }
    }

    /// Sends one binary message. - Returns: false when not connected (the message is dropped, as upstream does).
    @discardableResult
    public func sendBinary(_ payload: [UInt8]) -> Bool {
        // An autoscaler that stops reading: messages are dropped beyond 1 MiB queued (the next 1 s report
        // says it again), so memory stays bounded.
        guard isEstablished, (connection?.unsentCount ?? 0) < Self.maxQueuedBytes else { return false }
        write(frame(opcode: 0x2, payload: payload))
        return true
    }

    private func frame(opcode: UInt8, payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            out.append(0x80 | UInt8(payload.count))
        } else if payload.count < 65536 {
            out += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: payload.count >> shift))
            }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        out += mask
        for (i, byte) in payload.enumerated() { out.append(byte ^ mask[i & 3]) }
        return out
    }

    private func write(_ bytes: [UInt8]) { connection?.send(bytes) }

    private func closed() {
        connection = nil
        let wasOpen = state == .open
        state = .idle
        if wasOpen { onStateChange(false) }
        if !loop.draining { scheduleReconnect() }
    }
}
