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
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
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
    unowned(unsafe) let downstream: HTTP1ServerConnection  // holds us while the exchange runs
    @exclusivity(unchecked) private var upstream: H2UpstreamConnection?
    @exclusivity(unchecked) private var upstreamID: Int32 = -1
    @exclusivity(unchecked) private var pool: UpstreamPool!
    @exclusivity(unchecked) private var options = ProxyOptions()
    @exclusivity(unchecked) private var method = HTTPHead.Method.get
    @exclusivity(unchecked) private var keepAlive = true
    @exclusivity(unchecked) private var clientMinorVersion = 1
    @exclusivity(unchecked) private var requestFraming = BodyFraming.none
    @exclusivity(unchecked) private var requestRemaining = 0
    @exclusivity(unchecked) private var requestDecoder = ChunkedDecoder()
    @exclusivity(unchecked) private var requestDone = false
    @exclusivity(unchecked) private var bodyForwarded = false
    @exclusivity(unchecked) private var responseStarted = false
    @exclusivity(unchecked) private var responseEnded = false
    @exclusivity(unchecked) private var chunked = false
    @exclusivity(unchecked) private var bodyless = false
    @exclusivity(unchecked) private var hasLength = false
    @exclusivity(unchecked) private var closeAfter = false
    @exclusivity(unchecked) private var status = 0
    @exclusivity(unchecked) private var responseBytes = 0
    /// Response bytes written to the client but not yet acknowledged upstream.
    @exclusivity(unchecked) private var unacknowledged = 0
    @exclusivity(unchecked) private var startMs: Int64 = 0
    @exclusivity(unchecked) private var lastWriteMs: Int64 = 0
    @exclusivity(unchecked) private var isOver = false
    static let queueLimit = 64 * 1024

    init(downstream: HTTP1ServerConnection) {
        self.downstream = downstream
    }

    private var loop: EventLoop { downstream.loop }

    /// Starts the request whose head is `headBytes` (at the front of the downstream input).
    func start(head: HTTPHead, headBytes: UnsafeRawBufferPointer, pool: UpstreamPool, options: ProxyOptions) {
        self.pool = pool
        self.options = options
        startMs = downstream.context.startMs
        lastWriteMs = startMs
        method = head.methodKind
        keepAlive = head.keepAlive && head.minorVersion >= 1
        clientMinorVersion = head.minorVersion
        requestFraming = head.requestFraming
        switch requestFraming {
        case .none, .untilClose, .length(0): requestDone = true
        case .length(let n): requestRemaining = n
        case .chunked: break
        }
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
            loop: loop, into: &connection.requestFields)
        downstream.input!.moveReader(by: headBytes.count)
        do { upstreamID = try connection.open(self, endStream: requestDone) } catch {
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
            if !requestDone {
                try pumpRequest()
            } else if downstream.canRead && Socket.peerHasClosed(downstream.fd) {
                abort()  // the client left (Go cancels the request)
            }
        } catch {
            requestFailed(error)
        }
    }

    func downstreamTimerFired() {
        if isOver { return }
        let now = loop.nowMs
        if nextDeadlineMs <= now { timedOut() } else { armTimer() }
    }

    func downstreamClosed() {
        detach()
        isOver = true
    }

    // MARK: - Request body

    /// Moves body bytes from the client to the upstream stream while its queue has room.
    private func pumpRequest() throws(SysError) {
        guard let upstream, !requestDone else { return }
        defer { upstream.writeOut() }
        while !requestDone {
            // `requestPulled` resumes
            if upstream.session.queuedBytes(stream: upstreamID) >= Self.queueLimit { return }
            let input = downstream.inputBuffer()
            if !input.isEmpty {
                let readable = input.readable
                switch requestFraming {
                case .length:
                    let n = min(requestRemaining, readable.count)
                    upstream.session.send(stream: upstreamID, UnsafeRawBufferPointer(rebasing: readable[0..<n]))
                    input.moveReader(by: n)
                    requestRemaining -= n
                    if requestRemaining == 0 { requestDone = true }
                case .chunked:
                    let id = upstreamID
                    let session = upstream.session!
                    let taken: Int
                    do {
                        taken = try requestDecoder.consume(readable) { range in
                            session.send(stream: id, UnsafeRawBufferPointer(rebasing: readable[range]))
                        }
                    } catch {
                        throw SysError(code: EPROTO, call: "chunked")  // `requestFailed`: a 400
                    }
                    input.moveReader(by: taken)
                    if requestDecoder.isDone { requestDone = true }
                case .none, .untilClose:
                    requestDone = true
                }
                bodyForwarded = true
                if requestDone {
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
        guard !requestDone, !isOver else { return }
        do { try pumpRequest() } catch { requestFailed(error) }
    }

    // MARK: - Response

    func upstreamHeaders(_ block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
        guard !isOver else { return }
        if block.isTruncated {  // over our header limit: not passed on with fields missing
            if responseStarted { truncate() } else { fail(.badResponse) }
            return
        }
        let output = downstream.outputBuffer()
        if isTrailers {
            if chunked {
                output.append("0\r\n")
                for i in 0..<block.count { append(block, i, to: output) }
                output.append("\r\n")
                chunked = false  // the final chunk is written
            }
            responseComplete()
            return
        }
        let code = H2Request.status(block)
        if code < 200 {
            if code != 101 && clientMinorVersion >= 1 {  // interim answers go to HTTP/1.1 clients as they are
                writeStatusLine(code, output)
                for i in 0..<block.count where block.name(i).first != 0x3A { append(block, i, to: output) }
                output.append("\r\n")
                flushDownstream()
            }
            return
        }
        responseStarted = true
        status = code
        lastWriteMs = loop.nowMs
        bodyless = method == .head || code == 204 || code == 304
        hasLength = false
        writeStatusLine(code, output)
        for i in 0..<block.count where block.name(i).first != 0x3A {
            if block.name(i).elementsEqual(H1ToH2Bridge.contentLength) { hasLength = true }
            append(block, i, to: output)
        }
        // No length: chunked for HTTP/1.1; an HTTP/1.0 client cannot read chunks, its body ends with the close.
        chunked = !hasLength && !bodyless && !endStream && clientMinorVersion >= 1
        if !hasLength && !bodyless && endStream { output.append("content-length: 0\r\n") }
        if chunked { output.append("transfer-encoding: chunked\r\n") }
        closeAfter = !keepAlive || loop.draining || (!hasLength && !bodyless && !endStream && !chunked)
        output.append(closeAfter ? "connection: close\r\n\r\n" : "\r\n")
        if endStream {
            responseComplete()
        } else {
            flushDownstream()
        }
    }

    func upstreamData(_ bytes: UnsafeRawBufferPointer) {
        guard !isOver, responseStarted, !bodyless else {
            upstream?.session.consume(stream: upstreamID, count: bytes.count)
            return
        }
        writeBody(bytes)
        responseBytes += bytes.count
        unacknowledged += bytes.count
        lastWriteMs = loop.nowMs
        flushDownstream()
        if isOver { return }  // the client went away: the connection (and `downstream`) may be gone
        acknowledge()
    }

    func upstreamEnd() {
        guard !isOver else { return }
        responseComplete()
    }

    func upstreamClosed(_ code: H2ErrorCode) {
        let stream = upstreamID
        upstream = nil
        upstreamID = -1
        guard !isOver, !responseEnded else { return }
        if responseStarted {
            truncate()
        } else {
            fail(code == .noError ? .upstreamClosed : .streamReset(code: code, stream: stream))
        }
    }

    /// No retry on another pool here, unlike `ProxyExchange`: the bridge serves the queue-proxy, whose one
    /// upstream is the app (the activator speaks HTTP/1.1 to queue-proxies, never h2c-only).
    func upstreamFailed(_ error: ProxyError) {
        upstream = nil
        upstreamID = -1
        guard !isOver, !responseEnded else { return }
        if responseStarted { truncate() } else { fail(error) }
    }

    /// Response bytes the client's socket took are acknowledged upstream, which may then send more.
    private func acknowledge() {
        guard !isOver, unacknowledged > 0, downstream.outputRoom > 0, let upstream else { return }
        upstream.session.consume(stream: upstreamID, count: unacknowledged)
        unacknowledged = 0
        upstream.writeOut()
    }

    /// Body bytes to the client, as one chunk when the response is chunked.
    private func writeBody(_ bytes: UnsafeRawBufferPointer) {
        let output = downstream.outputBuffer()
        if chunked {
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

    // MARK: - Endings

    private func responseComplete() {
        if chunked { downstream.outputBuffer().append("0\r\n\r\n") }
        responseEnded = true
        isOver = true
        detach()
        downstream.endRequest(status: status, responseBytes: responseBytes)
        downstream.exchangeFinished(reusable: !closeAfter && requestDone)
    }

    /// 502 with Go's error text (nothing of the response was sent).
    private func fail(_ error: ProxyError) {
        isOver = true
        detach()
        let response = error.response(address: pool.config.address)
        downstream.respondInstead(response, close: !requestDone)
        downstream.endRequest(status: 502, responseBytes: response.body.count)
        downstream.exchangeFinished(reusable: requestDone && keepAlive)
    }

    /// The response cannot be completed: the client gets what came, without the framing's end.
    private func truncate() {
        isOver = true
        detach()
        downstream.endRequest(status: status, responseBytes: responseBytes)
        downstream.exchangeTruncated()
    }

    /// Reading the request body failed: a malformed chunk is answered 400 (`Connection: close`) if no response
    /// byte went out yet, and the upstream stream is reset; anything else (the client left) aborts.
    private func requestFailed(_ error: SysError) {
        guard error.code == EPROTO, !responseStarted, !isOver else {
            abort()
            return
        }
        isOver = true
        detach()
        let response = LocalResponse.error(400, "400 Bad Request")
        downstream.respondInstead(response, close: true)
        downstream.endRequest(status: 400, responseBytes: response.body.count)
        downstream.exchangeFinished(reusable: false)
    }

    private func abort() {
        guard !isOver else { return }
        isOver = true
        detach()
        downstream.endRequest(status: responseStarted ? status : 0, responseBytes: responseBytes)
        downstream.exchangeAborted()
    }

    private func detach() {
        if let upstream, upstreamID > 0 { upstream.forget(upstreamID, reset: !(responseEnded && requestDone)) }
        upstream = nil
        upstreamID = -1
    }

    // MARK: - Timeouts (spec §1.7, as `ProxyExchange`)

    private var nextDeadlineMs: Int64 {
        options.nextDeadlineMs(startMs: startMs, lastWriteMs: lastWriteMs, responseStarted: responseStarted)
    }

    private func armTimer() {
        let deadline = nextDeadlineMs
        if deadline != .max { loop.schedule(downstream, at: deadline) }
    }

    private func timedOut() {
        if !responseStarted {
            isOver = true
            detach()
            downstream.exchangeTimedOut(message: options.timeoutMessage)
            return
        }
        // As upstream (spec §1.7): the text is appended and the response ends properly: the final chunk, or the
        // close of a close-delimited body. A declared length (or no body) cannot take more bytes: cut and close.
        let text = options.timeoutMessage
        let bytes = UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
        if chunked {
            detach()  // cancels the upstream stream (the response is not complete there)
            writeBody(bytes)
            responseComplete()
        } else {
            if closeAfter && !hasLength && !bodyless { writeBody(bytes) }
            truncate()
        }
    }

    static let contentLength = Array("content-length".utf8)
}
