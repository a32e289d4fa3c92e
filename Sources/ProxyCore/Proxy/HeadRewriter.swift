// Writes the heads the proxy sends on: hop-by-hop fields dropped (RFC 9110 §7.6.1), X-Forwarded-For
// appended, chunked framing kept as is, and the product's edits (`RequestRewrite`). Bytes are copied from the
// parsed head's ranges: no String work.

enum HeadRewriter {
    /// The request head for the upstream: same method and target, HTTP/1.1, end-to-end fields only,
    /// edited as `rewrite` says.
    static func writeRequest(
        _ head: HTTPHead, bytes: UnsafeRawBufferPointer, peerIP: [UInt8], into out: ByteBuffer, upgrade: Bool,
        rewrite: RequestRewrite, defaultHost: [UInt8]
    ) {
        out.append(UnsafeRawBufferPointer(rebasing: bytes[head.method]))
        out.append(byte: 0x20)
        // Absolute form goes on in origin form (the authority became the Host): `http://h` → `/`, `http://h?q` → `/?q`.
        if head.isAbsoluteForm && (head.target.isEmpty || bytes[head.target.lowerBound] != 0x2F) {
            out.append(byte: 0x2F)
        }
        out.append(UnsafeRawBufferPointer(rebasing: bytes[head.target]))
        out.append(" HTTP/1.1\r\n")
        var hasForwardedFor = false
        var hasHost = false
        let replacesHost = rewrite.host != nil || rewrite.hostLiteral != nil
        let hasEdits = !rewrite.dropped.isEmpty || replacesHost
        for (index, field) in head.fields.enumerated() {
            switch field.kind {
            case .xForwardedFor:
                hasForwardedFor = true
                continue
            case .upgrade where upgrade:
                break
            case .te where HTTP1Parser.equalsLower(bytes, field.value, "trailers"):
                break  // Go's reverse proxy keeps "TE: trailers"
            case .host where !replacesHost:
                hasHost = true
            case .host where replacesHost:
                if let name = rewrite.originalHostField {
                    out.append(name)
                    out.append(UnsafeRawBufferPointer(rebasing: bytes[field.value]))
                    out.append("\r\n")
                }
                continue
            case .contentLength where head.contentLengthRepeated:
                continue  // written once below
            default:
                if field.isHopByHop { continue }
            }
            if hasEdits && rewrite.dropped.contains(index) { continue }
            writeField(field, bytes, out)
        }
        if let literal = rewrite.hostLiteral {
            out.append("Host: ")
            literal.withUnsafeBytes { out.append($0) }
            out.append("\r\n")
        } else if let host = rewrite.host {
            out.append("Host: ")
            out.append(UnsafeRawBufferPointer(rebasing: bytes[host]))
            out.append("\r\n")
        } else if !hasHost {
            // HTTP/1.0 without Host: we speak HTTP/1.1 upstream, which requires one: the absolute-form target's
            // authority, else the upstream's address (as Go's transport).
            out.append("Host: ")
            if let authority = head.host {
                out.append(UnsafeRawBufferPointer(rebasing: bytes[authority]))
            } else {
                defaultHost.withUnsafeBytes { out.append($0) }
            }
            out.append("\r\n")
        }
        if head.contentLengthRepeated { writeContentLength(head, out) }
        if let lines = rewrite.extraLines { lines.withUnsafeBytes { out.append($0) } }
        if let writer = rewrite.fieldWriter { writer.writeFields(rewrite, bytes: bytes, into: out) }
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
            case .contentLength where head.contentLengthRepeated:
                continue  // written once below
            default:
                if field.isHopByHop { continue }
            }
            writeField(field, bytes, out)
        }
        if head.contentLengthRepeated { writeContentLength(head, out) }
        if upgrade { out.append("Connection: Upgrade\r\n") }
        out.append(close ? "Connection: close\r\n\r\n" : "\r\n")
    }

    /// One `Content-Length` for a head that listed the same length several times (`5, 5`, or two fields).
    private static func writeContentLength(_ head: HTTPHead, _ out: ByteBuffer) {
        guard let length = head.contentLength else { return }
        out.append("Content-Length: ")
        out.append(decimal: length)
        out.append("\r\n")
    }

    @inline(__always)
    private static func writeField(_ field: HeaderField, _ bytes: UnsafeRawBufferPointer, _ out: ByteBuffer) {
        out.append(UnsafeRawBufferPointer(rebasing: bytes[field.name]))
        out.append(": ")
        out.append(UnsafeRawBufferPointer(rebasing: bytes[field.value]))
        out.append("\r\n")
    }
}
