// The control plane on one loop thread: applies manifests into objects, starts and stops pods (processes),
// runs the KPA on activator stats and queue-proxy scrapes, and programs the activator through its admin API.
// This file holds the state, start-up (the activator) and shutdown; the reconcilers are extensions in the
// files beside it, split as Knative splits them: Controller+Services (service and configuration),
// +Revisions, +Routes, +Pods, +Autoscaling (the KPA's inputs), +Environment (pod env), +Get (`get` tables),
// +State (the state file).
// Blocking calls made here are loopback calls to our own children (admin PUTs, ~0.1 ms) and, in namespace
// mode, iproute2's `ip` (a few ms per pod: one spare namespace is made ahead, off a cold start's path; a hung `ip`
// is killed after 10 s, `ProcessControl.run`). `ip` runs here and not on a thread because this loop is
// also the only reaper: elsewhere its exit could be reaped from under `ProcessControl.run`. Probes and scrapes
// that can take long run on their own threads and post results back.
import Glibc
import KnativeWire
import ProxyCore

public final class Controller {
    let loop: EventLoop
    let settings: LocalSettings
    let events: EventLog
    var ports: PortAllocator
    var services: [String: ServiceObject] = [:]
    var revisions: [String: RevisionObject] = [:]
    var podsByPID: [Int32: PodObject] = [:]
    var nextPodSerial = 0
    let scrapeBoard: ScrapeBoard
    let stateWriter: StateWriter
    var activatorPID: Int32 = 0
    var activatorAdmin: SocketAddress
    let statPort: UInt16
    var tickTimer: LoopTimer?
    var activatorTimer: LoopTimer?
    var activatorRestarts = 0
    var shutdownTimer: LoopTimer?
    /// Namespace mode's network (nil: pods share the loopback with ports of their own).
    var network: PodNetwork?
    var persistence = Persistence()
    private(set) var isShuttingDown = false
    private var isFinished = false
    /// Called once every child is gone after `shutdown()`.
    var onFinished: (() -> Void)?

    public init(
        loop: EventLoop, settings: LocalSettings, statPort: UInt16, scrapeBoard: ScrapeBoard, stateWriter: StateWriter,
        events: EventLog
    ) {
        self.loop = loop
        self.settings = settings
        self.statPort = statPort
        self.scrapeBoard = scrapeBoard
        self.stateWriter = stateWriter
        self.events = events
        ports = PortAllocator(range: settings.podPorts)
        activatorAdmin = SocketAddress(ip: "127.0.0.1", port: 0)!
    }

    static func on(_ loop: EventLoop) -> Controller? { loop.locals[ObjectIdentifier(Controller.self)] as? Controller }

    var now: Int64 { monotonicMs() }

    // MARK: - Start

    /// Restores the state file, starts the activator (which programs every restored revision and route), then
    /// the restored revisions' pods.
    public func start() throws {
        let (network, line) = PodNetwork.make(settings: settings)
        if line.hasPrefix("error: ") { throw ManifestError(String(line.dropFirst(7))) }
        self.network = network
        events.emit(line)
        do {
            try makeDirectory(settings.stateDirectory)
            loadState()
            try startActivator()
        } catch {
            network?.tearDown()  // the bridge and the spare namespace go with the failed start
            self.network = nil
            throw error
        }
        for revision in revisions.values.sorted(by: { $0.createdMs < $1.createdMs }) { reconcile(revision) }
        saveState()
        let tick = LoopTimer { [unowned self] _ in self.tick() }
        tickTimer = tick
        loop.schedule(tick, at: now + settings.autoscaler.tickIntervalMs)
    }

    func startActivator() throws {
        guard let adminPort = ports.take() else {
            throw ManifestError("no free port in --pod-ports for the activator's admin API")
        }
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
            if (try? BlockingClient.request("GET", activatorAdmin, "/v1/state", timeoutMs: 500)) != nil { break }
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

    func scheduleActivatorRestart(after delay: Int64) {
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

    func finishIfDone() {
        guard isShuttingDown, !isFinished, activatorPID == 0, podsByPID.isEmpty else { return }
        isFinished = true  // several exits can be reaped in one pass, each asking again
        shutdownTimer.map { loop.cancel($0) }
        network?.tearDown()
        network = nil
        events.emit("all children exited")
        onFinished?()
    }
}
