// An HTTP/1.1 request proxied to an h2c-only upstream (a revision whose port is named `h2c`): the HTTP/1.1
// downstream half of an `H2cExchange`. Upstream Knative relies on the ingress to speak h2c to such revisions;
// we also take HTTP/1.1 clients (the activator, curl) and translate: the request body is de-framed into DATA,
// the response is framed as HTTP/1.1 (its length when the upstream gave one, else chunked, with trailers in the
// chunked trailer section). The exchange's decisions (timeouts, retries, endings, interim heads) are
// `H2cExchange`'s; the endings are carried out by the HTTP/1 connection (`exchangeEnded`).
//
// Backpressure: request bytes are read from the client only while the upstream stream's send queue is under
// `queueLimit`; response DATA is acknowledged upstream only once the client's socket has taken it (the output
// buffer is under `StreamConnection.outputLimit`), so each direction holds at most a window plus a buffer.
// One object per request (unlike `ProxyExchange`): this path is rarer, and a fresh object makes the
// re-entrant finish (which may start the next request at once) safe.
// Exclusivity: as `ProxyExchange`, one state struct; it, the exchange and the head copy are
// `@exclusivity(unchecked)` (one loop thread, short accesses).
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

final class H1ToH2Bridge: H2cDownstream {
    /// Everything one request changes on the client's side.
    struct State {
        var clientKeepAlive = true
        var clientMinorVersion = 1
        var requestBody = BodyMeter()
        /// The head left the client's input (until then a failed connect may re-dispatch the request).
        var headTaken = false
        /// The response goes to the client chunked (the upstream gave no length).
        var chunked = false
        var bodyless = false
        var hasLength = false
        var closeAfter = false
        /// Response bytes written to the client but not yet acknowledged upstream.
        var unacknowledged = 0

        var requestDone: Bool { requestBody.ended }
    }

    unowned(unsafe) let downstream: HTTP1ServerConnection  // holds us while the exchange runs
    @exclusivity(unchecked) private var exchange: H2cExchange!
    @exclusivity(unchecked) private var state = State()
    @exclusivity(unchecked) private(set) var requestHead = HTTPHead()
    /// A copy of the head (the input's is consumed once the stream opens; a refused stream opens again).
    @exclusivity(unchecked) private(set) var requestHeadBytes: [UInt8] = []
    static let queueLimit = 64 * 1024

    init(downstream: HTTP1ServerConnection) {
        self.downstream = downstream
    }

    var loop: EventLoop { downstream.loop }

    /// Starts the request whose head is `headBytes` (at the front of the downstream input).
    func start(head: HTTPHead, headBytes: UnsafeRawBufferPointer, pool: UpstreamPool, options: ProxyOptions) {
        requestHead = head
        requestHeadBytes = Array(headBytes)
        state.clientKeepAlive = head.keepAlive && head.minorVersion >= 1
        state.clientMinorVersion = head.minorVersion
        state.requestBody.reset(head.requestFraming == .untilClose ? .none : head.requestFraming)
        exchange = H2cExchange(downstream: self, startMs: downstream.context.startMs)
        exchange.proxy(to: pool, options: options)
    }

    // MARK: - Downstream events

    func downstreamReady() {
        do {
            if downstream.hasPendingOutput { try downstream.flush() }
            acknowledge()
            if !state.requestDone {
                try pumpRequest()
            } else if downstream.canRead && Socket.peerHasClosed(downstream.fd) {
                exchange.abort()  // the client left (Go cancels the request)
            }
        } catch {
            requestFailed(error)
        }
    }

    func downstreamTimerFired() {
        exchange.timerFired(nowMs: loop.nowMs)
    }

    func downstreamClosed() {
        exchange.downstreamGone()
    }

    // MARK: - H2cDownstream

    var peerIP: [UInt8] { downstream.peerIP }
    var requestIsBodyless: Bool { state.requestDone }
    var takesInterimResponses: Bool { state.clientMinorVersion >= 1 }
    var closesAfterResponse: Bool { state.closeAfter }

    /// What the client's response can still take: whole chunks only are written, so a chunked response is
    /// always at a chunk boundary.
    var responseTail: ResponseTail {
        if !exchange.state.responseStarted { return .notStarted }
        if state.chunked { return .chunked(atBoundary: true, finalChunkPassed: false) }
        if state.closeAfter && !state.hasLength && !state.bodyless { return .closeDelimited }
        return .fixed
    }

    func scheduleTimer(atMs: Int64) { loop.schedule(downstream, at: atMs) }

    /// Only while the head is still at the front of the input: the connection dispatches it again.
    func retryElsewhere(after pool: UpstreamPool) -> Bool {
        !state.headTaken && downstream.retryElsewhere(after: pool)
    }

    /// The upstream session grants no window by default; one request per connection here, whose response is
    /// acknowledged as the client's socket takes it: one full window.
    func upstreamOpened() {
        takeHead()
        exchange.setResponseWindow(H2ProxyStream.responseWindowTarget)
        do { try pumpRequest() } catch { requestFailed(error) }
    }

    func requestPulled(_ count: Int) {
        guard !state.requestDone else { return }
        do { try pumpRequest() } catch { requestFailed(error) }
    }

    func requestDropped(_ count: Int) {}
    func upstreamReleased() {}

    private func takeHead() {
        guard !state.headTaken else { return }
        state.headTaken = true
        downstream.input!.moveReader(by: requestHeadBytes.count)
    }

    // MARK: - Request body

    /// A malformed request chunk, told apart from socket errors on the way out of `pumpRequest`.
    private static let malformedBody = SysError(code: EPROTO, call: "chunked")

    /// Moves body bytes from the client to the upstream stream (chunk framing stripped) while its queue has
    /// room (`requestPulled` resumes).
    private func pumpRequest() throws(SysError) {
        while !state.requestDone && exchange.isOpen {
            if exchange.queuedRequestBytes >= Self.queueLimit { return }
            let input = downstream.inputBuffer()
            if !input.isEmpty {
                let readable = input.readable
                let exchange = self.exchange!
                let taken: Int
                do {
                    taken = try state.requestBody.decode(readable) { range in
                        exchange.send(UnsafeRawBufferPointer(rebasing: readable[range]))
                    }
                } catch {
                    throw Self.malformedBody  // `requestFailed`: a 400
                }
                input.moveReader(by: taken)
                if state.requestDone {
                    exchange.send(UnsafeRawBufferPointer(start: nil, count: 0), end: true)
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

    /// Reading the request body failed: a malformed chunk is answered 400 (`Connection: close`) if no response
    /// byte went out yet, and the upstream stream is reset; anything else (the client left) aborts.
    private func requestFailed(_ error: SysError) {
        guard error.code == Self.malformedBody.code, !exchange.state.responseStarted else { return exchange.abort() }
        exchange.finish(.answered(.error(400, HTTPParseError.badChunk.responseText)))
    }

    // MARK: - Response

    func responseInterim(status: Int, _ block: H2HeaderBlock) {
        let output = downstream.outputBuffer()
        writeStatusLine(status, output)
        for i in 0..<block.count where block.name(i).first != 0x3A { append(block, i, to: output) }
        output.append("\r\n")
        flushDownstream()
    }

    func responseHead(status: Int, _ block: H2HeaderBlock, endStream: Bool) {
        let output = downstream.outputBuffer()
        state.bodyless = requestHead.methodKind == .head || status == 204 || status == 304
        state.hasLength = false
        writeStatusLine(status, output)
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
        if !endStream { flushDownstream() }
    }

    func responseData(_ bytes: UnsafeRawBufferPointer) {
        if state.bodyless { return exchange.acknowledge(bytes.count) }
        writeBody(bytes)
        state.unacknowledged += bytes.count
        flushDownstream()
        // A failed write ended the exchange, and its connection may be gone with it (this call came from the
        // upstream side, which does not keep the client's connection alive): touch nothing of it.
        guard exchange.isOpen else { return }
        acknowledge()
    }

    /// The final chunk, with the trailers in its trailer section.
    func responseEnd(trailers: H2HeaderBlock?) {
        guard state.chunked else { return }
        state.chunked = false
        let output = downstream.outputBuffer()
        output.append("0\r\n")
        if let trailers { for i in 0..<trailers.count { append(trailers, i, to: output) } }
        output.append("\r\n")
    }

    /// Response bytes the client's socket took are acknowledged upstream, which may then send more.
    private func acknowledge() {
        guard exchange.isOpen, state.unacknowledged > 0, downstream.outputRoom > 0 else { return }
        exchange.acknowledge(state.unacknowledged)
        state.unacknowledged = 0
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
        do { try downstream.flush() } catch { exchange.abort() }
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

    /// A chunked response takes the text as a chunk and its end; a close-delimited one the text and the close.
    func endAfterTimeout(_ action: TimeoutAction, message: StaticString) -> ExchangeEnding {
        switch action {
        case .appendChunkAndEnd:
            TimeoutRule.appendChunkAndEnd(message, to: downstream.outputBuffer())
            state.chunked = false  // the final chunk is written
            return .complete(closeAfter: state.closeAfter)
        case .appendAndClose:
            writeBody(TimeoutRule.bytes(message))
            return .complete(closeAfter: true)  // the close ends the body
        case .endAsIs, .cut, .appendAndEndStream, .abortTunnel, .gatewayTimeout:
            return .truncated
        }
    }

    func exchangeEnded(_ ending: ExchangeEnding) {
        takeHead()  // a failed connect answers in place of a request the input still holds
        let response = exchange.state
        downstream.exchangeEnded(
            ending, requestRead: state.requestDone, status: response.responseStarted ? response.status : 0,
            responseBytes: response.responseBytes)
    }

    static let contentLength = Array("content-length".utf8)
}
