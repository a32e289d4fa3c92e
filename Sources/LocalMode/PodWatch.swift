// Threads that watch pods from the outside, as kubelet and the autoscaler's scraper do, and post what they
// see to the controller's loop: readiness of a starting pod, and the queue-proxies' protobuf stats.
import CLinuxShims
import Glibc
import KnativeWire
import ProxyCore
import Synchronization

/// Waits for a new pod: first the user container's port accepting (process start), then the queue-proxy's
/// `K-Network-Probe: queue` answer 200 (the user's readiness probe passed, as kubelet would see it). What it sees
/// on the way (the queue-proxy listening, the app listening, the probe's answers) goes to the loop when it
/// changes, for `get pods` and the not-ready event. It watches until the pod is ready or goes away: a pod past
/// the progress deadline can still become ready, as in Kubernetes. A ready pod goes on being probed as kubelet
/// does (`periodSeconds`, 10 s when unset; `failureThreshold`, 3): after that many failures in a row it is not
/// ready (out of the activator) until the probe passes again.
enum ReadinessWaiter {
    /// Polling interval while the processes start: short, because it is the cold-start critical path; after
    /// the first 100 ms (a slow app) it backs off to 10 ms, and after 5 s (an app that may never listen) to 100 ms.
    static func pollMicroseconds(_ elapsedMs: Double) -> UInt32 {
        elapsedMs < 100 ? 1_000 : elapsedMs < 5_000 ? 10_000 : 100_000
    }

    static func start(pod: PodObject, loop: EventLoop) {
        let flag = pod.abandoned
        // In namespace mode the app's port is looked at from inside the pod's network namespace (an app that
        // listens on its loopback only counts too), the queue-proxy at the pod's address from the host, as
        // kubelet probes: a pod is ready only once the activator can reach it.
        let user = SocketAddress(ip: "127.0.0.1", port: pod.userPort)!
        let queue = pod.servingAddress
        let namespace = pod.network?.namespacePath
        let spawned = pod.spawnedNs
        let inbox = loop.inbox
        let podID = pod.serial
        let probe = pod.revision.template.container.readinessProbe
        let periodSeconds = probe?["periodSeconds"]?.intValue ?? 0
        let periodMs = Int64(periodSeconds > 0 ? periodSeconds : 10) * 1000
        let failureThreshold = max(probe?["failureThreshold"]?.intValue ?? 3, 1)
        Threads.detach {
            var hop = NamespaceHop(namespace)
            defer { hop.close() }
            if namespace != nil && !hop.isOpen { return }  // the pod is already gone (its namespace with it)
            func appAccepts() -> Bool {
                hop.run {
                    guard let fd = try? BlockingClient.connect(user, timeoutMs: 100) else { return false }
                    close(fd)
                    return true
                } ?? false
            }
            func elapsedMs() -> Double { Double(monotonicNs() - spawned) / 1e6 }
            var report = PodProbeReport()
            func publish() {
                let seen = report
                inbox.post { loop in Controller.on(loop)?.podEvent(podID) { $0.podObserved($1, seen) } }
            }
            while !flag.isSet {
                if !report.appListening {
                    if appAccepts() {
                        report.appListening = true
                        let started = elapsedMs()
                        inbox.post { loop in
                            Controller.on(loop)?.podEvent(podID) { $0.podProcessStarted($1, afterMs: started) }
                        }
                        publish()
                    } else {
                        // Off the critical path: the app is not up yet, so look at the queue-proxy meanwhile.
                        if !report.queueListening, let fd = try? BlockingClient.connect(queue, timeoutMs: 100) {
                            close(fd)
                            report.queueListening = true
                            publish()
                        }
                        usleep(pollMicroseconds(elapsedMs()))
                        continue
                    }
                }
                let response = try? BlockingClient.request(
                    "GET", queue, "/",
                    headers: [
                        ("User-Agent", "kube-probe/kn-local"), ("K-Network-Probe", "queue"),
                    ], timeoutMs: 11_000)
                if response?.status == 200 {
                    let ready = elapsedMs()
                    inbox.post { loop in Controller.on(loop)?.podEvent(podID) { $0.podReady($1, afterMs: ready) } }
                    // From here on only the queue-proxy is probed, from the host: the namespace is not held open.
                    hop.close()
                    guard watchReady(queue, flag, periodMs: periodMs, failureThreshold: failureThreshold) else {
                        return
                    }
                    inbox.post { loop in
                        Controller.on(loop)?.podEvent(podID) { $0.podNotReady($1, failures: failureThreshold) }
                    }
                    continue
                }
                var seen = report
                if let status = response?.status {
                    seen.queueListening = true
                    seen.lastStatus = status
                }
                if seen != report {
                    report = seen
                    publish()
                }
                usleep(response == nil ? pollMicroseconds(elapsedMs()) : 50_000)
            }
        }
    }
}

extension ReadinessWaiter {
    /// Probes a ready pod's queue-proxy every `periodMs` as kubelet does. - Returns: true once
    /// `failureThreshold` probes in a row failed, false when the pod went away.
    static func watchReady(_ queue: SocketAddress, _ flag: AbandonFlag, periodMs: Int64, failureThreshold: Int) -> Bool
    {
        var failures = 0
        while true {
            // Sleep in short slices: a pod that goes away ends its watcher at once.
            let wakeMs = monotonicMs() + periodMs
            while monotonicMs() < wakeMs {
                if flag.isSet { return false }
                usleep(100_000)
            }
            if flag.isSet { return false }
            let response = try? BlockingClient.request(
                "GET", queue, "/",
                headers: [("User-Agent", "kube-probe/kn-local"), ("K-Network-Probe", "queue")],
                timeoutMs: 11_000)  // as the waiter: an aggressive round takes up to 10 s
            failures = response?.status == 200 ? 0 : failures + 1
            if failures >= failureThreshold { return !flag.isSet }
        }
    }
}

/// A thread's way into a pod's network namespace and back (setns applies to the calling thread only).
struct NamespaceHop {
    private var home: Int32 = -1
    private var pod: Int32 = -1

    /// Opens both namespaces' files; with `path` nil, `run` just runs its body here.
    init(_ path: String?) {
        guard let path else { return }
        home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        pod = open(path, O_RDONLY | O_CLOEXEC)
    }

    var isOpen: Bool { home >= 0 && pod >= 0 }

    /// Runs `body` inside the pod's namespace, then returns to the thread's own. nil when a switch failed.
    func run<T>(_ body: () -> T) -> T? {
        guard home >= 0 || pod >= 0 else { return body() }
        guard isOpen, CLinuxShims_join_netns(pod) == 0 else { return nil }
        let result = body()
        // Back home, or this thread would go on probing from inside the pod.
        precondition(CLinuxShims_join_netns(home) == 0, "cannot return to the host's network namespace")
        return result
    }

    mutating func close() {
        if home >= 0 { Glibc.close(home) }
        if pod >= 0 { Glibc.close(pod) }
        (home, pod) = (-1, -1)
    }
}

/// What the scraper should scrape: the ready pods' metrics addresses, by revision. Set on the loop, read by the
/// scraper thread.
public final class ScrapeBoard: Sendable {
    private let targets = Mutex<[ScrapeTarget]>([])
    public init() {}
    func set(_ list: [ScrapeTarget]) { targets.withLock { $0 = list } }
    func snapshot() -> [ScrapeTarget] { targets.withLock { $0 } }
}

struct ScrapeTarget: Sendable {
    let revisionKey: String
    let metrics: SocketAddress
}

/// Scrapes every ready pod's queue-proxy once a second (spec §3.2): `GET /metrics` with
/// `Accept: application/protobuf`, accepted only when 2xx with exactly that content type; body ≤ 336 bytes.
/// Sums per revision net of proxied requests (the activator reports those itself).
enum Scraper {
    static func start(board: ScrapeBoard, inbox: InboxSlot) {
        Threads.detach {
            var next = monotonicMs() + 1000
            while true {
                let wait = next - monotonicMs()
                if wait > 0 { usleep(UInt32(wait) * 1000) }
                next += 1000
                var totals: [String: (Double, Double)] = [:]
                for target in board.snapshot() {
                    guard
                        let response = try? BlockingClient.request(
                            "GET", target.metrics, "/metrics",
                            headers: [("Accept", "application/protobuf")], timeoutMs: 3000, maxBytes: 4096),
                        (200..<300).contains(response.status),
                        response.header("Content-Type") == "application/protobuf",
                        response.body.count <= 336, let stat = Stat.decode(response.body)
                    else { continue }
                    let current = totals[target.revisionKey] ?? (0, 0)
                    totals[target.revisionKey] = (
                        current.0 + stat.averageConcurrentRequests - stat.averageProxiedConcurrentRequests,
                        current.1 + stat.requestCount - stat.proxiedRequestCount
                    )
                }
                if totals.isEmpty { continue }
                let result = totals
                inbox.post { loop in Controller.on(loop)?.recordScrapes(result) }
            }
        }
    }
}
