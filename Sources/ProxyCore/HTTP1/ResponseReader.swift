// Reading a whole response on the client side, off the hot path: the readiness and pod probes, the
// websocket client's handshake and kn-local's blocking client. One response parser for all of them: the
// proxy's own (`HTTP1Parser.parseResponse`, `ChunkedDecoder`), not a hand-rolled line split each.

/// A response head parsed from the front of the bytes read so far, with its fields as Strings.
public struct ResponseHead: Sendable {
    public let status: Int
    /// The head's length in bytes (through the empty line): the body starts there.
    public let length: Int
    /// Fields in order, names as sent.
    public let fields: [(name: String, value: String)]
    /// How the body is framed (the request was not HEAD).
    public let framing: BodyFraming

    /// Parses the head at the front of `data`. - Returns: nil while it has not all arrived.
    /// - Throws: the parse error of a malformed or oversized head.
    public static func parse(_ data: UnsafeRawBufferPointer) throws(HTTPParseError) -> ResponseHead? {
        var parser = HTTP1Parser()
        guard let length = try parser.findHeadEnd(data) else { return nil }
        let bytes = UnsafeRawBufferPointer(rebasing: data[0..<length])
        var head = HTTPHead()
        try parser.parseResponse(bytes, into: &head)
        let text = { (range: Range<Int>) in
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }
        return ResponseHead(
            status: head.status, length: length, fields: head.fields.map { (text($0.name), text($0.value)) },
            framing: head.responseFraming(requestMethod: .get))
    }

    public static func parse(_ data: [UInt8]) throws(HTTPParseError) -> ResponseHead? {
        // (`Array.withUnsafeBytes` does not carry the typed error through here: a Result does.)
        let result: Result<ResponseHead?, HTTPParseError> = data.withUnsafeBytes { raw in
            do throws(HTTPParseError) { return .success(try parse(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// The value of the first field called `name` (case-insensitive).
    public func value(_ name: String) -> String? {
        let lower = name.lowercased()
        return fields.first { $0.name.lowercased() == lower }?.value
    }

    /// The body that follows the head in `data`, a response read until the server closed: the declared length
    /// (nil if fewer bytes arrived), the chunked payload (nil if its framing is bad or incomplete), or the rest.
    public func body(in data: [UInt8]) -> [UInt8]? {
        let rest = data[length...]
        switch framing {
        case .none:
            return []
        case .length(let n):
            return rest.count >= n ? Array(rest.prefix(n)) : nil
        case .untilClose:
            return Array(rest)
        case .chunked:
            var decoder = ChunkedDecoder()
            var body: [UInt8] = []
            let ok: Bool = rest.withUnsafeBytes { raw in
                do {
                    _ = try decoder.consume(raw) { range in body.append(contentsOf: raw[range]) }
                    return decoder.isDone
                } catch {
                    return false
                }
            }
            return ok ? body : nil
        }
    }
}
