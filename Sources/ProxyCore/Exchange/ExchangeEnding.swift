// How an exchange ends when it cannot simply pass the upstream's response on: the errors, the answers given
// in their place (Go's texts, as Knative's error handler writes them), and whether the client's connection
// goes on afterwards. Every exchange kind ends through these; the drivers only carry them out.

/// The proxy's upstream errors; `answer(address:)` is the one place that maps them to 502 answers.
enum ProxyError: Error {
    case connect(SysError)
    case upstreamClosed
    case upstreamIO(SysError)
    case badResponse
    /// An HTTP/2 upstream reset the stream before answering.
    case streamReset(code: H2ErrorCode, stream: Int32)

    /// Go's error text, as Knative's error handler writes it into the 502 body.
    func answer(address: SocketAddress) -> LocalResponse {
        switch self {
        case .connect(let error):
            return .error(502, "dial tcp \(address): connect: \(SysError.text(error.code))")
        case .upstreamClosed:
            return .error(502, "EOF")
        case .upstreamIO(let error):
            return .error(502, "read tcp \(address): \(SysError.text(error.code))")
        case .badResponse:
            return .error(502, "malformed HTTP response")
        case .streamReset(let code, let stream):
            return .error(502, "stream error: stream ID \(stream); \(code.name); received from peer")
        }
    }

    /// How the failure counts for a retry (`ReplayRule`).
    func replayFailure(reusedConnection: Bool) -> ReplayRule.Failure {
        switch self {
        case .connect: .connectFailed
        case .streamReset(code: .refusedStream, _): .refusedStream
        case .upstreamClosed, .upstreamIO: .diedBeforeResponse(reusedConnection: reusedConnection)
        case .badResponse, .streamReset: .other
        }
    }
}

/// How an exchange ended, as its downstream side carries it out.
enum ExchangeEnding {
    /// The response went through and its framing is complete; `closeAfter`: the connection does not go on
    /// (it said so in the response head).
    case complete(closeAfter: Bool)
    /// Nothing of the response was sent: `answer` goes in its place.
    case answered(LocalResponse)
    /// The response started and cannot be completed: the client gets what was sent, then the cut (HTTP/1:
    /// close without the framing's end; HTTP/2: RST_STREAM), so it does not take a short body for a whole one.
    case truncated
    /// The client is gone or its socket failed: drop everything now.
    case aborted
}

/// Whether a client's HTTP/1 connection goes on after an exchange.
enum ReuseRule {
    /// Whether the response head must say `Connection: close`: the client did not ask for keep-alive (or is
    /// HTTP/1.0), the body ends with the close (close-delimited, or de-chunked for HTTP/1.0), or the server
    /// is draining (Go's `closeAfterReply` while shutting down).
    @inline(__always)
    static func closesAfterResponse(clientKeepAlive: Bool, closeDelimited: Bool, draining: Bool) -> Bool {
        !clientKeepAlive || closeDelimited || draining
    }

    /// After a response: the connection goes on only if the request was read to its end (unread body bytes
    /// would be taken for the next request) and the response did not announce a close.
    @inline(__always)
    static func continues(requestRead: Bool, closeAfter: Bool) -> Bool { requestRead && !closeAfter }
}

/// What a response head with `status` is, for the exchange.
enum InterimRule {
    enum HeadKind: Equatable {
        /// The final response head.
        case final
        /// An interim response (100 Continue, 103 Early Hints) the client can read: passed on as it is.
        case forwardInterim
        /// An interim response for a client that cannot read one (HTTP/1.0): dropped.
        case dropInterim
        /// 101 to a request that asked to upgrade: the connection becomes a tunnel.
        case switchProtocols
        /// Not a usable head (no status, a 101 nobody asked for): a malformed response.
        case invalid
    }

    /// - Parameters:
    ///   - clientTakesInterim: HTTP/1.1 or HTTP/2 client (RFC 9110 §15.2: never to HTTP/1.0).
    ///   - upgradeRequested: an HTTP/1.1 request that asked to upgrade, to an HTTP/1.1 upstream.
    @inline(__always)
    static func classify(status: Int, clientTakesInterim: Bool, upgradeRequested: Bool) -> HeadKind {
        if status >= 200 && status <= 999 { return .final }
        if status == 101 { return upgradeRequested ? .switchProtocols : .invalid }
        if status >= 100 && status < 200 { return clientTakesInterim ? .forwardInterim : .dropInterim }
        return .invalid
    }
}
