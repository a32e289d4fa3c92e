// HTTP/2 connections on the loop: a TCP connection carrying an `H2Session`, in the server role (downstream h2c,
// one `H2ProxyStream` per request) or the client role (upstream h2c, streams multiplexed from many requests).
// The session is the codec; these classes move its bytes, keep its callbacks from re-entering it, and route
// its events to streams.
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import Glibc

/// The byte-moving half shared by both roles.
class H2Connection: StreamConnection, H2SessionDelegate {
    @exclusivity(unchecked) var session: H2Session!
    /// Inside `receive` or `writeOutput`: nghttp2 must not be re-entered with `mem_send`, so writes wait.
    @exclusivity(unchecked) private var inSession = false
    @exclusivity(unchecked) private var outputWanted = false
    /// False until the socket may be written (an upstream still connecting): frames stay in the session.
    @exclusivity(unchecked) var writable = true
    /// The socket or the session failed; the connection closes from its timer (outside any caller's stack).
    @exclusivity(unchecked) var failed = false
    @exclusivity(unchecked) private var flushQueued = false
    /// `closeWhenFlushed` was called: the connection ends when its output is written.
    @exclusivity(unchecked) var closing = false

    /// Feeds what the input already holds, then everything the socket has, to the session.
    /// - Returns: false when the peer closed, the socket failed or the peer broke the protocol.
    func receiveAll() -> Bool {
        while true {
            if let buffer = input, !buffer.isEmpty {
                inSession = true
                let ok: Bool
                do {
                    try session.receive(buffer.readable)
                    ok = true
                } catch {
                    Log.debug("h2 protocol error from \(role): \(error)")
                    ok = false  // nghttp2 queued a GOAWAY; `writeNow` sends it before the close
                }
                inSession = false
                buffer.clear()
                if !ok { return false }
            }
            guard canRead else { break }
            let outcome: ReadOutcome
            do { outcome = try readInput(limit: inputBuffer().capacity) } catch { return false }
            switch outcome {
            case .eof: return false
            case .wouldBlock: break
            case .data, .full: continue
            }
            break
        }
        releaseInputIfEmpty()
        return true
    }

    /// The output of a closing connection has left. Default: close.
    func outputDrained() { close() }

    /// Closes once the queued output has left (nghttp2 counts a stream done when its last frame is handed
    /// over, not when it reaches the client), or after `limitMs` for a client that stopped reading.
    func closeWhenFlushed(limitMs: Int64) {
        closing = true
        writeNow()
        if isOpen && hasPendingOutput { loop.schedule(self, at: loop.nowMs + limitMs) }
    }

    /// Asks for the session's frames to be written at the end of this loop pass, so that everything the
    /// pass produces for this connection (many streams' frames) leaves in one write.
    func writeOut() {
        guard !flushQueued, isOpen else { return }
        flushQueued = true
        loop.deferFlush(self)
    }

    override func deferredFlush() {
        flushQueued = false
        writeNow()
    }

    /// Moves the session's frames to the socket as far as it takes them (at most `outputLimit` queued).
    /// Inside a session callback it only notes the wish; the outer call writes.
    func writeNow() {
        if inSession || !writable || !isOpen {
            outputWanted = true
            return
        }
        do {
            while true {
                outputWanted = false
                guard try flush() else { return }  // the socket is full: EPOLLOUT brings us back
                inSession = true
                let n: Int
                do {
                    n = try session.writeOutput(limit: StreamConnection.outputLimit) { outputBuffer().append($0) }
                } catch {
                    inSession = false
                    throw SysError(code: EPROTO, call: "nghttp2_session_mem_send")
                }
                inSession = false
                if n == 0 && !outputWanted { break }
            }
            releaseOutputIfEmpty()
            if closing && !hasPendingOutput { outputDrained() }
        } catch {
            failed = true
            loop.schedule(self, at: loop.nowMs)
        }
    }

    var role: StaticString { "peer" }

    // Delegate defaults; the roles override what they use.
    func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {}
    func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {}
    func h2EndStream(_ session: H2Session, stream: Int32) {}
    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) {}
    func h2DataSent(_ session: H2Session, stream: Int32, count: Int) {}
    func h2DataWanted(_ session: H2Session, stream: Int32) {}
}

/// Response bytes that one loop's upstream h2c streams may make it hold for downstream HTTP/2 streams: the sum
/// of the receive windows granted to them (`H2ProxyStream.grantResponseWindow`). Each downstream connection also
/// has its own share (`H2ServerConnection.responseWindowBudget`), so one client cannot take a loop's all.
final class H2WindowBudget {
    static let perLoop = 16 << 20
    @exclusivity(unchecked) var granted = 0

    static func of(_ loop: EventLoop) -> H2WindowBudget {
        let key = ObjectIdentifier(H2WindowBudget.self)
        if let budget = loop.locals[key] as? H2WindowBudget { return budget }
        let budget = H2WindowBudget()
        loop.locals[key] = budget
        return budget
    }
}

/// A downstream h2c connection: each client stream is a request for the responder.
final class H2ServerConnection: H2Connection {
    let config: ServerConfig
    unowned(unsafe) let responder: HTTPResponder  // lives as long as the listener's loop (as HTTP/1's)
    let peer: SocketAddress
    @exclusivity(unchecked) var streams: [Int32: H2ProxyStream] = [:]
    /// `peer`'s IP as bytes (X-Forwarded-For), taken over from the HTTP/1 connection that made it.
    let peerIP: [UInt8]
    @exclusivity(unchecked) private var sentGoAway = false
    /// Write side shut after the last output; reading until EOF (`outputDrained`).
    @exclusivity(unchecked) private var lingering = false
    /// Go's HTTP/2 server default.
    static let maxConcurrentStreams: UInt32 = 250
    /// Our stream window for clients (RFC 9113's default): what a stream may send before we pass it on, so
    /// also what a waiting stream can make us hold (the activator counts it in its queue's byte budget).
    static let initialWindowSize: UInt32 = 65_535
    /// Most response bytes the upstream streams of this connection's requests may make us hold at once (their
    /// granted windows together); streams beyond it get `H2ProxyStream.minimumResponseWindow`.
    static let responseWindowBudget = 1 << 20
    /// Windows granted to the upstream streams of this connection's requests, in bytes.
    @exclusivity(unchecked) var responseWindows = 0
    @exclusivity(unchecked) private(set) var windowBudget: H2WindowBudget!

    init(config: ServerConfig, responder: HTTPResponder, peer: SocketAddress, peerIP: [UInt8]) {
        self.peerIP = peerIP
        self.config = config
        self.responder = responder
        self.peer = peer
    }

    override var role: StaticString { "client" }

    /// Starts serving on a connection taken over from HTTP/1 (its input may already hold the preface).
    /// `upgrade`: the request of an `Upgrade: h2c`, which becomes stream 1.
    func start(upgrade: (head: [UInt8], settings: [UInt8])?) {
        windowBudget = H2WindowBudget.of(loop)
        do {
            session = try H2Session(
                role: .server, delegate: self, maxConcurrentStreams: Self.maxConcurrentStreams,
                initialWindowSize: Self.initialWindowSize)
            if let upgrade {
                let stream = H2ProxyStream(connection: self, id: 1)
                guard stream.prepare(head: upgrade.head) else {
                    close()
                    return
                }
                try session.upgrade(settings: upgrade.settings, headRequest: stream.head.methodKind == .head)
                streams[1] = stream
                stream.requestComplete = true
                stream.begin()
            }
        } catch {
            Log.debug("h2 session start failed: \(error)")
            close()
            return
        }
        loop.schedule(self, at: loop.nowMs + config.headerTimeoutMs)
        drive()  // the preface (and maybe more) is already in the input
        if isOpen && loop.draining { beginDrain() }
    }

    override func onReadiness() { drive() }

    private func drive() {
        guard isOpen else { return }
        if lingering {
            discardUntilEOF()
            return
        }
        writeNow()
        let alive = receiveAll()
        writeNow()
        if !alive || failed {
            close()
        } else if !session.wantsRead && !session.wantsWrite && !closing {
            closeWhenFlushed(limitMs: config.headerTimeoutMs)  // GOAWAY both ways and no stream left
        }
    }

    override func timerFired(nowMs: Int64) {
        if failed || closing {
            close()  // a failure, the output did not leave in time, or the linger is over
            return
        }
        // The idle timeout (no stream for `headerTimeoutMs`, Go's ReadHeaderTimeout serving as idle timeout as
        // on HTTP/1), or the last stream of a draining connection ended.
        if streams.isEmpty {
            if !sentGoAway { session.goAway() }
            sentGoAway = true
            closeWhenFlushed(limitMs: config.headerTimeoutMs)
        }
    }

    /// Drain: GOAWAY now (no new streams), open streams run to their end, then the connection closes.
    override func beginDrain() {
        guard !closing else { return }  // already on its way out
        if !sentGoAway {
            sentGoAway = true
            session.goAway()
            writeOut()
        }
        if streams.isEmpty { loop.schedule(self, at: loop.nowMs) }
    }

    /// Everything went out: shut our write side and read (and drop) until the client closes or `lingerMs`
    /// passes, as HTTP/1 does. Closing with unread bytes (the client's last WINDOW_UPDATEs) would make the
    /// kernel send a reset, which can destroy the end of the last response on its way.
    override func outputDrained() {
        guard !lingering else { return }
        lingering = true
        Socket.shutdownWrite(fd)
        loop.schedule(self, at: loop.nowMs + config.lingerMs)
        discardUntilEOF()
    }

    private func discardUntilEOF() {
        while canRead {
            let buffer = inputBuffer()
            buffer.clear()
            switch (try? readInput(limit: buffer.capacity)) ?? .eof {
            case .eof:
                close()
                return
            case .wouldBlock:
                return
            case .data, .full:
                continue
            }
        }
    }

    override func didClose() {
        let open = streams
        streams = [:]
        for (_, stream) in open { stream.closed() }
        super.didClose()
    }

    // MARK: - Session events

    override func h2Headers(
        _ session: H2Session, stream id: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool
    ) {
        if isTrailers {
            if block.isTruncated {
                session.reset(stream: id, code: .internalError)  // trailers over our header limit: not passed on cut
            } else {
                streams[id]?.requestEnd(trailers: block.fields)
            }
            return
        }
        guard streams[id] == nil else { return }
        let stream = H2ProxyStream(connection: self, id: id)
        streams[id] = stream
        stream.requestComplete = endStream
        guard stream.prepare(block: block) else { return }  // answered 400/431 already
        stream.begin()
    }

    override func h2Data(_ session: H2Session, stream id: Int32, bytes: UnsafeRawBufferPointer) {
        if let stream = streams[id] {
            stream.requestData(bytes)
        } else {
            session.consume(stream: id, count: bytes.count)
        }
    }

    override func h2EndStream(_ session: H2Session, stream id: Int32) {
        streams[id]?.requestEnd(trailers: nil)
    }

    override func h2StreamClosed(_ session: H2Session, stream id: Int32, errorCode: H2ErrorCode) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        stream.closed()
        if streams.isEmpty {
            loop.schedule(self, at: sentGoAway || loop.draining ? loop.nowMs : loop.nowMs + config.headerTimeoutMs)
        }
    }

    override func h2DataSent(_ session: H2Session, stream id: Int32, count: Int) {
        streams[id]?.responsePulled(count)
    }

    override func h2DataWanted(_ session: H2Session, stream id: Int32) {
        streams[id]?.responseWanted()
    }
}

/// An upstream h2c connection, shared by the streams of one pool on one loop (Go's transport multiplexes the
/// same way: one connection per host until its stream limit).
final class H2UpstreamConnection: H2Connection {
    /// Strong, as for `UpstreamConnection`: the cycle through `pool.h2Connections` breaks when this closes.
    let pool: UpstreamPool
    @exclusivity(unchecked) var streams: [Int32: H2UpstreamStream] = [:]
    @exclusivity(unchecked) private var connectError: SysError?
    /// Scratch for building request header blocks (reused: no allocation per request once warm).
    @exclusivity(unchecked) var requestFields = H2HeaderList()

    init(pool: UpstreamPool) throws(SysError) {
        self.pool = pool
        super.init()
        // Windows start at zero: each stream's owner grants what it can hold (`H2Session.setWindow`), so a
        // stream whose client does not read makes us hold nothing, not a default 64 KiB each.
        do { session = try H2Session(role: .client, delegate: self, initialWindowSize: 0) } catch {
            throw SysError(code: ENOMEM, call: "nghttp2_session_client_new")
        }
    }

    override var role: StaticString { "upstream" }

    /// Opens a stream for `stream` with the header block in `requestFields`. - Returns: the upstream stream id.
    func open(_ stream: H2UpstreamStream, endStream: Bool) throws(H2Error) -> Int32 {
        try open(stream, fields: requestFields, endStream: endStream)
    }

    /// Opens a stream for `stream` with the header block `fields`. - Returns: the upstream stream id.
    func open(_ stream: H2UpstreamStream, fields: H2HeaderList, endStream: Bool) throws(H2Error) -> Int32 {
        let id = try session.submitRequest(fields, endStream: endStream)
        streams[id] = stream
        return id
    }

    /// A stream detached itself (its client left or timed out).
    func forget(_ id: Int32, reset: Bool) {
        guard streams.removeValue(forKey: id) != nil else { return }
        if reset { session.reset(stream: id, code: .cancel) }  // CANCEL
        writeOut()
        if streams.isEmpty { armIdle() }
    }

    var canTakeStream: Bool { isOpen && !failed && session.canOpenStream && !pool.isRetired }

    /// Closes the connection once it has had no stream for the pool's idle timeout (at once while draining).
    func armIdle() {
        loop.schedule(self, at: loop.draining || pool.isRetired ? loop.nowMs : loop.nowMs + pool.config.idleTimeoutMs)
    }

    override func onReadiness() {
        if !writable {
            guard canWrite || canRead else { return }
            let code = Socket.pendingError(fd)
            if code != 0 {
                connectError = SysError(code: code, call: "connect")
                close()
                return
            }
            writable = true
            canWrite = true
        }
        writeNow()
        let alive = receiveAll()
        writeNow()
        if !alive || failed || (!session.wantsRead && !session.wantsWrite) { close() }
    }

    override func timerFired(nowMs: Int64) {
        if failed || streams.isEmpty { close() }
    }

    override func beginDrain() {
        if streams.isEmpty { close() }
    }

    override func didClose() {
        pool.removeH2(self)
        let open = streams
        streams = [:]
        let error: ProxyError = connectError.map { .connect($0) } ?? .upstreamClosed
        for (_, stream) in open.sorted(by: { $0.key < $1.key }) { stream.upstreamFailed(error) }
        super.didClose()
    }

    // MARK: - Session events

    override func h2Headers(
        _ session: H2Session, stream id: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool
    ) {
        streams[id]?.upstreamHeaders(block, isTrailers: isTrailers, endStream: endStream)
    }

    override func h2Data(_ session: H2Session, stream id: Int32, bytes: UnsafeRawBufferPointer) {
        if let stream = streams[id] {
            stream.upstreamData(bytes)
        } else {
            session.consume(stream: id, count: bytes.count)
        }
    }

    override func h2EndStream(_ session: H2Session, stream id: Int32) {
        streams[id]?.upstreamEnd()
    }

    override func h2StreamClosed(_ session: H2Session, stream id: Int32, errorCode: H2ErrorCode) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        stream.upstreamClosed(errorCode)
        if streams.isEmpty { armIdle() }
    }

    override func h2DataSent(_ session: H2Session, stream id: Int32, count: Int) {
        streams[id]?.requestPulled(count)
    }
}

extension UpstreamPool {
    /// An h2c connection with room for one more stream, or a new one (connecting).
    func acquireH2() throws(SysError) -> H2UpstreamConnection {
        for connection in h2Connections where connection.canTakeStream { return connection }
        let (fd, isConnected) = try Socket.connect(to: config.address)
        let connection: H2UpstreamConnection
        do { connection = try H2UpstreamConnection(pool: self) } catch {
            closeDescriptor(fd)
            throw error
        }
        connection.writable = isConnected
        connection.canWrite = isConnected
        try loop.register(connection, fd: fd)
        h2Connections.append(connection)
        return connection
    }

    func removeH2(_ connection: H2UpstreamConnection) {
        if let index = h2Connections.firstIndex(where: { $0 === connection }) { h2Connections.remove(at: index) }
    }
}
