// The metrics port both products serve (spec §1.9): `/metrics` on any method, 404 elsewhere, as Go's mux.
import ProxyCore

/// A `/metrics` endpoint (any method; anything else 404, as Go's mux): the stats port's protobuf `Stat`
/// (spec §1.9) or a Prometheus text page, produced by `render` on each scrape.
public final class MetricsEndpoint: HTTPResponder {
    private let render: () -> LocalResponse
    private let notFound = LocalResponse.error(404, "404 page not found")

    public init(render: @escaping () -> LocalResponse) {
        self.render = render
    }

    public func dispose(_ request: RequestView) -> Disposition {
        guard Self.isMetricsPath(request) else { return .respond(notFound) }
        return .respond(render())
    }

    /// A Prometheus text page.
    public static func prometheus(_ text: @escaping () -> String) -> MetricsEndpoint {
        MetricsEndpoint {
            LocalResponse(status: 200, body: Array(text().utf8), contentType: "text/plain; version=0.0.4")
        }
    }

    /// `/metrics`, with or without a query.
    static func isMetricsPath(_ request: RequestView) -> Bool {
        let target = UnsafeRawBufferPointer(rebasing: request.bytes[request.head.target])
        let path = target.prefix { $0 != UInt8(ascii: "?") }
        return path.elementsEqual("/metrics".utf8)
    }
}
