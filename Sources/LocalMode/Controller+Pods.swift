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
        events.emit("pod \(name) started (pids \(pod.userPID), \(pod.queuePID); logs in \(directory))", verbose: true)
        ReadinessWaiter.start(pod: pod, loop: loop)
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

    /// From the readiness waiter: the queue-proxy answered its probe with 200 (the user's readiness passed).
    func podReady(_ pod: PodObject, afterMs: Double) {
        guard pod.phase == .starting else { return }
        pod.phase = .ready
        pod.readyAfterMs = afterMs
        let revision = pod.revision
        guard revisions[revision.key] === revision else { return }
        programEndpoints(revision)
        updateScrapeBoard()
        let start = pod.processStartMs.map { ", app listening after \(Self.ms($0))" } ?? ""
        events.emit("pod \(pod.name) ready in \(Self.ms(afterMs))\(start)")
        if !revision.everReady || revision.condition.status != "True" { revisionBecameReady(revision) }
    }

    /// Scale down or replacement: out of the activator first, then queue-proxy drains, then the user container.
    func terminate(_ pod: PodObject, reason: String) {
        guard pod.phase != .terminating else { return }
        let wasReady = pod.phase == .ready
        pod.phase = .terminating
        pod.abandoned.set()
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
                let container = isUser ? "user-container" : "queue-proxy"
                let log = "\(pod.logDirectory)/\(container).log"
                events.emit("pod \(pod.name): \(container) exited (\(exit)); replacing the pod (log: \(log))")
                let wasReady = pod.phase == .ready
                pod.phase = .terminating
                pod.abandoned.set()
                if !pod.queueExited { ProcessControl.signal(pod.queuePID, SIGKILL) }
                if !pod.userExited { ProcessControl.signal(pod.userPID, SIGKILL) }
                let revision = pod.revision
                if wasReady && revisions[revision.key] === revision { programEndpoints(revision) }
                updateScrapeBoard()
                if !wasReady {
                    revision.crashes += 1
                    let backoff = min(30_000, 1_000 << min(revision.crashes - 1, 5))
                    revision.nextSpawnMs = now + Int64(backoff)
                    if !revision.everReady {
                        let code = exit.code.map { "ExitCode\($0)" } ?? "Signal\(exit.signal ?? 0)"
                        revision.condition = Condition(
                            status: "False", reason: code, message: "Container failed with: \(lastLine(log))")
                        if let service = services[revision.namespace + "/" + revision.serviceName],
                            service.latestCreated == revision.name
                        {
                            service.configCondition = Condition(
                                status: "False", reason: "RevisionFailed",
                                message:
                                    "Revision \"\(revision.name)\" failed with message: \(revision.condition.message).")
                            resolveRoute(service)
                        }
                    }
                }
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
        if isShuttingDown { finishIfDone() }
    }

    /// "4.2 ms".
    static func ms(_ value: Double) -> String { "\((value * 10).rounded() / 10) ms" }

    func lastLine(_ path: String) -> String {
        guard let text = try? readFile(path) else { return "(no log)" }
        return text.split(separator: "\n").last.map(String.init) ?? "(empty log)"
    }
}
