// Revisions (Knative's revision reconciler): readiness, the progress deadline, and keeping the number of pods at
// the autoscaler's decision (with crash back-off).
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    func revisionBecameReady(_ revision: RevisionObject) {
        revision.everReady = true
        revision.condition = .ready
        guard let service = services[revision.namespace + "/" + revision.serviceName],
            service.latestCreated == revision.name
        else { return }
        // Also when it was ready before: a revision back from a failure (progress deadline) clears the
        // configuration's RevisionFailed.
        guard service.latestReady != revision.name || service.configCondition.status != "True" else { return }
        service.latestReady = revision.name
        service.configCondition = .ready
        resolveRoute(service)
        events.emit(
            "service \(service.key) ready: latest ready revision \(revision.name) at \(service.url(domain: settings.domain))"
        )
    }

    /// Sets a revision's Ready False and, when it is its configuration's latest created revision, the
    /// configuration's too (Knative's `MarkLatestCreatedFailed`); the route then says why.
    func markFailed(_ revision: RevisionObject, _ condition: Condition) {
        revision.condition = condition
        guard let service = services[revision.namespace + "/" + revision.serviceName],
            service.latestCreated == revision.name
        else { return }
        service.configCondition = Condition(
            status: "False", reason: "RevisionFailed",
            message: "Revision \"\(revision.name)\" failed with message: \(condition.message).")
        resolveRoute(service)
    }

    /// Brings the revision's pods to its last decided scale.
    func reconcile(_ revision: RevisionObject) {
        guard !isShuttingDown, revision.argv != nil, revisions[revision.key] === revision else { return }
        // kn-local's own bound (--pod-limit) on top of max-scale: every pod is two processes on this machine.
        let want = min(revision.scaler.lastScale, settings.podLimit)
        trackProgress(revision)
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
        if revision.backoff.isWaiting(atMs: now) {
            scheduleRetry(revision, at: revision.backoff.nextStartMs)
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

    /// Knative's progress deadline: it runs while the revision wants pods and none is ready (the Deployment
    /// is progressing); a ready pod or a scale of zero stops it.
    func trackProgress(_ revision: RevisionObject) {
        guard revision.scaler.lastScale > 0, revision.readyPods.isEmpty, !isShuttingDown else {
            revision.progressSinceMs = nil
            revision.progressTimer.map { loop.cancel($0) }
            return
        }
        guard revision.progressSinceMs == nil else { return }
        revision.progressSinceMs = now
        let timer =
            revision.progressTimer
            ?? LoopTimer { [unowned self, weak revision] _ in
                guard let revision else { return }
                self.progressDeadlinePassed(revision)
            }
        revision.progressTimer = timer
        loop.schedule(timer, at: now + settings.progressDeadlineMs)
    }

    /// No pod became ready within the progress deadline: Ready False, ProgressDeadlineExceeded (Knative's
    /// reason; its message when the initial scale was never reached). Pods keep being checked: one that gets
    /// ready later makes the revision ready again.
    func progressDeadlinePassed(_ revision: RevisionObject) {
        guard revisions[revision.key] === revision, let since = revision.progressSinceMs,
            now - since >= settings.progressDeadlineMs, revision.scaler.lastScale > 0,
            revision.readyPods.isEmpty, revision.condition.reason != "ProgressDeadlineExceeded"
        else { return }
        let message =
            revision.everReady
            ? "Unable to get a ready pod within the progress deadline (\(Self.seconds(settings.progressDeadlineMs)))"
            : "Initial scale was never achieved"
        markFailed(revision, Condition(status: "False", reason: "ProgressDeadlineExceeded", message: message))
        let newest = revision.activePods.max { $0.spawnedMs < $1.spawnedMs }
        let why = newest.map { "; pod \($0.name): \($0.notReadyReason)" } ?? ""
        let detail = revision.crashedPod?.failure.map { "; last pod: \($0)" } ?? ""
        events.emit(
            "revision \(revision.key) failed: ProgressDeadlineExceeded: no pod ready within "
                + "\(Self.seconds(settings.progressDeadlineMs))\(why)\(detail)")
        saveState()
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
