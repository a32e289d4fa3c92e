// Writes the heads the proxy sends on: hop-by-hop fields dropped (RFC 9110 §7.6.1), X-Forwarded-For
// appended, chunked framing kept as is. Bytes are copied from the parsed head's ranges: no String work.

enum HeadRewriter {
    /// The request head for the upstream: same method and target, HTTP/1.1, end-to-end fields only.
    static func writeRequest(
        _ head: HTTPHead, bytes: UnsafeRawBufferPointer, peerIP: [UInt8], into out: ByteBuffer, upgrade: Bool
    ) {
        out.append(UnsafeRawBufferPointer(rebasing: bytes[head.method]))
        out.append(byte: 0x20)
        out.append(UnsafeRawBufferPointer(rebasing: bytes[head.target]))
        out.append(" HTTP/1.1\r\n")
        var hasForwardedFor = false
        for field in head.fields {
            switch field.kind {
            case .xForwardedFor:
                hasForwardedFor = true
                continue
            case .upgrade where upgrade:
                break
            case .te where HTTP1Parser.equalsLower(bytes, field.value, "trailers"):
                break  // Go's reverse proxy keeps "TE: trailers"
            default:
                if field.isHopByHop { continue }
            }
            writeField(field, bytes, out)
        }
        // X-Forwarded-For: prior values (all fields, joined), then the peer (Go's httputil.ReverseProxy).
        out.append("X-Forwarded-For: ")
        if hasForwardedFor {
            for field in head.fields where field.kind == .xForwardedFor {
                out.append(UnsafeRawBufferPointer(rebasing: bytes[field.value]))
                out.append(", ")
            }
        }
        peerIP.withUnsafeBytes { out.append($0) }
        out.append(upgrade ? "\r\nConnection: Upgrade\r\n\r\n" : "\r\n\r\n")
    }

    /// The response head for the downstream.
    /// - Parameters:
    ///   - dropFraming: remove `Transfer-Encoding` (the body is being de-chunked for an HTTP/1.0 client).
    ///   - close: add `Connection: close` (we close after this response).
    ///   - upgrade: a 101: keep `Upgrade` and say `Connection: Upgrade`.
    static func writeResponse(
        _ head: HTTPHead, bytes: UnsafeRawBufferPointer, into out: ByteBuffer, dropFraming: Bool, close: Bool,
        upgrade: Bool
    ) {
        out.append("HTTP/1.1 ")
        out.append(decimal: head.status)
        out.append(byte: 0x20)
        out.append(UnsafeRawBufferPointer(rebasing: bytes[head.reason]))
        out.append("\r\n")
        for field in head.fields {
            switch field.kind {
            case .upgrade where upgrade:
                break
            case .transferEncoding where dropFraming:
                continue
            default:
                if field.isHopByHop { continue }
            }
            writeField(field, bytes, out)
        }
        if upgrade { out.append("Connection: Upgrade\r\n") }
        out.append(close ? "Connection: close\r\n\r\n" : "\r\n")
    }

    @inline(__always)
    private static func writeField(_ field: HeaderField, _ bytes: UnsafeRawBufferPointer, _ out: ByteBuffer) {
        out.append(UnsafeRawBufferPointer(rebasing: bytes[field.name]))
        out.append(": ")
        out.append(UnsafeRawBufferPointer(rebasing: bytes[field.value]))
        out.append("\r\n")
    }
}
