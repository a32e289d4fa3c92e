// One HTTP/2 request from a downstream h2c connection: the responder's `RequestHandle`, and when proxied the
// downstream half of an `H2cExchange` (Knative: HTTP/2 in → h2c out, spec §1.8/§2.7).
//
// Responders see the request as HTTP/1: its header block is written as an HTTP/1.1 head once, so every
// responder (probes, breaker, throttler, routing) and the head rewriting work unchanged. The upstream header
// block is read back from the rewritten head. That costs two small serialisations per stream, next to HPACK's
// own work, and keeps one implementation of Knative's header rules.
//
// Flow control runs end to end: received DATA is acknowledged to its sender only when the other side's session
// has framed it (`requestPulled` / `responsePulled`), so each direction holds at most one stream window. The
// upstream stream's window is granted here (`grantResponseWindow`), not by a default: none while the client's
// window for the stream is closed, up to 64 KiB once the client can take bytes, within the connection's and
// the loop's budgets. So 10,000 streams from clients that do not read hold (almost) nothing.
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import Glibc

final class H2ProxyStream: TimerEntry, RequestHandle, H2cDownstream {
    enum State { case starting, pending, proxying, local, done }

    unowned(unsafe) let connection: H2ServerConnection  // owns us through `streams`
    let id: Int32
    @exclusivity(unchecked) var state = State.starting
    @exclusivity(unchecked) var headBytes: [UInt8] = []
    @exclusivity(unchecked) var head = HTTPHead()
    @exclusivity(unchecked) var context = RequestContext()
    /// The exchange once the request is proxied (kept across a retry elsewhere).
    @exclusivity(unchecked) private var exchange: H2cExchange?
    @exclusivity(unchecked) private var x = Stream()

    /// What the stream itself changes (one struct, one exclusivity exception; see `ProxyExchange`).
    struct Stream {
        /// The client ended its side (END_STREAM).
        var requestComplete = false
        var requestTrailers: [H2Field]?
        /// Body bytes received before an upstream stream exists (waiting in a queue): at most one stream
        /// window, since they are not acknowledged until the upstream takes them.
        var backlog: [UInt8] = []
        /// The response declared its length: a timeout cannot append to it (the stream is reset, as HTTP/1
        /// closes).
        var responseHasLength = false
        var pendingDeadlineMs = Int64.max
        /// A timed-out response: its text and END_STREAM are queued; a client that has not taken them within
        /// `resetGraceMs` gets a reset instead (the stream would linger).
        var endingAfterTimeout = false
        /// `requestEnded` is still owed to the responder.
        var owesEnd = false
        /// A local answer's status and body size (what the responder is told).
        var answered: (status: Int, bytes: Int)?
        /// The receive window granted to the upstream stream: the response bytes it may make us hold.
        var responseWindow = 0
    }

    /// The client ended its side (END_STREAM).
    var requestComplete: Bool {
        get { x.requestComplete }
        set { x.requestComplete = newValue }
    }

    /// A response stream's window when budgets allow (the RFC's default window).
    static let responseWindowTarget = 65_535
    /// The window a stream whose client reads gets even when the budgets are spent (no stream starves).
    static let minimumResponseWindow = 4_096

    init(connection: H2ServerConnection, id: Int32) {
        self.connection = connection
        self.id = id
    }

    private var session: H2Session { connection.session }
    var loop: EventLoop { connection.loop }

    // MARK: - Start

    /// Writes the header block as an HTTP/1.1 head for the responder. - Returns: false if answered (400/431).
    func prepare(block: H2HeaderBlock) -> Bool {
        guard !block.isTruncated, let bytes = H2Request.head(from: block, limit: connection.config.maxHeadLength) else {
            respond(.error(431, HTTPParseError.headTooLarge.responseText))
            return false
        }
        return prepare(head: bytes)
    }

    /// Takes `bytes` (an HTTP/1.1 request head) as the request. - Returns: false if answered (400/431).
    func prepare(head bytes: [UInt8]) -> Bool {
        headBytes = bytes
        let parser = HTTP1Parser(maxHeadLength: connection.config.maxHeadLength)
        var parsed = HTTPHead()
        let failure: HTTPParseError? = headBytes.withUnsafeBytes { raw in
            do throws(HTTPParseError) {
                try parser.parseRequest(raw, into: &parsed)
            } catch {
                return error
            }
            HTTP1Parser.markConnectionListed(raw, &parsed)
            return nil
        }
        parsed.majorVersion = 2
        parsed.connectionUpgrade = false  // stream 1 of an `Upgrade: h2c` still says so; no HTTP/2 request upgrades
        head = parsed
        if let error = failure {
            respond(.error(error.status, error.responseText))  // the HTTP/1 server's texts
            return false
        }
        return true
    }

    /// Asks the responder what to do.
    func begin() {
        context.startMs = loop.nowMs
        context.ticket = 1
        x.owesEnd = true
        let disposition = headBytes.withUnsafeBytes { raw in
            var view = RequestView(bytes: raw, head: head, peer: connection.peer, handle: self)
            view.pendingBodyLimit = x.requestComplete ? 0 : Int(H2ServerConnection.initialWindowSize)
            return connection.responder.dispose(view)
        }
        apply(disposition)
        connection.writeOut()
    }

    private func apply(_ disposition: Disposition) {
        guard state != .done else { return }
        switch disposition {
        case .respond(let response): respond(response)
        case .pending: state = .pending
        case .proxy(let pool, let options):
            state = .proxying
            let exchange = self.exchange ?? H2cExchange(downstream: self, startMs: context.startMs)
            self.exchange = exchange
            exchange.proxy(to: pool, options: options)
        }
    }

    // MARK: - RequestHandle

    var isPending: Bool { state == .pending }

    func resume(_ disposition: Disposition) {
        guard state == .pending else { return }
        x.pendingDeadlineMs = .max
        loop.cancel(self)
        apply(disposition)
        connection.writeOut()
    }

    func armDeadline(atMs: Int64) {
        x.pendingDeadlineMs = atMs
        loop.schedule(self, at: atMs)
    }

    // MARK: - Local answers

    /// Answers with `response`; a request body still arriving is acknowledged and dropped.
    private func respond(_ response: LocalResponse) {
        state = .local
        x.answered = (response.status, response.body.count)
        let bodyless = response.body.isEmpty || head.methodKind == .head
        do {
            try session.submitResponse(stream: id, response.h2Fields(), endStream: bodyless)
            if !bodyless { response.body.withUnsafeBytes { session.send(stream: id, $0, end: true) } }
        } catch {
            session.reset(stream: id, code: .internalError)
        }
        if !x.backlog.isEmpty {
            session.consume(stream: id, count: x.backlog.count)
            x.backlog = []
        }
        if !x.requestComplete { session.resetWhenResponseEnds(stream: id) }
    }

    // MARK: - Client events

    /// Client body bytes.
    func requestData(_ bytes: UnsafeRawBufferPointer) {
        switch state {
        case .proxying where exchange!.send(bytes):
            return
        case .starting, .pending:
            x.backlog.append(contentsOf: bytes)
        case .proxying, .local, .done:
            // Nobody will read it (the upstream stream is gone, or the response is complete): acknowledge, drop.
            session.consume(stream: id, count: bytes.count)
        }
    }

    /// The client's END_STREAM (with trailers, if it sent any).
    func requestEnd(trailers: [H2Field]?) {
        x.requestComplete = true
        x.requestTrailers = trailers
        // After the response ended the rest of the body was dropped: an END_STREAM now would present a cut body
        // as whole (the upstream stream is reset when this one closes instead; `send` refuses).
        if state == .proxying {
            exchange!.send(UnsafeRawBufferPointer(start: nil, count: 0), end: true, trailers: trailers)
        }
    }

    /// The client's windows let the response go on and nothing is queued: the upstream may send more.
    func responseWanted() {
        if x.responseWindow < Self.responseWindowTarget { grantResponseWindow(upTo: Self.responseWindowTarget) }
    }

    /// The downstream session framed `count` response bytes: the upstream may send that much more.
    func responsePulled(_ count: Int) {
        exchange?.acknowledge(count)
    }

    /// Raises the upstream stream's window towards `wanted`, within this connection's and this loop's budgets
    /// (but to at least `minimumResponseWindow`).
    private func grantResponseWindow(upTo wanted: Int) {
        guard let exchange, exchange.isOpen, wanted > x.responseWindow, !exchange.state.responseEnded else { return }
        let budget = connection.windowBudget!
        let free = min(
            H2ServerConnection.responseWindowBudget - connection.responseWindows,
            H2WindowBudget.perLoop - budget.granted)
        let size = min(wanted, max(x.responseWindow + free, Self.minimumResponseWindow))
        guard size > x.responseWindow else { return }
        connection.responseWindows += size - x.responseWindow
        budget.granted += size - x.responseWindow
        x.responseWindow = size
        exchange.setResponseWindow(size)
    }

    // MARK: - H2cDownstream

    var peerIP: [UInt8] { connection.peerIP }
    var requestHead: HTTPHead { head }
    var requestHeadBytes: [UInt8] { headBytes }
    var requestIsBodyless: Bool { x.requestComplete && x.backlog.isEmpty && x.requestTrailers == nil }
    var takesInterimResponses: Bool { true }
    var closesAfterResponse: Bool { false }

    /// A declared length, or a response without body (HEAD, 204, 304), cannot take a timeout's text.
    var responseTail: ResponseTail {
        guard let response = exchange?.state, response.responseStarted else { return .notStarted }
        let fixed =
            x.responseHasLength || head.methodKind == .head || response.status == 204 || response.status == 304
        return fixed ? .fixed : .stream
    }

    func scheduleTimer(atMs: Int64) { loop.schedule(self, at: atMs) }

    func retryElsewhere(after pool: UpstreamPool) -> Bool {
        guard let next = connection.responder.connectFailed(self, pool: pool) else { return false }
        apply(next)
        connection.writeOut()  // a local answer (the activator's queue is full) leaves now, not with the next frame
        return true
    }

    /// The window the client allows, then the backlog (with the request's end if it came).
    func upstreamOpened() {
        guard let exchange else { return }
        grantResponseWindow(upTo: min(Self.responseWindowTarget, session.sendWindow(stream: id)))
        if !exchange.state.requestEndForwarded {
            x.backlog.withUnsafeBytes { _ = exchange.send($0, end: x.requestComplete, trailers: x.requestTrailers) }
            x.backlog = []
        }
    }

    /// The upstream session framed `count` of our request bytes: the client may send that much more.
    func requestPulled(_ count: Int) {
        session.consume(stream: id, count: count)
        connection.writeOut()
    }

    func requestDropped(_ count: Int) {
        if state != .done { session.consume(stream: id, count: count) }
    }

    /// The upstream stream's window goes back to the budgets.
    func upstreamReleased() {
        guard x.responseWindow > 0 else { return }
        connection.responseWindows -= x.responseWindow
        connection.windowBudget.granted -= x.responseWindow
        x.responseWindow = 0
    }

    func responseInterim(status: Int, _ block: H2HeaderBlock) {
        try? session.submitInformational(stream: id, block)
        connection.writeOut()
    }

    func responseHead(status: Int, _ block: H2HeaderBlock, endStream: Bool) {
        x.responseHasLength = block.value(of: "content-length") != nil
        // The upstream's block goes on as it is: nghttp2 already refused connection-specific fields in it.
        do { try session.submitResponse(stream: id, block, endStream: endStream) } catch {
            session.reset(stream: id, code: .internalError)
        }
        connection.writeOut()
    }

    func responseData(_ bytes: UnsafeRawBufferPointer) {
        session.send(stream: id, bytes)
        connection.writeOut()
    }

    func responseEnd(trailers: H2HeaderBlock?) {
        session.send(stream: id, UnsafeRawBufferPointer(start: nil, count: 0), end: true, trailers: trailers?.fields)
    }

    /// After the first byte the text ends the body and END_STREAM ends the stream, as upstream's Go server does
    /// (spec §1.7: the client reads a complete response); a declared length cannot take it (Go's write fails
    /// too): cut, not ended short.
    func endAfterTimeout(_ action: TimeoutAction, message: StaticString) -> ExchangeEnding {
        // The request is over for the responder now (its slot frees, as on HTTP/1).
        defer { endRequest() }
        guard action == .appendAndEndStream else { return .truncated }
        state = .local
        session.send(stream: id, TimeoutRule.bytes(message), end: true)
        // A client that does not take the end of the response gets a reset after a grace period.
        x.endingAfterTimeout = true
        loop.schedule(self, at: loop.nowMs + Self.resetGraceMs)
        return .complete(closeAfter: false)
    }

    func exchangeEnded(_ ending: ExchangeEnding) {
        switch ending {
        case .answered(let response):
            respond(response)
        case .truncated, .aborted:
            state = .local
            // The client's stream carries the upstream's reason (a clean close mid-body is an internal error).
            let code = exchange?.state.upstreamResetCode ?? .noError
            session.reset(stream: id, code: code == .noError ? .internalError : code)
        case .complete:
            // A request body still coming is refused (RST_STREAM NO_ERROR once the response is out), as Go's
            // server does, so the stream (and its slot) does not linger.
            if !x.requestComplete { session.resetWhenResponseEnds(stream: id) }
        }
        connection.writeOut()
    }

    // MARK: - Timers

    override func timerFired(nowMs: Int64) {
        switch state {
        case .pending:
            if nowMs >= x.pendingDeadlineMs {
                x.pendingDeadlineMs = .max
                connection.responder.pendingExpired(self)
            } else {
                loop.schedule(self, at: x.pendingDeadlineMs)
            }
        case .proxying:
            exchange?.timerFired(nowMs: nowMs)
        case .local where x.endingAfterTimeout:
            x.endingAfterTimeout = false
            session.reset(stream: id, code: .internalError)  // the END_STREAM has not left in time
        case .starting, .local, .done:
            return
        }
        connection.writeOut()
    }

    /// How long a timed-out stream's last bytes may take to leave before the stream is reset regardless.
    static let resetGraceMs: Int64 = 10_000

    private func endRequest() {
        guard x.owesEnd else { return }
        x.owesEnd = false
        var status = 0
        var bytes = 0
        if let answered = x.answered {
            (status, bytes) = answered
        } else if let response = exchange?.state, response.responseStarted {
            (status, bytes) = (response.status, response.responseBytes)
        }
        connection.responder.requestEnded(self, status: status, responseBytes: bytes)
    }

    // MARK: - End

    /// The downstream stream is gone (finished, reset by the client, or the connection closed).
    func closed() {
        let wasPending = state == .pending
        loop.noteReleased()  // many streams end with few connections: they count towards a trim too
        state = .done
        loop.cancel(self)
        exchange?.downstreamGone()
        x.backlog = []
        if wasPending { connection.responder.pendingCancelled(self) }
        endRequest()
    }
}

/// Header-block conversions between HTTP/2 fields and the HTTP/1 heads the rest of the proxy works with.
enum H2Request {
    /// The client's header block as an HTTP/1.1 request head (`Host` from `:authority`). nil when over `limit`.
    static func head(from block: H2HeaderBlock, limit: Int) -> [UInt8]? {
        var method = UnsafeRawBufferPointer(start: nil, count: 0)
        var path = method
        var authority: UnsafeRawBufferPointer?
        var hasHost = false
        var size = 32
        for i in 0..<block.count {
            let name = block.name(i)
            size += name.count + block.value(i).count + 4
            guard name.first == 0x3A else {
                if name.elementsEqual(hostName) { hasHost = true }
                continue
            }
            if name.elementsEqual(methodName) {
                method = block.value(i)
            } else if name.elementsEqual(pathName) {
                path = block.value(i)
            } else if name.elementsEqual(authorityName) {
                authority = block.value(i)
            }
        }
        guard size <= limit else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(size)
        out.append(contentsOf: method.bindMemory(to: UInt8.self))
        out.append(0x20)
        if path.isEmpty { out.append(0x2F) } else { out.append(contentsOf: path.bindMemory(to: UInt8.self)) }
        out.append(contentsOf: versionLine)
        if !hasHost, let authority {
            out.append(contentsOf: hostName)
            out.append(contentsOf: separator)
            out.append(contentsOf: authority.bindMemory(to: UInt8.self))
            out.append(contentsOf: lineEnd)
        }
        for i in 0..<block.count where block.name(i).first != 0x3A {
            out.append(contentsOf: block.name(i).bindMemory(to: UInt8.self))
            out.append(contentsOf: separator)
            out.append(contentsOf: block.value(i).bindMemory(to: UInt8.self))
            out.append(contentsOf: lineEnd)
        }
        out.append(contentsOf: lineEnd)
        return out
    }

    /// The upstream header block, into `list`: the request head rewritten by Knative's rules (`HeadRewriter`),
    /// as HTTP/2 fields (lower-case names, no connection-specific fields).
    static func upstreamFields(
        _ head: HTTPHead, bytes: UnsafeRawBufferPointer, peerIP: [UInt8], rewrite: RequestRewrite,
        defaultHost: [UInt8], loop: EventLoop, into list: inout H2HeaderList
    ) {
        let scratch = loop.buffers.take()
        defer {
            scratch.clear()
            loop.buffers.give(scratch)
        }
        HeadRewriter.writeRequest(
            head, bytes: bytes, peerIP: peerIP, into: scratch, upgrade: false, rewrite: rewrite,
            defaultHost: defaultHost)
        list.removeAll()
        let rewritten = scratch.readable
        // The rewriter's output is regular (`METHOD SP target SP HTTP/1.1`, then `Name: value` lines, CRLF
        // ends), and its parts were validated when the request was parsed: a line walk suffices, no parser.
        var lineStart = 0
        var lineEnd = H2Request.lineEnd(rewritten, from: 0)
        let firstSpace = rewritten[0..<lineEnd].firstIndex(of: 0x20) ?? 0
        let secondSpace = rewritten[(firstSpace + 1)..<lineEnd].firstIndex(of: 0x20) ?? lineEnd
        list.append(":method", UnsafeRawBufferPointer(rebasing: rewritten[0..<firstSpace]))
        httpValue.withUnsafeBytes { list.append(":scheme", $0) }
        let pathIndex = list.count
        list.append(":path", UnsafeRawBufferPointer(rebasing: rewritten[(firstSpace + 1)..<secondSpace]))
        var authority: Range<Int>?
        while true {
            lineStart = lineEnd + 2
            lineEnd = H2Request.lineEnd(rewritten, from: lineStart)
            guard lineEnd > lineStart else { break }  // the empty line: the head's end
            let line = rewritten[lineStart..<lineEnd]
            guard let colon = line.firstIndex(of: 0x3A) else { continue }
            let name = UnsafeRawBufferPointer(rebasing: rewritten[lineStart..<colon])
            let value = UnsafeRawBufferPointer(rebasing: rewritten[min(colon + 2, lineEnd)..<lineEnd])
            if equalsLower(name, hostName) {
                authority = min(colon + 2, lineEnd)..<lineEnd
                continue
            }
            if equalsLower(name, transferEncodingName) || equalsLower(name, connectionName) { continue }
            list.append(name: name, value: value, lowercasingName: true)
        }
        if let authority {
            list.insert(":authority", UnsafeRawBufferPointer(rebasing: rewritten[authority]), at: pathIndex)
        } else {
            defaultHost.withUnsafeBytes { list.insert(":authority", $0, at: pathIndex) }
        }
    }

    /// The index of the CR of the line starting at `start` (or the end of `bytes`).
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        var i = start
        while i + 1 < bytes.count && !(bytes[i] == 0x0D && bytes[i + 1] == 0x0A) { i += 1 }
        return i + 1 < bytes.count ? i : bytes.count
    }

    private static func equalsLower(_ bytes: UnsafeRawBufferPointer, _ lower: [UInt8]) -> Bool {
        guard bytes.count == lower.count else { return false }
        for i in 0..<bytes.count where ByteClass.lower(bytes[i]) != lower[i] { return false }
        return true
    }

    /// The `:status` of a response header block (0 if missing).
    static func status(_ block: H2HeaderBlock) -> Int {
        guard let value = block.value(of: ":status"), value.count == 3 else { return 0 }
        return value.reduce(0) { $0 * 10 + Int($1 &- 0x30) }
    }

    static let methodName = Array(":method".utf8)
    static let pathName = Array(":path".utf8)
    static let authorityName = Array(":authority".utf8)
    static let hostName = Array("host".utf8)
    static let httpValue = Array("http".utf8)
    static let transferEncodingName = Array("transfer-encoding".utf8)
    static let connectionName = Array("connection".utf8)
    static let versionLine = Array(" HTTP/1.1\r\n".utf8)
    static let separator: [UInt8] = [0x3A, 0x20]
    static let lineEnd: [UInt8] = [0x0D, 0x0A]
}

extension LocalResponse {
    /// The response's header block for HTTP/2 (the fields `write` puts in an HTTP/1 head, lower-case).
    func h2Fields() -> [H2Field] {
        var fields = [H2Field(name: H2Session.statusName, value: Array(String(status).utf8))]
        if let contentType { fields.append(H2Field("content-type", contentType)) }
        if noSniff { fields.append(H2Field("x-content-type-options", "nosniff")) }
        for (name, value) in extraHeaders { fields.append(H2Field(name.lowercased(), value)) }
        fields.append(H2Field("content-length", String(body.count)))
        return fields
    }
}
