// Operator metrics in Prometheus text format on the user-metrics port (beyond upstream's default, which
// exports nothing unless configured): queue depth, invocation duration histogram, requests by status class,
// current concurrency. Updated once per request under one uncontended lock.
import KnativeWire
import ProxyCore
import Synchronization

public final class QueueMetrics: Sendable {
    /// Upstream's buckets for `kn.serving.invocation.duration` (seconds).
    public static let bucketBounds: [Double] = [
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
    ]

    private struct State {
        var buckets = [Int](repeating: 0, count: QueueMetrics.bucketBounds.count)
        var count = 0
        var sum = 0.0
        /// Requests by route tag (`kn.route.tag`), then status class (index = status / 100; 0 = no response).
        var byTag: [String: [Int]] = [:]
        var queueDepth = 0
        var concurrency = 0
    }

    private let state = Mutex(State())
    private let labels: String

    /// - Parameter labels: constant labels, already formatted (`namespace="…",revision="…"`).
    public init(labels: String) {
        self.labels = labels
    }

    public func observe(status: Int, seconds: Double, routeTag: String = "kn:disabled") {
        state.withLock { s in
            s.count += 1
            s.sum += seconds
            for (i, bound) in QueueMetrics.bucketBounds.enumerated() where seconds <= bound { s.buckets[i] += 1 }
            s.byTag[routeTag, default: [Int](repeating: 0, count: 6)][min(max(status / 100, 0), 5)] += 1
        }
    }

    public func setQueueDepth(_ depth: Int) { state.withLock { $0.queueDepth = depth } }

    public func setConcurrency(_ value: Int) { state.withLock { $0.concurrency = value } }

    /// The exposition text.
    public func render() -> String {
        let s = state.withLock { $0 }
        let l = labels
        var out = "# HELP kn_serving_queue_depth Requests in the app plus waiting in the queue-proxy.\n"
        out += "# TYPE kn_serving_queue_depth gauge\nkn_serving_queue_depth{\(l)} \(s.queueDepth)\n"
        out += "# HELP kn_serving_concurrency Requests being handled now (autoscaler view).\n"
        out += "# TYPE kn_serving_concurrency gauge\nkn_serving_concurrency{\(l)} \(s.concurrency)\n"
        out += "# HELP kn_serving_invocation_duration_seconds Time to serve a request, excluding queueing.\n"
        out += "# TYPE kn_serving_invocation_duration_seconds histogram\n"
        for (i, bound) in QueueMetrics.bucketBounds.enumerated() {
            out += "kn_serving_invocation_duration_seconds_bucket{\(l),le=\"\(Self.format(bound))\"} \(s.buckets[i])\n"
        }
        out += "kn_serving_invocation_duration_seconds_bucket{\(l),le=\"+Inf\"} \(s.count)\n"
        out += "kn_serving_invocation_duration_seconds_sum{\(l)} \(s.sum)\n"
        out += "kn_serving_invocation_duration_seconds_count{\(l)} \(s.count)\n"
        out += "# HELP kn_serving_requests_total Requests by response status class.\n"
        out += "# TYPE kn_serving_requests_total counter\n"
        for (tag, counts) in s.byTag.sorted(by: { $0.key < $1.key }) {
            for (i, name) in ["none", "1xx", "2xx", "3xx", "4xx", "5xx"].enumerated() where counts[i] > 0 {
                out += "kn_serving_requests_total{\(l),kn_route_tag=\"\(tag)\",status_class=\"\(name)\"} \(counts[i])\n"
            }
        }
        return out
    }

    private static func format(_ v: Double) -> String {
        v == v.rounded() ? String(Int(v)) : String(v)
    }
}
