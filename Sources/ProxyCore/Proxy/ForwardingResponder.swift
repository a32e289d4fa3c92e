// The simplest responder: every request goes to one upstream pool.

/// Proxies every request to `pool`.
public final class ForwardingResponder: HTTPResponder {
    public let pool: UpstreamPool

    public init(pool: UpstreamPool) {
        self.pool = pool
    }

    public func dispose(_ request: RequestView) -> Disposition { .proxy(pool) }
}
