// The request timeouts (spec §1.7), decided once for every exchange kind. The deadline formula is
// `ProxyOptions.nextDeadlineMs`; this file says what a timeout that fired does to the response.
//
// Knative's timeout handler: 504 with the product's text (`request timeout`, `activator request timeout`)
// before the response started. After it started, the text is appended and the response ends properly (final
// chunk, END_STREAM, or the close of a close-delimited body), as upstream's Go server does, so a client that
// reads the whole body gets it all (conformance's TestRevisionTimeout). A body that cannot take a byte more
// (declared length, no body) is cut: Go's write fails there too. An upgraded connection carries no HTTP: it is
// aborted without text.

/// What the client's response can still take when a timeout fires.
enum ResponseTail: Equatable {
    /// No final response head went to the client yet (a 1xx does not count).
    case notStarted
    /// Upgraded (101): the bytes are not HTTP any more.
    case tunnel
    /// A declared length, or a response without body: nothing can be appended.
    case fixed
    /// HTTP/1 chunked: text fits as a chunk of its own only between chunks; once the final chunk passed, the
    /// response is already complete.
    case chunked(atBoundary: Bool, finalChunkPassed: Bool)
    /// The body ends when the connection closes (HTTP/1.0 clients, `untilClose` responses).
    case closeDelimited
    /// HTTP/2 DATA without a declared length: END_STREAM ends it.
    case stream
}

/// What the exchange does about a timeout.
enum TimeoutAction: Equatable {
    /// 504 with the text, in place of the response.
    case gatewayTimeout
    /// The text as one chunk, then the final chunk: the response is complete.
    case appendChunkAndEnd
    /// The text, then the close that ends the body.
    case appendAndClose
    /// The text as DATA with END_STREAM.
    case appendAndEndStream
    /// The final chunk already went (an inner proxy timed out first): complete as it is, no text twice.
    case endAsIs
    /// Cut the response: the client sees it incomplete (HTTP/1 close, HTTP/2 RST_STREAM).
    case cut
    /// Tear the tunnel down.
    case abortTunnel
}

enum TimeoutRule {
    @inline(__always)
    static func action(for tail: ResponseTail) -> TimeoutAction {
        switch tail {
        case .notStarted: .gatewayTimeout
        case .tunnel: .abortTunnel
        case .fixed: .cut
        case .chunked(_, finalChunkPassed: true): .endAsIs
        case .chunked(atBoundary: true, _): .appendChunkAndEnd
        case .chunked: .cut  // mid-chunk: nothing can be inserted
        case .closeDelimited: .appendAndClose
        case .stream: .appendAndEndStream
        }
    }

    /// The 504 in place of a response that had not started (also a request that waited too long in a queue).
    static func gatewayTimeout(_ message: StaticString) -> LocalResponse {
        .text(504, String(describing: message))
    }

    /// Appends `message` as one chunk followed by the final chunk.
    static func appendChunkAndEnd(_ message: StaticString, to output: ByteBuffer) {
        output.append(hex: message.utf8CodeUnitCount)
        output.append("\r\n")
        output.append(message)
        output.append("\r\n0\r\n\r\n")
    }

    /// The text as bytes (HTTP/2 DATA, a close-delimited body).
    static func bytes(_ message: StaticString) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: message.utf8Start, count: message.utf8CodeUnitCount)
    }
}
