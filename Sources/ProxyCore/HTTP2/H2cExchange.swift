// One request proxied to a stream on an upstream h2c connection, whatever the client speaks: the exchange's
// logic written once for an HTTP/2 client stream (`H2ProxyStream`) and for an HTTP/1.1 client (`H1ToH2Bridge`).
// The downstream half (`H2cDownstream`) only translates: it supplies the request body and writes the response
// in its protocol's framing. Everything this file decides is decided by the rules in `Exchange/` (timeouts,
// replay, endings, interim heads), as for the HTTP/1 exchange (`ProxyExchange`).
//
// Life of an exchange: `proxy` takes an upstream connection from the pool (a failed connect may go elsewhere,
// asked of the downstream's responder) and opens a stream with the rewritten head; the downstream feeds the
// body (`send`); upstream events become `H2cDownstream` calls; the first of these ends it (`end`, the one exit):
// the response completes, a timeout fires, the upstream fails (502, or a cut once the response started; a
// refused stream goes again once), or the client leaves (`downstreamGone`). The upstream stream is let go on
// the way out, reset unless it is complete both ways.
//
// Flow control: the upstream stream's receive window is the downstream's to grant (`setResponseWindow`) and its
// received DATA is acknowledged (`acknowledge`) only once the client has taken it, so a response holds at most
// one window; request bytes wait in the upstream session until framed (`requestPulled` tells the downstream).
//
// Why not `ProxyExchange` too: an HTTP/1 upstream is a byte stream the exchange relays with its framing intact
// (zero-copy, spliced chunk by chunk, tunnels after a 101), where an h2c stream is a sequence of frames. The hot
// path (HTTP/1 both ways) keeps its byte relay; both drivers take their decisions from `Exchange/`.
// Exclusivity: what one exchange changes is one state struct; it and the upstream link are
// `@exclusivity(unchecked)` for the reason `ProxyExchange` gives (one loop thread, short accesses).
import Glibc

/// The client side of an `H2cExchange`: an HTTP/2 stream, or an HTTP/1.1 connection.
protocol H2cDownstream: AnyObject {
    var loop: EventLoop { get }
    var peerIP: [UInt8] { get }
    /// The request head as HTTP/1.1 (an HTTP/2 header block is converted once) and its parse.
    var requestHead: HTTPHead { get }
    var requestHeadBytes: [UInt8] { get }
    /// No request body will follow the head (the upstream stream opens with END_STREAM).
    var requestIsBodyless: Bool { get }
    /// HTTP/1.1 or HTTP/2 (RFC 9110 §15.2: no 1xx to HTTP/1.0).
    var takesInterimResponses: Bool { get }
    /// The response head said the connection closes after it (HTTP/1 only).
    var closesAfterResponse: Bool { get }
    /// What the client's response can still take, for a timeout.
    var responseTail: ResponseTail { get }

    /// Arms the downstream's timer for the exchange (`H2cExchange.timerFired` when it fires).
    func scheduleTimer(atMs: Int64)
    /// A connect failed before anything was sent: another upstream, if the responder has one. - Returns: taken.
    func retryElsewhere(after pool: UpstreamPool) -> Bool
    /// The upstream stream is open: set its window, send what body is there.
    func upstreamOpened()
    /// The upstream session framed `count` request bytes: more may come.
    func requestPulled(_ count: Int)
    /// The upstream stream went with `count` request bytes still queued in it (the client's window back).
    func requestDropped(_ count: Int)
    /// The upstream stream is gone: its granted window goes back.
    func upstreamReleased()

    func responseInterim(status: Int, _ block: H2HeaderBlock)
    /// The final head; `endStream`: there is no body, the head ends the response.
    func responseHead(status: Int, _ block: H2HeaderBlock, endStream: Bool)
    func responseData(_ bytes: UnsafeRawBufferPointer)
    /// The body ends, with `trailers` (a header block) or without.
    func responseEnd(trailers: H2HeaderBlock?)
    /// A timeout after the response started (`action` is not `gatewayTimeout`): write what it says. - Returns:
    /// the ending to carry out.
    func endAfterTimeout(_ action: TimeoutAction, message: StaticString) -> ExchangeEnding
    /// Carries the ending out (the upstream stream is already let go).
    func exchangeEnded(_ ending: ExchangeEnding)
}

final class H2cExchange: H2UpstreamStream {
    /// Everything one exchange changes.
    struct State {
        var startMs: Int64 = 0
        /// The last response byte passed to the client (the idle timeout's clock).
        var lastWriteMs: Int64 = 0
        var responseStarted = false
        /// A 1xx came: the app saw the request, so it is never sent again (`ReplayRule`).
        var interimSeen = false
        var responseEnded = false
        var status = 0
        var responseBytes = 0
        /// Body bytes went upstream: the stream cannot be opened again with nothing lost.
        var bodyForwarded = false
        /// Our END_STREAM went (or is queued) upstream.
        var requestEndForwarded = false
        var retried = false
        var isOver = false
        /// The code an upstream reset carried (an HTTP/2 client's stream is reset with it).
        var upstreamResetCode = H2ErrorCode.noError
    }

    /// Holds us for the exchange's life. Every event that may end the exchange runs inside `event`, which keeps
    /// it alive to the event's end: an ending can make its owner let it go (an HTTP/1 connection starts its next
    /// request) while one of its methods is still on the stack.
    unowned(unsafe) let downstream: any H2cDownstream
    @exclusivity(unchecked) private var upstream: H2UpstreamConnection?
    @exclusivity(unchecked) private var upstreamID: Int32 = -1
    @exclusivity(unchecked) private(set) var pool: UpstreamPool!  // set by the first `proxy`
    @exclusivity(unchecked) private var options = ProxyOptions()
    @exclusivity(unchecked) private(set) var state = State()

    init(downstream: any H2cDownstream, startMs: Int64) {
        self.downstream = downstream
        state.startMs = startMs
        state.lastWriteMs = startMs
    }

    private var loop: EventLoop { downstream.loop }

    @inline(__always)
    private func event(_ body: () -> Void) { withExtendedLifetime(downstream, body) }
    var isOpen: Bool { upstream != nil && !state.isOver }

    // MARK: - Start

    /// Sends the request to `pool` (again after a refused stream or a failed connect elsewhere).
    func proxy(to pool: UpstreamPool, options: ProxyOptions) {
        event {
            self.pool = pool
            self.options = options
            state.upstreamResetCode = .noError
            armTimer()
            let connection: H2UpstreamConnection
            do throws(SysError) { connection = try pool.acquireH2() } catch {
                if downstream.retryElsewhere(after: pool) { return }
                return fail(.connect(error))
            }
            let head = downstream.requestHead
            downstream.requestHeadBytes.withUnsafeBytes { raw in
                H2Request.upstreamFields(
                    head, bytes: raw, peerIP: downstream.peerIP, rewrite: options.rewrite,
                    defaultHost: pool.hostBytes, loop: loop, into: &connection.requestFields)
            }
            let bodyless = downstream.requestIsBodyless
            do { upstreamID = try connection.open(self, endStream: bodyless) } catch {
                connection.armIdle()
                return fail(.badResponse)
            }
            upstream = connection
            state.requestEndForwarded = bodyless
            downstream.upstreamOpened()
            connection.writeOut()
        }
    }

    // MARK: - Called by the downstream

    /// Request body bytes (and the request's end) to the upstream stream. - Returns: false if none is open.
    @discardableResult
    func send(_ bytes: UnsafeRawBufferPointer, end: Bool = false, trailers: [H2Field]? = nil) -> Bool {
        guard let upstream, !state.isOver, !state.responseEnded else { return false }
        upstream.session.send(stream: upstreamID, bytes, end: end, trailers: trailers)
        if !bytes.isEmpty { state.bodyForwarded = true }
        if end { state.requestEndForwarded = true }
        upstream.writeOut()
        return true
    }

    /// Request bytes queued in the upstream stream, not yet framed (the downstream's backpressure).
    var queuedRequestBytes: Int {
        guard let upstream, upstreamID > 0 else { return 0 }
        return upstream.session.queuedBytes(stream: upstreamID)
    }

    /// The client took `count` response bytes: the upstream may send that much more.
    func acknowledge(_ count: Int) {
        guard let upstream, upstreamID > 0, count > 0 else { return }
        upstream.session.consume(stream: upstreamID, count: count)
        upstream.writeOut()
    }

    /// Sets the upstream stream's receive window (the response bytes it may make us hold).
    func setResponseWindow(_ size: Int) {
        guard let upstream, upstreamID > 0 else { return }
        upstream.session.setWindow(stream: upstreamID, size)
        upstream.writeOut()
    }

    /// The downstream's timer fired while the exchange runs: a timeout, or a re-check after progress.
    func timerFired(nowMs: Int64) {
        event {
            guard !state.isOver, !state.responseEnded else { return }
            if nextDeadlineMs <= nowMs { timedOut() } else { armTimer() }
        }
    }

    /// The client is gone (or its stream closed): let the upstream stream go, say nothing.
    func downstreamGone() {
        state.isOver = true
        detach()
    }

    /// The client failed (its socket, or it left mid-body).
    func abort() { end(.aborted) }

    /// Ends with `ending` (a downstream-side failure, e.g. a malformed request chunk answered 400).
    func finish(_ ending: ExchangeEnding) { end(ending) }

    // MARK: - Upstream events (`H2UpstreamStream`)

    func upstreamHeaders(_ block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
        event {
            guard !state.isOver else { return }
            if block.isTruncated { return fail(.badResponse) }  // over our limit: not passed on with fields missing
            if isTrailers { return complete(trailers: block) }
            let code = H2Request.status(block)
            switch InterimRule.classify(
                status: code, clientTakesInterim: downstream.takesInterimResponses, upgradeRequested: false)
            {
            case .invalid, .switchProtocols:
                return fail(.badResponse)  // no status, or a 101 (HTTP/2 has no upgrade)
            case .forwardInterim:
                state.interimSeen = true
                return downstream.responseInterim(status: code, block)
            case .dropInterim:
                state.interimSeen = true
                return
            case .final:
                break
            }
            state.responseStarted = true
            state.status = code
            state.lastWriteMs = loop.nowMs
            downstream.responseHead(status: code, block, endStream: endStream)
            if endStream {
                state.responseEnded = true  // the head ended it: nothing more to write
                end(.complete(closeAfter: downstream.closesAfterResponse))
            }
        }
    }

    func upstreamData(_ bytes: UnsafeRawBufferPointer) {
        event {
            guard !state.isOver, state.responseStarted, !state.responseEnded else { return acknowledge(bytes.count) }
            state.responseBytes += bytes.count
            state.lastWriteMs = loop.nowMs
            downstream.responseData(bytes)
        }
    }

    func upstreamEnd() {
        event {
            guard !state.isOver else { return }
            complete(trailers: nil)
        }
    }

    func requestPulled(_ count: Int) {
        event {
            guard !state.isOver else { return }
            downstream.requestPulled(count)
        }
    }

    /// The upstream stream closed (after its END_STREAM, or reset: `code` ≠ 0).
    func upstreamClosed(_ code: H2ErrorCode) {
        event {
            let stream = upstreamID
            release()
            guard !state.isOver, !state.responseEnded else { return }
            state.upstreamResetCode = code
            upstreamFailed(code == .noError ? .upstreamClosed : .streamReset(code: code, stream: stream))
        }
    }

    /// The upstream failed before the response ended: `ReplayRule` says whether the request goes again (a
    /// refused stream: once, on a connection that still takes streams; a failed connect: wherever the
    /// responder says, e.g. the activator's next pod); else 502, or a cut once the response started.
    func upstreamFailed(_ error: ProxyError) {
        event {
            release()
            guard !state.isOver, !state.responseEnded, let pool else { return }
            let decision = ReplayRule.decide(
                error.replayFailure(reusedConnection: false),
                responseBytesSeen: state.responseStarted || state.interimSeen,
                heldWhole: !state.bodyForwarded, safe: false, retried: state.retried)
            switch decision {
            case .samePool:
                state.retried = true
                return proxy(to: pool, options: options)
            case .askResponder:
                if downstream.retryElsewhere(after: pool) { return }
            case .none:
                break
            }
            fail(error)
        }
    }

    // MARK: - Endings (`ExchangeEnding`)

    private func complete(trailers: H2HeaderBlock?) {
        state.responseEnded = true
        downstream.responseEnd(trailers: trailers)
        end(.complete(closeAfter: downstream.closesAfterResponse))
    }

    /// 502 with Go's error text in place of the response, or a cut once it started.
    private func fail(_ error: ProxyError) {
        if state.responseStarted { return end(.truncated) }
        Log.debug("h2c upstream failed: \(error) → 502")
        end(.answered(error.answer(address: pool.config.address)))
    }

    /// The one exit: the upstream stream is let go, the downstream carries the ending out.
    private func end(_ ending: ExchangeEnding) {
        guard !state.isOver else { return }
        state.isOver = true
        detach()
        downstream.exchangeEnded(ending)
    }

    /// Lets the upstream stream go: reset (CANCEL) unless the exchange is complete both ways and the stream is
    /// closing on its own (nghttp2 peers count resets: rapid-reset protection ends a connection after ~1000).
    private func detach() {
        if let upstream, upstreamID > 0 {
            let unsent = upstream.session.queuedBytes(stream: upstreamID)
            if unsent > 0 { downstream.requestDropped(unsent) }
            upstream.forget(upstreamID, reset: !(state.responseEnded && state.requestEndForwarded && unsent == 0))
        }
        release()
    }

    private func release() {
        let had = upstream != nil
        upstream = nil
        upstreamID = -1
        if had { downstream.upstreamReleased() }
    }

    // MARK: - Timeouts (spec §1.7, `TimeoutRule`)

    private var nextDeadlineMs: Int64 {
        options.nextDeadlineMs(
            startMs: state.startMs, lastWriteMs: state.lastWriteMs, responseStarted: state.responseStarted)
    }

    private func armTimer() {
        let deadline = nextDeadlineMs
        if deadline != .max { downstream.scheduleTimer(atMs: deadline) }
    }

    /// 504 before the response started; after, the downstream ends the response as its framing allows. The
    /// upstream stream is cancelled either way.
    private func timedOut() {
        let action = TimeoutRule.action(for: downstream.responseTail)
        if action == .gatewayTimeout { return end(.answered(TimeoutRule.gatewayTimeout(options.timeoutMessage))) }
        detach()  // its response is not complete there
        end(downstream.endAfterTimeout(action, message: options.timeoutMessage))
    }
}
