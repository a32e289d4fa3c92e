// The engine's client side for code that is not a proxy exchange: probes, the activator's websocket to the
// autoscaler, kn-local's calls to the processes it runs. Two flavours over the same `Socket` calls:
// - `ClientConnection`: a non-blocking connection on a loop. It connects within an optional deadline, queues
//   what its owner sends, hands received bytes to a delegate and reports exactly one ending.
// - `BlockingClient`: one request on a blocking socket, bounded as a whole, for threads that have no loop (kn-local).
// Responses are read with `ResponseHead`, the engine's one client-side response parser.
import Glibc

/// What a `ClientConnection` reports to its owner. Every call runs on the connection's loop.
public protocol ClientConnectionDelegate: AnyObject {
    /// The connection is up: the owner may send.
    func clientConnected(_ connection: ClientConnection)
    /// Bytes arrived; the view is valid only during the call. The owner may send, or `close()`, from here.
    func clientReceived(_ connection: ClientConnection, _ bytes: UnsafeRawBufferPointer)
    /// The connection ended and its socket is closed. Called exactly once, unless the owner called `close()`.
    func clientEnded(_ connection: ClientConnection, _ ending: ClientConnection.Ending)
}

/// A non-blocking client connection on one loop.
///
/// Ownership: while the connection is open, the loop holds it (its registration) and it holds its delegate;
/// on any ending it lets the delegate go, so an owner that keeps its connection forms no lasting cycle.
public final class ClientConnection: Channel {
    /// Why a connection ended.
    public enum Ending: Equatable, Sendable {
        /// The connect failed (`errno`).
        case connectFailed(Int32)
        /// The peer closed its side (a read returned 0).
        case peerClosed
        /// A read or write failed (`errno`).
        case failed(Int32)
        /// The deadline given to `connect` passed.
        case deadline
        /// The loop is draining.
        case draining
    }

    private var delegate: ClientConnectionDelegate?
    private var isConnected = false
    private var outbound: [UInt8] = []
    /// Bytes of `outbound` already written: the array is compacted only once half of it is, so a slow peer's
    /// long queue is not shifted on every partial write.
    private var outboundWritten = 0
    private static let readChunk = 16 * 1024

    private init(delegate: ClientConnectionDelegate) {
        self.delegate = delegate
    }

    /// Starts connecting to `address` on `loop`. `clientConnected` follows (possibly before this returns, on
    /// loopback); a connect that fails at once ends the connection before this returns.
    /// - Parameter deadlineMs: loop time by which the whole exchange must be over (nil: none).
    @discardableResult
    public static func connect(
        to address: SocketAddress, on loop: EventLoop, deadlineMs: Int64? = nil, delegate: ClientConnectionDelegate
    ) -> ClientConnection {
        let connection = ClientConnection(delegate: delegate)
        do {
            let (fd, connected) = try Socket.connect(to: address)
            try loop.register(connection, fd: fd)  // closes the descriptor when it fails
            if let deadlineMs { loop.schedule(connection, at: deadlineMs) }
            if connected { connection.becameConnected() }
        } catch {
            connection.close()
            delegate.clientEnded(connection, .connectFailed(error.code))
        }
        return connection
    }

    /// Queues `bytes` and writes what the socket takes now; the rest goes when it is writable.
    public func send(_ bytes: UnsafeRawBufferPointer) {
        guard isOpen else { return }
        outbound.append(contentsOf: bytes)
        if isConnected { flush() }
    }

    public func send(_ bytes: [UInt8]) { bytes.withUnsafeBytes { send($0) } }

    /// Bytes queued but not yet written.
    public var unsentCount: Int { outbound.count - outboundWritten }

    /// Moves the deadline (loop time, ms), or removes it (nil): a long-lived connection bounds only its set-up.
    public func setDeadline(atMs deadlineMs: Int64?) {
        guard isOpen else { return }
        if let deadlineMs { loop.schedule(self, at: deadlineMs) } else { loop.cancel(self) }
    }

    override func handleEvent(_ events: UInt32) {
        if !isConnected {
            let code = Socket.pendingError(fd)
            if code != 0 { return end(.connectFailed(code)) }
            becameConnected()
            guard isOpen else { return }
        }
        flush()
        guard isOpen else { return }
        readAvailable()
    }

    override func timerFired(nowMs: Int64) { end(.deadline) }

    override func beginDrain() { end(.draining) }

    /// Closes the socket. The delegate hears nothing more (it asked for this).
    public override func close() {
        delegate = nil
        super.close()
    }

    private func becameConnected() {
        isConnected = true
        delegate?.clientConnected(self)
        if isOpen { flush() }
    }

    private func flush() {
        guard unsentCount > 0 else { return }
        let result = outbound.withUnsafeBytes { bytes in
            Result { () throws(SysError) in
                try Socket.write(fd, from: UnsafeRawBufferPointer(rebasing: bytes[outboundWritten...]))
            }
        }
        switch result {
        case .failure(let error): end(.failed(error.code))
        case .success(.processed(let n)):
            outboundWritten += n
            if outboundWritten == outbound.count {
                outbound.removeAll(keepingCapacity: outbound.capacity <= 64 * 1024)  // a burst's buffer goes back
                outboundWritten = 0
            } else if outboundWritten > outbound.count / 2 {
                outbound.removeFirst(outboundWritten)
                outboundWritten = 0
            }
        case .success(.wouldBlock): break
        }
    }

    private func readAvailable() {
        // One chunk per connection on the stack of this call: these connections are few (probes, one websocket).
        withUnsafeTemporaryAllocation(byteCount: Self.readChunk, alignment: 1) { chunk in
            while isOpen {
                switch Result(catching: { () throws(SysError) in try Socket.read(fd, into: chunk) }) {
                case .failure(let error): return end(.failed(error.code))
                case .success(.wouldBlock): return
                case .success(.processed(0)): return end(.peerClosed)
                case .success(.processed(let n)):
                    // The delegate may close us, and drop its reference to us, inside the call.
                    withExtendedLifetime(self) {
                        delegate?.clientReceived(self, UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
                    }
                }
            }
        }
    }

    private func end(_ ending: Ending) {
        let delegate = self.delegate
        close()  // also cancels the deadline
        delegate?.clientEnded(self, ending)
    }
}

/// One HTTP/1.1 request on a blocking socket (kn-local's threads talk to the processes it runs this way).
public enum BlockingClient {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        /// The connect was refused (nothing listens yet): callers that wait for a process retry on this.
        public let refused: Bool
    }

    /// Sends one request with `Connection: close` and reads the response until the server closes.
    /// `timeoutMs` bounds the connect and each send, and the response as a whole (a server that drips bytes
    /// cannot hold the caller longer); `maxBytes` bounds the response.
    public static func request(
        _ method: String, _ address: SocketAddress, _ target: String, headers: [(String, String)] = [],
        body: [UInt8] = [], timeoutMs: Int = 3000, maxBytes: Int = 4 << 20
    ) throws(Failure) -> Response {
        let fd = try connect(address, timeoutMs: timeoutMs)
        defer { closeDescriptor(fd) }
        let deadlineMs = monotonicMs() + Int64(timeoutMs)
        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "PUT" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try sendAll(fd, Array(head.utf8) + body)
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while data.count <= maxBytes {
            let remainingMs = deadlineMs - monotonicMs()
            guard remainingMs > 0 else {
                throw Failure(description: "read from \(address): i/o timeout", refused: false)
            }
            var tv = timeval(tv_sec: Int(remainingMs / 1000), tv_usec: Int(remainingMs % 1000) * 1000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let result = chunk.withUnsafeMutableBytes { bytes in
                Result { () throws(SysError) in try Socket.read(fd, into: bytes) }
            }
            if case .failure(let error) = result {
                throw Failure(description: "read from \(address): \(SysError.text(error.code))", refused: false)
            }
            guard case .success(.processed(let n)) = result else {
                // A blocking socket reports EAGAIN only when SO_RCVTIMEO expired.
                throw Failure(description: "read from \(address): i/o timeout", refused: false)
            }
            if n == 0 { break }
            data += chunk[0..<n]
        }
        return try parse(data, from: address)
    }

    /// A connected blocking socket with send and receive timeouts.
    public static func connect(_ address: SocketAddress, timeoutMs: Int) throws(Failure) -> Int32 {
        do {
            return try Socket.connectBlocking(to: address, timeoutMs: timeoutMs)
        } catch {
            throw Failure(
                description: "dial tcp \(address): connect: \(SysError.text(error.code))",
                refused: error.code == ECONNREFUSED)
        }
    }

    public static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws(Failure) {
        var offset = 0
        while offset < bytes.count {
            let result = bytes[offset...].withUnsafeBytes { part in
                Result { () throws(SysError) in try Socket.write(fd, from: part) }
            }
            if case .failure(let error) = result {
                throw Failure(description: "write: \(SysError.text(error.code))", refused: false)
            }
            guard case .success(.processed(let n)) = result else {
                throw Failure(description: "write: i/o timeout", refused: false)
            }
            offset += n
        }
    }

    static func parse(_ data: [UInt8], from address: SocketAddress) throws(Failure) -> Response {
        let parsed: ResponseHead?
        do { parsed = try ResponseHead.parse(data) } catch {
            throw Failure(description: "malformed HTTP response from \(address): \(error)", refused: false)
        }
        guard let head = parsed, let body = head.body(in: data) else {
            throw Failure(description: "incomplete HTTP response from \(address)", refused: false)
        }
        return Response(status: head.status, headers: head.fields.map { ($0.name, $0.value) }, body: body)
    }
}
