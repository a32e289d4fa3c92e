// The activator: test vectors A1–A15 of the spec (§5.2) and the issue's own, against the real binary with
// fake queue-proxy pods and a fake autoscaler.
import Foundation
import Glibc
import Synchronization
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

/// A fake pod: answers the activator's probe with `queue` and everything else via `handler`.
final class FakePod: @unchecked Sendable {
    /// Counters shared with the pod's connection threads.
    final class Counters: Sendable {
        let probes = Locked(0)
        let active = Locked((now: 0, max: 0))
    }

    let server: ScriptedUpstream
    let requests: Seen<[(String, String)]>
    let counters: Counters

    var port: UInt16 { server.port }
    var address: String { "127.0.0.1:\(server.port)" }
    var maxConcurrent: Int { counters.active.withLock { $0.max } }
    var probeCount: Int { counters.probes.withLock { $0 } }

    init(name: String = "pod", probeBody: String = "queue", delayMs: Int = 0) throws {
        let requests = Seen<[(String, String)]>()
        let counters = Counters()
        self.requests = requests
        self.counters = counters
        server = try ScriptedUpstream { conn, _ in
            while true {
                let (start, fields) = try conn.readHead()
                _ = try conn.readBody(fields: fields, untilClose: false)
                if fields.contains(where: { $0.0 == "K-Network-Probe" && $0.1 == "queue" }) {
                    counters.probes.withLock { $0 += 1 }
                    try conn.send(
                        "HTTP/1.1 200 OK\r\nContent-Length: \(probeBody.utf8.count)\r\nConnection: close\r\n\r\n\(probeBody)"
                    )
                    return
                }
                counters.active.withLock {
                    $0.now += 1
                    $0.max = max($0.max, $0.now)
                }
                requests.add([("start", start)] + fields)
                if delayMs > 0 { usleep(UInt32(delayMs) * 1000) }
                counters.active.withLock { $0.now -= 1 }
                let body = "\(name) \(start.split(separator: " ")[1])"
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            }
        }
    }
}

final class ActivatorFixture: @unchecked Sendable {
    let process: ChildProcess
    let port: UInt16
    let adminPort: UInt16
    let metricsPort: UInt16

    init(autoscaler: FakeAutoscaler? = nil, flags: [String] = [], config: String? = nil) throws {
        // The metrics port is bound last: once it listens, every port does.
        (process, (port, adminPort, metricsPort)) = try ChildProcess.startServer("activator") {
            let (port, adminPort, metricsPort) = (freePort(), freePort(), freePort())
            var arguments =
                [
                    "--port", "\(port)", "--admin-address", "127.0.0.1:\(adminPort)", "--metrics-port",
                    "\(metricsPort)",
                    "--pod-name", "activator-0", "--drain-grace", "300ms",
                ] + flags
            if let autoscaler { arguments += ["--autoscaler-url", autoscaler.url] }
            if let config { arguments += ["--config", config] }
            return ([port, metricsPort], [:], arguments, (port, adminPort, metricsPort))
        }
    }

    func admin(_ method: String, _ path: String, _ body: String = "") throws -> TestResponse {
        let client = try TestSocket.connect(port: adminPort)
        return try client.exchange(
            "\(method) \(path) HTTP/1.1\r\nHost: admin\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
    }

    /// Adds revision ns/name with cc and endpoints.
    func revision(_ name: String, cc: Int = 0, timeout: Int = 300, ns: String = "default", pods: [FakePod] = []) throws
    {
        let put = try admin(
            "PUT", "/v1/revisions/\(ns)/\(name)", #"{"containerConcurrency": \#(cc), "timeoutSeconds": \#(timeout)}"#)
        guard put.status == 200 else { throw TestError("PUT revision: \(put.status) \(put.bodyText)") }
        if !pods.isEmpty { try endpoints(name, ns: ns, pods) }
    }

    func endpoints(_ name: String, ns: String = "default", _ pods: [FakePod]) throws {
        let list = pods.map { "\"\($0.address)\"" }.joined(separator: ",")
        let put = try admin("PUT", "/v1/revisions/\(ns)/\(name)/endpoints", #"{"addresses": [\#(list)]}"#)
        guard put.status == 200 else { throw TestError("PUT endpoints: \(put.status) \(put.bodyText)") }
    }

    func get(_ path: String = "/", headers: [String]) throws -> TestResponse {
        let client = try TestSocket.connect(port: port)
        return try client.exchange("GET \(path) HTTP/1.1\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n")
    }

    /// The activator's Prometheus text (its metrics port).
    func metrics() throws -> String {
        try TestSocket.connect(port: metricsPort).exchange("GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").bodyText
    }

    /// Waits until the revision's queued gauge reads `count`: the requests sent are waiting in the activator.
    func waitForQueued(_ name: String, ns: String = "default", _ count: Int, seconds: Double = 20) -> Bool {
        eventually(seconds: seconds) {
            (try? metrics())?.contains("kn_revision_request_queued{revision=\"\(ns)/\(name)\"} \(count)\n") ?? false
        }
    }

    /// Waits until the health probe answers 200 (the autoscaler connection is up) or `seconds` pass.
    func waitForHealthy(seconds: Double = 20) throws -> TestResponse {
        var health = try get(headers: ["Host: h", "User-Agent: kube-probe/x"])
        _ = try eventually(seconds: seconds) {
            health = try get(headers: ["Host: h", "User-Agent: kube-probe/x"])
            return health.status == 200
        }
        return health
    }

    /// A request routed by the revision headers.
    func toRevision(_ name: String, ns: String = "default", path: String = "/", host: String = "client.example") throws
        -> TestResponse
    {
        try get(
            path, headers: ["Host: \(host)", "Knative-Serving-Namespace: \(ns)", "Knative-Serving-Revision: \(name)"])
    }
}

@Suite(.timeLimit(.minutes(2)))
struct ActivatorTests {
    // MARK: Probes (A1–A3)

    @Test func a1_healthFollowsTheAutoscalerConnectionAndSigterm() throws {
        let autoscaler = try FakeAutoscaler()
        let activator = try ActivatorFixture(autoscaler: autoscaler)
        let health = try activator.waitForHealthy()
        #expect(health.status == 200 && health.body.isEmpty)
        activator.process.signal(SIGTERM)
        // The signal is handled asynchronously: wait for the probe to change (the drain keeps it answering).
        var after = health
        try eventually {
            after = try activator.get(headers: ["Host: h", "User-Agent: kube-probe/x"])
            return after.status != 200
        }
        #expect(after.status == 500 && after.bodyText == "received SIGTERM from kubelet\n")
        #expect(activator.process.waitForExit() == 0)

        let noAutoscaler = try ActivatorFixture()
        #expect(try noAutoscaler.get(headers: ["Host: h", "K-Kubelet-Probe: 1"]).status == 200)
    }

    /// Upstream's health check returns the websocket's `ErrConnectionNotEstablished` whenever there is no
    /// connection (never dialled, refused, or lost): 500 with exactly that text through `http.Error`.
    @Test func a1_healthWhileTheAutoscalerIsUnreachableSaysNotEstablished() throws {
        func expectNotEstablished(_ response: TestResponse) {
            #expect(response.status == 500)
            #expect(response.bodyText == "connection has not yet been established\n")
            #expect(response.header("Content-Type") == "text/plain; charset=utf-8")
            #expect(response.header("X-Content-Type-Options") == "nosniff")
        }
        // Refused: the same answer whether the dial is still in flight or already failed.
        let unreachable = try ActivatorFixture(flags: ["--autoscaler-url", "ws://127.0.0.1:\(freePort())/"])
        expectNotEstablished(try unreachable.get(headers: ["Host: h", "User-Agent: kube-probe/x"]))

        // Lost: connected once, then the autoscaler goes away.
        let autoscaler = try FakeAutoscaler()
        let activator = try ActivatorFixture(autoscaler: autoscaler)
        var health = try activator.waitForHealthy()
        #expect(health.status == 200)
        autoscaler.stop()
        try eventually {
            health = try activator.get(headers: ["Host: h", "User-Agent: kube-probe/x"])
            return health.status != 200
        }
        expectNotEstablished(health)
    }

    @Test func a2_a3_activatorAndNetworkProbes() throws {
        let activator = try ActivatorFixture()
        let yes = try activator.get(headers: ["Host: h", "K-Network-Probe: activator"])
        #expect(yes.status == 200 && yes.bodyText == "activator")
        let no = try activator.get(headers: ["Host: h", "K-Network-Probe: queue"])
        #expect(no.status == 400 && no.bodyText == "unexpected probe header value: \"queue\"\n")
        let hash = try activator.get(headers: ["Host: h", "K-Network-Probe: probe", "K-Network-Hash: h1"])
        #expect(hash.status == 200 && hash.header("K-Network-Hash") == "h1")
        let empty = try activator.get(headers: ["Host: h", "K-Network-Probe:"])  // not a probe: routed → 404
        #expect(empty.status == 404)
    }

    // MARK: Routing and proxying (A4–A6, A8)

    @Test func a4_unknownRevisionIs404() throws {
        let activator = try ActivatorFixture()
        let response = try activator.toRevision("fooname", ns: "foospace")
        #expect(response.status == 404)
        #expect(
            response.bodyText == "Error getting active endpoint: revision.serving.knative.dev \"fooname\" not found\n")
    }

    @Test func a5_a6_hostRoutingAndHeadersOnTheWayToThePod() throws {
        let pod = try FakePod(name: "p")
        let activator = try ActivatorFixture()
        try activator.revision("real-name", ns: "real-namespace", pods: [pod])
        for host in ["real-name.real-namespace.svc.cluster.local", "real-name.real-namespace.svc.cluster.local:80"] {
            let response = try activator.get(
                headers: ["Host: \(host)", "Knative-Serving-Tag: t", "K-Network-Hash: x", "K-Proxy-Request: nope"])
            #expect(response.status == 200 && response.bodyText == "p /")
        }
        let seen = try #require(pod.requests.all.last)
        let value = { (name: String) in seen.filter { $0.0.lowercased() == name }.map(\.1) }
        #expect(value("host") == [pod.address])
        #expect(value("k-original-host") == ["real-name.real-namespace.svc.cluster.local:80"])
        #expect(value("k-proxy-request") == ["activator"])
        #expect(value("k-network-hash").isEmpty)
        #expect(value("knative-serving-tag") == ["t"])
        // By headers, with the revision headers stripped.
        let byHeaders = try activator.toRevision("real-name", ns: "real-namespace")
        #expect(byHeaders.status == 200)
        let last = try #require(pod.requests.all.last).map { $0.0.lowercased() }
        #expect(!last.contains("knative-serving-revision") && !last.contains("knative-serving-namespace"))
    }

    /// Issue 11 item 4: the route is decided by the one Host there is. Two Host fields are refused (the first
    /// no longer decides), and an absolute-form target routes by its authority, which reaches the pod as
    /// K-Original-Host while the target goes on in origin form.
    @Test func hostIsOneAndAnAbsoluteTargetRoutesByItsAuthority() throws {
        let pod = try FakePod(name: "p")
        let activator = try ActivatorFixture()
        try activator.revision("good", pods: [pod])
        let twice = try activator.get(headers: ["Host: good.default.svc.cluster.local", "Host: evil"])
        #expect(twice.status == 400 && twice.bodyText == "400 Bad Request: too many Host headers\n")
        let client = try TestSocket.connect(port: activator.port)
        let absolute = try client.exchange(
            "GET http://good.default.svc.cluster.local/x?q=1 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
        #expect(absolute.status == 200 && absolute.bodyText == "p /x?q=1")
        let seen = try #require(pod.requests.all.last)
        #expect(seen.first { $0.0.lowercased() == "k-original-host" }?.1 == "good.default.svc.cluster.local")
        #expect(pod.requests.all.count == 1)
    }

    @Test func a8_transportErrorIs502AfterOneAttempt() throws {
        let attempts = Seen<Int>()
        let pod = try ScriptedUpstream { conn, index in
            let (_, fields) = try conn.readHead()
            if fields.contains(where: { $0.0 == "K-Network-Probe" }) {
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nqueue")
                return
            }
            attempts.add(index)
            shutdown(conn.fd, Int32(SHUT_RDWR))  // a transport error after the request was sent
        }
        let activator = try ActivatorFixture()
        _ = try activator.admin("PUT", "/v1/revisions/default/r", #"{"containerConcurrency": 0}"#)
        _ = try activator.admin(
            "PUT", "/v1/revisions/default/r/endpoints", #"{"addresses": ["127.0.0.1:\#(pod.port)"]}"#)
        let response = try activator.toRevision("r")
        #expect(response.status == 502 && response.bodyText == "EOF\n")
        #expect(attempts.all.count == 1)
    }

    // MARK: Throttling and buffering (A9, A10, A12, issue)

    @Test func a10_noPodTimesOutWith504() throws {
        let activator = try ActivatorFixture()
        try activator.revision("cold", timeout: 2)
        let started = Date()
        let response = try activator.toRevision("cold")
        let elapsed = Date().timeIntervalSince(started)
        #expect(response.status == 504 && response.bodyText == "activator request timeout")
        // The revision's 2 s applies, not the 300 s default; how late after 2 s depends on the machine's load.
        #expect(elapsed > 1.9 && elapsed < 10)
    }

    @Test func bufferedAtZeroCompletesWhenAnEndpointAppears() throws {
        let activator = try ActivatorFixture()
        try activator.revision("zero")
        let client = try TestSocket.connect(port: activator.port)
        try client.send(
            "GET /late HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: zero\r\n\r\n"
        )
        // The property: the request waited in the activator (buffered at zero) before the endpoint existed.
        #expect(activator.waitForQueued("zero", 1))
        let pod = try FakePod(name: "new")
        try activator.endpoints("zero", [pod])
        let response = try client.readResponse()
        #expect(response.status == 200 && response.bodyText == "new /late")
    }

    @Test func aBufferedRequestsBodyArrivesWhole() throws {
        let lengths = Seen<Int>()
        let pod = try ScriptedUpstream { conn, _ in
            while true {
                let (_, fields) = try conn.readHead()
                let (body, _, _) = try conn.readBody(fields: fields, untilClose: false)
                if fields.contains(where: { $0.0 == "K-Network-Probe" }) {
                    try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nqueue")
                    return
                }
                lengths.add(body.count)
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\n\r\n")
                try conn.send(body)
            }
        }
        let activator = try ActivatorFixture()
        try activator.revision("bodies")
        let client = try TestSocket.connect(port: activator.port)
        let size = 1024 * 1024
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try client.send(
            "POST /upload HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: bodies\r\n"
                + "Content-Length: \(size)\r\n\r\n")
        try client.send(Array(payload[0..<1000]))  // the first bytes arrive with the head and wait with it
        #expect(activator.waitForQueued("bodies", 1))
        _ = try activator.admin(
            "PUT", "/v1/revisions/default/bodies/endpoints", #"{"addresses": ["127.0.0.1:\#(pod.port)"]}"#)
        try client.send(Array(payload[1000...]))
        let response = try client.readResponse()
        #expect(response.status == 200)
        #expect(response.body == payload)
        #expect(lengths.all == [size])
    }

    @Test func aThousandBufferedRequestsCompleteInArrivalOrder() throws {
        let activator = try ActivatorFixture()
        try activator.revision("queue", cc: 1)
        let clients = try (0..<1000).map { _ in try TestSocket.connect(port: activator.port, timeoutSeconds: 30) }
        for (i, client) in clients.enumerated() {
            try client.send(
                "GET /\(i) HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: queue\r\n\r\n"
            )
            // Arrival order across connections is defined only once the previous request is queued.
            #expect(activator.waitForQueued("queue", i + 1))
        }
        let rss = activator.process.memoryKB().rss
        #expect(!memoryBoundsApply || rss < 40 * 1024, "activator RSS \(rss) kB holding 1000 requests")
        let pod = try FakePod(name: "p")
        try activator.endpoints("queue", [pod])
        for (i, client) in clients.enumerated() { #expect(try client.readResponse().bodyText == "p /\(i)") }
        #expect(pod.requests.all.map { $0[0].1 } == (0..<1000).map { "GET /\($0) HTTP/1.1" })
        #expect(pod.maxConcurrent == 1)
    }

    @Test func a9_overflowIs503WithRetryAfter() throws {
        let activator = try ActivatorFixture(flags: ["--max-queued", "2"])
        try activator.revision("tiny", timeout: 10)
        var waiting: [TestSocket] = []
        for _ in 0..<2 {
            let client = try TestSocket.connect(port: activator.port)
            try client.send(
                "GET / HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: tiny\r\n\r\n"
            )
            waiting.append(client)
        }
        #expect(activator.waitForQueued("tiny", 2))
        let rejected = try activator.toRevision("tiny")
        #expect(rejected.status == 503 && rejected.bodyText == "pending request queue full\n")
        #expect(rejected.header("Retry-After") == "1")
        // A client that leaves frees its place at once.
        waiting[0].close()
        #expect(activator.waitForQueued("tiny", 1))
        let third = try TestSocket.connect(port: activator.port)
        try third.send(
            "GET / HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: tiny\r\n\r\n")
        #expect(activator.waitForQueued("tiny", 2))
        #expect(try activator.toRevision("tiny").status == 503)
        let pod = try FakePod(name: "p")
        try activator.endpoints("tiny", [pod])
        #expect(try third.readResponse().status == 200)
        #expect(try waiting[1].readResponse().status == 200)
    }

    @Test func ccOneAcrossFourPodsIsFairAndNeverDoubled() throws {
        let pods = try (0..<4).map { try FakePod(name: "p\($0)", delayMs: 2) }
        let activator = try ActivatorFixture()
        try activator.revision("fair", cc: 1, pods: pods)
        let done = DispatchGroup()
        for worker in 0..<8 {
            done.enter()
            Thread {
                defer { done.leave() }
                guard let client = try? TestSocket.connect(port: activator.port) else { return }
                for i in 0..<50 {
                    _ = try? client.exchange(
                        "GET /\(worker)-\(i) HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: fair\r\n\r\n"
                    )
                }
            }.start()
        }
        done.wait()
        let counts = pods.map { $0.requests.all.count }
        #expect(counts.reduce(0, +) == 400)
        for count in counts { #expect(abs(count - 100) <= 5, "per-pod counts \(counts)") }
        for pod in pods { #expect(pod.maxConcurrent == 1) }
    }

    /// Issue 13 §2: as the ingress (routed by a route's host) the activator sets `X-Forwarded-Proto` when the
    /// client did not, as Knative's ingresses do; a value a hop before set is kept; requests routed by the
    /// revision headers (a real ingress sent them) get nothing added.
    @Test func asTheIngressTheActivatorSaysTheScheme() throws {
        let pod = try FakePod(name: "p")
        let activator = try ActivatorFixture()
        try activator.revision("svc-00001", pods: [pod])
        let route =
            #"{"hosts": ["svc.default.example.com"], "traffic": [{"revisionName": "svc-00001", "percent": 100}]}"#
        #expect(try activator.admin("PUT", "/v1/routes/default/svc", route).status == 200)
        let client = try TestSocket.connect(port: activator.port)
        _ = try client.exchange("GET /a HTTP/1.1\r\nHost: svc.default.example.com\r\n\r\n")
        _ = try client.exchange(
            "GET /b HTTP/1.1\r\nHost: svc.default.example.com\r\nX-Forwarded-Proto: https\r\n\r\n")
        _ = try activator.toRevision("svc-00001", path: "/c")
        _ = try client.exchange(
            "GET /d HTTP/1.1\r\nHost: svc.default.example.com\r\nForwarded: for=192.0.2.1;proto=https\r\n\r\n")
        let seen = pod.requests.all
        func protos(_ path: String) -> [String] {
            let request = seen.first { $0.first?.1.contains(" \(path) ") ?? false } ?? []
            return request.filter { $0.0.lowercased() == "x-forwarded-proto" }.map(\.1)
        }
        #expect(protos("/a") == ["http"])
        #expect(protos("/b") == ["https"])
        #expect(protos("/c") == [])
        #expect(protos("/d") == [])  // Forwarded's proto= is not contradicted
    }

    /// An autoscaler that accepts the connection and never answers the handshake is given 5 s
    /// (`WebSocketClient.handshakeTimeoutMs`); then the activator dials again instead of waiting forever.
    @Test func aSilentAutoscalerIsDialledAgain() throws {
        let dials = Locked(0)
        let release = Gate()
        defer { for _ in 0..<4 { release.open() } }  // one per connection held
        let silent = try ScriptedUpstream { conn, _ in
            dials.withLock { $0 += 1 }
            release.wait(seconds: 30)  // holds the connection open, answering nothing, until the test ends
        }
        let activator = try ActivatorFixture(flags: ["--autoscaler-url", "ws://127.0.0.1:\(silent.port)/"])
        // Within 12 s: 5 s of handshake timeout and a back-off, never the 30 s the silent peer holds on.
        #expect(eventually(seconds: 12) { dials.withLock { $0 } >= 2 }, "dialled \(dials.withLock { $0 }) time(s)")
        // Meanwhile the activator is not healthy: the autoscaler connection is not established.
        let health = try activator.get(headers: ["Host: h", "K-Kubelet-Probe: 1"])
        #expect(health.status == 500)
    }

    @Test func routeSplitsFiftyFiftyAndTagsReachTheirRevision() throws {
        let blue = try FakePod(name: "blue")
        let green = try FakePod(name: "green")
        let activator = try ActivatorFixture()
        try activator.revision("svc-00001", pods: [blue])
        try activator.revision("svc-00002", pods: [green])
        let route =
            #"{"hosts": ["svc.default.example.com"], "traffic": [{"revisionName": "svc-00001", "percent": 50, "tag": "old"}, {"revisionName": "svc-00002", "percent": 50}]}"#
        #expect(try activator.admin("PUT", "/v1/routes/default/svc", route).status == 200)
        let client = try TestSocket.connect(port: activator.port)
        var blues = 0
        for _ in 0..<400 {
            let response = try client.exchange("GET / HTTP/1.1\r\nHost: svc.default.example.com:8080\r\n\r\n")
            if response.bodyText.hasPrefix("blue") { blues += 1 }
        }
        #expect(abs(blues - 200) <= 40, "blue got \(blues) of 400")
        #expect(try client.exchange("GET / HTTP/1.1\r\nHost: old-svc.default.example.com\r\n\r\n").bodyText == "blue /")
        let bad = try activator.admin(
            "PUT", "/v1/routes/default/bad", #"{"hosts": ["x"], "traffic": [{"revisionName": "a", "percent": 60}]}"#)
        #expect(bad.status == 400 && bad.bodyText.contains("traffic targets sum to 60, want 100"))
        let broken = try activator.admin("PUT", "/v1/revisions/default/x", #"{"containerConcurrency": -1}"#)
        #expect(broken.status == 400 && broken.bodyText.contains("revision.containerConcurrency"))
    }

    /// Issue 11 §7: wrong types are named, an empty PUT is refused (not a reset), a taken host is 409 naming the
    /// route that has it, names are DNS-1035 labels.
    @Test func adminRefusesWrongTypesEmptyBodiesTakenHostsAndBadNames() throws {
        let activator = try ActivatorFixture()
        try activator.revision("svc-00001", cc: 3, timeout: 42)
        let fifty = try activator.admin(
            "PUT", "/v1/routes/default/svc",
            #"{"hosts": ["svc.example.com"], "traffic": [{"revisionName": "svc-00001", "percent": "fifty"}]}"#)
        #expect(fifty.status == 400)
        #expect(fifty.bodyText == "route.traffic[0].percent: expected an integer 0-100, got a string (\"fifty\")\n")

        let empty = try activator.admin("PUT", "/v1/revisions/default/svc-00001", "")
        #expect(empty.status == 400 && empty.bodyText == "empty body: expected a JSON object\n")
        let state = try activator.admin("GET", "/v1/state").bodyText
        #expect(state.contains(#""containerConcurrency":3,"timeoutSeconds":42"#), "\(state)")  // not reset to defaults

        let route = #"{"hosts": ["svc.example.com"], "traffic": [{"revisionName": "svc-00001", "percent": 100}]}"#
        #expect(try activator.admin("PUT", "/v1/routes/default/svc", route).status == 200)
        #expect(try activator.admin("PUT", "/v1/routes/default/svc", route).status == 200)  // replacing itself is fine
        let taken = try activator.admin("PUT", "/v1/routes/team-b/thief", route)
        #expect(taken.status == 409 && taken.reason == "Conflict")
        #expect(
            taken.bodyText
                == "route \"team-b/thief\": host \"svc.example.com\" is already claimed by route \"default/svc\"\n")
        #expect(!(try activator.admin("GET", "/v1/state").bodyText.contains("thief")))

        for (path, field) in [
            ("/v1/revisions/default/a%2Fb", "revision.name"), ("/v1/routes/default/a%2Fb", "route.name"),
            ("/v1/revisions/Default/a", "revision.namespace"),
        ] {
            let bad = try activator.admin("PUT", path, route)
            #expect(bad.status == 400)
            #expect(bad.bodyText.hasPrefix("\(field) (from the URL): invalid name "), "\(bad.bodyText)")
        }
        #expect(!(try activator.admin("GET", "/v1/state").bodyText.contains("a%2Fb")))
    }

    @Test func routesThatAreNotReadyOrLackTheirRevisionSaySo() throws {
        let activator = try ActivatorFixture()
        let waiting = #"{"hosts": ["w.example.com"], "notReady": "revision \"w-00001\" is not ready yet"}"#
        #expect(try activator.admin("PUT", "/v1/routes/default/w", waiting).status == 200)
        let answer = try activator.get(headers: ["Host: w.example.com:8080"])
        #expect(answer.status == 404 && answer.bodyText == "revision \"w-00001\" is not ready yet\n")
        let orphan = #"{"hosts": ["o.example.com"], "traffic": [{"revisionName": "o-00001", "percent": 100}]}"#
        #expect(try activator.admin("PUT", "/v1/routes/default/o", orphan).status == 200)
        let missing = try activator.get(headers: ["Host: o.example.com"])
        #expect(missing.status == 404)
        #expect(
            missing.bodyText == "Error getting active endpoint: revision.serving.knative.dev \"o-00001\" not found\n")
        let both =
            #"{"hosts": ["x.example.com"], "notReady": "x", "traffic": [{"revisionName": "o-00001", "percent": 100}]}"#
        let refused = try activator.admin("PUT", "/v1/routes/default/x", both)
        #expect(
            refused.status == 400 && refused.bodyText == "route.traffic: expected no traffic targets with notReady\n")
    }

    @Test func aRefusedPodIsLeftForAnotherBeforeAnythingIsSent() throws {
        let good = try FakePod(name: "good")
        let doomed = try FakePod(name: "doomed")
        let activator = try ActivatorFixture()
        try activator.revision("retry", pods: [good, doomed])  // cc 0: power of two choices uses both
        let request =
            "GET / HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: retry\r\n\r\n"
        let client = try TestSocket.connect(port: activator.port)
        let deadline = Date().addingTimeInterval(5)
        while (good.requests.all.isEmpty || doomed.requests.all.isEmpty) && Date() < deadline {
            _ = try client.exchange(request)
        }
        #expect(!doomed.requests.all.isEmpty)
        doomed.server.stop()  // connections to it are now refused
        // The same keep-alive connection throughout. (Its occasional EPIPE after the stop was the fake pod's
        // `stop()` shutting down stale descriptor numbers, one of them reused by this client socket.)
        for _ in 0..<20 {
            let response = try client.exchange(request)
            #expect(response.status == 200 && response.bodyText == "good /")
        }
    }

    // MARK: Stats (A13, A14)

    @Test func a13_firstRequestPokesTheAutoscalerAtOnce() throws {
        let autoscaler = try FakeAutoscaler()
        let pod = try FakePod(name: "p")
        let activator = try ActivatorFixture(autoscaler: autoscaler)
        try activator.revision("poked", pods: [pod])
        // Established from the activator's side (its handshake done), not only accepted by the fake: a poke
        // before that is dropped, and the first message would be the 1 s report.
        #expect(try activator.waitForHealthy().status == 200)
        let client = try TestSocket.connect(port: activator.port)
        try client.send(
            "GET / HTTP/1.1\r\nHost: h\r\nKnative-Serving-Namespace: default\r\nKnative-Serving-Revision: poked\r\n\r\n"
        )
        #expect(autoscaler.waitFor { $0.contains { $0.1.contains { $0.name == "poked" } } })
        let (_, messages) = try #require(autoscaler.messages.first { $0.1.contains { $0.name == "poked" } })
        // A poke, not the next 1 s report: the report subtracts the poked request (0 and 0), the poke says 1 and 1.
        // Its content tells them apart; no wall-clock bound.
        var expected = Stat(podName: "activator-0")
        expected.averageConcurrentRequests = 1
        expected.requestCount = 1
        #expect(messages == [WireStatMessage(namespace: "default", name: "poked", stat: expected)])
        _ = try client.readResponse()
    }

    @Test func a14_reportsAfterAPokeAndIdleEntriesAreDropped() {
        func stat(_ concurrency: Double, _ count: Double) -> Stat {
            var s = Stat(podName: "a")
            s.averageConcurrentRequests = concurrency
            s.requestCount = count
            return s
        }
        // (a) req t0→t1, req t1→t2, tick t2: poke (1,1), tick (0,1).
        let a = ActivatorStats(podName: "a")
        #expect(a.requestIn(namespace: "ns", name: "r", key: "ns/r", nowMs: 0)?.stat == stat(1, 1))
        a.requestOut(key: "ns/r", nowMs: 1000)
        #expect(a.requestIn(namespace: "ns", name: "r", key: "ns/r", nowMs: 1000) == nil)
        a.requestOut(key: "ns/r", nowMs: 2000)
        #expect(a.tick(nowMs: 2000).map(\.stat) == [stat(0, 1)])
        // (b) req t0→t1, ticks t1 and t2, new req t3: poke, (0,0) kept, (0,0) dropped, poke again.
        let b = ActivatorStats(podName: "a")
        _ = b.requestIn(namespace: "ns", name: "r", key: "ns/r", nowMs: 0)
        b.requestOut(key: "ns/r", nowMs: 1000)
        #expect(b.tick(nowMs: 1000).map(\.stat) == [stat(0, 0)])
        #expect(b.tick(nowMs: 2000).map(\.stat) == [stat(0, 0)])
        #expect(b.tick(nowMs: 3000).isEmpty)
        #expect(b.requestIn(namespace: "ns", name: "r", key: "ns/r", nowMs: 3000)?.stat == stat(1, 1))
    }

    // MARK: Capacity (A11, A12)

    @Test func a11_a12_capacityAndSubsetting() {
        #expect(RevisionThrottler.clusterIPCapacity(cc: 10, backends: 10, activators: 5) == 20)
        #expect(RevisionThrottler.clusterIPCapacity(cc: 10, backends: 10, activators: 200) == 1)
        #expect(RevisionThrottler.clusterIPCapacity(cc: 10, backends: 0, activators: 5) == 0)
        #expect(RevisionThrottler.assignedIndices(pods: 3, activators: 2, index: 0, cc: 10).count == 2)
        #expect(RevisionThrottler.assignedIndices(pods: 3, activators: 2, index: 1, cc: 10).count == 1)
        #expect(RevisionThrottler.assignedIndices(pods: 5, activators: 2, index: 0, cc: 1).count == 3)
        #expect(RevisionThrottler.assignedIndices(pods: 5, activators: 2, index: 1, cc: 1).count == 2)
        #expect(RevisionThrottler.assignedIndices(pods: 5, activators: 2, index: 0, cc: 0).count == 5)
        #expect(RevisionThrottler.assignedIndices(pods: 2, activators: 5, index: 3, cc: 4) == [1])
    }

    // MARK: Pod probes (A15)

    @Test func a15_podsAreProbedAndMustAnswerQueue() throws {
        let wrong = try FakePod(name: "wrong", probeBody: "nope")
        let activator = try ActivatorFixture()
        try activator.revision("probed", timeout: 1, pods: [wrong])
        #expect(try activator.toRevision("probed").status == 504)  // never healthy: never used
        #expect(wrong.requests.all.isEmpty)
        #expect(wrong.probeCount >= 3)  // re-probed every 200 ms
        let right = try FakePod(name: "right")
        try activator.revision("probed2", pods: [right])
        #expect(try activator.toRevision("probed2").bodyText == "right /")
    }

    // MARK: Config file and SIGHUP

    @Test func configFileLoadsAndReloadsOnSighup() throws {
        let pod = try FakePod(name: "file")
        let path = NSTemporaryDirectory() + "activator-\(UUID().uuidString).json"
        defer { unlink(path) }
        let first =
            #"{"revisions": [{"namespace": "default", "name": "one"}], "endpoints": {"default/one": {"addresses": ["\#(pod.address)"]}}}"#
        try first.write(toFile: path, atomically: true, encoding: .utf8)
        let activator = try ActivatorFixture(config: path)
        #expect(try activator.toRevision("one").bodyText == "file /")
        try
            #"{"revisions": [{"namespace": "default", "name": "two"}], "endpoints": {"default/two": ["\#(pod.address)"]}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        activator.process.signal(SIGHUP)
        var state = ""
        try eventually {
            state = try activator.admin("GET", "/v1/state").bodyText
            return state.contains("\"two\"")
        }
        #expect(state.contains("\"two\"") && !state.contains("\"one\""))
        try #"{"revisions": [{"namespace": "default", "name": "three", "containerConcurrency": "x"}]}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        activator.process.signal(SIGHUP)
        #expect(eventually { activator.process.stderr.contains("revisions[0].containerConcurrency") })
        #expect(try activator.admin("GET", "/v1/state").bodyText.contains("\"two\""))  // old state kept
    }

    /// The harness itself: a port taken between `freePort` and the child's bind costs a restart, not a failure.
    @Test func aServerWhosePortWasTakenIsStartedAgainOnFreshPorts() throws {
        // The squatter holds the first attempt's data port, which the activator binds first: that attempt never
        // listens on its admin port (the harness waits for it and sees the child exit), however slowly it dies.
        let squatter = try ScriptedUpstream { _, _ in }
        var attempt = 0
        let (process, port) = try ChildProcess.startServer("activator") {
            attempt += 1
            let port = attempt == 1 ? squatter.port : freePort()
            let adminPort = freePort()
            return (
                [port, adminPort], [:],
                ["--port", "\(port)", "--admin-address", "127.0.0.1:\(adminPort)", "--metrics-port", "0"], port
            )
        }
        defer { process.signal(SIGKILL) }
        #expect(attempt == 2)
        #expect(port != squatter.port)
    }

    @Test func badFlagsNameTheFlag() throws {
        let bad = try ChildProcess("activator", environment: [:], arguments: ["--port", "x"])
        #expect(bad.waitForExit() == 2)
        #expect(bad.stderr.contains("--port=x"))
    }

    @Test func badLoggingConfigNamesTheFieldAndConsoleEncodingIsUsed() throws {
        let bad = try ChildProcess("activator", environment: ["CONFIG_LOGGING": #"{"level": 1}"#], arguments: [])
        #expect(bad.waitForExit() == 2)
        #expect(
            bad.stderr.contains("--logging-config (CONFIG_LOGGING): level: expected a string, got 1"), "\(bad.stderr)")

        let config = #"{"encoding": "console", "outputPaths": ["stdout"], "encoderConfig": {"messageKey": "m"}}"#
        let (process, _) = try ChildProcess.startServer("activator") {
            let (port, adminPort) = (freePort(), freePort())
            return (
                [port, adminPort], [:],
                [
                    "--port", "\(port)", "--admin-address", "127.0.0.1:\(adminPort)", "--metrics-port", "0",
                    "--drain-grace", "100ms", "--logging-config", config,
                ], port
            )
        }
        process.signal(SIGTERM)
        #expect(process.waitForExit() == 0)
        #expect(
            process.stdout.split(separator: "\n").contains { $0.hasPrefix("activator serving on :") },
            "\(process.stdout)")
    }
}
