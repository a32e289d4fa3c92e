// One body's framing, measured as bytes pass: how many of the bytes at hand belong to the body, and when it
// ends. Every place that walks a body uses it: the HTTP/1 exchange (request and response), the h2c bridge
// (which also strips the chunk framing) and the server skipping the body of a request it answered itself.

/// Measures a body of one `BodyFraming`. A value type held inline by its owner: no allocation.
struct BodyMeter {
    private(set) var framing = BodyFraming.none
    /// Bytes of a `.length` body still to come.
    private var remaining = 0
    private var decoder = ChunkedDecoder()
    /// All of the body has been measured (from the start for `.none`; never for `.untilClose`).
    private(set) var ended = true

    init() {}

    init(_ framing: BodyFraming) { reset(framing) }

    @inline(__always)
    mutating func reset(_ framing: BodyFraming) {
        self.framing = framing
        remaining = 0
        switch framing {
        case .none:
            ended = true
        case .length(let n):
            remaining = n
            ended = n == 0
        case .chunked:
            decoder.reset()
            ended = false
        case .untilClose:
            ended = false
        }
    }

    /// The body goes on until the connection closes (a tunnel after 101, a close-delimited response).
    mutating func becomeUntilClose() { reset(.untilClose) }

    /// Marks a close-delimited body as ended (its connection closed).
    mutating func endAtClose() { if framing == .untilClose { ended = true } }

    /// How many bytes at the front of `bytes` belong to the body, framing included (passed on as they are).
    /// - Throws: `HTTPParseError.badChunk` for broken chunk framing.
    @inline(__always)
    mutating func measure(_ bytes: UnsafeRawBufferPointer) throws(HTTPParseError) -> Int {
        try decode(bytes) { _ in }
    }

    /// Like `measure`, and hands each run of payload (chunk framing stripped) to `payload` as a range of `bytes`.
    @inline(__always)
    mutating func decode(
        _ bytes: UnsafeRawBufferPointer, payload: (Range<Int>) -> Void
    ) throws(HTTPParseError) -> Int {
        switch framing {
        case .length:
            let n = min(remaining, bytes.count)
            remaining -= n
            if remaining == 0 { ended = true }
            if n > 0 { payload(0..<n) }
            return n
        case .chunked:
            let n = try decoder.consume(bytes, onData: payload)
            if decoder.isDone { ended = true }
            return n
        case .untilClose:
            if !bytes.isEmpty { payload(0..<bytes.count) }
            return bytes.count
        case .none:
            return 0
        }
    }

    /// For a chunked body: no chunk is partly through (text may be inserted as a chunk of its own).
    var isAtChunkBoundary: Bool { framing == .chunked && decoder.isAtChunkBoundary }
}
