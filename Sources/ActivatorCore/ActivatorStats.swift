// Per-revision request statistics for the autoscaler (spec §2.8): time-weighted concurrency like the
// queue-proxy's, an immediate "poke" on a revision's first request, a report every second in which the poked
// request is subtracted once, and entries that stay idle for a whole window reported once more, then dropped.
import KnativeWire
import ProxyCore

public final class ActivatorStats {
    private final class Entry {
        let namespace: String
        let name: String
        let stats: RequestStats
        var poked = true
        var concurrency = 0
        init(namespace: String, name: String, nowMs: Int64) {
            self.namespace = namespace
            self.name = name
            stats = RequestStats(nowMs: nowMs)
        }
    }

    private var entries: [String: Entry] = [:]
    public let podName: String

    public init(podName: String) {
        self.podName = podName
    }

    /// Records an arrival. - Returns: the poke to send at once when the revision had no entry.
    public func requestIn(namespace: String, name: String, key: String, nowMs: Int64) -> WireStatMessage? {
        var poke: WireStatMessage?
        let entry: Entry
        if let existing = entries[key] {
            entry = existing
        } else {
            entry = Entry(namespace: namespace, name: name, nowMs: nowMs)
            entries[key] = entry
            var stat = Stat(podName: podName)
            stat.averageConcurrentRequests = 1
            stat.requestCount = 1
            poke = WireStatMessage(namespace: namespace, name: name, stat: stat)
        }
        entry.stats.requestIn(proxied: false, nowMs: nowMs)
        entry.concurrency += 1
        return poke
    }

    public func requestOut(key: String, nowMs: Int64) {
        guard let entry = entries[key] else { return }
        entry.stats.requestOut(proxied: false, nowMs: nowMs)
        entry.concurrency -= 1
    }

    /// Current concurrency per revision key (Prometheus gauge).
    public var concurrency: [(String, Int)] { entries.map { ($0.key, $0.value.concurrency) }.sorted { $0.0 < $1.0 } }

    /// Closes every revision's window. - Returns: the messages for the 1 s report.
    public func tick(nowMs: Int64) -> [WireStatMessage] {
        var messages: [WireStatMessage] = []
        for (key, entry) in entries.sorted(by: { $0.key < $1.key }) {
            let window = entry.stats.closeWindow(nowMs: nowMs)
            var concurrency = window.averageConcurrency
            var count = Double(window.requestCount)
            if entry.poked {
                concurrency = max(concurrency - 1, 0)
                count = max(count - 1, 0)
                entry.poked = false
            }
            var stat = Stat(podName: podName)
            stat.averageConcurrentRequests = concurrency
            stat.requestCount = count
            messages.append(WireStatMessage(namespace: entry.namespace, name: entry.name, stat: stat))
            if window.averageConcurrency == 0 && entry.concurrency == 0 { entries.removeValue(forKey: key) }
        }
        return messages
    }
}
