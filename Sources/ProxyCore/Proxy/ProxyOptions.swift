// Per-request proxy settings a responder hands to the engine: head edits and timeouts.

/// A set of header-field indices (a request has at most `HTTP1Parser.maxFields` = 256 fields).
public struct FieldSet: Sendable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    public mutating func insert(_ index: Int) {
        let bit = UInt64(1) << UInt64(index & 63)
        switch index >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        case 3: words.3 |= bit
        default: preconditionFailure("field index \(index) beyond the parser's limit")
        }
    }

    @inline(__always) public func contains(_ index: Int) -> Bool {
        let bit = UInt64(1) << UInt64(index & 63)
        switch index >> 6 {
        case 0: return words.0 & bit != 0
        case 1: return words.1 & bit != 0
        case 2: return words.2 & bit != 0
        case 3: return words.3 & bit != 0
        default: return false
        }
    }

    public var isEmpty: Bool { words.0 | words.1 | words.2 | words.3 == 0 }
}

/// Writes product-specific fields into a request head on its way upstream (after its end-to-end fields), from
/// values the product found while disposing of the request (`RequestRewrite.writerValues`). A long-lived object
/// (the responder's), so that setting it per request allocates nothing.
public protocol RequestFieldWriter: AnyObject, Sendable {
    func writeFields(_ rewrite: RequestRewrite, bytes: UnsafeRawBufferPointer, into out: ByteBuffer)
}

/// Edits to the request head on its way upstream (beyond hop-by-hop removal and X-Forwarded-For,
/// which always happen). Ranges point into the request's head bytes.
public struct RequestRewrite: Sendable {
    /// Fields to leave out.
    public var dropped = FieldSet()
    /// A replacement `Host` value (a range of the head: another field's value); the original Host field is dropped.
    public var host: Range<Int>? = nil
    /// A literal `Host` value (e.g. the upstream's address); wins over `host`.
    public var hostLiteral: [UInt8]? = nil
    /// When `Host` is replaced: the name of a field (`Name: `, colon and space included) that carries the
    /// original value on, or nil to drop it.
    public var originalHostField: StaticString? = nil
    /// Complete header lines (`Name: value\r\n`…) to add, prepared once and shared (no per-request work).
    public var extraLines: [UInt8]? = nil
    /// Fields computed per request by the product, and the head ranges it wants them computed from.
    public var fieldWriter: (any RequestFieldWriter)? = nil
    public var writerValues: (Range<Int>?, Range<Int>?, Range<Int>?) = (nil, nil, nil)

    public init() {}
}

/// How the engine treats one proxied request.
public struct ProxyOptions: Sendable {
    public var rewrite = RequestRewrite()
    /// Overall limit from the request's start, 0 = none (Knative's `timeoutSeconds`).
    public var timeoutMs: Int64 = 0
    /// Limit for the first response byte, 0 = none (`responseStartTimeoutSeconds`).
    public var responseStartTimeoutMs: Int64 = 0
    /// Limit between writes to the client, 0 = none (`idleTimeoutSeconds`).
    public var idleTimeoutMs: Int64 = 0
    /// The 504 body before the response started, and the text appended to it after (the products set their own:
    /// Knative's queue-proxy says `request timeout`, its activator `activator request timeout`).
    public var timeoutMessage: StaticString = "gateway timeout"

    public init() {}

    /// The earliest moment one of the timeouts (spec §1.7) could fire for a request that started at `startMs`
    /// and last wrote to its client at `lastWriteMs`, or `Int64.max`. One rule for every exchange kind.
    func nextDeadlineMs(startMs: Int64, lastWriteMs: Int64, responseStarted: Bool) -> Int64 {
        var deadline = Int64.max
        if timeoutMs > 0 { deadline = min(deadline, startMs + timeoutMs) }
        if responseStartTimeoutMs > 0 && !responseStarted { deadline = min(deadline, startMs + responseStartTimeoutMs) }
        if idleTimeoutMs > 0 { deadline = min(deadline, lastWriteMs + idleTimeoutMs) }
        return deadline
    }
}
