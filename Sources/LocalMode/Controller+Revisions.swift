// Revisions (Knative's revision reconciler): readiness, and keeping the number of pods at the autoscaler's
// decision (with crash back-off).
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    func revisionBecameReady(_ revision: RevisionObject) {
        let wasReady = revision.everReady
        revision.everReady = true
        revision.condition = .ready
        revision.crashes = 0
        guard let service = services[revision.namespace + "/" + revision.serviceName] else { return }
        guard service.latestCreated == revision.name, !wasReady || service.latestReady != revision.name else { return }
        service.latestReady = revision.name
        service.configCondition = .ready
        resolveRoute(service)
        events.emit(
            "service \(service.key) ready: latest ready revision \(revision.name) at \(service.url(domain: settings.domain))"
        )
    }

    /// Brings the revision's pods to its last decided scale.
    func reconcile(_ revision: RevisionObject) {
        guard !isShuttingDown, revision.argv != nil, revisions[revision.key] === revision else { return }
        // kn-local's own bound (--pod-limit) on top of max-scale: every pod is two processes on this machine.
        let want = min(revision.scaler.lastScale, settings.podLimit)
        var active = revision.activePods
        if active.count > want {
            // Not-ready pods go first, then the newest.
            let victims = active.sorted {
                ($0.phase == .ready ? 1 : 0, -$0.spawnedMs) < ($1.phase == .ready ? 1 : 0, -$1.spawnedMs)
            }
            for pod in victims.prefix(active.count - want) { terminate(pod, reason: "scaled down") }
            return
        }
        guard active.count < want else { return }
        if now < revision.nextSpawnMs {
            scheduleRetry(revision, at: revision.nextSpawnMs)
            return
        }
        while active.count < want {
            guard let pod = startPod(revision) else {
                scheduleRetry(revision, at: now + 1000)
                return
            }
            active.append(pod)
        }
    }

    func scheduleRetry(_ revision: RevisionObject, at deadline: Int64) {
        if let timer = revision.retryTimer { loop.cancel(timer) }
        let timer = LoopTimer { [unowned self, weak revision] _ in
            guard let revision else { return }
            revision.retryTimer = nil
            self.reconcile(revision)
        }
        revision.retryTimer = timer
        loop.schedule(timer, at: deadline)
    }
}
