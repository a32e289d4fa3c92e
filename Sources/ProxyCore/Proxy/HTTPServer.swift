// The server side: a listener per loop and the HTTP/1 downstream connection. The connection parses heads and
// asks its responder what to do; it answers locally or hands the request to a `ProxyExchange`.
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import Glibc

/// Server settings (immutable, shared by every loop).
public struct ServerConfig: Sendable {
    /// Longest request head (start line + fields) before 431.
    public var maxHeadLength = 64 * 1024
    /// On a drain, how long an upgraded connection (websocket tunnel) may go on (Knative: 60 s).
    public var tunnelDrainGraceMs: Int64 = 60_000
    /// Longest body a body-collecting responder accepts (413 beyond).
    public var maxBodyBytes = 1024 * 1024
    /// Time allowed for a request head to arrive, and for a keep-alive connection to sit idle (Go's
    /// ReadHeaderTimeout 60 s, which Go also uses as the idle timeout when none is set).
    public var headerTimeoutMs: Int64 = 60_000
    /// After a response that closes the connection, how long we keep reading (and discarding) before the final
    /// close, so that unread request bytes do not turn our close into a reset that destroys the response.
    public var lingerMs: Int64 = 1_000
    /// Serve h2c on the same port (prior knowledge and `Upgrade: h2c`, spec §1.2): the data ports do, admin
    /// and metrics ports (HTTP/1.1 only upstream) do not.
    public var acceptsH2c = false

    public init() {}
}

/// What the server does with a request: answer it here, proxy it, or decide later.
public enum Disposition {
    case respond(LocalResponse)
    case proxy(UpstreamPool, ProxyOptions = ProxyOptions())
    /// The responder keeps the `RequestHandle` and calls `resume` later (a probe round, a breaker queue).
    /// The request's head stays parsed and untouched meanwhile.
    case pending
}

/// Per-request scratch space a responder may use between `dispose` and `requestEnded`.
public struct RequestContext {
    /// Responder-defined flags (e.g. "counted in stats", "holds a breaker slot").
    public var flags: UInt32 = 0
    /// When the head was parsed (loop time, ms).
    public var startMs: Int64 = 0
    /// When the request got past any queueing (loop time, ms): latency figures start here.
    public var admittedMs: Int64 = 0
    /// Proxy settings kept for a request that waits (`.pending`) before it is proxied.
    public var options = ProxyOptions()
    /// A per-request number, unique on its connection (queue entries check it).
    public var ticket: UInt64 = 0
    /// The responder's own state for this request (see `RequestState`).
    public var state: (any RequestState)? = nil

    public init() {}

    /// The responder's state as the one type that responder declared (nil when none was set).
    @inline(__always)
    public func state<State: RequestState>(as type: State.Type) -> State? { state as? State }
}

/// What a responder keeps per request between `dispose` and `requestEnded`: each responder declares one type,
/// usually an enum of the request's phases (the queue-proxy: its route tag or request-log entry; the activator:
/// the revision it waits on, or the pod it holds).
///
/// Why an existential and not a generic parameter: connections and HTTP/2 streams hold their responder as
/// `any HTTPResponder` (each listener has its own), so a generic state type would make every connection type
/// generic and specialise the engine per product for one word of state. An enum whose payload is a class
/// reference or two words fits the existential's inline buffer, so storing it does not allocate; reading it
/// back is one checked cast to the responder's own type (`RequestContext.state(as:)`), as NIO's
/// `unwrapInboundIn` is.
public protocol RequestState {}

/// The server's side of one request, as the responder may hold it.
public protocol RequestHandle: AnyObject {
    /// Continues a request that was answered `.pending`. Ignored when it is no longer pending.
    func resume(_ disposition: Disposition)
    /// For a pending request: when `HTTPResponder.pendingExpired` is due (loop time, ms).
    func armDeadline(atMs: Int64)
    var context: RequestContext { get set }
    var isPending: Bool { get }
}

/// The request as the responder sees it: a view valid only during the `dispose` call.
public struct RequestView {
    public let bytes: UnsafeRawBufferPointer
    public let head: HTTPHead
    public let peer: SocketAddress
    public let handle: RequestHandle
    /// The whole body, for responders that collect bodies (`collectsBodies`); empty otherwise.
    public var body: [UInt8] = []
    /// Body bytes the server may hold in memory for this request while it is pending: 0 on HTTP/1 (the body
    /// waits in the socket), up to one stream window on HTTP/2 (DATA arrives whether or not it is read).
    public var pendingBodyLimit = 0

    /// The value range of the first field called `name` (lower-case literal), if any.
    public func value(of name: StaticString) -> Range<Int>? {
        for field in head.fields where HTTP1Parser.equalsLower(bytes, field.name, name) { return field.value }
        return nil
    }

    /// Bytes as a String (allocates: not for the hot path).
    public func string(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }
}

/// Decides per request. Runs on the loop thread; one instance per loop (or per listener).
public protocol HTTPResponder: AnyObject {
    func dispose(_ request: RequestView) -> Disposition
    /// A pending request's deadline (`armDeadline`) passed. The responder must resume it (or it stays pending).
    func pendingExpired(_ request: RequestHandle)
    /// A pending request's client went away; the connection closes after this returns.
    func pendingCancelled(_ request: RequestHandle)
    /// Every request that got a disposition ends here exactly once: answered, proxied (complete or failed),
    /// or abandoned. `status` 0 = no response was sent (client gone).
    func requestEnded(_ request: RequestHandle, status: Int, responseBytes: Int)
    /// Connecting to `pool` failed before anything was sent. Return another disposition to try instead
    /// (another upstream, or `.pending`), or nil for the 502.
    func connectFailed(_ request: RequestHandle, pool: UpstreamPool) -> Disposition?
    /// Like `connectFailed`, for a connect that failed later (the request is replayed whole): another pool, or nil.
    func alternativePool(for request: RequestHandle, after pool: UpstreamPool) -> UpstreamPool?
    /// Whether `dispose` needs the request body (collected whole, up to `maxBodyBytes`, into `RequestView.body`).
    var collectsBodies: Bool { get }
}

extension HTTPResponder {
    public func pendingExpired(_ request: RequestHandle) {
        request.resume(.respond(TimeoutRule.gatewayTimeout(request.context.options.timeoutMessage)))
    }
    public func pendingCancelled(_ request: RequestHandle) {}
    public func requestEnded(_ request: RequestHandle, status: Int, responseBytes: Int) {}
    public func connectFailed(_ request: RequestHandle, pool: UpstreamPool) -> Disposition? { nil }
    public func alternativePool(for request: RequestHandle, after pool: UpstreamPool) -> UpstreamPool? { nil }
    public var collectsBodies: Bool { false }
}

/// Opens listeners and accepts connections on one loop.
public enum HTTPServer {
    /// Listens on `address`. With `sharedAcrossLoops`, SO_REUSEPORT lets every loop of a group call this for
    /// the same port; without it (one loop, the default) a port that is already taken fails with EADDRINUSE,
    /// as it should: SO_REUSEPORT would let a second process of the same user silently share the port.
    /// - Returns: the bound address (port 0 becomes the kernel's choice).
    @discardableResult
    public static func listen(
        on address: SocketAddress, loop: EventLoop, config: ServerConfig, responder: HTTPResponder,
        sharedAcrossLoops: Bool = false
    ) throws(SysError) -> SocketAddress {
        let fd = try Socket.listen(on: address, reusePort: sharedAcrossLoops)
        let listener = Listener(config: config, responder: responder)
        try loop.register(listener, fd: fd, edgeTriggered: false)
        return try Socket.localAddress(fd)
    }
}

/// A listening socket. Level-triggered: whatever is left in the accept queue is reported again next pass.
final class Listener: Channel {
    let config: ServerConfig
    let responder: HTTPResponder

    init(config: ServerConfig, responder: HTTPResponder) {
        self.config = config
        self.responder = responder
    }

    override func timerFired(nowMs: Int64) {
        loop.setReadInterest(self, true)
    }

    override func handleEvent(_ events: UInt32) {
        // Accept a bounded batch per pass so one busy listener cannot starve established connections.
        for _ in 0..<64 {
            let result: IOResult<(Int32, SocketAddress)>
            do {
                result = try Socket.accept(fd)
            } catch {
                // EMFILE/ENFILE/ENOBUFS/ENOMEM: the pending connections stay queued. Pause accepting for 100 ms
                // (level-triggered, the listener would otherwise spin the loop). Other errors (a connection
                // reset while queued, EPROTO…) concern one connection only: go on with the next.
                let exhausted = [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.code)
                Log.rateLimited("accept failed: \(error)\(exhausted ? "; pausing accepts for 100 ms" : "")")
                guard exhausted else { continue }
                loop.setReadInterest(self, false)
                loop.schedule(self, at: loop.nowMs + 100)
                return
            }
            guard case .processed(let (newFD, peer)) = result else { return }
            try? Socket.setOption(newFD, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let connection = HTTP1ServerConnection(config: config, responder: responder, peer: peer)
            do {
                try loop.register(connection, fd: newFD)
            } catch {
                Log.rateLimited("register failed: \(error)")
                continue
            }
            connection.start()
        }
    }
}

/// One downstream HTTP/1 connection.
///
/// | state        | meaning                                   | leaves when                                  |
/// |--------------|-------------------------------------------|----------------------------------------------|
/// | `.head`      | waiting for (the rest of) a request head  | a head parsed → `.exchange` / `.discarding`  |
/// | `.pending`   | the responder decides later               | `resume` → `.exchange` / `.discarding`       |
/// | `.exchange`  | a proxied request is in flight            | the exchange ends → `.head` or `.closing`    |
/// | `.discarding`| answered locally; skipping the req. body  | body skipped → `.head`                       |
/// | `.closing`   | flushing the last response                | flushed → `.lingering`                       |
/// | `.lingering` | write side shut; reading to EOF           | EOF or `lingerMs` → closed                   |
final class HTTP1ServerConnection: StreamConnection, RequestHandle {
    enum State { case head, pending, exchange, discarding, closing, lingering }

    let config: ServerConfig
    unowned(unsafe) let responder: HTTPResponder  // lives as long as the listener's loop
    /// The head's length while a body is being collected for the responder.
    @exclusivity(unchecked) private var collectingHeadLength = 0
    let peer: SocketAddress
    @exclusivity(unchecked) var state = State.head
    @exclusivity(unchecked) var parser: HTTP1Parser
    @exclusivity(unchecked) var head = HTTPHead()
    /// The running exchange, by upstream kind (an h2c-only upstream takes the bridge).
    private enum ActiveExchange {
        case none
        case http1(ProxyExchange)
        case h2c(H1ToH2Bridge)
    }
    @exclusivity(unchecked) private var active = ActiveExchange.none
    /// The HTTP/1 exchange object, kept from request to request (the common case allocates nothing).
    @exclusivity(unchecked) private var http1Exchange: ProxyExchange?
    @exclusivity(unchecked) private var isDriving = false
    /// Body skipping after a local answer.
    @exclusivity(unchecked) private var discarded = BodyMeter()
    @exclusivity(unchecked) var context = RequestContext()
    /// Length of the head at the front of the input while `.pending`.
    @exclusivity(unchecked) private var pendingHeadLength = 0
    @exclusivity(unchecked) private var pendingDeadlineMs = Int64.max
    /// Whether the current request still owes the responder its `requestEnded` call.
    @exclusivity(unchecked) private var owesEnd = false
    /// `peer`'s IP as bytes, made on first use (X-Forwarded-For).
    @exclusivity(unchecked) private var peerIPBytes: [UInt8]?

    init(config: ServerConfig, responder: HTTPResponder, peer: SocketAddress) {
        self.config = config
        self.responder = responder
        self.peer = peer
        parser = HTTP1Parser(maxHeadLength: config.maxHeadLength)
    }

    func start() {
        loop.schedule(self, at: loop.nowMs + config.headerTimeoutMs)
        drive()
    }

    var peerIP: [UInt8] {
        if let bytes = peerIPBytes { return bytes }
        let bytes = Array(peer.ipString.utf8)
        peerIPBytes = bytes
        return bytes
    }

    override func onReadiness() { drive() }

    override func timerFired(nowMs: Int64) {
        switch state {
        case .head, .closing, .lingering, .discarding:
            close()  // header/idle timeout, or the linger ran out
        case .pending:
            if nowMs >= pendingDeadlineMs {
                pendingDeadlineMs = .max
                responder.pendingExpired(self)
            } else {
                loop.schedule(self, at: pendingDeadlineMs)
            }
        case .exchange:
            switch active {
            case .http1(let exchange): exchange.downstreamTimerFired()
            case .h2c(let bridge): bridge.downstreamTimerFired()
            case .none: break
            }
        }
    }

    override func beginDrain() {
        switch state {
        case .head:
            if (input?.isEmpty ?? true) && !hasPendingOutput { close() }
        case .exchange:
            // Only tunnels care, and tunnels never take the h2c bridge.
            if case .http1(let exchange) = active { exchange.drainStarted() }
        default:
            break  // the current request finishes; the keep-alive decision sees `loop.draining`
        }
    }

    override func didClose() {
        switch state {
        case .exchange:
            switch active {
            case .http1(let exchange): exchange.downstreamClosed()
            case .h2c(let bridge): bridge.downstreamClosed()
            case .none: break
            }
            active = .none
        case .pending: responder.pendingCancelled(self)
        default: break
        }
        endRequest(status: 0, responseBytes: 0)
        super.didClose()
    }

    /// Tells the responder the current request is over (once).
    func endRequest(status: Int, responseBytes: Int) {
        guard owesEnd else { return }
        owesEnd = false
        responder.requestEnded(self, status: status, responseBytes: responseBytes)
    }

    // MARK: - RequestHandle

    var isPending: Bool { state == .pending }

    func armDeadline(atMs: Int64) {
        pendingDeadlineMs = atMs
        loop.schedule(self, at: atMs)
    }

    func resume(_ disposition: Disposition) {
        guard state == .pending, var buffer = input else { return }
        if buffer.capacity < loop.buffers.bufferSize && buffer.readableCount <= loop.buffers.bufferSize {
            // Back to a pooled buffer: the body that follows is read in full-size pieces, not in
            // head-sized ones (see `shrinkInputForWaiting`).
            let pooled = loop.buffers.take()
            pooled.append(buffer.readable)
            input = pooled
            buffer = pooled
        }
        let length = pendingHeadLength
        pendingDeadlineMs = .max
        loop.cancel(self)
        loop.noteReleased()  // a held request's bytes are freed: thousands resumed at once count as a burst
        apply(disposition, headBytes: UnsafeRawBufferPointer(rebasing: buffer.readable[0..<length]))
        drive()
    }

    // MARK: - The state machine

    /// Runs the state machine until it must wait for the kernel. Re-entrant calls (an exchange finishing
    /// while we are inside it) are folded into the running loop.
    func drive() {
        if isDriving { return }
        isDriving = true
        defer { isDriving = false }
        do {
            while isOpen {
                switch state {
                case .head:
                    if !(try flush()) { return }
                    if try parseNextHead() { continue }
                    if !canRead {
                        releaseInputIfEmpty()
                        releaseOutputIfEmpty()
                        return
                    }
                    let limit = config.maxHeadLength + (responder.collectsBodies ? config.maxBodyBytes : 16 * 1024)
                    switch try readInput(limit: limit) {
                    case .data, .full: continue
                    case .wouldBlock: continue
                    case .eof:
                        close()
                        return
                    }
                case .pending:
                    // Nothing to read yet (the head must stay where it is); only notice a client that left.
                    if canRead && Socket.peerHasClosed(fd) {
                        close()
                    }
                    return
                case .exchange:
                    switch active {
                    case .http1(let exchange): exchange.downstreamReady()
                    case .h2c(let bridge): bridge.downstreamReady()
                    case .none: break
                    }
                    if state == .exchange { return }
                case .discarding:
                    try flush()  // the answer goes out while we skip the body
                    if try discardBody() { continue }
                    return
                case .closing:
                    if !(try flush()) { return }
                    Socket.shutdownWrite(fd)
                    state = .lingering
                    loop.schedule(self, at: loop.nowMs + config.lingerMs)
                case .lingering:
                    // Read and drop until the peer closes.
                    let buffer = inputBuffer()
                    buffer.clear()
                    switch try readInput(limit: buffer.capacity) {
                    case .data, .full: continue
                    case .wouldBlock: return
                    case .eof:
                        close()
                        return
                    }
                }
            }
        } catch {
            close()  // the socket failed (reset, broken pipe): nothing more can be said on it
        }
    }

    /// Parses a head if one is complete in the input. - Returns: true if it made progress.
    private func parseNextHead() throws(SysError) -> Bool {
        guard let buffer = input, !buffer.isEmpty else { return false }
        if config.acceptsH2c && context.ticket == 0 {
            // The connection's first bytes: an h2c client with prior knowledge starts with the preface.
            switch H2cUpgrade.matchPreface(buffer.readable) {
            case .partial: return false
            case .match:
                switchToH2(upgrade: nil)
                return true
            case .mismatch: break
            }
        }
        let length: Int
        do throws(HTTPParseError) {
            // No deadline extension per partial read: the head must be complete within the header timeout
            // armed when the connection became idle (a byte a minute must not keep it alive).
            guard let found = try parser.findHeadEnd(buffer.readable) else { return false }
            length = found
            try parser.parseRequest(UnsafeRawBufferPointer(rebasing: buffer.readable[0..<length]), into: &head)
            // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused (as Go does; HTTP/2 streams are exempt,
            // `:authority` is optional there, so the check lives here rather than in the parser).
            if head.host == nil && head.minorVersion >= 1 && head.methodKind != .connect { throw .missingHost }
        } catch {
            respondError(error)
            return true
        }
        let bytes = UnsafeRawBufferPointer(rebasing: buffer.readable[0..<length])
        HTTP1Parser.markConnectionListed(bytes, &head)
        var body: [UInt8] = []
        if responder.collectsBodies && head.requestFraming != .none {
            switch collectBody(buffer, headLength: length) {
            case .complete(let collected): body = collected
            case .incomplete: return false
            case .tooLarge:
                respond(.error(413, "413 Request Entity Too Large"))
                return true
            case .malformed:
                respondError(.badChunk)
                return true
            }
        }
        if config.acceptsH2c && head.hasUpgradeField && H2cUpgrade.asksForH2c(bytes, head) {
            if let settings = H2cUpgrade.settings(bytes, head) {
                // `Upgrade: h2c` (RFC 7540 §3.2): 101, then this request is stream 1 of an HTTP/2 connection.
                let request = Array(bytes)
                buffer.moveReader(by: length)
                outputBuffer().append("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                switchToH2(upgrade: (request, settings))
                return true
            }
            // Not switching: an ordinary HTTP/1.1 request (`Upgrade` and `HTTP2-Settings` are hop-by-hop and go).
            head.connectionUpgrade = false
        }
        let ticket = context.ticket &+ 1
        context = RequestContext()
        context.ticket = ticket
        context.startMs = loop.nowMs
        owesEnd = true
        var view = RequestView(bytes: bytes, head: head, peer: peer, handle: self)
        view.body = body
        loop.cancel(self)  // the header timer; `dispose` may arm a deadline of its own (`armDeadline`)
        apply(responder.dispose(view), headBytes: bytes)
        return true
    }

    /// Hands the socket and its buffers to an HTTP/2 connection; this object is done afterwards.
    private func switchToH2(upgrade: (head: [UInt8], settings: [UInt8])?) {
        let h2 = H2ServerConnection(config: config, responder: responder, peer: peer, peerIP: peerIP)
        loop.replace(self, with: h2)
        h2.input = input
        h2.output = output
        h2.canRead = canRead
        h2.canWrite = canWrite
        h2.peerClosed = peerClosed
        input = nil
        output = nil
        state = .lingering
        h2.start(upgrade: upgrade)
    }

    /// Carries out a disposition for the request whose head is `headBytes` (at the front of the input).
    private func apply(_ disposition: Disposition, headBytes bytes: UnsafeRawBufferPointer) {
        switch disposition {
        case .respond(let response):
            let keepAlive = head.keepAlive && !loop.draining && !head.expectsContinue
            response.write(into: outputBuffer(), headOnly: head.methodKind == .head, close: !keepAlive)
            input!.moveReader(by: bytes.count)
            discarded.reset(head.requestFraming == .untilClose ? .none : head.requestFraming)
            state = keepAlive ? .discarding : .closing
            // A client that stops sending its body (or reading our answer) is not kept forever.
            loop.schedule(self, at: loop.nowMs + config.headerTimeoutMs)
            endRequest(status: response.status, responseBytes: response.body.count)
        case .proxy(let pool, let options) where pool.config.speaksH2c && !head.isUpgrade:
            // Upgrades (websockets) stay HTTP/1.1: h2c servers such as Go's h2c handler take both.
            let bridge = H1ToH2Bridge(downstream: self)
            active = .h2c(bridge)
            state = .exchange
            bridge.start(head: head, headBytes: bytes, pool: pool, options: options)
        case .proxy(let pool, let options):
            let exchange = http1Exchange ?? ProxyExchange(downstream: self)
            http1Exchange = exchange
            active = .http1(exchange)
            state = .exchange
            exchange.start(head: head, headBytes: bytes, pool: pool, options: options)
        case .pending:
            state = .pending
            pendingHeadLength = bytes.count
            shrinkInputForWaiting()
        }
    }

    /// A waiting request keeps only its own bytes: the pooled 16 KiB buffer goes back, an exact copy stays
    /// (the activator may hold thousands of requests at zero; each should cost a few hundred bytes).
    private func shrinkInputForWaiting() {
        guard let buffer = input, buffer.capacity == loop.buffers.bufferSize, buffer.readableCount < buffer.capacity / 4
        else { return }
        let copy = ByteBuffer(capacity: max(buffer.readableCount, 64))
        copy.append(buffer.readable)
        loop.buffers.give(buffer)
        input = copy
    }

    /// A connect failed before anything was sent: ask the responder for another way. - Returns: true if taken.
    func retryElsewhere(after pool: UpstreamPool) -> Bool {
        guard state == .exchange, let buffer = input, let disposition = responder.connectFailed(self, pool: pool)
        else { return false }
        let length = head.length
        apply(disposition, headBytes: UnsafeRawBufferPointer(rebasing: buffer.readable[0..<length]))
        return true
    }

    private enum BodyCollection {
        case complete([UInt8])
        case incomplete, tooLarge, malformed
    }

    /// For body-collecting responders (admin APIs): the whole body once it is in the input. Re-walks the
    /// buffered bytes on each arrival, which is fine for the small, rare bodies these responders take.
    private func collectBody(_ buffer: ByteBuffer, headLength: Int) -> BodyCollection {
        let available = UnsafeRawBufferPointer(rebasing: buffer.readable[headLength...])
        switch head.requestFraming {
        case .length(let n):
            if n > config.maxBodyBytes { return .tooLarge }
            if available.count < n { return .incomplete }
            return .complete(Array(available[0..<n]))
        case .chunked:
            var decoder = ChunkedDecoder()
            var body: [UInt8] = []
            do {
                _ = try decoder.consume(available) { range in body.append(contentsOf: available[range]) }
            } catch {
                return .malformed
            }
            if decoder.isDone { return .complete(body) }
            return available.count >= config.maxBodyBytes ? .tooLarge : .incomplete
        case .none, .untilClose:
            return .complete([])
        }
    }

    /// Skips the body of a request that was answered locally. - Returns: true when done (state changed).
    private func discardBody() throws(SysError) -> Bool {
        while true {
            let buffer = inputBuffer()
            if !buffer.isEmpty && !discarded.ended {
                do { buffer.moveReader(by: try discarded.measure(buffer.readable)) } catch {
                    state = .closing
                    return true
                }
            }
            if discarded.ended {
                state = .head
                loop.schedule(self, at: loop.nowMs + config.headerTimeoutMs)
                return true
            }
            if !canRead { return false }
            switch try readInput(limit: buffer.capacity) {
            case .data, .full, .wouldBlock: continue
            case .eof:
                close()
                return false
            }
        }
    }

    // MARK: - Called by the exchange

    /// Answers a malformed request (Go's short texts) and closes: nothing after it can be framed reliably.
    func respondError(_ error: HTTPParseError) {
        respond(.error(error.status, error.responseText))
    }

    /// Writes a locally generated error answer and closes the connection after it.
    private func respond(_ response: LocalResponse) {
        response.write(into: outputBuffer(), headOnly: false, close: true)
        input?.clear()
        state = .closing
    }

    /// Carries out how an exchange on this connection ended: the one place an HTTP/1 exchange's ending (any
    /// upstream kind) becomes the connection's next state. `requestRead`: the request was read to its end;
    /// `status` and `responseBytes` are reported to the responder (a local answer reports its own).
    func exchangeEnded(_ ending: ExchangeEnding, requestRead: Bool, status: Int, responseBytes: Int) {
        switch ending {
        case .complete(let closeAfter):
            endRequest(status: status, responseBytes: responseBytes)
            exchangeFinished(reusable: ReuseRule.continues(requestRead: requestRead, closeAfter: closeAfter))
        case .answered(let response):
            // Unread request bytes would be taken for the next request: without them read, the answer closes.
            let closeAfter =
                !requestRead
                || ReuseRule.closesAfterResponse(
                    clientKeepAlive: head.keepAlive && head.minorVersion >= 1, closeDelimited: false,
                    draining: loop.draining)
            respondInstead(response, close: closeAfter)
            endRequest(status: response.status, responseBytes: response.body.count)
            exchangeFinished(reusable: !closeAfter)
        case .truncated:
            endRequest(status: status, responseBytes: responseBytes)
            exchangeTruncated()
        case .aborted:
            endRequest(status: status, responseBytes: responseBytes)
            exchangeAborted()
        }
    }

    /// The exchange is over. `reusable`: the request and response were both complete and framed.
    private func exchangeFinished(reusable: Bool) {
        guard state == .exchange else { return }
        active = .none
        if reusable && !loop.draining {
            state = .head
            loop.schedule(self, at: loop.nowMs + config.headerTimeoutMs)
        } else {
            state = .closing
            input?.clear()
        }
        drive()
    }

    /// The exchange gave up on this connection (client gone): close now.
    private func exchangeAborted() {
        active = .none
        state = .lingering  // keeps didClose from calling back into the exchange
        close()
    }

    /// The response cannot be completed: deliver what was sent so far, then close without completing the
    /// framing, so that the client sees the truncation instead of a response that looks whole.
    private func exchangeTruncated() {
        guard state == .exchange else { return }
        active = .none
        state = .closing
        // A client that stopped reading is not kept forever for the rest of what was queued.
        loop.schedule(self, at: loop.nowMs + config.headerTimeoutMs)
        input?.clear()
        drive()
    }

    /// Writes a local answer in place of the upstream's response.
    private func respondInstead(_ response: LocalResponse, close: Bool) {
        response.write(into: outputBuffer(), headOnly: head.methodKind == .head, close: close)
    }
}
