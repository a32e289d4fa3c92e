// Recognising h2c on an HTTP/1.1 port (spec §1.2, Go's `h2c.NewHandler`): the prior-knowledge preface, and an
// `Upgrade: h2c` request with its `HTTP2-Settings`.

enum H2cUpgrade {
    enum PrefaceMatch { case match, partial, mismatch }

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// Whether `bytes` start with the client preface (or could, once more arrives).
    static func matchPreface(_ bytes: UnsafeRawBufferPointer) -> PrefaceMatch {
        let n = min(bytes.count, preface.count)
        for i in 0..<n where bytes[i] != preface[i] { return .mismatch }
        return n == preface.count ? .match : .partial
    }

    /// Whether the request asks `Upgrade: h2c`.
    static func asksForH2c(_ bytes: UnsafeRawBufferPointer, _ head: HTTPHead) -> Bool {
        guard head.connectionUpgrade else { return false }
        return head.fields.contains { $0.kind == .upgrade && HTTP1Parser.equalsLower(bytes, $0.value, "h2c") }
    }

    /// The decoded `HTTP2-Settings` of an `Upgrade: h2c` request we can switch, or nil: a request with a body
    /// stays HTTP/1.1 (a server may ignore Upgrade, and the body would have to be read whole before
    /// switching), as does one whose settings are not whole 6-byte entries in base64url.
    static func settings(_ bytes: UnsafeRawBufferPointer, _ head: HTTPHead) -> [UInt8]? {
        switch head.requestFraming {
        case .none, .length(0): break
        default: return nil
        }
        guard let field = head.fields.first(where: { HTTP1Parser.equalsLower(bytes, $0.name, "http2-settings") }),
            let settings = base64URLDecode(UnsafeRawBufferPointer(rebasing: bytes[field.value])),
            settings.count % 6 == 0
        else { return nil }
        return settings
    }

    /// RFC 4648 §5 (URL-safe alphabet), padding optional. nil on a bad character.
    static func base64URLDecode(_ text: UnsafeRawBufferPointer) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for c in text {
            let value: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"), UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "_"), UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return out
    }
}
