// The exchange's decisions, without sockets: every exchange kind (HTTP/1, the h2c bridge, HTTP/2 streams)
// takes them from these types, so the tables here are the behaviour of all three.
import Testing

@testable import ProxyCore

struct TimeoutRuleTests {
    @Test(arguments: [
        (ResponseTail.notStarted, TimeoutAction.gatewayTimeout),
        (.tunnel, .abortTunnel),
        (.fixed, .cut),
        (.chunked(atBoundary: true, finalChunkPassed: false), .appendChunkAndEnd),
        (.chunked(atBoundary: false, finalChunkPassed: false), .cut),
        (.chunked(atBoundary: true, finalChunkPassed: true), .endAsIs),
        (.chunked(atBoundary: false, finalChunkPassed: true), .endAsIs),
        (.closeDelimited, .appendAndClose),
        (.stream, .appendAndEndStream),
    ])
    func actionFollowsWhatTheResponseCanTake(tail: ResponseTail, expected: TimeoutAction) {
        #expect(TimeoutRule.action(for: tail) == expected)
    }

    @Test func theTextBecomesOneChunkAndTheFinalChunk() {
        let out = ByteBuffer(capacity: 64)
        TimeoutRule.appendChunkAndEnd("request timeout", to: out)
        #expect(String(decoding: out.readable, as: UTF8.self) == "f\r\nrequest timeout\r\n0\r\n\r\n")
    }

    @Test func theAnswerBeforeTheResponseIs504WithTheProductsText() {
        let answer = TimeoutRule.gatewayTimeout("activator request timeout")
        #expect(answer.status == 504 && answer.body == Array("activator request timeout".utf8))
    }
}

struct ReplayRuleTests {
    typealias Case = (ReplayRule.Failure, Bool, Bool, Bool, Bool, ReplayRule.Decision)

    /// (failure, responseBytesSeen, heldWhole, safe, retried) → decision.
    @Test(
        arguments: [
            // Not processed: anywhere the responder says, however often (it bounds its own retries).
            (.connectFailed, false, true, false, false, .askResponder),
            (.connectFailed, false, true, false, true, .askResponder),
            (.connectFailed, false, false, true, false, .none),  // the bytes are not held whole any more
            // A refused stream: once, on the same pool.
            (.refusedStream, false, true, false, false, .samePool),
            (.refusedStream, false, true, false, true, .none),
            // Maybe processed: only a reused connection, only when safe, only once.
            (.diedBeforeResponse(reusedConnection: true), false, true, true, false, .samePool),
            (.diedBeforeResponse(reusedConnection: true), false, true, false, false, .none),
            (.diedBeforeResponse(reusedConnection: true), false, true, true, true, .none),
            (.diedBeforeResponse(reusedConnection: false), false, true, true, false, .none),
            // After a response byte (a 1xx too), nothing is ever sent again.
            (.diedBeforeResponse(reusedConnection: true), true, true, true, false, .none),
            (.connectFailed, true, true, true, false, .none),
            (.other, false, true, true, false, .none),
        ] as [Case])
    func decide(_ c: Case) {
        #expect(
            ReplayRule.decide(c.0, responseBytesSeen: c.1, heldWhole: c.2, safe: c.3, retried: c.4) == c.5)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
        ("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", true),
        ("DELETE / HTTP/1.1\r\nHost: h\r\n\r\n", true),
        ("TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", true),
        ("POST / HTTP/1.1\r\nHost: h\r\n\r\n", false),
        ("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n", false),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nIdempotency-Key: 7\r\n\r\n", true),
        ("PATCH / HTTP/1.1\r\nHost: h\r\nx-idempotency-key: 7\r\n\r\n", true),
    ])
    func replayableRequests(text: String, expected: Bool) throws {
        let bytes = Array(text.utf8)
        try bytes.withUnsafeBytes { raw in
            let parser = HTTP1Parser()
            var head = HTTPHead()
            try parser.parseRequest(raw, into: &head)
            #expect(ReplayRule.isReplayable(head, raw) == expected, "\(text)")
        }
    }

    @Test func errorsCountAsTheirKindOfFailure() {
        #expect(
            ProxyError.connect(SysError(code: 111, call: "connect")).replayFailure(reusedConnection: true)
                == .connectFailed)
        #expect(
            ProxyError.streamReset(code: .refusedStream, stream: 1).replayFailure(reusedConnection: false)
                == .refusedStream)
        #expect(ProxyError.streamReset(code: .cancel, stream: 1).replayFailure(reusedConnection: true) == .other)
        #expect(
            ProxyError.upstreamClosed.replayFailure(reusedConnection: true)
                == .diedBeforeResponse(reusedConnection: true))
        #expect(ProxyError.badResponse.replayFailure(reusedConnection: true) == .other)
    }
}

struct InterimAndReuseRuleTests {
    @Test(arguments: [
        (200, true, false, InterimRule.HeadKind.final),
        (599, false, true, .final),
        (100, true, false, .forwardInterim),
        (103, false, false, .dropInterim),  // never to an HTTP/1.0 client
        (101, true, true, .switchProtocols),
        (101, true, false, .invalid),  // a 101 nobody asked for
        (0, true, false, .invalid),  // an HTTP/2 head without :status
    ])
    func headKinds(status: Int, takesInterim: Bool, upgrade: Bool, expected: InterimRule.HeadKind) {
        #expect(
            InterimRule.classify(status: status, clientTakesInterim: takesInterim, upgradeRequested: upgrade)
                == expected)
    }

    @Test func theConnectionGoesOnOnlyWithTheRequestReadAndNoCloseAnnounced() {
        #expect(ReuseRule.continues(requestRead: true, closeAfter: false))
        #expect(!ReuseRule.continues(requestRead: false, closeAfter: false))
        #expect(!ReuseRule.continues(requestRead: true, closeAfter: true))
        #expect(!ReuseRule.closesAfterResponse(clientKeepAlive: true, closeDelimited: false, draining: false))
        #expect(ReuseRule.closesAfterResponse(clientKeepAlive: false, closeDelimited: false, draining: false))
        #expect(ReuseRule.closesAfterResponse(clientKeepAlive: true, closeDelimited: true, draining: false))
        #expect(ReuseRule.closesAfterResponse(clientKeepAlive: true, closeDelimited: false, draining: true))
    }
}

struct BodyMeterTests {
    /// Feeds `text` to a meter in pieces of `step` bytes; returns (bytes measured, payload, ended).
    private func feed(
        _ framing: BodyFraming, _ text: String, step: Int
    ) throws -> (Int, String, Bool) {
        var meter = BodyMeter(framing)
        let bytes = Array(text.utf8)
        var measured = 0
        var payload: [UInt8] = []
        var offset = 0
        while offset < bytes.count && !meter.ended {
            let end = min(offset + step, bytes.count)
            let n = try bytes[offset..<end].withUnsafeBytes { (piece) throws(HTTPParseError) -> Int in
                try meter.decode(piece) { range in payload += piece[range] }
            }
            measured += n
            if n < end - offset { break }  // the body ended inside this piece
            offset = end
        }
        return (measured, String(decoding: payload, as: UTF8.self), meter.ended)
    }

    @Test(arguments: [1, 3, 64])
    func lengthBodiesEndAtTheirLength(step: Int) throws {
        let (measured, payload, ended) = try feed(.length(5), "helloGET / HTTP/1.1", step: step)
        #expect(measured == 5 && payload == "hello" && ended)
    }

    @Test(arguments: [1, 4, 64])
    func chunkedBodiesAreMeasuredWithTheirFramingAndDecodedWithout(step: Int) throws {
        let body = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        let (measured, payload, ended) = try feed(.chunked, body + "NEXT", step: step)
        #expect(measured == body.utf8.count && payload == "abcde" && ended)
    }

    @Test func noBodyHasEndedAtOnceAndAnUntilCloseBodyOnlyAtTheClose() throws {
        #expect(BodyMeter(.none).ended)
        #expect(BodyMeter(.length(0)).ended)
        var meter = BodyMeter(.untilClose)
        let n = try Array("abc".utf8).withUnsafeBytes { (raw) throws(HTTPParseError) -> Int in try meter.measure(raw) }
        #expect(n == 3 && !meter.ended)
        meter.endAtClose()
        #expect(meter.ended)
    }

    @Test func brokenChunkFramingThrows() {
        var meter = BodyMeter(.chunked)
        #expect(throws: HTTPParseError.badChunk) {
            try Array("zz\r\n".utf8).withUnsafeBytes { (raw) throws(HTTPParseError) -> Int in try meter.measure(raw) }
        }
    }

    @Test func chunkBoundariesAreKnown() throws {
        var meter = BodyMeter(.chunked)
        #expect(meter.isAtChunkBoundary)
        _ = try Array("5\r\nab".utf8).withUnsafeBytes { (raw) throws(HTTPParseError) -> Int in try meter.measure(raw) }
        #expect(!meter.isAtChunkBoundary)
        _ = try Array("cde\r\n".utf8).withUnsafeBytes { (raw) throws(HTTPParseError) -> Int in try meter.measure(raw) }
        #expect(meter.isAtChunkBoundary)
    }
}
