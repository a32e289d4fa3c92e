// One request/response exchange between an HTTP/1 downstream connection and an HTTP/1 upstream connection
// (HAProxy's "stream"). It moves head and body bytes both ways with backpressure over the sockets. What it
// decides is decided in `Exchange/` once for every exchange kind (this one, the h2c bridge and HTTP/2 streams):
// the timeout rule, the replay rule, the endings and reuse, interim heads, body framing (`BodyMeter`).
// Exclusivity: the exchange's mutable state is one struct (`state`) in one `@exclusivity(unchecked)` property.
// It is confined to one loop thread and only touched by short, non-overlapping accesses, so the dynamic check
// (a TLS lookup and an access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing.
// STYLE.md forbids the module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the
// documented alternative.
import Glibc

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

    /// Everything one request changes, replaced in one store when the next request starts.
    struct State {
        var phase = Phase.idle
        var startMs: Int64 = 0
        /// The last write to the client (the idle timeout's clock).
        var lastWriteMs: Int64 = 0
        /// When a drain started while this exchange was a tunnel: the tunnel's last moment (Knative: 60 s).
        var tunnelDrainDeadlineMs = Int64.max

        // Request side
        var method = HTTPHead.Method.get
        var clientMinorVersion = 1
        var clientKeepAlive = true
        var isUpgradeRequest = false
        var requestBody = BodyMeter()
        /// Verified body bytes at the front of the downstream input not yet taken by the upstream.
        var requestPending = 0
        /// The whole request (head and body) went to the upstream's connection.
        var requestDone = false
        var downstreamEOF = false

        // Response side
        var responseBody = BodyMeter()
        /// Verified body bytes at the front of the upstream input not yet taken by the client.
        var responsePending = 0
        /// HTTP/1.0 client, chunked response: the payload goes down without the chunk framing.
        var dechunk = false
        var responseStarted = false
        var responseBytesSeen = false
        var closeDownstreamAfter = false
        var upstreamKeepAlive = true
        var responseStatus = 0
        var responseBytes = 0

        // Replay (`ReplayRule`)
        /// Bytes of a complete request still intact at the front of the upstream output buffer (0 = not held
        /// whole): what a replay sends.
        var replayLength = 0
        var replaySafe = false
        var retried = false

        // Tunnel
        var upstreamEOF = false
        /// A FIN to pass on once the queued bytes ahead of it are written.
        var upstreamShutdownOwed = false
        var downstreamShutdownOwed = false

        /// The request was read to its end (nothing of it is left in the client's input).
        var requestRead: Bool { requestDone || (requestBody.ended && requestPending == 0) }
    }

    unowned(unsafe) let downstream: HTTP1ServerConnection  // owns us
    @exclusivity(unchecked) var upstream: UpstreamConnection?
    /// Strong for the same reason as `UpstreamConnection.pool`; dropped when the exchange ends.
    @exclusivity(unchecked) var pool: UpstreamPool!
    @exclusivity(unchecked) private var state = State()
    @exclusivity(unchecked) private var options = ProxyOptions()
    // The response parser and head keep their storage from request to request.
    @exclusivity(unchecked) private var responseParser = HTTP1Parser()
    @exclusivity(unchecked) private var responseHead = HTTPHead()

    init(downstream: HTTP1ServerConnection) {
        self.downstream = downstream
    }

    // MARK: - Start

    /// Starts proxying the request whose head is `headBytes` (at the front of the downstream input).
    func start(head: HTTPHead, headBytes: UnsafeRawBufferPointer, pool: UpstreamPool, options: ProxyOptions) {
        self.pool = pool
        self.options = options
        let startMs = downstream.context.startMs
        state = State()
        state.phase = .awaitingHead
        state.startMs = startMs
        state.lastWriteMs = startMs
        state.method = head.methodKind
        state.requestBody.reset(head.requestFraming)
        state.clientMinorVersion = head.minorVersion
        state.clientKeepAlive = head.keepAlive && head.minorVersion >= 1
        state.isUpgradeRequest = head.isUpgrade
        state.replaySafe = ReplayRule.isReplayable(head, headBytes)
        responseParser.reset()
        armTimer()

        let connection: UpstreamConnection
        do {
            connection = try pool.acquire()
        } catch {
            // Nothing was sent: the responder may send the request elsewhere (the activator tries another pod).
            state.phase = .idle
            if downstream.retryElsewhere(after: pool) { return }
            state.phase = .awaitingHead
            downstream.input!.moveReader(by: headBytes.count)
            fail(.connect(error))
            return
        }
        attach(connection)
        HeadRewriter.writeRequest(
            head, bytes: headBytes, peerIP: downstream.peerIP, into: connection.outputBuffer(),
            upgrade: state.isUpgradeRequest, rewrite: options.rewrite, defaultHost: pool.hostBytes)
        downstream.input!.moveReader(by: headBytes.count)
        do {
            // Head and whatever body already arrived leave in one write. A request that fits whole is kept
            // in the buffer for a replay.
            try pumpRequest(queueOnly: true)
            if state.requestDone { state.replayLength = connection.output!.writerIndex }
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
            if state.downstreamShutdownOwed {
                state.downstreamShutdownOwed = false
                Socket.shutdownWrite(downstream.fd)
            }
            if state.phase == .body || state.phase == .tunnel { try pumpResponse() }
            guard state.phase != .idle && state.phase != .done else { return }
            if !state.requestDone {
                try pumpRequest()
            } else if !state.downstreamEOF && state.phase != .tunnel {
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

    // MARK: - Timeouts (spec §1.7, `TimeoutRule`)

    /// The earliest moment a timeout could fire, or `Int64.max`.
    private var nextDeadlineMs: Int64 {
        min(
            state.tunnelDrainDeadlineMs,
            options.nextDeadlineMs(
                startMs: state.startMs, lastWriteMs: state.lastWriteMs, responseStarted: state.responseStarted))
    }

    private func armTimer() {
        let deadline = nextDeadlineMs
        if deadline != .max { downstream.loop.schedule(downstream, at: deadline) }
    }

    /// The downstream's timer fired while this exchange runs: a timeout, or a re-check after progress.
    func downstreamTimerFired() {
        guard state.phase != .idle else { return }
        let now = downstream.loop.nowMs
        if now >= state.tunnelDrainDeadlineMs {
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
        guard state.phase == .tunnel else { return }
        state.tunnelDrainDeadlineMs = downstream.loop.nowMs + downstream.config.tunnelDrainGraceMs
        armTimer()
    }

    /// What the client's response can still take.
    private var responseTail: ResponseTail {
        if state.phase == .tunnel { return .tunnel }
        if !state.responseStarted { return .notStarted }
        switch state.responseBody.framing {
        case .chunked where !state.dechunk:
            return .chunked(
                atBoundary: state.responseBody.isAtChunkBoundary, finalChunkPassed: state.responseBody.ended)
        case .chunked, .untilClose: return .closeDelimited
        case .length, .none: return .fixed
        }
    }

    private func timedOut() {
        let action = TimeoutRule.action(for: responseTail)
        switch action {
        case .gatewayTimeout: return end(.answered(TimeoutRule.gatewayTimeout(options.timeoutMessage)))
        case .abortTunnel: return end(.aborted)  // Go cannot write to a hijacked connection either
        default: break
        }
        // Body bytes already read and verified count as written by the app: they go first, so the framing
        // we end is the one the client sees.
        if state.responsePending > 0, let input = upstream?.input, !state.dechunk {
            let pending = state.responsePending
            downstream.outputBuffer().append(UnsafeRawBufferPointer(rebasing: input.readable[0..<pending]))
            input.moveReader(by: pending)
            state.responseBytes += pending
            state.responsePending = 0
        }
        switch action {
        case .appendChunkAndEnd:
            TimeoutRule.appendChunkAndEnd(options.timeoutMessage, to: downstream.outputBuffer())
            end(.complete(closeAfter: state.closeDownstreamAfter))
        case .endAsIs:
            end(.complete(closeAfter: state.closeDownstreamAfter))
        case .appendAndClose:
            downstream.outputBuffer().append(options.timeoutMessage)
            end(.complete(closeAfter: true))  // the close ends the body
        case .cut, .appendAndEndStream, .gatewayTimeout, .abortTunnel:
            end(.truncated)
        }
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
        closeUpstream()
        state.phase = .idle
    }

    // MARK: - Request side

    /// Moves request body bytes from the downstream input to the upstream, as far as both allow.
    /// - Parameter queueOnly: only queue what is already in the input (no syscalls): the first fill.
    private func pumpRequest(queueOnly: Bool = false) throws(SysError) {
        guard let connection = upstream, !state.downstreamEOF else { return }
        while !state.requestDone {
            let input = downstream.inputBuffer()
            if state.requestPending == 0 && !state.requestBody.ended && !input.isEmpty {
                do { state.requestPending = try state.requestBody.measure(input.readable) } catch {
                    return requestBodyMalformed()
                }
            }
            if state.requestPending > 0 {
                let bytes = UnsafeRawBufferPointer(rebasing: input.readable[0..<state.requestPending])
                let taken = queueOnly ? connection.queue(bytes) : try connection.send(bytes)
                input.moveReader(by: taken)
                state.requestPending -= taken
                if state.requestPending > 0 { return }  // the upstream pushes back; resumed when it drains
            }
            if state.requestBody.ended {
                state.requestDone = true
                return
            }
            if queueOnly || !downstream.canRead { return }
            switch try downstream.readInput(limit: input.capacity) {
            case .data, .full, .wouldBlock: continue
            case .eof:
                state.downstreamEOF = true
                if state.phase == .tunnel {
                    // Half-close travels on: once the upstream has everything, shut its write side.
                    if try flushUpstream() {
                        Socket.shutdownWrite(connection.fd)
                    } else {
                        state.upstreamShutdownOwed = true
                    }
                    if state.upstreamEOF && !state.upstreamShutdownOwed { finish() }  // else when the owed FIN goes
                } else {
                    abort()  // the client left in the middle of its request body
                }
                return
            }
        }
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
                state.downstreamEOF = true
                abort()
                return
            }
        }
    }

    @discardableResult
    private func flushUpstream() throws(SysError) -> Bool {
        guard let connection = upstream, connection.isConnected else { return false }
        let drained = try connection.flush()
        if drained && state.upstreamShutdownOwed {
            state.upstreamShutdownOwed = false
            Socket.shutdownWrite(connection.fd)
            if state.phase == .tunnel && state.upstreamEOF && state.downstreamEOF {
                finish()
                return true
            }
        }
        if drained && !state.requestDone { try pumpRequest() }
        return drained
    }

    // MARK: - Response side

    /// Reads the upstream's response and moves it down, as far as both sides allow.
    private func pumpResponse() throws(SysError) {
        while let connection = upstream, state.phase != .done {
            let input = connection.inputBuffer()
            if !input.isEmpty {
                switch state.phase {
                case .awaitingHead:
                    if try handleResponseHead(input) { continue }
                    if connection !== upstream || state.phase != .awaitingHead { return }  // failed: moved on
                case .body, .tunnel:
                    if state.responsePending == 0 && !state.responseBody.ended {
                        if state.dechunk {
                            dechunk(input)
                        } else {
                            do { state.responsePending = try state.responseBody.measure(input.readable) } catch {
                                return end(.truncated)
                            }
                        }
                    }
                    if state.phase == .done || connection !== upstream { return }
                    if state.dechunk && !state.responseBody.ended && downstream.outputRoom <= 0 {
                        try downstream.flush()
                        return  // the client pushes back; `downstreamReady` resumes once it drains
                    }
                    if state.responsePending > 0 {
                        let taken = try downstream.send(
                            UnsafeRawBufferPointer(rebasing: input.readable[0..<state.responsePending]))
                        input.moveReader(by: taken)
                        state.responsePending -= taken
                        state.responseBytes += taken
                        state.lastWriteMs = downstream.loop.nowMs
                        if state.responsePending > 0 { return }  // the client pushes back; resumed when it drains
                    }
                    if state.responseBody.ended && state.responsePending == 0 {
                        responseComplete()
                        return
                    }
                    if !input.isEmpty { continue }
                case .idle, .done:
                    return
                }
            } else if state.phase == .body && state.responseBody.ended {
                responseComplete()
                return
            }
            if !connection.canRead {
                try downstream.flush()  // a head (or 1xx) written above may still be queued
                return
            }
            let outcome: StreamConnection.ReadOutcome
            do {
                outcome = try connection.readInput(
                    limit: state.phase == .awaitingHead ? 64 * 1024 + 4096 : input.capacity)
            } catch {
                upstreamFailed(.upstreamIO(error))
                return
            }
            switch outcome {
            case .data:
                state.responseBytesSeen = true
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
        let kind = InterimRule.classify(
            status: status, clientTakesInterim: state.clientMinorVersion >= 1,
            upgradeRequested: state.isUpgradeRequest)
        switch kind {
        case .invalid:
            upstreamFailed(.badResponse)
            return false
        case .switchProtocols:
            HeadRewriter.writeResponse(
                responseHead, bytes: bytes, into: downstream.outputBuffer(), dropFraming: false, close: false,
                upgrade: true)
            input.moveReader(by: length)
            state.responseStarted = true
            state.responseStatus = 101
            state.phase = .tunnel
            state.responseBody.becomeUntilClose()
            // The request side becomes a raw stream too: whatever the client sends now is tunnel data.
            state.requestBody.becomeUntilClose()
            state.requestDone = false
            try downstream.flush()
            try pumpRequest()
            return true
        case .forwardInterim, .dropInterim:
            if kind == .forwardInterim {
                HeadRewriter.writeResponse(
                    responseHead, bytes: bytes, into: downstream.outputBuffer(), dropFraming: false, close: false,
                    upgrade: false)
                try downstream.flush()
            }
            input.moveReader(by: length)
            responseParser.reset()
            return true
        case .final:
            break
        }
        state.responseStatus = status
        state.lastWriteMs = downstream.loop.nowMs
        let framing = responseHead.responseFraming(requestMethod: state.method)
        // HTTP/1.0 clients cannot read chunked framing: strip it and end the body by closing.
        state.dechunk = framing == .chunked && state.clientMinorVersion == 0
        state.closeDownstreamAfter = ReuseRule.closesAfterResponse(
            clientKeepAlive: state.clientKeepAlive, closeDelimited: framing == .untilClose || state.dechunk,
            draining: downstream.loop.draining)
        state.upstreamKeepAlive = responseHead.keepAlive && framing != .untilClose
        HeadRewriter.writeResponse(
            responseHead, bytes: bytes, into: downstream.outputBuffer(), dropFraming: state.dechunk,
            close: state.closeDownstreamAfter, upgrade: false)
        input.moveReader(by: length)
        state.responseStarted = true
        state.phase = .body
        state.responseBody.reset(framing)
        state.responsePending = 0
        return true
    }

    /// HTTP/1.0 client, chunked response: copy only the payload, as much as the client's output can hold.
    private func dechunk(_ input: ByteBuffer) {
        let room = downstream.outputRoom
        guard room > 0 else { return }
        let output = downstream.outputBuffer()
        let slice = UnsafeRawBufferPointer(rebasing: input.readable[0..<min(room, input.readableCount)])
        do {
            let consumed = try state.responseBody.decode(slice) { range in
                output.append(UnsafeRawBufferPointer(rebasing: slice[range]))
            }
            input.moveReader(by: consumed)
        } catch {
            return end(.truncated)
        }
        do { try downstream.flush() } catch { abort() }
    }

    /// The upstream reached EOF.
    private func upstreamEnded() {
        state.upstreamEOF = true
        switch state.phase {
        case .awaitingHead:
            upstreamFailed(.upstreamClosed)
        case .body:
            if state.responseBody.framing == .untilClose {
                state.responseBody.endAtClose()
                state.upstreamKeepAlive = false
                responseComplete()
            } else {
                end(.truncated)
            }
        case .tunnel:
            do {
                if try downstream.flush() {
                    Socket.shutdownWrite(downstream.fd)
                } else {
                    state.downstreamShutdownOwed = true
                }
            } catch {
                abort()
                return
            }
            if state.downstreamEOF { finish() }
        case .idle, .done:
            break
        }
    }

    // MARK: - Endings (`ExchangeEnding`)

    private func responseComplete() {
        state.phase = .done
        if !state.requestDone {
            // The upstream answered before reading the whole request (full duplex): neither connection can be
            // reused, since the unread rest of the body would be taken for the next request.
            state.upstreamKeepAlive = false
            state.closeDownstreamAfter = true
        }
        finish()
    }

    /// Both sides are done: hand the upstream back (or close it) and let the downstream go on.
    private func finish() {
        // The upstream goes back first: `requestEnded` may admit a waiting request that can then reuse it.
        if let connection = upstream {
            upstream = nil
            let reusable =
                state.upstreamKeepAlive && state.requestDone && (connection.input?.isEmpty ?? true)
                && !connection.hasPendingOutput && !connection.peerClosed
            if reusable {
                pool.release(connection)
            } else {
                connection.exchange = nil
                connection.close()
            }
        }
        end(.complete(closeAfter: state.closeDownstreamAfter))
    }

    /// The one exit: the upstream side is let go, the downstream carries the ending out.
    private func end(_ ending: ExchangeEnding) {
        state.phase = .idle
        closeUpstream()
        downstream.exchangeEnded(
            ending, requestRead: state.requestRead,
            status: state.responseStarted ? state.responseStatus : 0, responseBytes: state.responseBytes)
    }

    /// Sends the held request again on a connection from `newPool` (`ReplayRule`).
    private func replay(from connection: UpstreamConnection, on newPool: UpstreamPool) {
        guard let output = connection.output else { return }
        connection.output = nil  // the request bytes move to the new connection
        connection.exchange = nil
        upstream = nil
        connection.close()
        pool = newPool
        do throws(SysError) {
            let fresh = try newPool.acquire()
            attach(fresh)
            if let unused = fresh.output { downstream.loop.buffers.give(unused) }
            // The buffer's first `replayLength` bytes are still the request: nothing was appended after it was
            // complete, and `moveReader` only resets the indices.
            output.readerIndex = 0
            output.writerIndex = state.replayLength
            fresh.output = output
            if fresh.isConnected { try flushUpstream() }
        } catch {
            if upstream?.output !== output { downstream.loop.buffers.give(output) }
            closeUpstream()  // a connection that took the buffer gives it back when it closes
            fail(.connect(error))
        }
    }

    /// The upstream failed. Before any response byte, `ReplayRule` says whether the request goes again (and
    /// where); else 502 with Go's text. After the response started: the client's response is cut.
    private func upstreamFailed(_ error: ProxyError) {
        guard let connection = upstream else { return }
        let decision = ReplayRule.decide(
            error.replayFailure(reusedConnection: connection.isReused),
            responseBytesSeen: state.responseBytesSeen,
            heldWhole: state.replayLength > 0 && connection.output != nil,
            safe: state.replaySafe, retried: state.retried)
        switch decision {
        case .samePool:
            state.retried = true
            return replay(from: connection, on: pool)
        case .askResponder:
            if let other = downstream.responder.alternativePool(for: downstream, after: pool) {
                return replay(from: connection, on: other)
            }
        case .none:
            break
        }
        closeUpstream()
        if state.responseStarted { return end(.truncated) }
        fail(error)
    }

    /// 502 with Go's text in place of the response.
    private func fail(_ error: ProxyError) {
        Log.debug("upstream failed: \(error) → 502")
        end(.answered(error.answer(address: pool.config.address)))
    }

    /// A malformed chunk in the request body after the head went upstream. No response byte sent yet: the
    /// client gets 400 and the connection closes (the request's framing is lost). Otherwise nothing can be
    /// said: both sides close.
    private func requestBodyMalformed() {
        if state.responseStarted { return abort() }
        end(.answered(.error(400, HTTPParseError.badChunk.responseText)))
    }

    /// Tears down both sides at once.
    private func abort() { end(.aborted) }
}
