// The control plane on one loop thread: applies manifests into objects, starts and stops pods (processes),
// runs the KPA on activator stats and queue-proxy scrapes, and programs the activator through its admin API.
// Blocking calls made here are all loopback calls to our own children (admin PUTs, ~0.1 ms); probes and
// scrapes that can take long run on their own threads and post results back.
import Glibc
import ProxyCore

public final class Controller {
    let loop: EventLoop
    let settings: LocalSettings
    let events: EventLog
    private var ports: PortAllocator
    private var services: [String: ServiceObject] = [:]
    private var revisions: [String: RevisionObject] = [:]
    private var podsByPID: [Int32: PodObject] = [:]
    private var nextPodSerial = 0
    private let scrapeBoard: ScrapeBoard
    private var activatorPID: Int32 = 0
    private var activatorAdmin: SocketAddress
    private let statPort: UInt16
    private var tickTimer: LoopTimer?
    private var activatorTimer: LoopTimer?
    private var activatorRestarts = 0
    private var shutdownTimer: LoopTimer?
    private(set) var isShuttingDown = false
    /// Called once every child is gone after `shutdown()`.
    var onFinished: (() -> Void)?

    public init(loop: EventLoop, settings: LocalSettings, statPort: UInt16, scrapeBoard: ScrapeBoard, events: EventLog) {
        self.loop = loop
        self.settings = settings
        self.statPort = statPort
        self.scrapeBoard = scrapeBoard
        self.events = events
        ports = PortAllocator(range: settings.podPorts)
        activatorAdmin = SocketAddress(ip: "127.0.0.1", port: 0)!
    }

    static func on(_ loop: EventLoop) -> Controller? { loop.locals[ObjectIdentifier(Controller.self)] as? Controller }

    var now: Int64 { monotonicMs() }

    // MARK: - Start

    public func start() throws {
        try startActivator()
        let tick = LoopTimer { [unowned self] _ in self.tick() }
        tickTimer = tick
        loop.schedule(tick, at: now + settings.autoscaler.tickIntervalMs)
    }

    private func startActivator() throws {
        guard let adminPort = ports.take() else { throw ManifestError("no free port in --pod-ports for the activator's admin API") }
        activatorAdmin = SocketAddress(ip: "127.0.0.1", port: adminPort)!
        let argv = [
            settings.activator, "--port", "\(settings.ingressPort)", "--metrics-port", "0",
            "--admin-address", "\(activatorAdmin)", "--autoscaler-url", "ws://127.0.0.1:\(statPort)/",
            "--drain-grace", "0s", "--pod-name", "kn-local-activator",
        ]
        try makeDirectory(settings.stateDirectory)
        let log = settings.stateDirectory + "/activator.log"
        activatorPID = try ProcessControl.spawn(argv, environment: baseEnvironment(), logPath: log)
        // Wait for its admin API (it binds every listener before serving; a failed bind makes it exit).
        let deadline = now + 10_000
        while true {
            if (try? BlockingHTTP.request("GET", activatorAdmin, "/v1/state", timeoutMs: 500)) != nil { break }
            // Only the activator is reaped here: other exits stay for reapChildren.
            if let exit = ProcessControl.reap(pid: activatorPID) {
                activatorPID = 0
                throw ManifestError("the activator exited at start (\(exit)); see \(log)")
            }
            if now >= deadline {
                ProcessControl.signal(activatorPID, SIGKILL)
                throw ManifestError("the activator did not answer on \(activatorAdmin) within 10 s; see \(log)")
            }
            usleep(2_000)
        }
        events.emit("activator started (pid \(activatorPID)): ingress on :\(settings.ingressPort), log \(log)")
        for revision in revisions.values { programRevision(revision) }
        for service in services.values { programRoute(service) }
    }

    private func scheduleActivatorRestart(after delay: Int64) {
        let timer = LoopTimer { [unowned self] _ in
            guard !self.isShuttingDown, self.activatorPID == 0 else { return }
            do {
                try self.startActivator()
            } catch {
                self.activatorRestarts += 1
                self.events.emit("cannot restart the activator: \(error)")
                self.scheduleActivatorRestart(after: Int64(min(30_000, 250 << min(self.activatorRestarts - 1, 7))))
            }
        }
        activatorTimer = timer
        loop.schedule(timer, at: now + delay)
    }

    // MARK: - Apply and delete

    /// Applies every Service in `text`; returns kubectl-style lines. Throws the validation error text.
    public func apply(_ text: String, namespace: String? = nil) throws -> [String] {
        func denied(_ error: ValidationError) -> ManifestError {
            ManifestError("admission webhook \"validation.webhook.serving.knative.dev\" denied the request: validation failed: \(error)")
        }
        let manifests: [ServiceManifest]
        do { manifests = try Manifest.parse(text, defaultNamespace: namespace ?? "default", allowZeroInitialScale: settings.autoscaler.allowZeroInitialScale) } catch let error as ValidationError {
            throw denied(error)
        }
        var lines: [String] = []
        for manifest in manifests {
            do { lines.append(try apply(manifest)) } catch let error as ValidationError { throw denied(error) }
        }
        return lines
    }

    private func apply(_ manifest: ServiceManifest) throws -> String {
        let key = manifest.namespace + "/" + manifest.name
        let kind = "service.serving.knative.dev/\(manifest.name)"
        let existingService = services[key]
        if let service = existingService {
            let latest = service.latestCreated.flatMap { revisions[manifest.namespace + "/" + $0] }
            if let latest, latest.template == manifest.template {
                if service.manifest == manifest { return kind + " unchanged" }
                service.manifest = manifest
                resolveRoute(service)
                return kind + " configured"
            }
        }
        // A named template that already exists: the same revision again (upstream reuses it), never a takeover.
        var reused: RevisionObject?
        if let name = manifest.template.name, let existing = revisions[manifest.namespace + "/" + name] {
            guard existing.serviceName == manifest.name else {
                throw ValidationError(["revision \"\(name)\" already exists and belongs to service \"\(existing.serviceName)\": spec.template.metadata.name"])
            }
            guard existing.template == manifest.template else {
                throw ValidationError(["Saw the following changes without a name change (-old +new): spec.template.metadata.name\nset a new spec.template.metadata.name or remove it"])
            }
            reused = existing
        }
        let service = existingService ?? ServiceObject(manifest: manifest, nowMs: now)
        service.manifest = manifest
        if existingService == nil {
            services[key] = service
            events.emit("service \(key) created: \(service.url(domain: settings.domain))")
        }
        if let reused {
            service.latestCreated = reused.name
            if reused.everReady { service.latestReady = reused.name }
        } else {
            if existingService != nil { service.generation += 1 }
            createRevision(for: service)
        }
        resolveRoute(service)
        return kind + (existingService == nil ? " created" : " configured")
    }

    public func deleteService(namespace: String, name: String) -> Bool {
        guard let service = services.removeValue(forKey: namespace + "/" + name) else { return false }
        _ = try? BlockingHTTP.request("DELETE", activatorAdmin, "/v1/routes/\(namespace)/\(name)")
        for revisionName in service.revisionNames {
            guard let revision = revisions.removeValue(forKey: namespace + "/" + revisionName) else { continue }
            revision.retryTimer.map { loop.cancel($0) }
            for pod in revision.activePods { terminate(pod, reason: "service deleted") }
            _ = try? BlockingHTTP.request("DELETE", activatorAdmin, "/v1/revisions/\(namespace)/\(revisionName)")
        }
        updateScrapeBoard()
        events.emit("service \(namespace)/\(name) deleted")
        return true
    }

    private func createRevision(for service: ServiceObject) {
        let m = service.manifest
        var name = m.template.name ?? ""
        if name.isEmpty {
            // kmeta.ChildName(config, "-%05d" of the configuration's generation); a taken name moves on.
            var number = service.generation
            repeat {
                let digits = "\(number)"
                name = m.name + "-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits
                number += 1
            } while revisions[m.namespace + "/" + name] != nil
        }
        var argv: [String]? = nil
        var failure: Condition?
        let container = m.template.container
        let pathEnv = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        let base = container.command.isEmpty ? settings.command(forImage: container.image) : container.command
        if let base, let first = base.first {
            if let resolved = ProcessControl.resolve(first, path: pathEnv) {
                argv = [resolved] + base.dropFirst() + container.args
            } else {
                failure = Condition(status: "False", reason: "ContainerMissing", message: "\(first): no such executable (PATH=\(pathEnv))")
            }
        } else {
            failure = Condition(status: "False", reason: "ContainerMissing",
                message: "Unable to fetch image \"\(container.image)\": kn-local runs local commands; give the container a command or map the image with --image-map")
        }
        let spec = ScalingSpec(containerConcurrency: m.template.containerConcurrency, annotations: m.template.scaling)
        let revision = RevisionObject(namespace: m.namespace, name: name, serviceName: m.name, generation: service.generation,
            template: m.template, argv: argv, scaler: RevisionAutoscaler(config: settings.autoscaler, spec: spec, nowMs: now), nowMs: now)
        revisions[revision.key] = revision
        service.revisionNames.append(name)
        service.latestCreated = name
        if let failure {
            revision.condition = failure
            service.configCondition = Condition(status: "False", reason: "RevisionFailed",
                message: "Revision \"\(name)\" failed with message: \(failure.message).")
            events.emit("revision \(revision.key) created but cannot run: \(failure.message)")
            resolveRoute(service)
            return
        }
        service.configCondition = Condition(status: "Unknown", reason: "", message: "")
        revision.condition = Condition(status: "Unknown", reason: "Deploying", message: "")
        events.emit("revision \(revision.key) created (initial scale \(revision.scaler.initialScale))")
        programRevision(revision)
        if revision.scaler.initialScale == 0 { revisionBecameReady(revision) }
        reconcile(revision)
    }

    // MARK: - Routes

    /// Resolves the service's traffic to revision names and programs the activator when all resolve.
    private func resolveRoute(_ service: ServiceObject) {
        let m = service.manifest
        var targets: [TrafficTarget] = []
        for entry in m.traffic {
            let name: String?
            if let r = entry.revisionName { name = revisions[m.namespace + "/" + r] == nil ? nil : r } else { name = service.latestReady }
            guard let name else {
                if let r = entry.revisionName {
                    service.routeCondition = Condition(status: "False", reason: "RevisionMissing",
                        message: "Revision \"\(r)\" referenced in traffic not found.")
                } else if service.configCondition.status == "False" {
                    service.routeCondition = Condition(status: "False", reason: "RevisionMissing",
                        message: "Configuration \"\(m.name)\" does not have any ready Revision.")
                } else {
                    service.routeCondition = Condition(status: "Unknown", reason: "RevisionMissing",
                        message: "Configuration \"\(m.name)\" is waiting for a Revision to become ready.")
                }
                // A route that served before keeps its traffic (Knative leaves the ingress as it was); one that
                // never served answers its hosts with why (programRoute).
                if service.routedTraffic.isEmpty { programRoute(service) }
                return
            }
            targets.append(TrafficTarget(revisionName: name, percent: entry.percent ?? 0, tag: entry.tag))
        }
        // Several entries for one revision without tags merge, as Knative's route does.
        service.routedTraffic = targets
        service.routeCondition = .ready
        for revision in revisions.values where revision.namespace == m.namespace && revision.serviceName == m.name {
            revision.routable = targets.contains { $0.revisionName == revision.name }
        }
        programRoute(service)
    }

    /// Programs the service's route: its resolved traffic, or — while it has none — a not-ready route whose
    /// requests get 404 naming the revision and why (Knative's gateway answers 404 for a Route that is not ready,
    /// because it has no ingress rule yet; we keep the status and say why instead of an empty body).
    private func programRoute(_ service: ServiceObject) {
        let m = service.manifest
        let hosts = [service.host(domain: settings.domain), "\(m.name).\(m.namespace)", "\(m.name).\(m.namespace).svc", "\(m.name).\(m.namespace).svc.cluster.local"]
        var members: [(String, JSON)] = [("hosts", .array(hosts.map { .string($0) }))]
        if service.routedTraffic.isEmpty {
            members.append(("notReady", .string(notReadyMessage(service))))
        } else {
            let traffic: [JSON] = service.routedTraffic.map { t in
                var members: [(String, JSON)] = [("revisionName", .string(t.revisionName)), ("percent", .number(Double(t.percent)))]
                if let tag = t.tag { members.append(("tag", .string(tag))) }
                return .object(members)
            }
            members.append(("traffic", .array(traffic)))
        }
        admin("PUT", "/v1/routes/\(m.namespace)/\(m.name)", .object(members))
    }

    /// Why a service that never served has no traffic, naming the revision:
    /// `service "default/hello" is not ready: revision "hello-00001" is not ready yet (Deploying)`.
    func notReadyMessage(_ service: ServiceObject) -> String {
        let prefix = "service \"\(service.key)\" is not ready: "
        let m = service.manifest
        // A traffic entry naming a revision that does not exist: the route's own message names it.
        let namesMissing = m.traffic.contains { entry in entry.revisionName.map { revisions[m.namespace + "/" + $0] == nil } ?? false }
        guard !namesMissing, let name = service.latestCreated, let revision = revisions[m.namespace + "/" + name] else {
            return prefix + service.routeCondition.message
        }
        let c = revision.condition
        if c.status == "False" {
            return prefix + "revision \"\(name)\" failed: \(c.reason)" + (c.message.isEmpty ? "" : ": \(c.message)")
        }
        return prefix + "revision \"\(name)\" is not ready yet" + (c.reason.isEmpty ? "" : " (\(c.reason))")
    }

    private func programRevision(_ revision: RevisionObject) {
        guard revision.argv != nil else { return }
        let t = revision.template
        let body = JSON.object([
            ("containerConcurrency", .number(Double(t.containerConcurrency))),
            ("timeoutSeconds", .number(Double(t.timeoutSeconds))),
            ("responseStartTimeoutSeconds", .number(Double(t.responseStartTimeoutSeconds ?? 0))),
            ("idleTimeoutSeconds", .number(Double(t.idleTimeoutSeconds ?? 0))),
            ("protocol", .string(t.container.portName)),
        ])
        admin("PUT", "/v1/revisions/\(revision.namespace)/\(revision.name)", body)
        programEndpoints(revision)
    }

    private func programEndpoints(_ revision: RevisionObject) {
        let addresses = revision.readyPods.map { JSON.string($0.servingAddress.description) }
        admin("PUT", "/v1/revisions/\(revision.namespace)/\(revision.name)/endpoints", .object([("addresses", .array(addresses))]))
    }

    private func admin(_ method: String, _ path: String, _ body: JSON) {
        guard activatorPID != 0, !isShuttingDown else { return }
        do {
            let response = try BlockingHTTP.request(method, activatorAdmin, path, headers: [("Content-Type", "application/json")],
                body: Array(body.text.utf8), timeoutMs: 2000)
            if response.status != 200 {
                events.emit("activator refused \(method) \(path): \(String(decoding: response.body, as: UTF8.self))")
            }
        } catch {
            events.emit("activator admin \(method) \(path) failed: \(error)")
        }
    }

    // MARK: - Revisions and pods

    private func revisionBecameReady(_ revision: RevisionObject) {
        let wasReady = revision.everReady
        revision.everReady = true
        revision.condition = .ready
        revision.crashes = 0
        guard let service = services[revision.namespace + "/" + revision.serviceName] else { return }
        guard service.latestCreated == revision.name, !wasReady || service.latestReady != revision.name else { return }
        service.latestReady = revision.name
        service.configCondition = .ready
        resolveRoute(service)
        events.emit("service \(service.key) ready: latest ready revision \(revision.name) at \(service.url(domain: settings.domain))")
    }

    /// Brings the revision's pods to its last decided scale.
    private func reconcile(_ revision: RevisionObject) {
        guard !isShuttingDown, revision.argv != nil, revisions[revision.key] === revision else { return }
        // kn-local's own bound (--pod-limit) on top of max-scale: every pod is two processes on this machine.
        let want = min(revision.scaler.lastScale, settings.podLimit)
        var active = revision.activePods
        if active.count > want {
            // Not-ready pods go first, then the newest.
            let victims = active.sorted { ($0.phase == .ready ? 1 : 0, -$0.spawnedMs) < ($1.phase == .ready ? 1 : 0, -$1.spawnedMs) }
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

    private func scheduleRetry(_ revision: RevisionObject, at deadline: Int64) {
        if let timer = revision.retryTimer { loop.cancel(timer) }
        let timer = LoopTimer { [unowned self, weak revision] _ in
            guard let revision else { return }
            revision.retryTimer = nil
            self.reconcile(revision)
        }
        revision.retryTimer = timer
        loop.schedule(timer, at: deadline)
    }

    private func startPod(_ revision: RevisionObject) -> PodObject? {
        var taken: [UInt16] = []
        for _ in 0..<4 {
            guard let p = ports.take() else {
                events.emit("no free ports left in --pod-ports \(settings.podPorts); cannot start a pod for \(revision.key)")
                return nil
            }
            taken.append(p)
        }
        let name = "\(revision.name)-deployment-\(randomSuffix())"
        let directory = "\(settings.stateDirectory)/\(revision.namespace)/\(name)"
        nextPodSerial += 1
        let pod = PodObject(name: name, serial: nextPodSerial, revision: revision, ports: taken, logDirectory: directory, nowMs: now)
        do {
            try makeDirectory(directory)
            let environment = userEnvironment(pod)
            let argv = revision.argv!.map { Self.expand($0, environment) }
            pod.userPID = try ProcessControl.spawn(argv, environment: environment, logPath: directory + "/user-container.log")
            pod.queuePID = try ProcessControl.spawn([settings.queueProxy], environment: queueEnvironment(pod), logPath: directory + "/queue-proxy.log")
        } catch {
            // Nothing of this pod is tracked: a started user container is killed, and its exit ignored.
            events.emit("pod \(name) could not start: \(error)")
            ProcessControl.signal(pod.userPID, SIGKILL)
            return nil
        }
        podsByPID[pod.userPID] = pod
        podsByPID[pod.queuePID] = pod
        revision.pods.append(pod)
        events.emit("pod \(name) started (pids \(pod.userPID), \(pod.queuePID); logs in \(directory))", verbose: true)
        ReadinessWaiter.start(pod: pod, loop: loop)
        return pod
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
    private func terminate(_ pod: PodObject, reason: String) {
        guard pod.phase != .terminating else { return }
        let wasReady = pod.phase == .ready
        pod.phase = .terminating
        pod.abandoned.set()
        if wasReady && revisions[pod.revision.key] === pod.revision { programEndpoints(pod.revision) }
        updateScrapeBoard()
        events.emit("pod \(pod.name) terminating (\(reason))", verbose: true)
        if !pod.queueExited { ProcessControl.signal(pod.queuePID, SIGTERM) } else if !pod.userExited { ProcessControl.signal(pod.userPID, SIGTERM) }
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
                if isShuttingDown { finishIfDone(); continue }
                activatorRestarts += 1
                let delay = Int64(min(30_000, 250 << min(activatorRestarts - 1, 7)))
                events.emit("activator exited (\(exit)); restarting it in \(delay) ms (log: \(settings.stateDirectory)/activator.log)")
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
                        revision.condition = Condition(status: "False", reason: code, message: "Container failed with: \(lastLine(log))")
                        if let service = services[revision.namespace + "/" + revision.serviceName], service.latestCreated == revision.name {
                            service.configCondition = Condition(status: "False", reason: "RevisionFailed",
                                message: "Revision \"\(revision.name)\" failed with message: \(revision.condition.message).")
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
                pod.revision.pods.removeAll { $0 === pod }
                events.emit("pod \(pod.name) gone", verbose: true)
                reconcile(pod.revision)
            }
        }
        if isShuttingDown { finishIfDone() }
    }

    /// "4.2 ms".
    static func ms(_ value: Double) -> String { "\((value * 10).rounded() / 10) ms" }

    private func lastLine(_ path: String) -> String {
        guard let text = try? readFile(path) else { return "(no log)" }
        return text.split(separator: "\n").last.map(String.init) ?? "(empty log)"
    }

    // MARK: - Autoscaling

    /// Stats from the activator's websocket (recorded as sent, spec §3.2).
    func recordActivatorStats(_ messages: [WireStatMessage]) {
        let t = now
        for message in messages {
            guard let stat = message.stat, let revision = revisions[message.namespace + "/" + message.name] else { continue }
            let poke = revision.scaler.wantsPoke(concurrency: stat.averageConcurrentRequests)
            revision.scaler.record(concurrency: stat.averageConcurrentRequests, requests: stat.requestCount, atMs: t)
            if settings.verbose {
                events.emit("stat \(revision.key) from activator: concurrency \(stat.averageConcurrentRequests), requests \(stat.requestCount)")
            }
            if poke { decide(revision, reason: "activation") }
        }
    }

    /// Queue-proxy scrapes summed per revision, net of what went through the activator (spec §3.2).
    func recordScrapes(_ totals: [String: (Double, Double)]) {
        let t = now
        for (key, (concurrency, requests)) in totals {
            revisions[key]?.scaler.record(concurrency: max(0, concurrency), requests: max(0, requests), atMs: t)
        }
    }

    private func tick() {
        for revision in revisions.values where revision.argv != nil { decide(revision, reason: nil) }
        if let timer = tickTimer, !isShuttingDown { loop.schedule(timer, at: now + settings.autoscaler.tickIntervalMs) }
    }

    private func decide(_ revision: RevisionObject, reason: String?) {
        guard !isShuttingDown else { return }
        let before = revision.scaler.lastScale
        let after = revision.scaler.decide(readyPods: revision.readyPods.count, routable: revision.routable, atMs: now)
        if after != before {
            events.emit("revision \(revision.key) scaled \(before) → \(after)\(reason.map { " (\($0))" } ?? "")")
        }
        reconcile(revision)
    }

    private func updateScrapeBoard() {
        var targets: [ScrapeTarget] = []
        for revision in revisions.values {
            for pod in revision.readyPods {
                targets.append(ScrapeTarget(revisionKey: revision.key, metrics: SocketAddress(ip: "127.0.0.1", port: pod.metricsPort)!))
            }
        }
        scrapeBoard.set(targets)
    }

    // MARK: - Shutdown

    /// SIGTERM/SIGINT: the activator and every pod get SIGTERM; done when all have exited (or after 20 s, SIGKILL).
    public func shutdown() {
        guard !isShuttingDown else { return }
        isShuttingDown = true
        activatorTimer.map { loop.cancel($0) }
        events.emit("shutting down: stopping the activator and \(podsByPID.count / 2) pod(s)")
        tickTimer.map { loop.cancel($0) }
        if activatorPID != 0 { ProcessControl.signal(activatorPID, SIGTERM) }
        for revision in revisions.values {
            revision.retryTimer.map { loop.cancel($0) }
            for pod in revision.pods where pod.phase != .terminating { terminate(pod, reason: "shutdown") }
        }
        let timer = LoopTimer { [unowned self] _ in self.killEverything() }
        shutdownTimer = timer
        loop.schedule(timer, at: now + 20_000)
        finishIfDone()
    }

    /// Second signal or the shutdown deadline: SIGKILL whatever is left.
    public func killEverything() {
        if activatorPID != 0 { ProcessControl.signal(activatorPID, SIGKILL) }
        for pid in podsByPID.keys { ProcessControl.signal(pid, SIGKILL) }
    }

    private func finishIfDone() {
        guard isShuttingDown, activatorPID == 0, podsByPID.isEmpty else { return }
        shutdownTimer.map { loop.cancel($0) }
        events.emit("all children exited")
        onFinished?()
    }

    // MARK: - Environments

    private func baseEnvironment() -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    private func merged(_ base: [String], _ extra: [(String, String)]) -> [String] {
        let names = Set(extra.map(\.0))
        return base.filter { entry in !names.contains(String(entry.prefix { $0 != "=" })) } + extra.map { "\($0.0)=\($0.1)" }
    }

    private func userEnvironment(_ pod: PodObject) -> [String] {
        let r = pod.revision
        var extra: [(String, String)] = r.template.container.env.map { ($0.name, $0.value) }
        extra += [("PORT", "\(pod.userPort)"), ("K_REVISION", r.name), ("K_CONFIGURATION", r.serviceName), ("K_SERVICE", r.serviceName)]
        return merged(baseEnvironment(), extra)
    }

    private func queueEnvironment(_ pod: PodObject) -> [String] {
        let r = pod.revision
        let t = r.template
        let fullDuplex = t.annotations["features.knative.dev/http-full-duplex"]?.lowercased() == "enabled"
        let extra: [(String, String)] = [
            ("SERVING_NAMESPACE", r.namespace), ("SERVING_SERVICE", r.serviceName), ("SERVING_CONFIGURATION", r.serviceName),
            ("SERVING_REVISION", r.name), ("SERVING_POD", pod.name), ("SERVING_POD_IP", "127.0.0.1"),
            ("CONTAINER_CONCURRENCY", "\(t.containerConcurrency)"),
            ("REVISION_TIMEOUT_SECONDS", "\(t.timeoutSeconds)"),
            ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "\(t.responseStartTimeoutSeconds ?? 0)"),
            ("REVISION_IDLE_TIMEOUT_SECONDS", "\(t.idleTimeoutSeconds ?? 0)"),
            ("SERVING_READINESS_PROBE", ReadinessProbeEncoding.encode(t.container.readinessProbe, userPort: pod.userPort, declaredPort: t.container.port)),
            ("ENABLE_HTTP_FULL_DUPLEX", fullDuplex ? "true" : "false"),
            ("ENABLE_HTTP2_AUTO_DETECTION", "false"), ("ENABLE_MULTI_CONTAINER_PROBES", "false"),
            ("QUEUE_SERVING_PORT", "\(pod.servingPort)"), ("QUEUE_SERVING_TLS_PORT", "8112"), ("USER_PORT", "\(pod.userPort)"),
            // Knative marks h2c revisions by serving them on 8013; our pods have their own ports, so say it.
            ("QUEUE_USER_PROTOCOL", t.container.portName == "h2c" ? "h2c" : "http1"),
            ("SERVING_LOGGING_CONFIG", ""), ("SERVING_LOGGING_LEVEL", ""),
            ("SYSTEM_NAMESPACE", "knative-serving"), ("METRICS_DOMAIN", "knative.dev/internal/serving"),
            // Our extensions: every pod shares the loopback, so its admin and metrics ports are its own.
            ("QUEUE_ADMIN_PORT", "\(pod.adminPort)"), ("QUEUE_METRICS_PORT", "\(pod.metricsPort)"),
            ("QUEUE_USER_METRICS_PORT", "0"), ("QUEUE_DRAIN_QUIET_PERIOD", settings.drainQuietPeriod),
        ]
        return merged(baseEnvironment(), extra)
    }

    /// Kubernetes' `$(VAR)` expansion in command and args: defined variables are replaced, `$$` is a literal
    /// `$`, anything else stays as written.
    static func expand(_ text: String, _ environment: [String]) -> String {
        guard text.contains("$") else { return text }
        var values: [Substring: Substring] = [:]
        for entry in environment {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            values[entry[..<eq]] = entry[entry.index(after: eq)...]
        }
        var out = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            out += rest[..<dollar]
            let after = rest[rest.index(after: dollar)...]
            if after.first == "$" {
                out += "$"
                rest = after.dropFirst()
            } else if after.first == "(", let close = after.firstIndex(of: ")"), let value = values[after[after.index(after: after.startIndex)..<close]] {
                out += value
                rest = after[after.index(after: close)...]
            } else {
                out += "$"
                rest = after
            }
        }
        return out + rest
    }

    private func randomSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        var text = ""
        for _ in 0..<5 { text.append(alphabet[Int.random(in: 0..<alphabet.count)]) }
        return text
    }

    // MARK: - Views for `get`

    static func resourceName(_ kind: String) -> String {
        switch kind {
        case "revision", "revisions", "rev", "revs": return "revisions.serving.knative.dev"
        case "route", "routes", "rt": return "routes.serving.knative.dev"
        case "configuration", "configurations", "config", "configs", "cfg": return "configurations.serving.knative.dev"
        case "pod", "pods", "po": return "pods"
        default: return "services.serving.knative.dev"
        }
    }

    func table(kind: String, namespace: String?, name: String?, json: Bool) throws -> String {
        let t = now
        func matches(_ ns: String, _ n: String) -> Bool { (namespace == nil || namespace == ns) && (name == nil || name == n) }
        let domain = settings.domain
        switch kind {
        case "ksvc", "ksvcs", "service", "services", "kservice":
            let list = services.values.filter { matches($0.manifest.namespace, $0.manifest.name) }.sorted { $0.key < $1.key }
            if json {
                return JSON.array(list.map { s in
                    JSON.object([("namespace", .string(s.manifest.namespace)), ("name", .string(s.manifest.name)),
                        ("url", .string(s.url(domain: domain))), ("latestCreatedRevisionName", .string(s.latestCreated ?? "")),
                        ("latestReadyRevisionName", .string(s.latestReady ?? "")), ("ready", .string(s.condition.status)),
                        ("reason", .string(s.condition.reason)),
                        ("traffic", .array(s.routedTraffic.map { .object([("revisionName", .string($0.revisionName)), ("percent", .number(Double($0.percent))), ("tag", .string($0.tag ?? ""))]) }))])
                }).text + "\n"
            }
            return Table.render(["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"], list.map { s in
                [s.manifest.name, s.url(domain: domain), s.latestCreated ?? "", s.latestReady ?? "", s.condition.status, s.condition.reason]
            })
        case "configuration", "configurations", "config", "configs", "cfg":
            let list = services.values.filter { matches($0.manifest.namespace, $0.manifest.name) }.sorted { $0.key < $1.key }
            return Table.render(["NAME", "LATESTCREATED", "LATESTREADY", "READY", "REASON"], list.map { s in
                [s.manifest.name, s.latestCreated ?? "", s.latestReady ?? "", s.configCondition.status, s.configCondition.reason]
            })
        case "route", "routes", "rt":
            let list = services.values.filter { matches($0.manifest.namespace, $0.manifest.name) }.sorted { $0.key < $1.key }
            return Table.render(["NAME", "URL", "READY", "REASON"], list.map { s in
                [s.manifest.name, s.url(domain: domain), s.routeCondition.status, s.routeCondition.reason]
            })
        case "revision", "revisions", "rev", "revs":
            let list = revisions.values.filter { matches($0.namespace, $0.name) }.sorted { ($0.namespace, $0.createdMs, $0.name) < ($1.namespace, $1.createdMs, $1.name) }
            if json {
                return JSON.array(list.map { r in
                    JSON.object([("namespace", .string(r.namespace)), ("name", .string(r.name)), ("ready", .string(r.condition.status)),
                        ("reason", .string(r.condition.reason)), ("actualReplicas", .number(Double(r.readyPods.count))),
                        ("desiredReplicas", .number(Double(r.scaler.lastScale)))])
                }).text + "\n"
            }
            return Table.render(["NAME", "CONFIG NAME", "GENERATION", "READY", "REASON", "ACTUAL REPLICAS", "DESIRED REPLICAS"], list.map { r in
                [r.name, r.serviceName, "\(r.generation)", r.condition.status, r.condition.reason, "\(r.readyPods.count)", "\(r.scaler.lastScale)"]
            })
        case "pod", "pods", "po":
            let list = revisions.values.flatMap(\.pods).filter { matches($0.revision.namespace, $0.name) }.sorted { ($0.revision.name, $0.spawnedMs) < ($1.revision.name, $1.spawnedMs) }
            if json {
                return JSON.array(list.map { p in
                    JSON.object([("namespace", .string(p.revision.namespace)), ("name", .string(p.name)), ("revision", .string(p.revision.name)),
                        ("phase", .string(p.phase.rawValue)), ("userPid", .number(Double(p.userPID))), ("queuePid", .number(Double(p.queuePID))),
                        ("queueAddress", .string(p.servingAddress.description)), ("userPort", .number(Double(p.userPort))),
                        ("processStartMs", p.processStartMs.map { .number(($0 * 1000).rounded() / 1000) } ?? .null),
                        ("readyAfterMs", p.readyAfterMs.map { .number(($0 * 1000).rounded() / 1000) } ?? .null), ("logs", .string(p.logDirectory))])
                }).text + "\n"
            }
            return Table.render(["NAME", "READY", "STATUS", "RESTARTS", "AGE"], list.map { p in
                [p.name, p.phase == .ready ? "2/2" : "0/2", p.phase.rawValue, "0", Table.age(t - p.spawnedMs)]
            })
        default:
            throw ManifestError("error: the server doesn't have a resource type \"\(kind)\" (kn-local knows ksvc, configurations, revisions, routes, pods)")
        }
    }
}

/// Makes a directory and its parents.
func makeDirectory(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw ManifestError("cannot create \(current): \(SysError.text(errno))")
        }
    }
}

/// Human-readable events on stdout: `HH:MM:SS.mmm text`.
public final class EventLog: Sendable {
    let verbose: Bool
    public init(verbose: Bool) { self.verbose = verbose }

    public func emit(_ text: String, verbose isVerbose: Bool = false) {
        if isVerbose && !verbose { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let s = Int(ts.tv_sec % 86400)
        let stamp = String(format2(s / 3600)) + ":" + format2((s / 60) % 60) + ":" + format2(s % 60) + "." + format3(Int(ts.tv_nsec / 1_000_000))
        let line = stamp + " " + text + "\n"
        var bytes = Array(line.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeMutableBytes { write(1, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            offset += n
        }
    }

    private func format2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
    private func format3(_ v: Int) -> String { v < 10 ? "00\(v)" : v < 100 ? "0\(v)" : "\(v)" }
}
