// One request/response exchange between a downstream connection and an upstream connection (HAProxy's
// "stream"). It moves head and body bytes both ways with backpressure, decides reuse, and turns failures
// into answers. The HTTP/1 specifics (head rewriting, chunk walking) sit in `HeadRewriter` and the codec.
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import Glibc

/// The proxy's domain errors; `ProxyError.response` is the one place that maps them to answers.
enum ProxyError: Error {
    case connect(SysError)
    case upstreamClosed
    case upstreamIO(SysError)
    case badResponse
    /// An HTTP/2 upstream reset the stream before answering.
    case streamReset(code: H2ErrorCode, stream: Int32)

    /// Go's error text, as Knative's error handler writes it into the 502 body.
    func response(address: SocketAddress) -> LocalResponse {
        switch self {
        case .connect(let error):
            return .error(502, "dial tcp \(address): connect: \(SysError.text(error.code))")
        case .upstreamClosed:
            return .error(502, "EOF")
        case .upstreamIO(let error):
            return .error(502, "read tcp \(address): \(SysError.text(error.code))")
        case .badResponse:
            return .error(502, "malformed HTTP response")
        case .streamReset(let code, let stream):
            return .error(502, "stream error: stream ID \(stream); \(code.name); received from peer")
        }
    }
}

/// The exchange. One instance per downstream connection, reused for every request on it.
///
/// | phase          | request side                     | response side                          |
/// |----------------|----------------------------------|----------------------------------------|
/// | `.awaitingHead`| body streams up (full duplex)    | reading the upstream's head            |
/// | `.body`        | body streams up                  | body streams down                      |
/// | `.tunnel`      | raw bytes up until EOF           | raw bytes down until EOF (after a 101) |
/// | `.done`        | -                                | -                                      |
final class ProxyExchange {
    enum Phase { case idle, awaitingHead, body, tunnel, done }

    unowned(unsafe) let downstream: HTTP1ServerConnection  // owns us
    @exclusivity(unchecked) var upstream: UpstreamConnection?
    /// Strong for the same reason as `UpstreamConnection.pool`; dropped when the exchange ends.
    @exclusivity(unchecked) var pool: UpstreamPool!
    @exclusivity(unchecked) var phase = Phase.idle

    // Request side
    @exclusivity(unchecked) private var method = HTTPHead.Method.get
    @exclusivity(unchecked) private var requestFraming = BodyFraming.none
    @exclusivity(unchecked) private var requestRemaining = 0
    @exclusivity(unchecked) private var requestDecoder = ChunkedDecoder()
    /// Verified body bytes at the front of the downstream input not yet taken by the upstream.
    @exclusivity(unchecked) private var requestPending = 0
    @exclusivity(unchecked) private var requestBodyEnded = false
    @exclusivity(unchecked) private var requestDone = false
    @exclusivity(unchecked) private var downstreamKeepAlive = true
    @exclusivity(unchecked) private var isUpgradeRequest = false
    @exclusivity(unchecked) private var clientMinorVersion = 1

    // Response side
    @exclusivity(unchecked) private var responseParser = HTTP1Parser()
    @exclusivity(unchecked) private var responseHead = HTTPHead()
    @exclusivity(unchecked) private var responseFraming = BodyFraming.none
    @exclusivity(unchecked) private var responseRemaining = 0
    @exclusivity(unchecked) private var responseDecoder = ChunkedDecoder()
    @exclusivity(unchecked) private var responsePending = 0
    @exclusivity(unchecked) private var responseBodyEnded = false
    @exclusivity(unchecked) private var responseStarted = false
    @exclusivity(unchecked) private var responseBytesSeen = false
    @exclusivity(unchecked) private var closeDownstreamAfter = false
    @exclusivity(unchecked) private var upstreamKeepAlive = true
    /// Bytes of a complete request still intact at the front of the upstream output buffer: sent again if the
    /// connect fails (nothing was sent) or, when `replaySafe`, if a reused connection dies before answering.
    /// 0 = not held whole.
    @exclusivity(unchecked) private var replayLength = 0
    /// Whether the request may reach the app twice (`isReplayable`).
    @exclusivity(unchecked) private var replaySafe = false
    @exclusivity(unchecked) private var hasRetried = false
    @exclusivity(unchecked) private var downstreamEOF = false
    /// In a tunnel, a FIN to pass on once the queued bytes ahead of it are written.
    @exclusivity(unchecked) private var upstreamShutdownOwed = false
    @exclusivity(unchecked) private var downstreamShutdownOwed = false
    @exclusivity(unchecked) private var options = ProxyOptions()
    @exclusivity(unchecked) private var startMs: Int64 = 0
    @exclusivity(unchecked) private var lastWriteMs: Int64 = 0
    @exclusivity(unchecked) private var responseStatus = 0
    @exclusivity(unchecked) private var responseBytes = 0
    /// When a drain started while this exchange was a tunnel: the tunnel's last moment (Knative: 60 s).
    @exclusivity(unchecked) private var tunnelDrainDeadlineMs = Int64.max
    @exclusivity(unchecked) private var upstreamEOF = false

    init(downstream: HTTP1ServerConnection) {
        self.downstream = downstream
    }

    // MARK: - Start

    /// Starts proxying the request whose head is `headBytes` (at the front of the downstream input).
    func start(head: HTTPHead, headBytes: UnsafeRawBufferPointer, pool: UpstreamPool, options: ProxyOptions) {
        self.pool = pool
        self.options = options
        phase = .awaitingHead
        startMs = downstream.context.startMs
        lastWriteMs = startMs
        responseStatus = 0
        responseBytes = 0
        tunnelDrainDeadlineMs = .max
        armTimer()
        method = head.methodKind
        requestFraming = head.requestFraming
        requestDecoder.reset()
        requestPending = 0
        requestRemaining = 0
        requestBodyEnded = false
        requestDone = false
        switch requestFraming {
        case .none, .untilClose: requestBodyEnded = true
        case .length(let n): requestRemaining = n
        case .chunked: break
        }
        clientMinorVersion = head.minorVersion
        downstreamKeepAlive = head.keepAlive && head.minorVersion >= 1
        isUpgradeRequest = head.isUpgrade
        responseParser.reset()
        responseStarted = false
        responseBytesSeen = false
        responsePending = 0
        responseBodyEnded = false
        closeDownstreamAfter = false
        upstreamKeepAlive = true
        replayLength = 0
        replaySafe = Self.isReplayable(head, headBytes)
        hasRetried = false
        downstreamEOF = false
        upstreamEOF = false
        upstreamShutdownOwed = false
        downstreamShutdownOwed = false

        let connection: UpstreamConnection
        do {
            connection = try pool.acquire()
        } catch {
            // Nothing was sent: the responder may send the request elsewhere (the activator tries another pod).
            phase = .idle
            if downstream.retryElsewhere(after: pool) { return }
            phase = .awaitingHead
            downstream.input!.moveReader(by: headBytes.count)
            fail(.connect(error))
            return
        }
        attach(connection)
        HeadRewriter.writeRequest(
            head, bytes: headBytes, peerIP: downstream.peerIP, into: connection.outputBuffer(),
            upgrade: isUpgradeRequest, rewrite: options.rewrite, defaultHost: pool.hostBytes)
        downstream.input!.moveReader(by: headBytes.count)
        do {
            // Head and whatever body already arrived leave in one write. A request that fits whole is kept
            // in the buffer for a replay.
            try pumpRequest(queueOnly: true)
            if requestDone { replayLength = connection.output!.writerIndex }
            if connection.isConnected { try flushUpstream() }
        } catch {
            upstreamFailed(.upstreamIO(error))
        }
    }

    private func attach(_ connection: UpstreamConnection) {
        upstream = connection
        connection.exchange = self
    }

    // MARK: - Events

    /// The downstream became readable or writable.
    func downstreamReady() {
        do {
            if downstream.hasPendingOutput {
                guard try downstream.flush() else { return }
            }
            if downstreamShutdownOwed {
                downstreamShutdownOwed = false
                Socket.shutdownWrite(downstream.fd)
            }
            if phase == .body || phase == .tunnel { try pumpResponse() }
            guard phase != .idle && phase != .done else { return }
            if !requestDone {
                try pumpRequest()
            } else if !downstreamEOF && phase != .tunnel {
                try watchDownstream()
            }
        } catch {
            abort()  // the client's socket failed
        }
    }

    /// The upstream became readable or writable.
    func upstreamReady(_ connection: UpstreamConnection) {
        guard connection === upstream else { return }
        if !connection.isConnected {
            guard connection.canWrite || connection.canRead else { return }
            let code = Socket.pendingError(connection.fd)
            if code != 0 {
                if replayLength > 0, let pool = downstream.responder.alternativePool(for: downstream, after: pool) {
                    // Nothing reached the upstream: replay the whole request on another one.
                    moveReplay(from: connection, to: pool)
                    return
                }
                upstreamFailed(.connect(SysError(code: code, call: "connect")))
                return
            }
            connection.isConnected = true
            connection.canWrite = true
        }
        do {
            try flushUpstream()
            try pumpResponse()
        } catch {
            upstreamFailed(.upstreamIO(error))
        }
    }

    // MARK: - Timeouts (spec §1.7)

    /// The earliest moment a timeout could fire, or `Int64.max`.
    private var nextDeadlineMs: Int64 {
        min(
            tunnelDrainDeadlineMs,
            options.nextDeadlineMs(startMs: startMs, lastWriteMs: lastWriteMs, responseStarted: responseStarted))
    }

    private func armTimer() {
        let deadline = nextDeadlineMs
        if deadline != .max { downstream.loop.schedule(downstream, at: deadline) }
    }

    /// The downstream's timer fired while this exchange runs: a timeout, or a re-check after progress.
    func downstreamTimerFired() {
        guard phase != .idle else { return }
        let now = downstream.loop.nowMs
        if now >= tunnelDrainDeadlineMs {
            abort()
            return
        }
        if nextDeadlineMs <= now {
            timedOut()
        } else {
            armTimer()  // progress moved the deadline (idle timer): wait for the rest
        }
    }

    /// A drain began: a tunnel gets a grace period, ordinary exchanges run to completion.
    func drainStarted() {
        guard phase == .tunnel else { return }
        tunnelDrainDeadlineMs = downstream.loop.nowMs + downstream.config.tunnelDrainGraceMs
        armTimer()
    }

    /// Knative's timeout handler (spec §1.7): 504 `request timeout` before the response started; after, the
    /// text is appended to the body and the response is ended cleanly, as upstream's Go server does (final
    /// chunk; close for a close-delimited body), so that a client reading the whole body gets it all
    /// (conformance's TestRevisionTimeout). A declared length cannot take more bytes: that response is cut
    /// (Go drops the write too).
    private func timedOut() {
        if phase == .tunnel {
            abort()  // an upgraded connection's bytes are not HTTP: no text (Go cannot write to a hijacked one)
            return
        }
        if !responseStarted {
            closeUpstream()
            phase = .idle
            downstream.exchangeTimedOut(message: options.timeoutMessage)
            return
        }
        // Body bytes already read and verified count as written by the app: they go first, so the framing
        // we end is the one the client sees.
        if responsePending > 0, let input = upstream?.input, !dechunkMode {
            downstream.outputBuffer().append(UnsafeRawBufferPointer(rebasing: input.readable[0..<responsePending]))
            input.moveReader(by: responsePending)
            responseBytes += responsePending
            responsePending = 0
        }
        let text = options.timeoutMessage
        let output = downstream.outputBuffer()
        switch responseFraming {
        case .chunked where !dechunkMode:
            if responseDecoder.isDone {
                // The app's last chunk is already on its way (an upstream proxy timed out first and ended the
                // response): the response is complete, the text is not written twice.
                endTimedOut(complete: true)
                return
            }
            // Mid-chunk (the app's chunk arrived in part) nothing can be inserted: the response is cut.
            guard responseDecoder.isAtChunkBoundary else { break }
            output.append(hex: text.utf8CodeUnitCount)
            output.append("\r\n")
            output.append(text)
            output.append("\r\n0\r\n\r\n")
            endTimedOut(complete: true)
            return
        case .chunked, .untilClose:
            output.append(text)
            endTimedOut(complete: false)  // the close that follows ends the body
            return
        case .length, .none:
            break
        }
        truncateResponse()
    }

    /// Ends a timed-out response whose framing is complete (`complete`) or ends with the close.
    private func endTimedOut(complete: Bool) {
        phase = .idle
        closeUpstream()
        downstream.endRequest(status: responseStatus, responseBytes: responseBytes)
        downstream.exchangeFinished(reusable: complete && requestDone && !closeDownstreamAfter)
    }

    private func closeUpstream() {
        if let connection = upstream {
            upstream = nil
            connection.exchange = nil
            connection.close()
        }
    }

    /// The downstream connection closed under us (timer, error): drop the upstream side too.
    func downstreamClosed() {
        if let connection = upstream {
            upstream = nil
            connection.exchange = nil
            connection.close()
        }
        phase = .idle
    }

    // MARK: - Request side

    /// Moves request body bytes from the downstream input to the upstream, as far as both allow.
    /// - Parameter queueOnly: only queue what is already in the input (no syscalls): the first fill.
    private func pumpRequest(queueOnly: Bool = false) throws(SysError) {
        guard let connection = upstream, !downstreamEOF else { return }
        while !requestDone {
            let input = downstream.inputBuffer()
            if requestPending == 0 && !requestBodyEnded && !input.isEmpty {
                guard verifyRequestBytes(input) else { return }
            }
            if requestPending > 0 {
                let bytes = UnsafeRawBufferPointer(rebasing: input.readable[0..<requestPending])
                let taken = queueOnly ? connection.queue(bytes) : try connection.send(bytes)
                input.moveReader(by: taken)
                requestPending -= taken
                if requestPending > 0 { return }  // the upstream pushes back; resumed when it drains
            }
            if requestBodyEnded && requestPending == 0 {
                requestDone = true
                return
            }
            if queueOnly || !downstream.canRead { return }
            switch try downstream.readInput(limit: input.capacity) {
            case .data, .full, .wouldBlock: continue
            case .eof:
                downstreamEOF = true
                if phase == .tunnel {
                    // Half-close travels on: once the upstream has everything, shut its write side.
                    if try flushUpstream() { Socket.shutdownWrite(connection.fd) } else { upstreamShutdownOwed = true }
                    if upstreamEOF && !upstreamShutdownOwed { finish() }  // else when the owed FIN goes out
                } else {
                    abort()  // the client left in the middle of its request body
                }
                return
            }
        }
    }

    /// Finds how many of the input's bytes belong to the request body (walking chunk framing).
    /// - Returns: false when the body is malformed; the exchange has then ended (`requestBodyMalformed`).
    private func verifyRequestBytes(_ input: ByteBuffer) -> Bool {
        switch requestFraming {
        case .length:
            let n = min(requestRemaining, input.readableCount)
            requestRemaining -= n
            requestPending = n
            if requestRemaining == 0 { requestBodyEnded = true }
        case .chunked:
            do {
                requestPending = try requestDecoder.consume(input.readable) { _ in }
            } catch {
                requestBodyMalformed()
                return false
            }
            if requestDecoder.isDone { requestBodyEnded = true }
        case .untilClose:  // the tunnel: everything until EOF
            requestPending = input.readableCount
        case .none:
            requestBodyEnded = true
        }
        return true
    }

    /// After the request is complete: read on so that a client disconnect is noticed (Go cancels the request
    /// when the client goes away), buffering pipelined requests up to one buffer.
    private func watchDownstream() throws(SysError) {
        while downstream.canRead {
            let input = downstream.inputBuffer()
            if input.writableCount == 0 { input.compact() }
            if input.writableCount == 0 { return }  // pipelined requests fill the buffer: wait
            switch try downstream.readInput(limit: input.capacity) {
            case .data, .full, .wouldBlock: continue
            case .eof:
                downstreamEOF = true
                abort()
                return
            }
        }
    }

    @discardableResult
    private func flushUpstream() throws(SysError) -> Bool {
        guard let connection = upstream, connection.isConnected else { return false }
        let drained = try connection.flush()
        if drained && upstreamShutdownOwed {
            upstreamShutdownOwed = false
            Socket.shutdownWrite(connection.fd)
            if phase == .tunnel && upstreamEOF && downstreamEOF {
                finish()
                return true
            }
        }
        if drained && !requestDone { try pumpRequest() }
        return drained
    }

    // MARK: - Response side

    /// Reads the upstream's response and moves it down, as far as both sides allow.
    private func pumpResponse() throws(SysError) {
        while let connection = upstream, phase != .done {
            let input = connection.inputBuffer()
            if !input.isEmpty {
                switch phase {
                case .awaitingHead:
                    if try handleResponseHead(input) { continue }
                    if connection !== upstream || phase != .awaitingHead { return }  // failed: the exchange moved on
                case .body, .tunnel:
                    if responsePending == 0 && !responseBodyEnded { verifyResponseBytes(input) }
                    if phase == .done || connection !== upstream { return }
                    if dechunkMode && !responseBodyEnded && downstream.outputRoom <= 0 {
                        try downstream.flush()
                        return  // the client pushes back; `downstreamReady` resumes once it drains
                    }
                    if responsePending > 0 {
                        let taken = try downstream.send(
                            UnsafeRawBufferPointer(rebasing: input.readable[0..<responsePending]))
                        input.moveReader(by: taken)
                        responsePending -= taken
                        responseBytes += taken
                        lastWriteMs = downstream.loop.nowMs
                        if responsePending > 0 { return }  // the client pushes back; resumed when it drains
                    }
                    if responseBodyEnded && responsePending == 0 {
                        responseComplete()
                        return
                    }
                    if !input.isEmpty { continue }
                case .idle, .done:
                    return
                }
            } else if phase == .body && responseBodyEnded {
                responseComplete()
                return
            }
            if !connection.canRead {
                try downstream.flush()  // a head (or 1xx) written above may still be queued
                return
            }
            let outcome: StreamConnection.ReadOutcome
            do {
                outcome = try connection.readInput(limit: phase == .awaitingHead ? 64 * 1024 + 4096 : input.capacity)
            } catch {
                upstreamFailed(.upstreamIO(error))
                return
            }
            switch outcome {
            case .data:
                responseBytesSeen = true
            case .full, .wouldBlock:
                continue
            case .eof:
                upstreamEnded()
                return
            }
        }
    }

    /// Parses the response head if complete. - Returns: true when it made progress.
    private func handleResponseHead(_ input: ByteBuffer) throws(SysError) -> Bool {
        let length: Int
        do {
            guard let found = try responseParser.findHeadEnd(input.readable) else { return false }
            length = found
            try responseParser.parseResponse(
                UnsafeRawBufferPointer(rebasing: input.readable[0..<length]), into: &responseHead)
        } catch {
            upstreamFailed(.badResponse)
            return false
        }
        let bytes = UnsafeRawBufferPointer(rebasing: input.readable[0..<length])
        HTTP1Parser.markConnectionListed(bytes, &responseHead)
        let status = responseHead.status
        if status == 101 {
            guard isUpgradeRequest else {
                upstreamFailed(.badResponse)
                return false
            }
            HeadRewriter.writeResponse(
                responseHead, bytes: bytes, into: downstream.outputBuffer(), dropFraming: false, close: false,
                upgrade: true)
            input.moveReader(by: length)
            responseStarted = true
            responseStatus = 101
            phase = .tunnel
            responseFraming = .untilClose
            // The request side becomes a raw stream too: whatever the client sends now is tunnel data.
            requestFraming = .untilClose
            requestBodyEnded = false
            requestDone = false
            try downstream.flush()
            try pumpRequest()
            return true
        }
        if status < 200 {
            // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as they are.
            if clientMinorVersion >= 1 {
                HeadRewriter.writeResponse(
                    responseHead, bytes: bytes, into: downstream.outputBuffer(), dropFraming: false, close: false,
                    upgrade: false)
                try downstream.flush()
            }
            input.moveReader(by: length)
            responseParser.reset()
            return true
        }
        responseStatus = status
        lastWriteMs = downstream.loop.nowMs
        responseFraming = responseHead.responseFraming(requestMethod: method)
        // HTTP/1.0 clients cannot read chunked framing: strip it and end the body by closing.
        let dechunk = responseFraming == .chunked && clientMinorVersion == 0
        if dechunk { responseDecoder.reset() }
        closeDownstreamAfter =
            !downstreamKeepAlive || responseFraming == .untilClose || dechunk
            || downstream.loop.draining
        upstreamKeepAlive = responseHead.keepAlive && responseFraming != .untilClose
        HeadRewriter.writeResponse(
            responseHead, bytes: bytes, into: downstream.outputBuffer(), dropFraming: dechunk,
            close: closeDownstreamAfter, upgrade: false)
        input.moveReader(by: length)
        responseStarted = true
        phase = .body
        responseDecoder.reset()
        responsePending = 0
        responseBodyEnded = false
        switch responseFraming {
        case .none: responseBodyEnded = true
        case .length(let n): responseRemaining = n
        case .chunked, .untilClose: break
        }
        if dechunk { dechunkMode = true } else { dechunkMode = false }
        return true
    }

    @exclusivity(unchecked) private var dechunkMode = false

    /// Finds how many upstream bytes belong to the response body.
    private func verifyResponseBytes(_ input: ByteBuffer) {
        switch responseFraming {
        case .length:
            let n = min(responseRemaining, input.readableCount)
            responseRemaining -= n
            responsePending = n
            if responseRemaining == 0 { responseBodyEnded = true }
        case .chunked:
            if dechunkMode {
                dechunk(input)
                return
            }
            do {
                responsePending = try responseDecoder.consume(input.readable) { _ in }
            } catch {
                truncateResponse()
                return
            }
            if responseDecoder.isDone { responseBodyEnded = true }
        case .untilClose:
            responsePending = input.readableCount
        case .none:
            responseBodyEnded = true
        }
    }

    /// HTTP/1.0 client, chunked response: copy only the payload, as much as the client's output can hold.
    private func dechunk(_ input: ByteBuffer) {
        let room = downstream.outputRoom
        guard room > 0 else { return }
        let output = downstream.outputBuffer()
        let slice = UnsafeRawBufferPointer(rebasing: input.readable[0..<min(room, input.readableCount)])
        do {
            let consumed = try responseDecoder.consume(slice) { range in
                output.append(UnsafeRawBufferPointer(rebasing: slice[range]))
            }
            input.moveReader(by: consumed)
        } catch {
            truncateResponse()
            return
        }
        if responseDecoder.isDone { responseBodyEnded = true }
        do { try downstream.flush() } catch { abort() }
    }

    /// The upstream reached EOF.
    private func upstreamEnded() {
        upstreamEOF = true
        switch phase {
        case .awaitingHead:
            upstreamFailed(.upstreamClosed)
        case .body:
            if responseFraming == .untilClose {
                responseBodyEnded = true
                upstreamKeepAlive = false
                responseComplete()
            } else {
                truncateResponse()
            }
        case .tunnel:
            do {
                if try downstream.flush() { Socket.shutdownWrite(downstream.fd) } else { downstreamShutdownOwed = true }
            } catch {
                abort()
                return
            }
            if downstreamEOF { finish() }
        case .idle, .done:
            break
        }
    }

    // MARK: - Endings

    private func responseComplete() {
        phase = .done
        if requestDone {
            finish()
        } else {
            // The upstream answered before reading the whole request (full duplex): neither connection can be
            // reused, since the unread rest of the body would be taken for the next request.
            upstreamKeepAlive = false
            closeDownstreamAfter = true
            finish()
        }
    }

    /// Both sides are done: hand the upstream back (or close it) and let the downstream go on.
    private func finish() {
        phase = .idle
        // The upstream goes back first: `requestEnded` may admit a waiting request that can then reuse it.
        if let connection = upstream {
            upstream = nil
            let reusable =
                upstreamKeepAlive && requestDone && (connection.input?.isEmpty ?? true)
                && !connection.hasPendingOutput && !connection.peerClosed
            if reusable {
                pool.release(connection)
            } else {
                connection.exchange = nil
                connection.close()
            }
        }
        downstream.endRequest(status: responseStatus, responseBytes: responseBytes)
        downstream.exchangeFinished(reusable: !closeDownstreamAfter && requestDone)
    }

    /// Moves a complete, unsent request to a connection from `newPool` (after a failed connect).
    private func moveReplay(from connection: UpstreamConnection, to newPool: UpstreamPool) {
        guard let output = connection.output else { return }
        connection.output = nil
        connection.exchange = nil
        upstream = nil
        connection.close()
        pool = newPool
        do throws(SysError) {
            let fresh = try newPool.acquire()
            attach(fresh)
            if let unused = fresh.output { downstream.loop.buffers.give(unused) }
            output.readerIndex = 0
            output.writerIndex = replayLength  // see upstreamFailed: the bytes are still in place
            fresh.output = output
            if fresh.isConnected { try flushUpstream() }
        } catch {
            if let fresh = upstream, fresh.output === output {
                closeUpstream()  // the connection owned the buffer and gives it back when it closes
            } else {
                closeUpstream()
                downstream.loop.buffers.give(output)
            }
            fail(.connect(error))
        }
    }

    /// The upstream failed. Before any response byte: retry once on a fresh connection if the failed one was
    /// a reused idle connection (it may have been closed under us) and the request is safe to send twice
    /// (`isReplayable`); else 502 with Go's text: the app may have read and acted on it.
    /// After the response started: cut the downstream response (its framing stays incomplete on purpose).
    private func upstreamFailed(_ error: ProxyError) {
        guard let connection = upstream else { return }
        if !responseBytesSeen, connection.isReused, replayLength > 0, replaySafe, !hasRetried,
            let output = connection.output
        {
            hasRetried = true
            connection.output = nil  // the request bytes move to the new connection
            connection.exchange = nil
            upstream = nil
            connection.close()
            do throws(SysError) {
                let fresh = try pool.acquire()
                attach(fresh)
                if let unused = fresh.output { downstream.loop.buffers.give(unused) }
                // The buffer's first `replayLength` bytes are still the request: nothing was appended after it
                // was complete, and `moveReader` only resets the indices.
                output.readerIndex = 0
                output.writerIndex = replayLength
                fresh.output = output
                if fresh.isConnected { try flushUpstream() }
            } catch {
                closeUpstream()
                phase = .idle
                let response = ProxyError.connect(error).response(address: pool.config.address)
                downstream.respondInstead(response, close: true)
                downstream.endRequest(status: 502, responseBytes: response.body.count)
                downstream.exchangeFinished(reusable: false)
            }
            return
        }
        upstream = nil
        connection.exchange = nil
        connection.close()
        if responseStarted {
            phase = .idle
            downstream.endRequest(status: responseStatus, responseBytes: responseBytes)
            downstream.exchangeAborted()
            return
        }
        phase = .idle
        let response = error.response(address: pool.config.address)
        Log.debug("upstream failed: \(error) → 502")
        downstream.respondInstead(response, close: !requestDone)
        downstream.endRequest(status: 502, responseBytes: response.body.count)
        downstream.exchangeFinished(reusable: requestDone && downstreamKeepAlive)
    }

    /// The response cannot be completed: close the downstream without finishing its framing so that the
    /// client sees the truncation.
    private func truncateResponse() {
        phase = .idle
        closeUpstream()
        downstream.endRequest(status: responseStatus, responseBytes: responseBytes)
        downstream.exchangeTruncated()
    }

    private func fail(_ error: ProxyError) {
        phase = .idle
        let response = error.response(address: pool.config.address)
        downstream.respondInstead(response, close: !requestBodyEnded)
        downstream.endRequest(status: 502, responseBytes: response.body.count)
        downstream.exchangeFinished(reusable: requestBodyEnded && requestFraming == .none && downstreamKeepAlive)
    }

    /// A malformed chunk in the request body after the head went upstream. No response byte sent yet: the
    /// client gets 400 and the connection closes (the upstream request is dropped with its connection).
    /// Otherwise nothing can be said: both sides close.
    private func requestBodyMalformed() {
        guard !responseStarted else {
            abort()
            return
        }
        phase = .idle
        closeUpstream()
        let response = LocalResponse.error(400, HTTPParseError.badChunk.responseText)
        downstream.respondInstead(response, close: true)
        downstream.endRequest(status: 400, responseBytes: response.body.count)
        downstream.exchangeFinished(reusable: false)
    }

    /// Whether a request may be sent again after a reused connection died before answering. Go's transport
    /// replays bodiless GET, HEAD, OPTIONS and TRACE, and any request with `Idempotency-Key` or
    /// `X-Idempotency-Key`; we add bodiless PUT and DELETE (idempotent by RFC 9110 §9.2.2). A keyed request
    /// with a body is replayed too: its bytes are held whole (`replayLength`), which Go cannot rewind, and the
    /// key is the client's word that a repeat is harmless. Anything else (a POST) is never sent twice.
    static func isReplayable(_ head: HTTPHead, _ bytes: UnsafeRawBufferPointer) -> Bool {
        if head.requestFraming == .none {
            switch head.methodKind {
            case .get, .head, .options, .put, .delete: return true
            case .other where HTTP1Parser.equalsExact(bytes, head.method, "TRACE"): return true
            default: break
            }
        }
        for field in head.fields where field.kind == .other {
            switch field.name.count {
            case 15 where HTTP1Parser.equalsLower(bytes, field.name, "idempotency-key"): return true
            case 17 where HTTP1Parser.equalsLower(bytes, field.name, "x-idempotency-key"): return true
            default: continue
            }
        }
        return false
    }

    /// Tears down both sides at once.
    private func abort() {
        phase = .idle
        closeUpstream()
        downstream.endRequest(status: responseStarted ? responseStatus : 0, responseBytes: responseBytes)
        downstream.exchangeAborted()
    }
}
