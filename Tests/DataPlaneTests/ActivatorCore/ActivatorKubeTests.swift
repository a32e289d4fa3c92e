// The activator driven by a (fake) Kubernetes API, `--kube-api`: the real binary against `FakeKubeAPI`, with
// fake queue-proxy pods and a fake autoscaler. Every wait is for an event (the state the admin API shows, a
// request at a pod, a log line), never a guess.
import Foundation
import Glibc
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore

/// What `GET /v1/state` says about one revision.
struct KubeStateView {
    let json: [String: Any]

    init(_ activator: ActivatorFixture) throws {
        let body = try activator.admin("GET", "/v1/state").body
        json = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] ?? [:]
    }

    var revisionCount: Int { (json["revisions"] as? [[String: Any]])?.count ?? 0 }

    func revision(_ key: String) -> [String: Any]? {
        (json["revisions"] as? [[String: Any]])?.first { "\($0["namespace"] ?? "")/\($0["name"] ?? "")" == key }
    }

    func addresses(_ key: String) -> [String]? {
        ((json["endpoints"] as? [String: Any])?[key] as? [String: Any])?["addresses"] as? [String]
    }

    /// Whether the revision uses `count` activators, this one at `index`, with `pods` pods assigned here.
    func hasSubset(_ key: String, count: Int, index: Int? = nil, pods: Int? = nil) -> Bool {
        guard let s = subset(key) else { return false }
        return s.count == count && (index == nil || s.index == index) && (pods == nil || s.pods.count == pods)
    }

    /// (activatorCount, activatorIndex, assigned pods) in use for the revision.
    func subset(_ key: String) -> (count: Int, index: Int, pods: [String])? {
        guard let entry = (json["subsetting"] as? [String: Any])?[key] as? [String: Any] else { return nil }
        return (
            entry["activatorCount"] as? Int ?? -1, entry["activatorIndex"] as? Int ?? -1,
            entry["assignedPods"] as? [String] ?? []
        )
    }
}

extension ActivatorFixture {
    /// An activator on `api`, as pod `podIP`, with short back-offs and watches.
    static func onKube(
        _ api: FakeKubeAPI, autoscaler: FakeAutoscaler, podIP: String = "10.0.0.2", watchTimeout: String = "30s",
        extra: [String] = []
    ) throws -> ActivatorFixture {
        try ActivatorFixture(
            autoscaler: autoscaler,
            flags: [
                "--kube-api", api.url, "--system-namespace", "knative-serving", "--pod-ip", podIP,
                "--kube-backoff", "50ms", "--kube-backoff-max", "400ms", "--kube-watch-timeout", watchTimeout,
            ] + extra)
    }

    func state() throws -> KubeStateView { try KubeStateView(self) }

    /// Waits until the state satisfies `condition`.
    func waitForState(seconds: Double = 20, _ condition: (KubeStateView) -> Bool) -> Bool {
        eventually(seconds: seconds) { (try? state()).map(condition) ?? false }
    }
}

/// Sends requests to a revision from a thread until stopped, and counts the answers by status.
final class SteadyClient: @unchecked Sendable {
    private let statuses = Locked<[Int: Int]>([:])
    private let stopped = Locked(false)
    private let done = Gate()

    init(_ activator: ActivatorFixture, revision: String) {
        Thread { [self] in
            defer { done.open() }
            while !stopped.withLock({ $0 }) {
                let status = (try? activator.toRevision(revision).status) ?? -1
                statuses.withLock { $0[status, default: 0] += 1 }
            }
        }.start()
    }

    /// Answers so far by status (-1: no answer at all).
    var counts: [Int: Int] { statuses.withLock { $0 } }

    func stop() -> [Int: Int] {
        stopped.withLock { $0 = true }
        done.wait()
        return counts
    }
}

@Suite(.timeLimit(.minutes(2)))
struct ActivatorKubeTests {
    static let revisions = "/apis/serving.knative.dev/v1/revisions"

    @Test func aRevisionAndItsEndpointsAppearAndBufferedRequestsComplete() throws {
        let api = try FakeKubeAPI()
        let autoscaler = try FakeAutoscaler()
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler, watchTimeout: "2s")
        #expect(try activator.waitForHealthy().status == 200)  // listed everything, and the websocket is up

        // The admin API only reads.
        let put = try activator.admin("PUT", "/v1/revisions/default/x", #"{"containerConcurrency": 1}"#)
        #expect(put.status == 405 && put.header("Allow") == "GET")
        #expect(put.bodyText.contains("comes from the Kubernetes API (--kube-api"), "\(put.bodyText)")
        #expect(try activator.admin("DELETE", "/v1/routes/default/r").status == 405)

        api.putRevision("hello-00001", cc: 1, timeout: 30)
        #expect(activator.waitForState { $0.revision("default/hello-00001") != nil })
        let spec = try #require(try activator.state().revision("default/hello-00001"))
        #expect(spec["containerConcurrency"] as? Int == 1 && spec["timeoutSeconds"] as? Int == 30)
        #expect(spec["protocol"] as? String == "http1")

        let client = try TestSocket.connect(port: activator.port)
        try client.send(
            "GET /late HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: hello-00001\r\n\r\n"
        )
        #expect(activator.waitForQueued("hello-00001", 1))  // buffered: no pod yet
        let pod = try FakePod(name: "p1")
        api.putPrivateEndpoints("hello-00001", ready: [pod.port])
        let response = try client.readResponse()
        #expect(response.status == 200 && response.bodyText == "p1 /late")

        // A revision whose port is named h2c is proxied as h2c.
        api.putRevision("grpc-00001", h2c: true)
        let grpcVersion = api.resourceVersion  // the last change: the activator has seen it once its state shows it
        #expect(activator.waitForState { $0.revision("default/grpc-00001")?["protocol"] as? String == "h2c" })

        // The watch ends at its timeoutSeconds (2 s) and is resumed from the last version seen, not relisted: a
        // later watch asks from at least the grpc revision's version (however the steps above raced the 2 s).
        #expect(
            eventually {
                api.watches(Self.revisions).dropFirst().contains {
                    (Int($0.query["resourceVersion"] ?? "") ?? 0) >= grpcVersion
                }
            })
        let resumed = api.watches(Self.revisions)[1]
        #expect(resumed.query["allowWatchBookmarks"] == "true" && resumed.query["timeoutSeconds"] == "2")
        #expect(api.listCount(Self.revisions) == 1)
        #expect(
            api.requests.contains { $0.query["labelSelector"] == "networking.internal.knative.dev/serviceType=Private" }
        )
        #expect(api.requests.contains { $0.query["fieldSelector"] == "metadata.name=config-logging" })
    }

    @Test func podsAreAddedRemovedAndNotReadyOnesGetTrafficOnlyOnceTheirProbePasses() throws {
        let api = try FakeKubeAPI()
        let autoscaler = try FakeAutoscaler()
        let (a, b) = (try FakePod(name: "a"), try FakePod(name: "b"))
        api.putRevision("pods-00001")
        api.putPrivateEndpoints("pods-00001", ready: [a.port])
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler)
        #expect(try activator.waitForHealthy().status == 200)
        #expect(try activator.toRevision("pods-00001").bodyText == "a /")

        // Not-ready addresses are probed like any pod (upstream's probe-ahead): c, whose queue-proxy says it is
        // not ready, gets no request; a, listed not ready while its probe passes (the kubelet's readiness lags),
        // keeps getting them, as upstream's activator would send them.
        let c = try FakePod(name: "c", probeBody: "not ready")
        api.putPrivateEndpoints("pods-00001", ready: [b.port], notReady: [a.port, c.port])
        #expect(activator.waitForState { $0.addresses("default/pods-00001")?.count == 3 })
        #expect(eventually { c.probeCount > 0 })
        var answered: [String: Int] = [:]
        for _ in 0..<30 { answered[try activator.toRevision("pods-00001").bodyText, default: 0] += 1 }
        #expect(answered["c /"] == nil && c.requests.all.isEmpty, "\(answered)")
        #expect(answered["a /"] ?? 0 > 0 && answered["b /"] ?? 0 > 0, "\(answered)")

        // Both ready, c gone.
        api.putPrivateEndpoints("pods-00001", ready: [a.port, b.port])
        #expect(activator.waitForState { $0.addresses("default/pods-00001")?.count == 2 })

        // The Endpoints object goes: no pods; a request waits until one comes back.
        api.deletePrivateEndpoints("pods-00001")
        #expect(activator.waitForState { $0.addresses("default/pods-00001") == nil })
        let client = try TestSocket.connect(port: activator.port)
        try client.send(
            "GET /again HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: pods-00001\r\n\r\n"
        )
        #expect(activator.waitForQueued("pods-00001", 1))
        api.putPrivateEndpoints("pods-00001", ready: [b.port])
        #expect(try client.readResponse().bodyText == "b /again")

        // The revision goes: 404 with upstream's text.
        api.deleteRevision("pods-00001")
        #expect(activator.waitForState { $0.revision("default/pods-00001") == nil })
        #expect(try activator.toRevision("pods-00001").status == 404)
    }

    @Test func a410OrAnUnreadableEventRelistsWithoutDroppingState() throws {
        let api = try FakeKubeAPI()
        let autoscaler = try FakeAutoscaler()
        let pod = try FakePod(name: "steady")
        api.putRevision("steady-00001")
        api.putPrivateEndpoints("steady-00001", ready: [pod.port])
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler)
        #expect(try activator.waitForHealthy().status == 200)
        #expect(try activator.toRevision("steady-00001").status == 200)
        let traffic = SteadyClient(activator, revision: "steady-00001")

        // An ERROR event with a 410 Status on every open watch: each collection is listed again.
        let lists = api.listCount(Self.revisions)
        api.expireWatches()
        #expect(eventually { api.listCount(Self.revisions) > lists })
        api.putRevision("after-00001")
        #expect(activator.waitForState { $0.revision("default/after-00001") != nil })

        // HTTP 410 for a watch from a compacted version: the API goes down while the history is compacted,
        // comes back, and the watch from the old version is refused.
        api.goneAsHTTPStatus = true
        let listsBefore = api.listCount(Self.revisions)
        api.goDown()
        api.expireWatches()
        try api.goUp()
        #expect(eventually { api.listCount(Self.revisions) > listsBefore })
        #expect(api.requests.contains { $0.path == Self.revisions && $0.isWatch })
        api.putRevision("later-00001")
        #expect(activator.waitForState { $0.revision("default/later-00001") != nil })

        // A line that is no event: the activator cannot know what it missed, so it lists again.
        #expect(eventually { api.openWatches(Self.revisions) == 1 })
        let listsBeforeGarbage = api.listCount(Self.revisions)
        api.sendRaw(#"{"type":"ADDED","object":"#)
        #expect(eventually { api.listCount(Self.revisions) > listsBeforeGarbage })
        api.putRevision("garbled-00001")
        #expect(activator.waitForState { $0.revision("default/garbled-00001") != nil })

        // Another ERROR (not 410): the version may be unusable, so it lists again too (client-go does).
        let listsBeforeError = api.listCount(Self.revisions)
        api.goDown()  // cuts the open watches (no 410 of its own); while down, nothing takes a scripted answer
        api.failNextWatches(Self.revisions, [.errorEvent(500)])
        try api.goUp()  // the revisions' next watch gets that answer
        #expect(eventually { api.listCount(Self.revisions) > listsBeforeError })

        // A failed watch answer with a long body, then a 410: each answer's body is its own. They used to pile
        // up, so once they neared the 64 KiB error-body bound every later answer overflowed it and a 410 was never
        // recognised: no relist, ever (after hours of small Status bodies in a real cluster; here at once).
        let listsBeforeFailures = api.listCount(Self.revisions)
        api.goDown()  // cuts the open watches (no 410 of its own); while down, nothing takes a scripted answer
        api.failNextWatches(Self.revisions, [.status(500, bodyBytes: 65_000), .status(410, bodyBytes: 1_000)])
        try api.goUp()  // the revisions' next two watches get those answers
        #expect(eventually { api.listCount(Self.revisions) > listsBeforeFailures })

        let counts = traffic.stop()
        #expect(counts.keys.sorted() == [200], "\(counts)")
        #expect(try activator.state().addresses("default/steady-00001") == [pod.address])
        #expect(activator.process.stderr.contains("is gone (410"))
    }

    /// A large collection comes in pages of 500 (`limit`/`continue`, client-go's pager), each parsed on its own;
    /// the pages are one snapshot, and the watch starts from its version.
    @Test func aLargeCollectionIsListedInPages() throws {
        let api = try FakeKubeAPI()
        let autoscaler = try FakeAutoscaler()
        for i in 0..<1_100 { api.putRevision("many-\(100_000 + i)") }
        let listVersion = api.resourceVersion
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler)
        #expect(try activator.waitForHealthy().status == 200)
        let lists = api.requests.filter { $0.path == Self.revisions && !$0.isWatch }
        #expect(lists.map { $0.query["limit"] ?? "" } == ["500", "500", "500"])
        #expect(lists.map { $0.query["continue"] ?? "" } == ["", "\(listVersion):500", "\(listVersion):1000"])
        #expect(try activator.state().revisionCount == 1_100)
        #expect(api.watches(Self.revisions).first?.query["resourceVersion"] == "\(listVersion)")
    }

    @Test func theAPIDownForSeveralBackOffsLeavesTrafficFlowing() throws {
        let api = try FakeKubeAPI()
        let autoscaler = try FakeAutoscaler()
        let (a, b) = (try FakePod(name: "a"), try FakePod(name: "b"))
        api.putRevision("down-00001")
        api.putPrivateEndpoints("down-00001", ready: [a.port])
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler)
        #expect(try activator.waitForHealthy().status == 200)
        #expect(try activator.toRevision("down-00001").bodyText == "a /")

        api.goDown()
        // Traffic while the activator fails to reach the API again and again (back-off 50 ms doubling to 400 ms:
        // 8 failures of the revisions' watch take ≥ 2 s), served from the last known state.
        func failures() -> Int {
            activator.process.stderr.components(separatedBy: "kube: revisions: watch failed").count - 1
        }
        var served = 0
        while failures() < 8 {
            let response = try activator.toRevision("down-00001")
            #expect(response.status == 200 && response.bodyText == "a /")
            served += 1
            if served > 100_000 { break }
        }
        #expect(failures() >= 8)
        #expect(try activator.get(headers: ["Host: h", "User-Agent: kube-probe/x"]).status == 200)  // still ready

        // Back: the watch resumes and sees what changed.
        try api.goUp()
        api.putPrivateEndpoints("down-00001", ready: [b.port])
        #expect(activator.waitForState { $0.addresses("default/down-00001") == [b.address] })
        #expect(try activator.toRevision("down-00001").bodyText == "b /")
    }

    @Test func subsettingFollowsTheRevisionsPublicEndpoints() throws {
        let api = try FakeKubeAPI()
        let autoscaler = try FakeAutoscaler()
        let pods = try (0..<3).map { try FakePod(name: "p\($0)") }
        api.putRevision("sub-00001", cc: 1)
        api.putPrivateEndpoints("sub-00001", ready: pods.map(\.port))
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler, podIP: "10.0.0.2")
        #expect(try activator.waitForHealthy().status == 200)
        let key = "default/sub-00001"
        #expect(try activator.state().hasSubset(key, count: 1, pods: 3))

        // Two activators, this one second: 3 pods / 2 → one pod here, and every request goes to it.
        api.putPublicEndpoints("sub-00001", activators: ["10.0.0.1", "10.0.0.2"])
        #expect(activator.waitForState { $0.hasSubset(key, count: 2, index: 1, pods: 1) })
        var answered: Set<String> = []
        for _ in 0..<6 { answered.insert(try activator.toRevision("sub-00001").bodyText) }
        #expect(answered.count == 1)

        // First of two: two pods.
        api.putPublicEndpoints("sub-00001", activators: ["10.0.0.3", "10.0.0.2"])
        #expect(activator.waitForState { $0.hasSubset(key, count: 2, index: 0, pods: 2) })

        // A list without this activator is ignored (upstream: not in the path yet); the next one counts.
        api.putPublicEndpoints("sub-00001", activators: ["10.0.0.1", "10.0.0.3", "10.0.0.4"])
        api.putRevision("marker-00001")
        #expect(activator.waitForState { $0.revision("default/marker-00001") != nil })
        api.putPublicEndpoints("marker-00001", activators: ["10.0.0.2"])
        #expect(activator.waitForState { $0.hasSubset("default/marker-00001", count: 1, index: 0) })
        #expect(try activator.state().hasSubset(key, count: 2, index: 0, pods: 2))

        // Alone again: all three pods.
        api.putPublicEndpoints("sub-00001", activators: ["10.0.0.2"])
        #expect(activator.waitForState { $0.hasSubset(key, count: 1, index: 0, pods: 3) })

        // The revision and its endpoints deleted, then made again under the same name: its share starts over
        // (one of one) instead of the old one's (second of two).
        api.putPublicEndpoints("sub-00001", activators: ["10.0.0.1", "10.0.0.2"])
        #expect(activator.waitForState { $0.hasSubset(key, count: 2, index: 1) })
        api.deletePublicEndpoints("sub-00001")
        api.deletePrivateEndpoints("sub-00001")
        api.deleteRevision("sub-00001")
        #expect(activator.waitForState { $0.revision(key) == nil })
        api.putRevision("sub-00001", cc: 1)
        api.putPrivateEndpoints("sub-00001", ready: pods.map(\.port))
        #expect(activator.waitForState { $0.hasSubset(key, count: 1, index: 0, pods: 3) })
    }

    @Test func configLoggingSetsTheLevelLive() throws {
        let api = try FakeKubeAPI()
        let autoscaler = try FakeAutoscaler()
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler)
        #expect(try activator.waitForHealthy().status == 200)
        #expect(!activator.process.stderr.contains("\"severity\":\"debug\""))
        // Upstream's default config: JSON lines on stdout with `message`, `severity`, `timestamp`.
        api.putLoggingConfig(["loglevel.activator": "debug", "zap-logger-config": ZapConfig.knativeDefault])
        #expect(
            eventually { activator.process.stdout.contains(#""message":"logging from config-logging: level debug""#) })
        // A debug line: the relist after a 410 says what it listed.
        api.expireWatches()
        #expect(
            eventually {
                activator.process.stdout.split(separator: "\n").contains {
                    $0.contains(#""severity":"debug""#) && $0.contains("kube: listed revisions")
                }
            }, "\(activator.process.stdout)")
    }

    /// As upstream serves only once its informers synced, the kubelet's probe fails until every collection was
    /// listed; an API that is down at the start is retried with back-off.
    @Test func notReadyUntilTheAPIHasBeenListed() throws {
        let api = try FakeKubeAPI()
        api.goDown()
        let autoscaler = try FakeAutoscaler()
        let activator = try ActivatorFixture.onKube(api, autoscaler: autoscaler)
        #expect(eventually { activator.process.stderr.contains("kube: revisions: list failed") })
        let health = try activator.get(headers: ["Host: h", "User-Agent: kube-probe/x"])
        #expect(health.status == 500 && health.bodyText == "waiting for the first lists from the Kubernetes API\n")
        try api.goUp()
        #expect(try activator.waitForHealthy().status == 200)
    }

    @Test func flagsOfKubernetesModeAreChecked() throws {
        let both = try ChildProcess(
            "activator", environment: ["KUBE_API": "http://127.0.0.1:1", "SYSTEM_NAMESPACE": "knative-serving"],
            arguments: ["--config", "/tmp/state.json"])
        #expect(both.waitForExit() == 2)
        #expect(both.stderr.contains("--config /tmp/state.json and --kube-api http://127.0.0.1:1 exclude each other"))

        let noNamespace = try ChildProcess(
            "activator", environment: [:], arguments: ["--kube-api", "http://127.0.0.1:1"])
        #expect(noNamespace.waitForExit() == 2)
        #expect(noNamespace.stderr.contains("--kube-api needs --system-namespace (SYSTEM_NAMESPACE)"))

        let badURL = try ChildProcess(
            "activator", environment: ["SYSTEM_NAMESPACE": "knative-serving"],
            arguments: ["--kube-api", "https://x:6443"])
        #expect(badURL.waitForExit() == 2)
        #expect(badURL.stderr.contains("--kube-api=https://x:6443 (KUBE_API): expected http://host[:port]"))

        let help = try ChildProcess("activator", environment: [:], arguments: ["--help"])
        #expect(help.waitForExit() == 0)
        #expect(help.stderr.contains("--kube-api URL") && help.stderr.contains("SYSTEM_NAMESPACE"))
    }

    /// Without --autoscaler-url, Kubernetes mode dials Knative's autoscaler Service by name: here the name does
    /// not resolve, so the activator stays not ready and says why in its log.
    @Test func theDefaultAutoscalerIsKnativesServiceAndAHostNameIsResolved() throws {
        let api = try FakeKubeAPI()
        let (process, ports) = try ChildProcess.startServer("activator") {
            let (port, adminPort) = (freePort(), freePort())
            return (
                [port, adminPort], [:],
                [
                    "--port", "\(port)", "--admin-address", "127.0.0.1:\(adminPort)", "--metrics-port", "0",
                    "--kube-api", api.url, "--system-namespace", "knative-serving",
                    "--cluster-domain", "cluster.invalid",
                ], port
            )
        }
        defer { process.signal(SIGKILL) }
        #expect(eventually { process.stderr.contains("lookup autoscaler.knative-serving.svc.cluster.invalid") })
        // Once the first lists are in, what keeps it not ready is the websocket, with upstream's text.
        var health = TestResponse(status: 0, reason: "", headers: [], body: [])
        _ = try eventually {
            health = try TestSocket.connect(port: ports).exchange(
                "GET / HTTP/1.1\r\nHost: h\r\nK-Kubelet-Probe: 1\r\n\r\n")
            return health.bodyText != "waiting for the first lists from the Kubernetes API\n"
        }
        #expect(
            health.status == 500 && health.bodyText == "connection has not yet been established\n", "\(health.bodyText)"
        )

        // A host name in --autoscaler-url (admin mode): looked up, connected, ready.
        let autoscaler = try FakeAutoscaler()
        let named = try ActivatorFixture(flags: ["--autoscaler-url", "ws://localhost:\(autoscaler.port)/"])
        #expect(try named.waitForHealthy().status == 200)
    }
}
