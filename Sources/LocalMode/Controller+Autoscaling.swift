// The KPA's inputs and ticks: activator stats, queue-proxy scrapes, and the per-revision decisions.
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    /// Stats from the activator's websocket (recorded as sent, spec §3.2).
    func recordActivatorStats(_ messages: [WireStatMessage]) {
        let t = now
        var poked = false
        defer { if poked { saveState() } }
        for message in messages {
            guard let stat = message.stat, let revision = revisions[message.namespace + "/" + message.name] else {
                continue
            }
            let poke = revision.scaler.wantsPoke(concurrency: stat.averageConcurrentRequests)
            revision.scaler.record(concurrency: stat.averageConcurrentRequests, requests: stat.requestCount, atMs: t)
            if settings.verbose {
                events.emit(
                    "stat \(revision.key) from activator: concurrency \(stat.averageConcurrentRequests), requests \(stat.requestCount)"
                )
            }
            if poke {
                poked = true
                decide(revision, reason: "activation")
            }
        }
    }

    /// Queue-proxy scrapes summed per revision, net of what went through the activator (spec §3.2).
    func recordScrapes(_ totals: [String: (Double, Double)]) {
        let t = now
        for (key, (concurrency, requests)) in totals {
            revisions[key]?.scaler.record(concurrency: max(0, concurrency), requests: max(0, requests), atMs: t)
        }
    }

    func tick() {
        for revision in revisions.values where revision.argv != nil { decide(revision, reason: nil) }
        saveState()
        if let timer = tickTimer, !isShuttingDown { loop.schedule(timer, at: now + settings.autoscaler.tickIntervalMs) }
    }

    func decide(_ revision: RevisionObject, reason: String?) {
        guard !isShuttingDown else { return }
        let before = revision.scaler.lastScale
        let after = revision.scaler.decide(readyPods: revision.readyPods.count, routable: revision.routable, atMs: now)
        if after != before {
            events.emit("revision \(revision.key) scaled \(before) → \(after)\(reason.map { " (\($0))" } ?? "")")
        }
        reconcile(revision)
    }

    func updateScrapeBoard() {
        var targets: [ScrapeTarget] = []
        for revision in revisions.values {
            for pod in revision.readyPods {
                targets.append(
                    ScrapeTarget(
                        revisionKey: revision.key, metrics: pod.metricsAddress))
            }
        }
        scrapeBoard.set(targets)
    }
}
