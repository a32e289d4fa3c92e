// A parsed HTTP/1 message head as ranges into the bytes it was parsed from (h2o's iovec, HAProxy's ist):
// nothing is copied. Ranges are relative to the first byte of the head.

/// Headers that the proxy or the codec must recognise, classified once at parse time.
public enum FieldKind: UInt8, Sendable {
    case other
    case contentLength, transferEncoding, connection, keepAlive, proxyConnection, te, trailer, upgrade
    case proxyAuthenticate, proxyAuthorization
    case host, expect, xForwardedFor, userAgent
    /// Named in the `Connection` header: hop-by-hop for this message only.
    case connectionListed
}

/// One header line: name and value (value trimmed of surrounding whitespace).
public struct HeaderField: Sendable {
    public var name: Range<Int>
    public var value: Range<Int>
    public var kind: FieldKind

    /// Hop-by-hop per RFC 9110 §7.6.1 (and the legacy names Go's reverse proxy also drops).
    /// `Transfer-Encoding` is handled separately: the proxy forwards chunked framing as is, and with it
    /// `Trailer` (which RFC 9110 does not list as hop-by-hop) so that the trailers it announces still arrive.
    public var isHopByHop: Bool {
        switch kind {
        case .connection, .keepAlive, .proxyConnection, .te, .upgrade, .proxyAuthenticate, .proxyAuthorization,
            .connectionListed:
            return true
        default:
            return false
        }
    }
}

/// What kind of body follows a head.
public enum BodyFraming: Equatable, Sendable {
    case none
    case length(Int)
    case chunked
    /// Response body delimited by the connection closing (HTTP/1.0 style).
    case untilClose
}

/// A request or response head.
public struct HTTPHead: Sendable {
    public enum Method: UInt8, Sendable { case get, head, post, put, delete, connect, options, other }

    public var isRequest = true
    // Request line
    public var method: Range<Int> = 0..<0
    public var methodKind: Method = .other
    public var target: Range<Int> = 0..<0
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion = 1
    /// 2 for a request that arrived over HTTP/2 (its head is written as HTTP/1.1 for the responders).
    public var majorVersion = 1
    // Status line
    public var status = 0
    public var reason: Range<Int> = 0..<0

    public var fields: [HeaderField] = []
    /// Bytes from the first byte of the start line through the empty line.
    public var length = 0

    // Framing and connection facts, derived while parsing.
    public var contentLength: Int? = nil
    public var isChunked = false
    public var hasTransferEncoding = false
    public var connectionClose = false
    public var connectionKeepAlive = false
    public var connectionUpgrade = false
    public var hasUpgradeField = false
    public var expectsContinue = false
    /// The one `Host` value (requests). For an absolute-form target this is the URI's authority, and the
    /// `Host` field's value range is moved to it too (RFC 9112 §3.2.2: the authority in the URI wins), so
    /// every reader of the field (routing, the head written upstream) sees one host.
    public var host: Range<Int>? = nil
    /// The request target was absolute-form (`http://authority/path`): `target` is now the path and query
    /// (possibly empty or starting with `?`), written upstream in origin form.
    public var isAbsoluteForm = false
    /// More than one `Content-Length` value (identical, else the parse failed): the head is forwarded with a
    /// single `Content-Length` so that no peer sees the ambiguous original.
    public var contentLengthRepeated = false
    /// How many transfer codings the `Transfer-Encoding` fields list in all.
    public var transferCodingCount = 0
    /// Token ranges from `Connection` values, to mark the fields they name.
    public var connectionTokens: [Range<Int>] = []

    public init() {

    }

    mutating func reset() {
        isRequest = true
        method = 0..<0
        methodKind = .other
        target = 0..<0
        minorVersion = 1
        status = 0
        reason = 0..<0
        fields.removeAll(keepingCapacity: true)
        length = 0
        contentLength = nil
        isChunked = false
        hasTransferEncoding = false
        connectionClose = false
        connectionKeepAlive = false
        connectionUpgrade = false
        hasUpgradeField = false
        expectsContinue = false
        host = nil
        isAbsoluteForm = false
        contentLengthRepeated = false
        transferCodingCount = 0
        connectionTokens.removeAll(keepingCapacity: true)
    }

    /// Whether the connection stays open after this message (RFC 9112 §9.3).
    public var keepAlive: Bool {
        if connectionClose { return false }
        return minorVersion >= 1 || connectionKeepAlive
    }

    /// An upgrade request (`Connection: upgrade` plus `Upgrade`), e.g. a websocket handshake.
    public var isUpgrade: Bool { connectionUpgrade && hasUpgradeField }

    /// How the request body is framed (requests only).
    public var requestFraming: BodyFraming {
        if isChunked { return .chunked }
        if let n = contentLength, n > 0 { return .length(n) }
        return .none
    }

    /// How the response body is framed, given the request method (responses only; RFC 9112 §6.3).
    public func responseFraming(requestMethod: Method) -> BodyFraming {
        if requestMethod == .head || (status >= 100 && status < 200) || status == 204 || status == 304 {
            return .none
        }
        if isChunked { return .chunked }
        if let n = contentLength { return n > 0 ? .length(n) : .none }
        return .untilClose
    }

    /// The index of the first field of `kind`, if any.
    public func firstIndex(of kind: FieldKind) -> Int? {
        fields.firstIndex { $0.kind == kind }
    }
}

/// Parse failures. `HTTPParseError.status` is the one place that maps them to status codes.
public enum HTTPParseError: Error, Equatable, Sendable {
    case headTooLarge
    case tooManyFields
    case badStartLine
    case badVersion
    case badFieldName
    case badFieldValue
    case obsFold
    case bareCR
    case badContentLength
    case contentLengthWithTransferEncoding
    case badTransferEncoding
    case badChunk
    /// HTTP/1.1 without `Host` (RFC 9112 §3.2).
    case missingHost
    /// More than one `Host` field.
    case duplicateHost
    /// An absolute-form target without an authority (`http:///x`).
    case badAuthority

    /// The status a server answers a request with this error: 431 for size limits, 400 otherwise.
    public var status: Int {
        switch self {
        case .headTooLarge, .tooManyFields: return 431
        default: return 400
        }
    }

    /// The body Go's server writes for this error (its `badRequestError` texts where it has one).
    public var responseText: String {
        switch self {
        case .headTooLarge, .tooManyFields: return "431 Request Header Fields Too Large"
        case .missingHost: return "400 Bad Request: missing required Host header"
        case .duplicateHost: return "400 Bad Request: too many Host headers"
        case .badAuthority: return "400 Bad Request: malformed Host header"
        default: return "400 Bad Request"
        }
    }
}
