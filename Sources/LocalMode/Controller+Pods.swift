// Pods as processes: start the queue-proxy and the app, follow their readiness, terminate and reap them.
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    func startPod(_ revision: RevisionObject) -> PodObject? {
        let name = "\(revision.name)-deployment-\(randomSuffix())"
        let directory = "\(settings.stateDirectory)/\(revision.namespace)/\(name)"
        nextPodSerial += 1
        let pod: PodObject
        if let network {
            let attachment: PodNetwork.Attachment
            do { attachment = try network.attach() } catch {
                events.emit("pod \(name) could not start: \(error)")
                return nil
            }
            pod = PodObject(
                name: name, serial: nextPodSerial, revision: revision, network: attachment, logDirectory: directory,
                nowMs: now)
            // A spare for the next pod, once this one's start is no longer held up by the loop.
            let refill = LoopTimer { [unowned self] _ in self.network?.refill() }
            loop.schedule(refill, at: now + 200)
        } else {
            var taken: [UInt16] = []
            for _ in 0..<4 {
                guard let p = ports.take() else {
                    events.emit(
                        "no free ports left in --pod-ports \(settings.podPorts); cannot start a pod for \(revision.key)"
                    )
                    return nil
                }
                taken.append(p)
            }
            pod = PodObject(
                name: name, serial: nextPodSerial, revision: revision, ports: taken, logDirectory: directory,
                nowMs: now)
        }
        do {
            try makeDirectory(directory)
            let environment = userEnvironment(pod)
            let argv = revision.argv!.map { Self.expand($0, environment) }
            let namespace = pod.network?.namespacePath
            pod.userPID = try ProcessControl.spawn(
                argv, environment: environment, logPath: directory + "/user-container.log",
                networkNamespace: namespace)
            pod.queuePID = try ProcessControl.spawn(
                [settings.queueProxy], environment: queueEnvironment(pod), logPath: directory + "/queue-proxy.log",
                networkNamespace: namespace)
        } catch {
            // Nothing of this pod is tracked: a started user container is killed, and its exit ignored.
            events.emit("pod \(name) could not start: \(error)")
            ProcessControl.signal(pod.userPID, SIGKILL)
            releaseAddress(pod)
            return nil
        }
        podsByPID[pod.userPID] = pod
        podsByPID[pod.queuePID] = pod
        revision.pods.append(pod)
        revision.crashedPod = nil
        events.emit("pod \(name) started (pids \(pod.userPID), \(pod.queuePID); logs in \(directory))", verbose: true)
        ReadinessWaiter.start(pod: pod, loop: loop)
        let timer = LoopTimer { [unowned self, weak pod] _ in
            guard let pod else { return }
            self.podNotReadyInTime(pod)
        }
        pod.notReadyTimer = timer
        loop.schedule(timer, at: now + settings.podNotReadyReportMs)
        return pod
    }

    /// A pod that is gone (or never started) gives its network namespace and address back.
    func releaseAddress(_ pod: PodObject) {
        if let attachment = pod.network { network?.detach(attachment) }
    }

    /// Runs `body` with the pod whose serial is `serial`, if it still exists.
    func podEvent(_ serial: Int, _ body: (Controller, PodObject) -> Void) {
        for revision in revisions.values {
            if let pod = revision.pods.first(where: { $0.serial == serial }) { return body(self, pod) }
        }
    }

    /// From the readiness waiter: the user container accepted a connection.
    func podProcessStarted(_ pod: PodObject, afterMs: Double) {
        pod.processStartMs = afterMs
    }

    /// From the readiness waiter: what it saw of a starting pod changed.
    func podObserved(_ pod: PodObject, _ report: PodProbeReport) {
        pod.probe = report
    }

    /// From the readiness waiter: the queue-proxy answered its probe with 200 (the user's readiness passed).
    func podReady(_ pod: PodObject, afterMs: Double) {
        guard pod.phase == .starting else { return }
        pod.phase = .ready
        pod.readyAfterMs = afterMs
        pod.readySinceMs = now
        pod.notReadyTimer.map { loop.cancel($0) }
        let revision = pod.revision
        guard revisions[revision.key] === revision else { return }
        programEndpoints(revision)
        updateScrapeBoard()
        let start = pod.processStartMs.map { ", app listening after \(Self.ms($0))" } ?? ""
        let late = pod.isProbeFailing ? " (late: it was reported not ready)" : ""
        pod.isProbeFailing = false
        events.emit("pod \(pod.name) ready in \(Self.ms(afterMs))\(start)\(late)")
        trackProgress(revision)
        if !revision.everReady || revision.condition.status != "True" { revisionBecameReady(revision) }
        saveState()
    }

    /// From the readiness waiter: a ready pod failed its readiness probe `failures` times in a row (kubelet's
    /// periodic probe). It leaves the activator and the scrape board, as a not-ready pod leaves a Service's
    /// endpoints, and is ready again (`podReady`) once the probe passes.
    func podNotReady(_ pod: PodObject, failures: Int) {
        guard pod.phase == .ready else { return }
        pod.phase = .starting
        pod.isProbeFailing = true  // `get pods`: 1/2 ProbeFailing
        let revision = pod.revision
        guard revisions[revision.key] === revision else { return }
        programEndpoints(revision)
        updateScrapeBoard()
        events.emit(
            "pod \(pod.name) not ready: readiness probe failed \(Self.count(failures, "time", "times")) in a row")
        trackProgress(revision)
    }

    /// The pod's not-ready report time passed (Settings.podNotReadyReportMs): if it is still starting, say so
    /// once, with why (what the readiness waiter saw) and the tail of the app's log.
    func podNotReadyInTime(_ pod: PodObject) {
        pod.notReadyTimer = nil
        guard pod.phase == .starting, !pod.isProbeFailing else { return }
        pod.isProbeFailing = true
        let log = "\(pod.logDirectory)/user-container.log"
        events.emit(
            "pod \(pod.name) not ready after \(Self.seconds(settings.podNotReadyReportMs)): \(pod.notReadyReason) "
                + "(still checking; log: \(log))" + Self.quoted(tailLines(log)))
    }

    /// Scale down or replacement: out of the activator first, then queue-proxy drains, then the user container.
    func terminate(_ pod: PodObject, reason: String) {
        guard pod.phase != .terminating else { return }
        let wasReady = pod.phase == .ready
        pod.phase = .terminating
        pod.abandoned.set()
        pod.notReadyTimer.map { loop.cancel($0) }
        if wasReady && revisions[pod.revision.key] === pod.revision { programEndpoints(pod.revision) }
        updateScrapeBoard()
        events.emit("pod \(pod.name) terminating (\(reason))", verbose: true)
        if !pod.queueExited {
            ProcessControl.signal(pod.queuePID, SIGTERM)
        } else if !pod.userExited {
            ProcessControl.signal(pod.userPID, SIGTERM)
        }
        // Knative's terminationGracePeriodSeconds is the revision timeout; the drain itself is the quiet period.
        let graceMs = Int64(pod.revision.template.timeoutSeconds) * 1000 + 5_000
        let timer = LoopTimer { [unowned self, weak pod] _ in
            guard let pod else { return }
            if !pod.queueExited { ProcessControl.signal(pod.queuePID, SIGKILL) }
            if !pod.userExited { ProcessControl.signal(pod.userPID, SIGKILL) }
            _ = self
        }
        pod.killTimer = timer
        loop.schedule(timer, at: now + graceMs)
    }

    /// SIGCHLD: reap every ended child and act on it.
    func reapChildren() {
        for exit in ProcessControl.reap() {
            if exit.pid == activatorPID {
                activatorPID = 0
                if isShuttingDown {
                    finishIfDone()
                    continue
                }
                activatorRestarts += 1
                let delay = Int64(min(30_000, 250 << min(activatorRestarts - 1, 7)))
                events.emit(
                    "activator exited (\(exit)); restarting it in \(delay) ms (log: \(settings.stateDirectory)/activator.log)"
                )
                scheduleActivatorRestart(after: delay)
                continue
            }
            guard let pod = podsByPID.removeValue(forKey: exit.pid) else { continue }
            let isUser = exit.pid == pod.userPID
            if isUser { pod.userExited = true } else { pod.queueExited = true }
            if pod.phase != .terminating {
                podDied(pod, container: isUser ? "user-container" : "queue-proxy", exit: exit)
            } else if pod.queueExited && !pod.userExited {
                // The queue-proxy drained: now the user container (Knative's preStop hook releases it here).
                ProcessControl.signal(pod.userPID, SIGTERM)
            }
            if pod.isGone {
                pod.killTimer.map { loop.cancel($0) }
                releaseAddress(pod)
                pod.revision.pods.removeAll { $0 === pod }
                events.emit("pod \(pod.name) gone", verbose: true)
                reconcile(pod.revision)
            }
        }
        if isShuttingDown { finishIfDone() } else { saveState() }
    }

    /// One of the pod's containers exited on its own: the pod goes (the other container is killed) and a
    /// replacement follows after the revision's crash back-off (CrashBackoff has the rule).
    func podDied(_ pod: PodObject, container: String, exit: ProcessControl.Exit) {
        let log = "\(pod.logDirectory)/\(container).log"
        let wasReady = pod.phase == .ready
        pod.phase = .terminating
        pod.failure = "\(container) exited (\(exit))"
        pod.abandoned.set()
        pod.notReadyTimer.map { loop.cancel($0) }
        if !pod.queueExited { ProcessControl.signal(pod.queuePID, SIGKILL) }
        if !pod.userExited { ProcessControl.signal(pod.userPID, SIGKILL) }
        let revision = pod.revision
        // Pods that have been ready long enough reset the count first (once each), this one included.
        for other in revision.pods
        where !other.provedHealthy && CrashBackoff.isHealthy(readySinceMs: other.readySinceMs, atMs: now) {
            other.provedHealthy = true
            revision.backoff.reset()
        }
        revision.backoff.podDied(readySinceMs: pod.readySinceMs, atMs: now)
        revision.crashedPod = pod
        let delay = revision.backoff.nextStartMs - now
        let wait =
            delay > 0
            ? " in \(Self.seconds(delay)) (back-off: \(Self.count(revision.backoff.crashes, "crash", "crashes")) in a row)"
            : ""
        events.emit(
            "pod \(pod.name): \(container) exited (\(exit)); replacing the pod\(wait) (log: \(log))"
                + Self.quoted(tailLines(log)))
        if wasReady && revisions[revision.key] === revision { programEndpoints(revision) }
        updateScrapeBoard()
        if !wasReady && !revision.everReady {
            let code = exit.code.map { "ExitCode\($0)" } ?? "Signal\(exit.signal ?? 0)"
            let last = tailLines(log, count: 1).first ?? "(empty log)"
            markFailed(revision, Condition(status: "False", reason: code, message: "Container failed with: \(last)"))
        }
    }

    /// "1 crash", "3 crashes".
    static func count(_ n: Int, _ one: String, _ many: String) -> String { "\(n) \(n == 1 ? one : many)" }

    /// "4.2 ms".
    static func ms(_ value: Double) -> String { "\((value * 10).rounded() / 10) ms" }

    /// "5s", "1.5s", "2m0s" (Go's way of writing a duration).
    static func seconds(_ ms: Int64) -> String {
        if ms < 60_000 { return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(Double(ms) / 1000)s" }
        return "\(ms / 60_000)m\((ms % 60_000) / 1000)s"
    }

    /// Log lines as an event's continuation lines: `\n    | line`.
    static func quoted(_ lines: [String]) -> String {
        lines.isEmpty ? "\n    | (empty log)" : lines.map { "\n    | " + $0 }.joined()
    }
}
