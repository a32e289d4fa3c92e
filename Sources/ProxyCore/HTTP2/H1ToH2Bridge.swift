// An HTTP/1.1 request proxied to an h2c-only upstream (a revision whose port is named `h2c`). Upstream Knative
// relies on the ingress to speak h2c to such revisions; we also take HTTP/1.1 clients (the activator, curl)
// and translate: the request body is de-framed into DATA, the response is framed as HTTP/1.1 (its length
// when the upstream gave one, else chunked, with trailers in the chunked trailer section).
//
// Backpressure: request bytes are read from the client only while the upstream stream's send queue is under
// `queueLimit`; response DATA is acknowledged upstream only once the client's socket has taken it (the output
// buffer is under `StreamConnection.outputLimit`), so each direction holds at most a window plus a buffer.
// One object per request (unlike `ProxyExchange`): this path is rarer, and a fresh object makes the
// re-entrant finish (which may start the next request at once) safe.
// What it decides (timeouts, retries, endings, interim heads, body framing) is decided in `Exchange/`, as for
// the other exchange kinds; the endings are carried out by the HTTP/1 connection (`exchangeEnded`).
// Exclusivity: as `ProxyExchange`, one state struct in one `@exclusivity(unchecked)` property.
import Glibc

/// Whoever owns a stream on an `H2UpstreamConnection`.
protocol H2UpstreamStream: AnyObject {
    func upstreamHeaders(_ block: H2HeaderBlock, isTrailers: Bool, endStream: Bool)
    func upstreamData(_ bytes: UnsafeRawBufferPointer)
    func upstreamEnd()
    /// The stream closed (`code` ≠ 0: reset).
    func upstreamClosed(_ code: H2ErrorCode)
    /// The connection under the stream failed.
    func upstreamFailed(_ error: ProxyError)
    /// The upstream session framed `count` request bytes of this stream.
    func requestPulled(_ count: Int)
}

final class H1ToH2Bridge: H2UpstreamStream {
    /// Everything one request changes.
    struct State {
        var method = HTTPHead.Method.get
        var clientKeepAlive = true
        var clientMinorVersion = 1
        var requestBody = BodyMeter()
        /// Body bytes went to the upstream stream (it cannot be opened again with nothing lost).
        var bodyForwarded = false
        var retried = false
        var responseStarted = false
        var responseEnded = false
        /// The response goes to the client chunked (the upstream gave no length).
        var chunked = false
        var bodyless = false
        var hasLength = false
        var closeAfter = false
        var status = 0
        var responseBytes = 0
        /// Response bytes written to the client but not yet acknowledged upstream.
        var unacknowledged = 0
        var startMs: Int64 = 0
        var lastWriteMs: Int64 = 0
        var isOver = false

        var requestDone: Bool { requestBody.ended }
    }

    unowned(unsafe) let downstream: HTTP1ServerConnection  // holds us while the exchange runs
    @exclusivity(unchecked) private var upstream: H2UpstreamConnection?
    @exclusivity(unchecked) private var upstreamID: Int32 = -1
    @exclusivity(unchecked) private var pool: UpstreamPool!
    @exclusivity(unchecked) private var options = ProxyOptions()
    @exclusivity(unchecked) private var state = State()
    /// The upstream header block, kept for a second `open` after REFUSED_STREAM (one bridge per request).
    @exclusivity(unchecked) private var fields = H2HeaderList()
    static let queueLimit = 64 * 1024

    init(downstream: HTTP1ServerConnection) {
        self.downstream = downstream
    }

    private var loop: EventLoop { downstream.loop }

    /// Starts the request whose head is `headBytes` (at the front of the downstream input).
    func start(head: HTTPHead, headBytes: UnsafeRawBufferPointer, pool: UpstreamPool, options: ProxyOptions) {
        self.pool = pool
        self.options = options
        state.startMs = downstream.context.startMs
        state.lastWriteMs = state.startMs
        state.method = head.methodKind
        state.clientKeepAlive = head.keepAlive && head.minorVersion >= 1
        state.clientMinorVersion = head.minorVersion
        state.requestBody.reset(head.requestFraming == .untilClose ? .none : head.requestFraming)
        armTimer()
        let connection: H2UpstreamConnection
        do {
            connection = try pool.acquireH2()
        } catch {
            if downstream.retryElsewhere(after: pool) { return }
            downstream.input!.moveReader(by: headBytes.count)
            fail(.connect(error))
            return
        }
        H2Request.upstreamFields(
            head, bytes: headBytes, peerIP: downstream.peerIP, rewrite: options.rewrite, defaultHost: pool.hostBytes,
            loop: loop, into: &fields)
        downstream.input!.moveReader(by: headBytes.count)
        open(on: connection)
    }

    /// Opens the upstream stream with `fields` and starts the body.
    private func open(on connection: H2UpstreamConnection) {
        do { upstreamID = try connection.open(self, fields: fields, endStream: state.requestDone) } catch {
            connection.armIdle()
            fail(.badResponse)
            return
        }
        upstream = connection
        // The upstream session grants no window by default; one request per connection here, whose response
        // is acknowledged as the client's socket takes it: one full window.
        connection.session.setWindow(stream: upstreamID, H2ProxyStream.responseWindowTarget)
        do { try pumpRequest() } catch {
            requestFailed(error)
            return
        }
        connection.writeOut()
    }

    // MARK: - Downstream events

    func downstreamReady() {
        do {
            if downstream.hasPendingOutput { try downstream.flush() }
            acknowledge()
            if !state.requestDone {
                try pumpRequest()
            } else if downstream.canRead && Socket.peerHasClosed(downstream.fd) {
                abort()  // the client left (Go cancels the request)
            }
        } catch {
            requestFailed(error)
        }
    }

    func downstreamTimerFired() {
        if state.isOver { return }
        let now = loop.nowMs
        if nextDeadlineMs <= now { timedOut() } else { armTimer() }
    }

    func downstreamClosed() {
        detach()
        state.isOver = true
    }

    // MARK: - Request body

    /// A malformed request chunk, told apart from socket errors on the way out of `pumpRequest`.
    private static let malformedBody = SysError(code: EPROTO, call: "chunked")

    /// Moves body bytes from the client to the upstream stream (chunk framing stripped) while its queue has
    /// room.
    private func pumpRequest() throws(SysError) {
        guard let upstream, !state.requestDone else { return }
        defer { upstream.writeOut() }
        while !state.requestDone {
            // `requestPulled` resumes
            if upstream.session.queuedBytes(stream: upstreamID) >= Self.queueLimit { return }
            let input = downstream.inputBuffer()
            if !input.isEmpty {
                let readable = input.readable
                let id = upstreamID
                let session = upstream.session!
                let taken: Int
                do {
                    taken = try state.requestBody.decode(readable) { range in
                        session.send(stream: id, UnsafeRawBufferPointer(rebasing: readable[range]))
                    }
                } catch {
                    throw Self.malformedBody  // `requestFailed`: a 400
                }
                input.moveReader(by: taken)
                state.bodyForwarded = true
                if state.requestDone {
                    upstream.session.send(stream: upstreamID, UnsafeRawBufferPointer(start: nil, count: 0), end: true)
                    return
                }
                continue
            }
            guard downstream.canRead else { return }
            switch try downstream.readInput(limit: input.capacity) {
            case .data, .full, .wouldBlock: continue
            case .eof: throw SysError(code: ECONNRESET, call: "read")  // the client left mid-body
            }
        }
    }

    func requestPulled(_ count: Int) {
        guard !state.requestDone, !state.isOver else { return }
        do { try pumpRequest() } catch { requestFailed(error) }
    }

    // MARK: - Response

    func upstreamHeaders(_ block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
        guard !state.isOver else { return }
        if block.isTruncated {  // over our header limit: not passed on with fields missing
            if state.responseStarted { end(.truncated) } else { fail(.badResponse) }
            return
        }
        let output = downstream.outputBuffer()
        if isTrailers {
            if state.chunked {
                output.append("0\r\n")
                for i in 0..<block.count { append(block, i, to: output) }
                output.append("\r\n")
                state.chunked = false  // the final chunk is written
            }
            responseComplete()
            return
        }
        let code = H2Request.status(block)
        switch InterimRule.classify(
            status: code, clientTakesInterim: state.clientMinorVersion >= 1, upgradeRequested: false)
        {
        case .invalid, .switchProtocols:
            // No status, or a 101 (HTTP/2 has no upgrade): a malformed response.
            if state.responseStarted { end(.truncated) } else { fail(.badResponse) }
            return
        case .forwardInterim:
            writeStatusLine(code, output)
            for i in 0..<block.count where block.name(i).first != 0x3A { append(block, i, to: output) }
            output.append("\r\n")
            flushDownstream()
            return
        case .dropInterim:
            return
        case .final:
            break
        }
        state.responseStarted = true
        state.status = code
        state.lastWriteMs = loop.nowMs
        state.bodyless = state.method == .head || code == 204 || code == 304
        state.hasLength = false
        writeStatusLine(code, output)
        for i in 0..<block.count where block.name(i).first != 0x3A {
            if block.name(i).elementsEqual(H1ToH2Bridge.contentLength) { state.hasLength = true }
            append(block, i, to: output)
        }
        let hasBody = !state.hasLength && !state.bodyless && !endStream
        // No length: chunked for HTTP/1.1; an HTTP/1.0 client cannot read chunks, its body ends with the close.
        state.chunked = hasBody && state.clientMinorVersion >= 1
        if !state.hasLength && !state.bodyless && endStream { output.append("content-length: 0\r\n") }
        if state.chunked { output.append("transfer-encoding: chunked\r\n") }
        state.closeAfter = ReuseRule.closesAfterResponse(
            clientKeepAlive: state.clientKeepAlive, closeDelimited: hasBody && !state.chunked,
            draining: loop.draining)
        output.append(state.closeAfter ? "connection: close\r\n\r\n" : "\r\n")
        if endStream {
            responseComplete()
        } else {
            flushDownstream()
        }
    }

    func upstreamData(_ bytes: UnsafeRawBufferPointer) {
        guard !state.isOver, state.responseStarted, !state.bodyless else {
            upstream?.session.consume(stream: upstreamID, count: bytes.count)
            return
        }
        writeBody(bytes)
        state.responseBytes += bytes.count
        state.unacknowledged += bytes.count
        state.lastWriteMs = loop.nowMs
        flushDownstream()
        if state.isOver { return }  // the client went away: the connection (and `downstream`) may be gone
        acknowledge()
    }

    func upstreamEnd() {
        guard !state.isOver else { return }
        responseComplete()
    }

    func upstreamClosed(_ code: H2ErrorCode) {
        let stream = upstreamID
        upstream = nil
        upstreamID = -1
        guard !state.isOver, !state.responseEnded else { return }
        upstreamFailed(code == .noError ? .upstreamClosed : .streamReset(code: code, stream: stream))
    }

    /// The upstream failed before the response ended: `ReplayRule` says whether the stream is opened again
    /// (REFUSED_STREAM: not processed); else 502, or a cut once the response started.
    func upstreamFailed(_ error: ProxyError) {
        upstream = nil
        upstreamID = -1
        guard !state.isOver, !state.responseEnded else { return }
        let decision = ReplayRule.decide(
            error.replayFailure(reusedConnection: false), responseBytesSeen: state.responseStarted,
            heldWhole: !state.bodyForwarded, safe: false, retried: state.retried)
        // A failed connect is not offered to the responder: the bridge serves the queue-proxy, whose one
        // upstream is the app (the activator speaks HTTP/1.1 to queue-proxies, never h2c-only).
        if decision == .samePool, let connection = try? pool.acquireH2() {
            state.retried = true
            open(on: connection)
            return
        }
        if state.responseStarted { end(.truncated) } else { fail(error) }
    }

    /// Response bytes the client's socket took are acknowledged upstream, which may then send more.
    private func acknowledge() {
        guard !state.isOver, state.unacknowledged > 0, downstream.outputRoom > 0, let upstream else { return }
        upstream.session.consume(stream: upstreamID, count: state.unacknowledged)
        state.unacknowledged = 0
        upstream.writeOut()
    }

    /// Body bytes to the client, as one chunk when the response is chunked.
    private func writeBody(_ bytes: UnsafeRawBufferPointer) {
        let output = downstream.outputBuffer()
        if state.chunked {
            output.append(hex: bytes.count)
            output.append("\r\n")
            output.append(bytes)
            output.append("\r\n")
        } else {
            output.append(bytes)
        }
    }

    private func flushDownstream() {
        do { try downstream.flush() } catch { abort() }
    }

    private func writeStatusLine(_ code: Int, _ output: ByteBuffer) {
        output.append("HTTP/1.1 ")
        output.append(decimal: code)
        output.append(byte: 0x20)
        output.append(LocalResponse.reasonPhrase(code))
        output.append("\r\n")
    }

    private func append(_ block: H2HeaderBlock, _ i: Int, to output: ByteBuffer) {
        output.append(block.name(i))
        output.append(": ")
        output.append(block.value(i))
        output.append("\r\n")
    }

    // MARK: - Endings (`ExchangeEnding`)

    private func responseComplete() {
        if state.chunked { downstream.outputBuffer().append("0\r\n\r\n") }
        state.responseEnded = true
        end(.complete(closeAfter: state.closeAfter))
    }

    /// The one exit: the upstream stream is let go, the downstream carries the ending out.
    private func end(_ ending: ExchangeEnding) {
        guard !state.isOver else { return }
        state.isOver = true
        detach()
        downstream.exchangeEnded(
            ending, requestRead: state.requestDone, status: state.responseStarted ? state.status : 0,
            responseBytes: state.responseBytes)
    }

    /// 502 with Go's error text (nothing of the response was sent).
    private func fail(_ error: ProxyError) {
        end(.answered(error.answer(address: pool.config.address)))
    }

    /// Reading the request body failed: a malformed chunk is answered 400 (`Connection: close`) if no response
    /// byte went out yet, and the upstream stream is reset; anything else (the client left) aborts.
    private func requestFailed(_ error: SysError) {
        guard error.code == Self.malformedBody.code, !state.responseStarted else { return abort() }
        end(.answered(.error(400, HTTPParseError.badChunk.responseText)))
    }

    private func abort() { end(.aborted) }

    private func detach() {
        if let upstream, upstreamID > 0 {
            upstream.forget(upstreamID, reset: !(state.responseEnded && state.requestDone))
        }
        upstream = nil
        upstreamID = -1
    }

    // MARK: - Timeouts (spec §1.7, `TimeoutRule`)

    private var nextDeadlineMs: Int64 {
        options.nextDeadlineMs(
            startMs: state.startMs, lastWriteMs: state.lastWriteMs, responseStarted: state.responseStarted)
    }

    private func armTimer() {
        let deadline = nextDeadlineMs
        if deadline != .max { loop.schedule(downstream, at: deadline) }
    }

    /// What the client's response can still take: whole chunks only are written, so a chunked response is
    /// always at a chunk boundary.
    private var responseTail: ResponseTail {
        if !state.responseStarted { return .notStarted }
        if state.chunked { return .chunked(atBoundary: true, finalChunkPassed: false) }
        if state.closeAfter && !state.hasLength && !state.bodyless { return .closeDelimited }
        return .fixed
    }

    private func timedOut() {
        let message = options.timeoutMessage
        switch TimeoutRule.action(for: responseTail) {
        case .gatewayTimeout:
            end(.answered(TimeoutRule.gatewayTimeout(message)))
        case .appendChunkAndEnd:
            detach()  // cancels the upstream stream: its response is not complete there
            TimeoutRule.appendChunkAndEnd(message, to: downstream.outputBuffer())
            state.chunked = false  // the final chunk is written
            responseComplete()
        case .appendAndClose:
            writeBody(TimeoutRule.bytes(message))
            end(.complete(closeAfter: true))  // the close ends the body
        case .endAsIs, .cut, .appendAndEndStream, .abortTunnel:
            end(.truncated)
        }
    }

    static let contentLength = Array("content-length".utf8)
}
