// Incremental chunked-body decoder (RFC 9112 §7.1). It walks framing byte by byte but skips chunk data in
// one step. The proxy uses it to find where a chunked body ends while forwarding the framing untouched;
// a server that needs the payload gets the data ranges through `onData`.

public struct ChunkedDecoder {
    enum State: Equatable {
        case size, sizeDigits, chunkExtension, sizeLF, data, dataCR, dataLF
        case trailerLineStart, trailerLine, trailerLF, finalLF, done
    }

    private var state = State.size
    private var remaining = 0
    private var lineBytes = 0
    private var digits = 0
    /// Longest chunk-size line (size + extensions) and longest trailer section we accept.
    static let maxLine = 4096
    static let maxTrailers = 64 * 1024
    private var trailerBytes = 0

    public init() {}

    public var isDone: Bool { state == .done }
    /// Between chunks: what was consumed ends with a complete chunk (or nothing), so a new chunk may follow.
    public var isAtChunkBoundary: Bool { state == .size }

    public mutating func reset() {
        self = ChunkedDecoder()
    }

    /// Consumes framing and data from `bytes` up to the end of the body.
    /// - Parameter onData: called with each range of payload bytes (relative to `bytes`).
    /// - Returns: how many bytes belong to the body (less than `bytes.count` only when the body ended).
    /// - Throws: `.badChunk` on any framing error.
    public mutating func consume(
        _ bytes: UnsafeRawBufferPointer, onData: (Range<Int>) -> Void
    ) throws(HTTPParseError) -> Int {
        var i = 0
        let n = bytes.count
        while i < n {
            let c = bytes[i]
            switch state {
            case .size, .sizeDigits:
                let d = hexValue(c)
                if d >= 0 {
                    digits += 1
                    guard digits <= 15 else { throw .badChunk }  // 15 hex digits: no overflow
                    remaining = remaining << 4 | d
                    state = .sizeDigits
                } else if state == .sizeDigits && (c == 0x3B || c == 0x20 || c == 0x09) {
                    state = .chunkExtension
                } else if state == .sizeDigits && c == 0x0D {
                    state = .sizeLF
                } else {
                    throw .badChunk
                }
                lineBytes += 1
                i += 1
            case .chunkExtension:
                // Extensions are skipped but must be printable: a bare CR or LF here is smuggling material.
                if c == 0x0D {
                    state = .sizeLF
                } else if (c < 0x20 && c != 0x09) || c == 0x7F {
                    throw .badChunk
                }
                lineBytes += 1
                guard lineBytes <= ChunkedDecoder.maxLine else { throw .badChunk }
                i += 1
            case .sizeLF:
                guard c == 0x0A else { throw .badChunk }
                i += 1
                lineBytes = 0
                digits = 0
                state = remaining == 0 ? .trailerLineStart : .data
            case .data:
                let take = min(remaining, n - i)
                onData(i..<(i + take))
                i += take
                remaining -= take
                if remaining == 0 { state = .dataCR }
            case .dataCR:
                guard c == 0x0D else { throw .badChunk }
                state = .dataLF
                i += 1
            case .dataLF:
                guard c == 0x0A else { throw .badChunk }
                state = .size
                i += 1
            case .trailerLineStart:
                if c == 0x0D {
                    state = .finalLF
                } else if c == 0x20 || c == 0x09 || c == 0x0A {
                    throw .badChunk  // obs-fold or bare LF in trailers
                } else {
                    state = .trailerLine
                }
                i += 1
                try countTrailer()
            case .trailerLine:
                if c == 0x0D {
                    state = .trailerLF
                } else if (c < 0x20 && c != 0x09) || c == 0x7F {
                    throw .badChunk
                }
                i += 1
                try countTrailer()
            case .trailerLF:
                guard c == 0x0A else { throw .badChunk }
                state = .trailerLineStart
                i += 1
                try countTrailer()
            case .finalLF:
                guard c == 0x0A else { throw .badChunk }
                state = .done
                return i + 1
            case .done:
                return i
            }
        }
        return n
    }

    @inline(__always) private mutating func countTrailer() throws(HTTPParseError) {
        trailerBytes += 1
        if trailerBytes > ChunkedDecoder.maxTrailers { throw .badChunk }
    }

    @inline(__always) private func hexValue(_ c: UInt8) -> Int {
        switch c {
        case 0x30...0x39: return Int(c - 0x30)
        case 0x41...0x46: return Int(c - 0x41 + 10)
        case 0x61...0x66: return Int(c - 0x61 + 10)
        default: return -1
        }
    }
}
