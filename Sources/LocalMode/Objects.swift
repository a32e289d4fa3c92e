// The objects kn-local keeps, standing in for the Kubernetes API: Services (with their Configuration and Route
// folded in, as a ksvc shows them), immutable Revisions, and Pods (two processes each). All confined to the
// controller's loop thread.
import KnativeWire
import ProxyCore
import Synchronization

/// A condition as `kubectl get` shows it: READY True/False/Unknown and a REASON.
public struct Condition: Sendable, Equatable {
    public var status: String
    public var reason: String
    public var message: String

    public static let unknown = Condition(status: "Unknown", reason: "", message: "")
    public static let ready = Condition(status: "True", reason: "", message: "")
}

final class ServiceObject {
    var manifest: ServiceManifest
    /// The Service object as applied, before decoding: what the state file keeps.
    var document: JSON
    var generation = 1
    /// Creation time on the loop's clock (for ordering), and on the wall clock (survives a restart).
    let createdMs: Int64
    let createdAtUnixMs: Int64
    /// Revisions made by this service's configuration, oldest first.
    var revisionNames: [String] = []
    var latestCreated: String?
    var latestReady: String?
    /// The traffic as last programmed into the activator (resolved to revision names).
    var routedTraffic: [TrafficTarget] = []
    var routeCondition = Condition.unknown
    var configCondition = Condition.unknown

    init(manifest: ServiceManifest, document: JSON, nowMs: Int64, createdAtUnixMs: Int64) {
        self.manifest = manifest
        self.document = document
        createdMs = nowMs
        self.createdAtUnixMs = createdAtUnixMs
    }

    var key: String { manifest.namespace + "/" + manifest.name }
    func host(domain: String) -> String { "\(manifest.name).\(manifest.namespace).\(domain)" }
    func url(domain: String) -> String { "http://" + host(domain: domain) }

    /// The ksvc's Ready: configuration and route both ready.
    var condition: Condition {
        // Knative propagates the configuration first and the route second, so the route's reason wins.
        if routeCondition.status == "False" { return routeCondition }
        if configCondition.status == "False" { return configCondition }
        if routeCondition.status == "Unknown" { return routeCondition }
        return configCondition
    }
}

final class RevisionObject {
    let namespace: String
    let name: String
    let serviceName: String
    let generation: Int
    let template: RevisionTemplate
    /// `spec.template` as applied, before decoding: what the state file keeps.
    let templateDocument: JSON
    /// Creation time on the loop's clock (for ordering), and on the wall clock (survives a restart).
    let createdMs: Int64
    let createdAtUnixMs: Int64
    /// The command line of the user container (nil when the image could not be resolved).
    let argv: [String]?
    var scaler: RevisionAutoscaler
    var pods: [PodObject] = []
    var condition = Condition.unknown
    var everReady = false
    var routable = false
    /// Crash-loop back-off of its pods (the rule is in CrashBackoff).
    var backoff = CrashBackoff()
    /// The last pod that died on its own, shown as `CrashLoopBackOff` while its replacement waits.
    var crashedPod: PodObject?
    var retryTimer: LoopTimer?
    /// Since when pods are wanted and none is ready (nil: one is ready, or none is wanted); the progress
    /// deadline counts from here.
    var progressSinceMs: Int64?
    var progressTimer: LoopTimer?

    init(
        namespace: String, name: String, serviceName: String, generation: Int, template: RevisionTemplate,
        templateDocument: JSON, argv: [String]?, scaler: RevisionAutoscaler, nowMs: Int64, createdAtUnixMs: Int64
    ) {
        self.namespace = namespace
        self.name = name
        self.serviceName = serviceName
        self.generation = generation
        self.template = template
        self.templateDocument = templateDocument
        self.argv = argv
        self.scaler = scaler
        createdMs = nowMs
        self.createdAtUnixMs = createdAtUnixMs
    }

    var key: String { namespace + "/" + name }
    var readyPods: [PodObject] { pods.filter { $0.phase == .ready } }
    var activePods: [PodObject] { pods.filter { $0.phase != .terminating } }
}

final class PodObject {
    enum Phase: String {
        case starting = "ContainerCreating"
        case ready = "Running"
        case terminating = "Terminating"
    }

    let name: String
    /// Unique for the controller's lifetime: how threads refer to the pod.
    let serial: Int
    /// Strong: a pod outlives its revision's deletion until both processes are reaped (then it leaves
    /// `revision.pods`, which breaks the cycle).
    let revision: RevisionObject
    /// 127.0.0.1 with ports of its own (loopback mode), or its namespace's address with Knative's ports.
    let ip: String
    let network: PodNetwork.Attachment?
    let userPort: UInt16
    let servingPort: UInt16
    let adminPort: UInt16
    let metricsPort: UInt16
    let logDirectory: String
    let spawnedMs: Int64
    /// Precise spawn time for the cold-start figures (the loop's clock is coarse, ~4 ms).
    let spawnedNs = monotonicNs()
    var userPID: Int32 = 0
    var queuePID: Int32 = 0
    var userExited = false
    var queueExited = false
    var phase = Phase.starting
    var processStartMs: Double?
    var readyAfterMs: Double?
    /// When it became ready (loop clock), for the back-off's reset rule.
    var readySinceMs: Int64?
    /// Whether its readiness already reset the revision's back-off (once per pod).
    var provedHealthy = false
    /// What the readiness waiter last saw while the pod was starting.
    var probe = PodProbeReport()
    /// Not ready within the report time (Settings.podNotReadyReportMs): `get pods` says ProbeFailing.
    var isProbeFailing = false
    /// Set when a container exited on its own: "user-container exited (exit code 1)".
    var failure: String?
    var killTimer: LoopTimer?
    var notReadyTimer: LoopTimer?
    /// Shared with the readiness waiter thread: set when the pod goes away before it got ready.
    let abandoned = AbandonFlag()

    /// Loopback mode: `ports` are the user, serving, admin and metrics ports.
    init(name: String, serial: Int, revision: RevisionObject, ports: [UInt16], logDirectory: String, nowMs: Int64) {
        self.name = name
        self.serial = serial
        self.revision = revision
        ip = "127.0.0.1"
        network = nil
        userPort = ports[0]
        servingPort = ports[1]
        adminPort = ports[2]
        metricsPort = ports[3]
        self.logDirectory = logDirectory
        spawnedMs = nowMs
    }

    /// Namespace mode: the pod's own address; the app on its containerPort, the queue-proxy on Knative's ports
    /// (8012, or 8013 for an h2c revision; admin 8022, metrics 9090).
    init(
        name: String, serial: Int, revision: RevisionObject, network: PodNetwork.Attachment, logDirectory: String,
        nowMs: Int64
    ) {
        self.name = name
        self.serial = serial
        self.revision = revision
        ip = network.ip
        self.network = network
        let container = revision.template.container
        userPort = UInt16(container.port)
        servingPort = container.portName == "h2c" ? 8013 : 8012
        adminPort = 8022
        metricsPort = 9090
        self.logDirectory = logDirectory
        spawnedMs = nowMs
    }

    var servingAddress: SocketAddress { SocketAddress(ip: ip, port: servingPort)! }
    var metricsAddress: SocketAddress { SocketAddress(ip: ip, port: metricsPort)! }
    var isGone: Bool { userExited && queueExited }

    /// kubectl's READY: containers ready of 2. The queue-proxy counts once it accepts connections, the app
    /// once its readiness passed (so `1/2` = the queue-proxy runs, the app is not ready).
    var readyContainers: String {
        switch phase {
        case .ready: return "2/2"
        case .terminating: return "0/2"
        case .starting: return probe.queueListening ? "1/2" : "0/2"
        }
    }

    /// kubectl's STATUS, with the reason a pod is not ready: ContainerCreating, Running, ProbeFailing,
    /// Terminating, CrashLoopBackOff (died, the replacement waits for the back-off) or Error (died).
    func status(atMs nowMs: Int64) -> String {
        if failure != nil { return revision.backoff.isWaiting(atMs: nowMs) ? "CrashLoopBackOff" : "Error" }
        switch phase {
        case .ready: return "Running"
        case .terminating: return "Terminating"
        case .starting:
            if isProbeFailing { return "ProbeFailing" }
            return probe.queueListening || probe.appListening ? "Running" : "ContainerCreating"
        }
    }

    /// Why a starting pod is not ready, from what the readiness waiter saw.
    var notReadyReason: String {
        if !probe.appListening {
            return "the app does not accept connections on PORT \(userPort)"
                + (probe.queueListening ? "" : ", nor the queue-proxy on \(servingPort)")
        }
        if let status = probe.lastStatus {
            return "its readiness probe is failing (the queue-proxy answers \(status))"
        }
        if !probe.queueListening { return "the queue-proxy does not answer on \(servingPort)" }
        return "its readiness probe has not passed yet"
    }
}

/// What the readiness waiter has seen of a starting pod (posted to the loop when it changes).
struct PodProbeReport: Sendable, Equatable {
    /// The queue-proxy accepts connections on its serving port.
    var queueListening = false
    /// The app accepts connections on its PORT.
    var appListening = false
    /// The queue-proxy's last answer to the `K-Network-Probe: queue` check other than 200 (nil: none yet).
    var lastStatus: Int?
}

final class AbandonFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

/// Column-aligned text like kubectl's.
enum Table {
    static func render(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            var text = ""
            for (i, cell) in cells.enumerated() {
                if i == cells.count - 1 {
                    text += cell
                } else {
                    text += cell + String(repeating: " ", count: widths[i] - cell.count + 3)
                }
            }
            while text.last == " " { text.removeLast() }
            return text
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
    }

    /// kubectl's AGE: 45s, 3m12s, 2h5m, 3d.
    static func age(_ ms: Int64) -> String {
        let s = max(0, ms / 1000)
        if s < 120 { return "\(s)s" }
        if s < 600 { return "\(s / 60)m\(s % 60)s" }
        if s < 3 * 3600 { return "\(s / 60)m" }
        if s < 48 * 3600 { return "\(s / 3600)h\((s % 3600) / 60)m" }
        return "\(s / 86400)d"
    }
}
