// The HTTP/1.1 head parser (RFC 9112). Incremental in the way that matters: `findHeadEnd` resumes where the
// last call stopped, so a head arriving in any number of pieces is scanned once; the head is then parsed
// in one pass. Strict where laxity enables request smuggling (RFC 9112 §6.3, §5.2, §2.2).

/// Byte classes as constant bitmaps (no table, no lazy global: a `static let` array costs a `swift_once`
/// check on every access in the hot loop).
package enum ByteClass {
    /// RFC 9110 tchar: ALPHA / DIGIT / "!#$%&'*+-.^_`|~".
    private static let tokenLow: UInt64 = 0x03FF_6CFA_0000_0000  // 0x00-0x3F: ! # $ % & ' * + - . 0-9
    private static let tokenHigh: UInt64 = 0x57FF_FFFF_C7FF_FFFE  // 0x40-0x7F: A-Z ^ _ ` a-z | ~

    @inline(__always) package static func isToken(_ c: UInt8) -> Bool {
        if c < 64 { return tokenLow >> UInt64(c) & 1 != 0 }
        if c < 128 { return tokenHigh >> UInt64(c - 64) & 1 != 0 }
        return false
    }

    @inline(__always) package static func lower(_ c: UInt8) -> UInt8 {
        c &- 65 < 26 ? c | 0x20 : c
    }
}

public struct HTTP1Parser {
    /// Longest accepted head (start line + fields); longer → 431.
    public var maxHeadLength: Int
    public var maxFields: Int
    private var scanned = 0

    public init(maxHeadLength: Int = 64 * 1024, maxFields: Int = 256) {
        self.maxHeadLength = maxHeadLength
        self.maxFields = maxFields
    }

    /// Forget the scan position (a new message starts at the front of the input).
    public mutating func reset() { scanned = 0 }

    /// Looks for the empty line ending a head in `bytes` (which start at the head's first byte).
    /// - Returns: the head length including the empty line, or nil if it has not all arrived.
    /// - Throws: `.headTooLarge` once more than `maxHeadLength` bytes arrived without an end.
    public mutating func findHeadEnd(_ bytes: UnsafeRawBufferPointer) throws(HTTPParseError) -> Int? {
        let count = bytes.count
        var i = max(scanned, 0)
        while i < count {
            if bytes[i] == 0x0A {
                // "\n\n" or "\n\r\n" ends the head.
                if i + 1 < count && bytes[i + 1] == 0x0A {
                    scanned = 0
                    return try checked(i + 2)
                }
                if i + 2 < count && bytes[i + 1] == 0x0D && bytes[i + 2] == 0x0A {
                    scanned = 0
                    return try checked(i + 3)
                }
                if i + 2 >= count {
                    break  // the terminator may still be arriving: rescan from this LF next time
                }
            }
            i += 1
        }
        scanned = i
        if count > maxHeadLength { throw .headTooLarge }
        return nil
    }

    @inline(__always) private func checked(_ length: Int) throws(HTTPParseError) -> Int {
        if length > maxHeadLength { throw .headTooLarge }
        return length
    }

    /// Parses a complete request head (`bytes` = exactly the head, as measured by `findHeadEnd`).
    public func parseRequest(_ bytes: UnsafeRawBufferPointer, into head: inout HTTPHead) throws(HTTPParseError) {
        head.reset()
        head.isRequest = true
        head.length = bytes.count
        var i = 0
        // Tolerate empty lines before a request (RFC 9112 §2.2: SHOULD ignore at least one).
        while i < bytes.count && (bytes[i] == 0x0D || bytes[i] == 0x0A) {
            if bytes[i] == 0x0D && (i + 1 >= bytes.count || bytes[i + 1] != 0x0A) { throw .bareCR }
            i += 1
        }
        let methodStart = i
        while i < bytes.count && ByteClass.isToken(bytes[i]) { i += 1 }
        guard i > methodStart, i < bytes.count, bytes[i] == 0x20 else { throw .badStartLine }
        head.method = methodStart..<i
        head.methodKind = Self.classifyMethod(bytes, head.method)
        i += 1
        let targetStart = i
        while i < bytes.count && bytes[i] > 0x20 && bytes[i] != 0x7F { i += 1 }
        guard i > targetStart, i < bytes.count, bytes[i] == 0x20 else { throw .badStartLine }
        head.target = targetStart..<i
        i += 1
        head.minorVersion = try Self.parseVersion(bytes, &i)
        try Self.expectLineEnd(bytes, &i)
        try parseFields(bytes, from: i, into: &head)
        try Self.validateRequestFraming(&head)
        if bytes[head.target.lowerBound] != 0x2F,  // origin form, the common case, is decided by one byte
            Self.hasPrefixLower(bytes, head.target, "http://") || Self.hasPrefixLower(bytes, head.target, "https://")
        {
            try Self.takeAbsoluteForm(bytes, &head)
        }
    }

    /// Absolute-form target (RFC 9112 §3.2.2): the URI's authority replaces `Host` (in `head.host` and in the
    /// Host field's value range) and `target` becomes the path and query, as Go's server does.
    private static func takeAbsoluteForm(_ b: UnsafeRawBufferPointer, _ head: inout HTTPHead) throws(HTTPParseError) {
        var i = head.target.lowerBound
        while b[i] != 0x3A { i += 1 }  // the scheme's colon (the prefix test found it)
        i += 3  // "://"
        var start = i
        let end = head.target.upperBound
        while i < end && b[i] != 0x2F && b[i] != 0x3F && b[i] != 0x23 {
            if b[i] == 0x40 { start = i + 1 }  // userinfo@ is not part of the host
            i += 1
        }
        guard i > start else { throw .badAuthority }
        let authority = start..<i
        head.target = i..<end
        head.isAbsoluteForm = true
        // No Host field: HTTP/1.1 is refused by the caller (it requires one even with absolute form, as in Go);
        // HTTP/1.0 takes the URI's authority (`head.host`, which HeadRewriter writes when no field carries it).
        guard head.host != nil else {
            if head.minorVersion == 0 { head.host = authority }
            return
        }
        head.host = authority
        for k in head.fields.indices where head.fields[k].kind == .host { head.fields[k].value = authority }
    }

    /// Parses a complete response head.
    public func parseResponse(_ bytes: UnsafeRawBufferPointer, into head: inout HTTPHead) throws(HTTPParseError) {
        head.reset()
        head.isRequest = false
        head.length = bytes.count
        var i = 0
        head.minorVersion = try Self.parseVersion(bytes, &i)
        guard i + 3 <= bytes.count, bytes[i] == 0x20 else { throw .badStartLine }
        i += 1
        var status = 0
        for _ in 0..<3 {
            let d = bytes[i] &- 48
            guard d < 10 else { throw .badStartLine }
            status = status * 10 + Int(d)
            i += 1
        }
        guard status >= 100 else { throw .badStartLine }
        head.status = status
        if i < bytes.count && bytes[i] == 0x20 {
            i += 1
            let reasonStart = i
            while i < bytes.count && bytes[i] != 0x0D && bytes[i] != 0x0A {
                let c = bytes[i]
                guard c >= 0x20 || c == 0x09, c != 0x7F else { throw .badStartLine }
                i += 1
            }
            head.reason = reasonStart..<i
        }
        try Self.expectLineEnd(bytes, &i)
        try parseFields(bytes, from: i, into: &head)
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length in a response; the length is dropped.
        if head.hasTransferEncoding {
            for k in head.fields.indices where head.fields[k].kind == .contentLength {
                head.fields[k].kind = .connectionListed  // removed when forwarding
            }
            head.contentLength = nil
            if !head.isChunked { head.connectionClose = true }  // unknown coding: body runs to close
        }
    }

    // MARK: - Pieces

    private static func parseVersion(_ b: UnsafeRawBufferPointer, _ i: inout Int) throws(HTTPParseError) -> Int {
        // "HTTP/1.0" or "HTTP/1.1"
        guard i + 8 <= b.count else { throw .badVersion }
        guard b[i] == 0x48, b[i + 1] == 0x54, b[i + 2] == 0x54, b[i + 3] == 0x50, b[i + 4] == 0x2F,
            b[i + 5] == 0x31, b[i + 6] == 0x2E
        else { throw .badVersion }
        let minor = b[i + 7]
        guard minor == 0x30 || minor == 0x31 else { throw .badVersion }
        i += 8
        return Int(minor - 0x30)
    }

    @inline(__always)
    private static func expectLineEnd(_ b: UnsafeRawBufferPointer, _ i: inout Int) throws(HTTPParseError) {
        guard i < b.count else { throw .badStartLine }
        if b[i] == 0x0D {
            guard i + 1 < b.count, b[i + 1] == 0x0A else { throw .bareCR }
            i += 2
        } else if b[i] == 0x0A {
            i += 1
        } else {
            throw .badStartLine
        }
    }

    private func parseFields(
        _ b: UnsafeRawBufferPointer, from start: Int, into head: inout HTTPHead
    ) throws(HTTPParseError) {
        var i = start
        while i < b.count {
            // End of head?
            if b[i] == 0x0A { return }
            if b[i] == 0x0D {
                guard i + 1 < b.count, b[i + 1] == 0x0A else { throw .bareCR }
                return
            }
            if b[i] == 0x20 || b[i] == 0x09 { throw .obsFold }  // RFC 9112 §5.2: reject obs-fold
            let nameStart = i
            while i < b.count && ByteClass.isToken(b[i]) { i += 1 }
            guard i > nameStart, i < b.count, b[i] == 0x3A else { throw .badFieldName }  // no space before ':'
            let name = nameStart..<i
            i += 1
            while i < b.count && (b[i] == 0x20 || b[i] == 0x09) { i += 1 }
            let valueStart = i
            var valueEnd = i
            while i < b.count {
                let c = b[i]
                if c == 0x0D || c == 0x0A { break }
                guard c >= 0x20 || c == 0x09, c != 0x7F else { throw .badFieldValue }
                i += 1
                if c != 0x20 && c != 0x09 { valueEnd = i }
            }
            try Self.expectLineEnd(b, &i)
            guard head.fields.count < maxFields else { throw .tooManyFields }
            let kind = Self.classifyField(b, name)
            head.fields.append(HeaderField(name: name, value: valueStart..<valueEnd, kind: kind))
            try Self.noteField(b, kind: kind, value: valueStart..<valueEnd, into: &head)
        }
        throw .badStartLine  // ran out of bytes without the empty line: the caller measured wrongly
    }

    private static func noteField(
        _ b: UnsafeRawBufferPointer, kind: FieldKind, value: Range<Int>, into head: inout HTTPHead
    ) throws(HTTPParseError) {
        switch kind {
        case .contentLength:
            // A list of identical values is tolerated (RFC 9110 §8.6) and forwarded as one; anything else is
            // an attack or a bug.
            var any = false
            try forEachListElement(b, value) { (element) throws(HTTPParseError) in
                guard let n = parseDecimal(b, element) else { throw .badContentLength }
                if let previous = head.contentLength {
                    if previous != n { throw .badContentLength }
                    head.contentLengthRepeated = true
                }
                head.contentLength = n
                any = true
            }
            if !any { throw .badContentLength }
        case .transferEncoding:
            head.hasTransferEncoding = true
            // The final coding decides; "chunked" anywhere but last is invalid in a request.
            var last: Range<Int>? = nil
            var chunkedSeen = false
            try forEachListElement(b, value) { (element) throws(HTTPParseError) in
                if chunkedSeen { throw .badTransferEncoding }
                if equalsLower(b, element, "chunked") { chunkedSeen = true }
                last = element
                head.transferCodingCount += 1
            }
            if last == nil { throw .badTransferEncoding }
            head.isChunked = chunkedSeen
        case .connection:
            try forEachListElement(b, value) { (element) throws(HTTPParseError) in
                if equalsLower(b, element, "close") {
                    head.connectionClose = true
                } else if equalsLower(b, element, "keep-alive") {
                    head.connectionKeepAlive = true
                } else if equalsLower(b, element, "upgrade") {
                    head.connectionUpgrade = true
                } else {
                    head.connectionTokens.append(element)
                }
            }
        case .host where head.isRequest:  // a response may carry anything, Host twice included
            if head.host != nil { throw .duplicateHost }
            head.host = value
        case .upgrade:
            head.hasUpgradeField = true
        case .expect:
            if equalsLower(b, value, "100-continue") { head.expectsContinue = true }
        default:
            break
        }
    }

    /// Request framing rules of RFC 9112 §6.1 and §6.3. A request's `Transfer-Encoding` must be exactly one
    /// `chunked` (one field, one coding): `chunked` twice, `identity, chunked` or `gzip, chunked` are refused,
    /// never passed on for a backend to read its own way (Go refuses them too, with 501 for an unknown coding;
    /// we answer 400 for all, as for every other framing error).
    private static func validateRequestFraming(_ head: inout HTTPHead) throws(HTTPParseError) {
        if head.hasTransferEncoding {
            if head.contentLength != nil { throw .contentLengthWithTransferEncoding }
            if head.minorVersion == 0 { throw .badTransferEncoding }  // §6.1: HTTP/1.0 framing is faulty
            if !head.isChunked || head.transferCodingCount != 1 { throw .badTransferEncoding }
        }
    }

    /// Marks fields named by `Connection` tokens as hop-by-hop; the proxy calls this (not every server needs it).
    public static func markConnectionListed(_ b: UnsafeRawBufferPointer, _ head: inout HTTPHead) {
        guard !head.connectionTokens.isEmpty else { return }
        for k in head.fields.indices where head.fields[k].kind == .other {
            for token in head.connectionTokens where equalsIgnoringCase(b, head.fields[k].name, token) {
                head.fields[k].kind = .connectionListed
            }
        }
    }

    // MARK: - Byte helpers

    /// Calls `body` with each trimmed, non-empty element of a comma-separated list.
    static func forEachListElement(
        _ b: UnsafeRawBufferPointer, _ range: Range<Int>, _ body: (Range<Int>) throws(HTTPParseError) -> Void
    ) throws(HTTPParseError) {
        var i = range.lowerBound
        while i < range.upperBound {
            while i < range.upperBound && (b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x2C) { i += 1 }
            let start = i
            while i < range.upperBound && b[i] != 0x2C { i += 1 }
            var end = i
            while end > start && (b[end - 1] == 0x20 || b[end - 1] == 0x09) { end -= 1 }
            if end > start { try body(start..<end) }
        }
    }

    static func parseDecimal(_ b: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, range.count <= 18 else { return nil }  // 18 digits cannot overflow Int64
        var n = 0
        for i in range {
            let d = b[i] &- 48
            guard d < 10 else { return nil }
            n = n * 10 + Int(d)
        }
        return n
    }

    /// Case-insensitive comparison with a lower-case ASCII literal.
    @inline(__always)
    public static func equalsLower(_ b: UnsafeRawBufferPointer, _ range: Range<Int>, _ literal: StaticString) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        let lit = literal.utf8Start
        for k in 0..<range.count where ByteClass.lower(b[range.lowerBound + k]) != lit[k] { return false }
        return true
    }

    static func equalsIgnoringCase(_ b: UnsafeRawBufferPointer, _ x: Range<Int>, _ y: Range<Int>) -> Bool {
        guard x.count == y.count else { return false }
        for k in 0..<x.count where ByteClass.lower(b[x.lowerBound + k]) != ByteClass.lower(b[y.lowerBound + k]) {
            return false
        }
        return true
    }

    /// Case-sensitive prefix test (Go's strings.HasPrefix on a header value).
    public static func hasPrefixExact(_ b: UnsafeRawBufferPointer, _ range: Range<Int>, _ literal: StaticString) -> Bool
    {
        let n = literal.utf8CodeUnitCount
        guard range.count >= n else { return false }
        return equalsExact(b, range.lowerBound..<(range.lowerBound + n), literal)
    }

    /// Case-insensitive prefix test against a lower-case literal.
    public static func hasPrefixLower(_ b: UnsafeRawBufferPointer, _ range: Range<Int>, _ literal: StaticString) -> Bool
    {
        let n = literal.utf8CodeUnitCount
        guard range.count >= n else { return false }
        return equalsLower(b, range.lowerBound..<(range.lowerBound + n), literal)
    }

    private static func classifyMethod(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> HTTPHead.Method {
        // Methods are case-sensitive (RFC 9110 §9.1).
        switch r.count {
        case 3:
            if b[r.lowerBound] == 0x47 && b[r.lowerBound + 1] == 0x45 && b[r.lowerBound + 2] == 0x54 { return .get }
            if b[r.lowerBound] == 0x50 && b[r.lowerBound + 1] == 0x55 && b[r.lowerBound + 2] == 0x54 { return .put }
        case 4:
            if equalsExact(b, r, "HEAD") { return .head }
            if equalsExact(b, r, "POST") { return .post }
        case 6: if equalsExact(b, r, "DELETE") { return .delete }
        case 7:
            if equalsExact(b, r, "CONNECT") { return .connect }
            if equalsExact(b, r, "OPTIONS") { return .options }
        default: break
        }
        return .other
    }

    public static func equalsExact(_ b: UnsafeRawBufferPointer, _ r: Range<Int>, _ literal: StaticString) -> Bool {
        guard r.count == literal.utf8CodeUnitCount else { return false }
        let lit = literal.utf8Start
        for k in 0..<r.count where b[r.lowerBound + k] != lit[k] { return false }
        return true
    }

    private static func classifyField(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> FieldKind {
        // Dispatch on length first: most fields are rejected after one integer comparison.
        switch r.count {
        case 2: if equalsLower(b, r, "te") { return .te }
        case 4: if equalsLower(b, r, "host") { return .host }
        case 6: if equalsLower(b, r, "expect") { return .expect }
        case 7:
            if equalsLower(b, r, "trailer") { return .trailer }
            if equalsLower(b, r, "upgrade") { return .upgrade }
        case 10:
            if equalsLower(b, r, "connection") { return .connection }
            if equalsLower(b, r, "keep-alive") { return .keepAlive }
            if equalsLower(b, r, "user-agent") { return .userAgent }
        case 14: if equalsLower(b, r, "content-length") { return .contentLength }
        case 15: if equalsLower(b, r, "x-forwarded-for") { return .xForwardedFor }
        case 16: if equalsLower(b, r, "proxy-connection") { return .proxyConnection }
        case 17: if equalsLower(b, r, "transfer-encoding") { return .transferEncoding }
        case 18: if equalsLower(b, r, "proxy-authenticate") { return .proxyAuthenticate }
        case 19: if equalsLower(b, r, "proxy-authorization") { return .proxyAuthorization }
        default: break
        }
        return .other
    }
}
