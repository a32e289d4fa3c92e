// Knative's Forwarded shim (spec §1.8, §6; upstream pkg/queue/forwarded_shim.go): a request that carries
// X-Forwarded-For/-Host/-Proto but no Forwarded gets a Forwarded field made from them. The queue-proxy finds the
// three values while disposing of the request (`RequestRewrite.writerValues`); the engine calls this writer
// while it writes the head upstream.
import KnativeWire
import ProxyCore

final class ForwardedShim: RequestFieldWriter {
    /// `Forwarded: for=<n1>[;host=<xfh>][;proto=<xfp>]`, then `, for=<n>` for
    /// each further X-Forwarded-For node. Nodes are walked comma to comma (a trailing empty node after the
    /// last comma does not count), trimmed, and a node with a colon is written as `"[node]"`.
    func writeFields(_ rewrite: RequestRewrite, bytes: UnsafeRawBufferPointer, into out: ByteBuffer) {
        let (forwardedFor, forwardedHost, forwardedProto) = rewrite.writerValues
        out.append("Forwarded: ")
        var wroteFirstPair = false
        var cursor = 0
        var end = 0
        if let xff = forwardedFor {
            cursor = xff.lowerBound
            end = xff.upperBound
            let first = Self.nextNode(bytes, from: &cursor, end: end)
            out.append("for=")
            Self.writeNode(bytes, first, out)
            wroteFirstPair = true
        }
        if let host = forwardedHost {
            if wroteFirstPair { out.append(byte: 0x3B) }
            out.append("host=")
            out.append(UnsafeRawBufferPointer(rebasing: bytes[host]))
            wroteFirstPair = true
        }
        if let proto = forwardedProto {
            if wroteFirstPair { out.append(byte: 0x3B) }
            out.append("proto=")
            out.append(UnsafeRawBufferPointer(rebasing: bytes[proto]))
        }
        while cursor < end {
            let node = Self.nextNode(bytes, from: &cursor, end: end)
            out.append(", for=")
            Self.writeNode(bytes, node, out)
        }
        out.append("\r\n")
    }

    /// The node from `cursor` to the next comma (or `end`), trimmed; moves `cursor` past the comma.
    private static func nextNode(_ bytes: UnsafeRawBufferPointer, from cursor: inout Int, end: Int) -> Range<Int> {
        var stop = cursor
        while stop < end && bytes[stop] != 0x2C { stop += 1 }
        var lower = cursor
        var upper = stop
        while lower < upper && (bytes[lower] == 0x20 || bytes[lower] == 0x09) { lower += 1 }
        while upper > lower && (bytes[upper - 1] == 0x20 || bytes[upper - 1] == 0x09) { upper -= 1 }
        cursor = stop < end ? stop + 1 : end
        return lower..<upper
    }

    private static func writeNode(_ bytes: UnsafeRawBufferPointer, _ node: Range<Int>, _ out: ByteBuffer) {
        let value = UnsafeRawBufferPointer(rebasing: bytes[node])
        if value.contains(0x3A) {
            out.append("\"[")
            out.append(value)
            out.append("]\"")
        } else {
            out.append(value)
        }
    }
}
