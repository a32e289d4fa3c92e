// The queue-proxy contract, test vectors Q1–Q22 and W1 of ../shared/spec/knative-dataplane.md §5, against the
// real binary with a scripted fake user container.
import Foundation
import Glibc
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

/// A queue-proxy process in front of a scripted user container.
final class QueueProxyFixture: @unchecked Sendable {
    let app: ScriptedUpstream?
    let proxy: ChildProcess
    let port: UInt16
    let adminPort: UInt16
    let metricsPort: UInt16
    let userMetricsPort: UInt16
    let userPort: UInt16

    /// - Parameters:
    ///   - env: overrides of the standard environment (`cc` 1 as in the spec's vectors unless given).
    ///   - app: the user container's script; nil = nothing listens on USER_PORT.
    init(env: [String: String] = [:], app script: (@Sendable (TestSocket, Int) throws -> Void)?) throws {
        app = try script.map { try ScriptedUpstream(script: $0) }
        let userPort = app?.port ?? freePort()
        self.userPort = userPort
        // The user metrics port is bound last: once it listens, every port does.
        (proxy, (port, adminPort, metricsPort, userMetricsPort)) = try ChildProcess.startServer("queue-proxy") {
            let (port, adminPort, metricsPort, userMetricsPort) = (freePort(), freePort(), freePort(), freePort())
            var environment = queueProxyEnvironment(port: port, userPort: userPort)
            environment["CONTAINER_CONCURRENCY"] = "1"
            environment["QUEUE_ADMIN_PORT"] = "\(adminPort)"
            environment["QUEUE_METRICS_PORT"] = "\(metricsPort)"
            environment["QUEUE_USER_METRICS_PORT"] = "\(userMetricsPort)"
            environment["SERVING_POD"] = "pod-1"
            for (key, value) in env { environment[key] = value }
            return ([port, userMetricsPort], environment, [], (port, adminPort, metricsPort, userMetricsPort))
        }
    }

    /// Sends one request on a new connection and reads the answer.
    func request(_ raw: String, port: UInt16? = nil) throws -> TestResponse {
        let client = try TestSocket.connect(port: port ?? self.port)
        return try client.exchange(raw)
    }

    func get(_ path: String = "/", headers: [String] = []) throws -> TestResponse {
        try request("GET \(path) HTTP/1.1\r\nHost: h\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n")
    }

    /// The stats port's current `Stat`.
    func stat() throws -> (TestResponse, Stat) {
        let response = try request("GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", port: metricsPort)
        guard let stat = Stat.decode(response.body) else { throw TestError("undecodable Stat") }
        return (response, stat)
    }

    /// Waits for the next stats window to close and returns its `Stat`.
    func nextWindowStat(after previous: Stat? = nil) throws -> Stat {
        let before = try previous ?? stat().1
        var current = before
        try eventually {
            current = try stat().1
            return current.processUptime != before.processUptime
        }
        guard current.processUptime != before.processUptime else { throw TestError("no stats window closed") }
        return current
    }

    /// Waits until the breaker's depth gauge (in the app plus waiting) reads `depth`.
    func waitForDepth(_ depth: Int) -> Bool {
        eventually {
            let text = (try? request("GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", port: userMetricsPort).bodyText) ?? ""
            return text.split(separator: "\n").contains {
                $0.hasPrefix("kn_serving_queue_depth{") && $0.hasSuffix("} \(depth)")
            }
        }
    }

    /// Waits until the kubelet probe says the queue-proxy is shutting down (it has handled SIGTERM).
    func waitForShuttingDown() -> Bool {
        eventually { (try? get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"]))?.status == 503 }
    }

    deinit { app?.stop() }
}

/// The UC answers 200 "ok" to everything and records each request head.
func recordingApp(_ seen: Seen<[(String, String)]>) -> @Sendable (TestSocket, Int) throws -> Void {
    { conn, _ in
        while true {
            let (start, fields) = try conn.readHead()
            _ = try conn.readBody(fields: fields, untilClose: false)
            seen.add([("start", start)] + fields)
            try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    }
}

private func probeJSON(_ port: UInt16) -> String {
    #"{"tcpSocket":{"port":\#(port),"host":"127.0.0.1"},"successThreshold":1}"#
}

@Suite(.timeLimit(.minutes(2)))
struct QueueProxyContractTests {
    // MARK: Probes (§1.4)

    @Test func q1_kubeletProbeWithReadyAppIs200Queue() throws {
        let seen = Seen<[(String, String)]>()
        let appPort = try ScriptedUpstream(script: recordingApp(seen))
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(appPort.port)", "SERVING_READINESS_PROBE": probeJSON(appPort.port)], app: nil)
        let response = try qp.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"])
        #expect(response.status == 200)
        #expect(response.bodyText == "queue")
        #expect(seen.all.isEmpty)
    }

    @Test func q2_probeFailsWhenTheAppIsNotListening() throws {
        let dead = freePort()
        // Aggressive mode (period 0) polls for up to 10 s before giving up.
        let qp = try QueueProxyFixture(env: ["SERVING_READINESS_PROBE": probeJSON(dead)], app: nil)
        let started = Date()
        let client = try TestSocket.connect(port: qp.port, timeoutSeconds: 20)  // longer than the 10 s of polling
        let response = try client.exchange(
            "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: kube-probe/1.30\r\nK-Network-Probe: queue\r\n\r\n")
        #expect(response.status == 503)
        #expect(response.body.isEmpty)
        #expect(Date().timeIntervalSince(started) > 9)  // polled the whole 10 s (the client's 20 s bound the rest)
        // An exec-only probe always fails (periodic mode: one attempt).
        let exec = try QueueProxyFixture(
            env: ["SERVING_READINESS_PROBE": #"{"exec":{"command":["true"]},"periodSeconds":1}"#], app: nil)
        #expect(try exec.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"]).status == 503)
    }

    /// A probe without a usable handler fails at once, in aggressive mode too (upstream's `ProbeContainer` returns
    /// false before any polling: "no probe found", "exec probe not supported").
    @Test(arguments: [#"{}"#, #"{"exec":{"command":["true"]}}"#, #"{"successThreshold":3}"#])
    func q2_probeWithoutAHandlerIs503AtOnce(_ probe: String) throws {
        let qp = try QueueProxyFixture(env: ["SERVING_READINESS_PROBE": probe], app: nil)
        for _ in 0..<2 {  // the second round must not wait for a first one either
            let started = Date()
            let client = try TestSocket.connect(port: qp.port, timeoutSeconds: 5)
            let response = try client.exchange(
                "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: kube-probe/1.30\r\nK-Network-Probe: queue\r\n\r\n")
            #expect(response.status == 503)
            #expect(response.body.isEmpty)
            // At once rather than after 10 s of polling: 5 s leaves room for a loaded machine.
            #expect(Date().timeIntervalSince(started) < 5, "answered after \(Date().timeIntervalSince(started)) s")
        }
    }

    @Test func q3_unexpectedProbeHeaderValues() throws {
        let qp = try QueueProxyFixture(app: Scripts.hello("ok"))
        let wrong = try qp.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: test-probe"])
        #expect(wrong.status == 400 && wrong.bodyText == "unexpected probe header value: test-probe\n")
        let missing = try qp.get(headers: ["User-Agent: kube-probe/1.30"])
        #expect(missing.status == 400 && missing.bodyText == "unexpected probe header value: \n")
    }

    @Test func q4_activatorProbeIsAnsweredHereAndNotCounted() throws {
        let seen = Seen<[(String, String)]>()
        let qp = try QueueProxyFixture(app: recordingApp(seen))
        let first = try qp.nextWindowStat()
        let response = try qp.get(
            "/healthz", headers: ["User-Agent: Knative-Activator-Probe", "K-Network-Probe: queue"])
        #expect(response.status == 200 && response.bodyText == "queue")
        let window = try qp.nextWindowStat(after: first)
        #expect(window.requestCount == 0)
        #expect(seen.all.isEmpty)
    }

    @Test func q5_ingressProbeEchoesTheHash() throws {
        let qp = try QueueProxyFixture(app: Scripts.hello("ok"))
        let ok = try qp.get(headers: [
            "K-Network-Probe: probe", "K-Network-Hash: abc", "User-Agent: Knative-Ingress-Probe",
        ])
        #expect(ok.status == 200 && ok.body.isEmpty && ok.header("K-Network-Hash") == "abc")
        let bad = try qp.get(headers: ["K-Network-Probe: probe", "User-Agent: Knative-Ingress-Probe"])
        #expect(bad.status == 400)
        #expect(bad.bodyText == "a probe request must contain a non-empty \"K-Network-Hash\" header\n")
    }

    @Test func q6_afterSigtermProbesSayShuttingDownButTrafficFlows() throws {
        let qp = try QueueProxyFixture(env: ["QUEUE_DRAIN_QUIET_PERIOD": "3s"], app: Scripts.hello("ok"))
        qp.proxy.signal(SIGTERM)
        #expect(qp.waitForShuttingDown())
        let kubelet = try qp.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"])
        #expect(kubelet.status == 503 && kubelet.bodyText == "shutting down\n")
        let ingress = try qp.get(headers: ["K-Network-Probe: probe", "K-Network-Hash: abc"])
        #expect(ingress.status == 503 && ingress.bodyText == "shutting down\n")
        let normal = try qp.get()
        #expect(normal.status == 200 && normal.bodyText == "ok")
    }

    // MARK: Breaker (§1.6)

    @Test func q7_breakerQueuesTenTimesCCAndServesThemInOrder() throws {
        let release = Gate()
        let order = Seen<String>()
        let qp = try QueueProxyFixture(
            app: { conn, _ in
                while true {
                    let (start, _) = try conn.readHead()
                    let path = String(start.split(separator: " ")[1])
                    order.add(path)
                    if path == "/0" { release.wait() }
                    try conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(path.utf8.count)\r\n\r\n\(path)")
                }
            })
        var clients: [TestSocket] = []
        for i in 0..<11 {
            let client = try TestSocket.connect(port: qp.port)
            try client.send("GET /\(i) HTTP/1.1\r\nHost: h\r\n\r\n")
            clients.append(client)
            if i == 0 { #expect(eventually { !order.all.isEmpty }) }  // /0 holds the only slot
            // Arrival order is the order we test for: the next request goes once this one is in the breaker.
            #expect(qp.waitForDepth(i + 1))
        }
        let started = Date()
        let rejected = try qp.get("/11")
        #expect(rejected.status == 503 && rejected.bodyText == "pending request queue full\n")
        // At once, not after waiting in the queue (the 300 s request timeout); 5 s is room for a loaded machine.
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(order.all == ["/0"])  // one running, ten waiting
        release.open()
        for (i, client) in clients.enumerated() { #expect(try client.readResponse().bodyText == "/\(i)") }
        #expect(order.all == (0..<11).map { "/\($0)" })  // FIFO
    }

    @Test func queuedRequestsTimeOutWhileWaiting() throws {
        let release = Gate()
        let qp = try QueueProxyFixture(
            env: ["REVISION_TIMEOUT_SECONDS": "1"],
            app: { conn, _ in
                _ = try conn.readHead()
                release.wait()
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            })
        let holder = try TestSocket.connect(port: qp.port)
        try holder.send("GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(qp.waitForDepth(1))  // /hold has the slot
        let started = Date()
        let queued = try qp.get("/queued")  // waits behind /hold, then its timeout fires in the queue
        let elapsed = Date().timeIntervalSince(started)
        #expect(queued.status == 504 && queued.bodyText == "request timeout")
        // Not before the 1 s timeout; the upper bound only says it fired at all (the client gives up at 10 s).
        #expect(elapsed > 0.8 && elapsed < 9)
        release.open()
    }

    @Test func a15_autoscalerProbeForAnActivatorIsRefused() throws {
        let qp = try QueueProxyFixture(app: Scripts.hello("ok"))
        let response = try qp.get(headers: ["User-Agent: Knative-Autoscaling-Probe", "K-Network-Probe: activator"])
        #expect(response.status == 400 && response.bodyText == "unexpected probe header value: activator\n")
    }

    @Test func q8_ccZeroNeverQueuesOrRejects() throws {
        let inApp = Seen<Int>()
        let qp = try QueueProxyFixture(
            env: ["CONTAINER_CONCURRENCY": "0"],
            app: { conn, index in
                _ = try conn.readHead()
                inApp.add(index)
                usleep(300_000)  // the app's work: all 500 are in the app at once
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            })
        let clients = try (0..<500).map { _ in try TestSocket.connect(port: qp.port) }
        for client in clients { try client.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n") }
        for client in clients { #expect(try client.readResponse().status == 200) }
        #expect(inApp.all.count == 500)
    }

    @Test func q9_kubeletProbeHeaderBypassesTheBreakerAndStats() throws {
        let release = Gate()
        let qp = try QueueProxyFixture(
            app: { conn, _ in
                while true {
                    let (start, _) = try conn.readHead()
                    if start.contains("/block") { release.wait() }
                    try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                }
            })
        let blocker = try TestSocket.connect(port: qp.port)
        try blocker.send("GET /block HTTP/1.1\r\nHost: h\r\n\r\n")
        let window0 = try qp.nextWindowStat()
        let bypass = try qp.get("/probe", headers: ["K-Kubelet-Probe: x"])  // cc=1 is saturated
        #expect(bypass.status == 200)
        let window1 = try qp.nextWindowStat(after: window0)
        #expect(window1.requestCount == 0)  // only /block was counted, in an earlier window
        release.open()
        #expect(try blocker.readResponse().status == 200)
    }

    // MARK: Request transformation (§1.3, §1.8)

    @Test func q10_hostRestoredRevisionHeadersStrippedProxiedCounted() throws {
        let seen = Seen<[(String, String)]>()
        let qp = try QueueProxyFixture(app: recordingApp(seen))
        let window0 = try qp.nextWindowStat()
        let response = try qp.request(
            "POST / HTTP/1.1\r\nHost: nimporte.pas\r\nK-Original-Host: a-better-host.com\r\nK-Proxy-Request: activator\r\n"
                + "Knative-Serving-Revision: r\r\nKnative-Serving-Namespace: n\r\nContent-Length: 0\r\n\r\n")
        #expect(response.status == 200)
        let head = try #require(seen.all.first)
        let names = head.map { $0.0.lowercased() }
        #expect(head.filter { $0.0.lowercased() == "host" }.map(\.1) == ["a-better-host.com"])
        #expect(!names.contains("k-original-host"))
        #expect(!names.contains("knative-serving-revision") && !names.contains("knative-serving-namespace"))
        #expect(names.contains("k-proxy-request"))
        let window = try qp.nextWindowStat(after: window0)
        #expect(window.requestCount == 1 && window.proxiedRequestCount == 1)
    }

    @Test(arguments: [
        (
            ["X-Forwarded-For: 127.0.0.1, ::1", "X-Forwarded-Host: h", "X-Forwarded-Proto: p"],
            "for=127.0.0.1;host=h;proto=p, for=\"[::1]\""
        ),
        (["X-Forwarded-Proto: p"], "proto=p"),
        (["X-Forwarded-For: 127.0.0.1, ::1"], "for=127.0.0.1, for=\"[::1]\""),
        (["X-Forwarded-For: ,,,"], "for=, for=, for="),
        (["Forwarded: for=a, for=b", "X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: p"], "for=a, for=b"),
    ])
    func q11_q12_forwardedShim(_ headers: [String], _ expected: String) throws {
        let seen = Seen<[(String, String)]>()
        let qp = try QueueProxyFixture(app: recordingApp(seen))
        let response = try qp.get(headers: headers)
        #expect(response.status == 200, "\(response.status) \(response.bodyText) stderr: \(qp.proxy.stderr)")
        let head = try #require(seen.all.first)
        #expect(head.filter { $0.0.lowercased() == "forwarded" }.map(\.1) == [expected])
    }

    // MARK: Timeouts (§1.7)

    @Test func q13_overallTimeoutIs504() throws {
        let qp = try QueueProxyFixture(
            env: ["REVISION_TIMEOUT_SECONDS": "1"],
            app: { conn, _ in
                _ = try conn.readHead()
                _ = conn.isClosedByPeer()  // never answers
            })
        let started = Date()
        let response = try qp.get()
        let elapsed = Date().timeIntervalSince(started)
        #expect(response.status == 504 && response.bodyText == "request timeout")
        #expect(elapsed > 0.9 && elapsed < 9)  // the 1 s timeout, however late a loaded machine fires it
    }

    /// After its 504 Go's server keeps a keep-alive connection whose request was read whole; so do we
    /// (`ExchangeEnding.answered` and `ReuseRule`, the same for every exchange kind).
    @Test func q13_theConnectionGoesOnAfterA504() throws {
        let qp = try QueueProxyFixture(
            env: ["REVISION_TIMEOUT_SECONDS": "1"],
            app: { conn, _ in
                _ = try conn.readHead()
                _ = conn.isClosedByPeer()  // never answers
            })
        let client = try TestSocket.connect(port: qp.port)
        let first = try client.exchange("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(first.status == 504 && first.header("Connection") == nil)
        let second = try client.exchange("GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(second.status == 504 && second.bodyText == "request timeout")
        // A client that asked to close is told so.
        let last = try client.exchange("GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        #expect(last.status == 504 && last.header("Connection") == "close")
    }

    @Test func q14_responseStartTimeoutIsIgnoredOnceStarted() throws {
        let qp = try QueueProxyFixture(
            env: ["REVISION_RESPONSE_START_TIMEOUT_SECONDS": "1"],
            app: { conn, _ in
                _ = try conn.readHead()
                // The response starts at once (the spec's vector waits 0.5 s first, which only makes the test
                // depend on the machine's load), then stalls past the 1 s response-start timeout.
                try conn.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
                usleep(1_300_000)  // the app stalls past the 1 s response-start timeout
                try conn.send("0\r\n\r\n")
            })
        let response = try qp.get()
        #expect(response.status == 200 && response.bodyText == "hi" && response.isComplete, "\(response)")
    }

    @Test func q15_idleTimeout() throws {
        let stall = try QueueProxyFixture(
            env: ["REVISION_IDLE_TIMEOUT_SECONDS": "1"],
            app: { conn, _ in
                _ = try conn.readHead()
                try conn.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfoo\r\n")
                _ = conn.isClosedByPeer()
            })
        let ended = try stall.get()
        #expect(ended.status == 200 && ended.bodyText == "foorequest timeout")
        #expect(ended.isComplete)  // the final chunk follows the text, as upstream's Go server writes it
        let steady = try QueueProxyFixture(
            env: ["REVISION_IDLE_TIMEOUT_SECONDS": "1"],
            app: { conn, _ in
                _ = try conn.readHead()
                try conn.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for word in ["foo", "bar", "baz", "test"] {
                    try conn.send("\(String(word.utf8.count, radix: 16))\r\n\(word)\r\n")
                    usleep(300_000)  // well inside the 1 s idle timeout, even on a loaded machine
                }
                try conn.send("0\r\n\r\n")
            })
        let whole = try steady.get()
        #expect(whole.status == 200 && whole.bodyText == "foobarbaztest" && whole.isComplete)
    }

    /// Conformance's TestRevisionTimeout, "writes first byte before timeout": the app writes its first bytes,
    /// then stalls past `timeoutSeconds`; the client reads the whole body: status 200, the bytes, the text,
    /// and a complete response.
    @Test func q13b_overallTimeoutAfterFirstByteEndsTheResponse() throws {
        let qp = try QueueProxyFixture(
            env: ["REVISION_TIMEOUT_SECONDS": "1"],
            app: { conn, _ in
                _ = try conn.readHead()
                try conn.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                _ = conn.isClosedByPeer()  // stalls until the queue-proxy gives up on it
            })
        let response = try qp.get()
        #expect(response.status == 200 && response.bodyText == "firstrequest timeout" && response.isComplete)
    }

    @Test func q16_deadAppIs502WithGoText() throws {
        let qp = try QueueProxyFixture(app: nil)
        let response = try qp.get()
        #expect(response.status == 502)
        #expect(response.bodyText == "dial tcp 127.0.0.1:\(qp.userPort): connect: connection refused\n")
    }

    // MARK: Stats (§1.9, §3.1)

    @Test func q17_metricsBeforeTheFirstTick() throws {
        let qp = try QueueProxyFixture(app: Scripts.hello("ok"))
        let (response, stat) = try qp.stat()
        #expect(response.status == 200)
        #expect(response.header("Content-Type") == "application/protobuf")
        #expect(stat == Stat(podName: "pod-1"))
        let withAccept = try qp.request(
            "GET /metrics HTTP/1.1\r\nHost: h\r\nAccept: text/plain\r\n\r\n", port: qp.metricsPort)
        #expect(withAccept.header("Content-Type") == "application/protobuf")
    }

    @Test func q18_q19_windowAccounting() {
        // Q18: 39 arrivals (15 via the activator); average concurrency 3 (proxied 2) over a 1 s window.
        let stats = RequestStats(nowMs: 0)
        for _ in 0..<2 { stats.requestIn(proxied: true, nowMs: 0) }
        stats.requestIn(proxied: false, nowMs: 0)
        for _ in 0..<13 {
            stats.requestIn(proxied: true, nowMs: 10)
            stats.requestOut(proxied: true, nowMs: 10)
        }
        for _ in 0..<23 {
            stats.requestIn(proxied: false, nowMs: 20)
            stats.requestOut(proxied: false, nowMs: 20)
        }
        let q18 = stats.closeWindow(nowMs: 1000)
        #expect(q18.requestCount == 39 && q18.proxiedRequestCount == 15)
        #expect(q18.averageConcurrency == 3 && q18.averageProxiedConcurrency == 2)
        // Q19: two back-to-back 500 ms requests fill one window: average 1.0, two requests.
        let back = RequestStats(nowMs: 0)
        back.requestIn(proxied: false, nowMs: 0)
        back.requestOut(proxied: false, nowMs: 500)
        back.requestIn(proxied: false, nowMs: 500)
        back.requestOut(proxied: false, nowMs: 1000)
        let q19 = back.closeWindow(nowMs: 1000)
        #expect(q19.averageConcurrency == 1.0 && q19.requestCount == 2)
        // Concurrency carries over into the next window.
        back.requestIn(proxied: false, nowMs: 1000)
        #expect(back.closeWindow(nowMs: 2000).averageConcurrency == 1.0)
        #expect(back.closeWindow(nowMs: 3000).averageConcurrency == 1.0)
    }

    @Test func reportedConcurrencyMatchesAKnownLoad() throws {
        // Two requests held in the app across whole windows: the load is exactly 2 whatever the machine's
        // speed (two clients looping on 200 ms requests measured their own gaps under load, not the stats).
        let release = Gate()
        let inApp = Counter()
        let qp = try QueueProxyFixture(
            env: ["CONTAINER_CONCURRENCY": "0"],
            app: { conn, _ in
                _ = try conn.readHead()
                inApp.increment()
                release.wait()
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            })
        let clients = try (0..<2).map { _ in try TestSocket.connect(port: qp.port) }
        for client in clients { try client.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n") }
        #expect(eventually { inApp.value == 2 })
        let first = try qp.nextWindowStat()  // may have begun before the requests arrived
        let full = try qp.nextWindowStat(after: first)  // a whole window with both in flight
        release.open()
        release.open()
        for client in clients { #expect(try client.readResponse().status == 200) }
        #expect(abs(full.averageConcurrentRequests - 2.0) <= 0.01, "reported \(full.averageConcurrentRequests)")
        #expect(full.requestCount == 0)  // arrivals are counted in their own window only
        #expect(full.processUptime > 0)
    }

    // MARK: Drain (§1.15)

    @Test func q20_waitForDrainWithoutSigtermResetsAfterOneSecond() throws {
        let qp = try QueueProxyFixture(env: ["QUEUE_DRAIN_QUIET_PERIOD": "5s"], app: Scripts.hello("ok"))
        let started = Date()
        let drained = try qp.request("GET /wait-for-drain HTTP/1.1\r\nHost: h\r\n\r\n", port: qp.adminPort)
        let elapsed = Date().timeIntervalSince(started)
        #expect(drained.status == 200 && drained.body.isEmpty)
        #expect(elapsed > 0.9 && elapsed < 4.5)  // after 1 s, not the 5 s quiet period
        // The drain was reset: probes are healthy again.
        #expect(try qp.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"]).status == 200)
        #expect(try qp.request("GET /other HTTP/1.1\r\nHost: h\r\n\r\n", port: qp.adminPort).status == 404)
    }

    @Test func q20_waitForDrainAfterSigtermReturnsAfterTheQuietPeriod() throws {
        let qp = try QueueProxyFixture(env: ["QUEUE_DRAIN_QUIET_PERIOD": "1500ms"], app: Scripts.hello("ok"))
        let admin = try TestSocket.connect(port: qp.adminPort)
        let started = Date()  // the quiet period starts at the signal
        qp.proxy.signal(SIGTERM)
        #expect(qp.waitForShuttingDown())  // handled: a wait-for-drain now waits for the quiet period
        let drained = try admin.exchange("GET /wait-for-drain HTTP/1.1\r\nHost: h\r\n\r\n")
        let elapsed = Date().timeIntervalSince(started)
        #expect(drained.status == 200)
        #expect(elapsed > 1.4 && elapsed < 9)  // the 1.5 s quiet period, however late a loaded machine ends it
        #expect(qp.proxy.waitForExit() == 0)
    }

    @Test func q21_routeTag() {
        #expect(RouteTag.value(tag: nil, defaultRoute: nil) == "kn:disabled")
        #expect(RouteTag.value(tag: "test-tag", defaultRoute: nil) == "test-tag")
        #expect(RouteTag.value(tag: nil, defaultRoute: "true") == "kn:default")
        #expect(RouteTag.value(tag: "test-tag", defaultRoute: "true") == "kn:undefined")
    }

    @Test func routeTagAndStatusShowInPrometheusMetrics() throws {
        let qp = try QueueProxyFixture(app: Scripts.hello("ok"))
        _ = try qp.get(headers: ["Knative-Serving-Tag: blue"])
        _ = try qp.get()
        let text = try qp.request("GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n", port: qp.userMetricsPort).bodyText
        #expect(text.contains("kn_route_tag=\"blue\",status_class=\"2xx\"} 1"))
        #expect(text.contains("kn_route_tag=\"kn:disabled\",status_class=\"2xx\"} 1"))
        #expect(text.contains("kn_serving_invocation_duration_seconds_count{"))
        #expect(text.contains("kn_serving_queue_depth{"))
    }

    @Test func q22_httpProbeWithThresholdPathQueryAndHeaders() throws {
        let probes = Seen<[(String, String)]>()
        let app = try ScriptedUpstream { conn, _ in
            let (start, fields) = try conn.readHead()
            probes.add([("start", start)] + fields)
            try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        let json =
            #"{"httpGet":{"path":"health?foo=bar","port":\#(app.port),"host":"127.0.0.1","scheme":"HTTP","httpHeaders":[{"name":"Testkey","value":"Testval"}]},"periodSeconds":0,"successThreshold":3}"#
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(app.port)", "SERVING_READINESS_PROBE": json], app: nil)
        let response = try qp.get(headers: ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"])
        #expect(response.status == 200 && response.bodyText == "queue")
        #expect(probes.all.count >= 3)
        let first = try #require(probes.all.first)
        #expect(first[0].1 == "GET /health?foo=bar HTTP/1.1")
        #expect(first.contains { $0.0 == "Testkey" && $0.1 == "Testval" })
        #expect(first.contains { $0.0 == "User-Agent" && $0.1.hasPrefix("kube-probe/") })
    }

    // MARK: Wire (§5.3)

    @Test func w1_statAndWireStatMessagesBytes() {
        var stat = Stat(podName: "p")
        stat.averageConcurrentRequests = 1
        stat.requestCount = 1
        let statBytes: [UInt8] = [
            0x0a, 0x01, 0x70, 0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
        ]
        #expect(stat.encoded() == statBytes)
        let wrapper = WireStatMessages.encode([WireStatMessage(namespace: "ns", name: "rev", stat: stat)])
        #expect(wrapper == [0x0a, 0x20, 0x0a, 0x02, 0x6e, 0x73, 0x12, 0x03, 0x72, 0x65, 0x76, 0x1a, 0x15] + statBytes)
        #expect(WireStatMessages.decode(wrapper) == [WireStatMessage(namespace: "ns", name: "rev", stat: stat)])
        #expect(Stat.decode(statBytes) == stat)
    }

    // MARK: Request log (§1.13)

    @Test func requestLogWithTheDefaultTemplate() throws {
        let config =
            #"{"enableRequestLog":true,"requestLogTemplate":"\#(RequestLogTemplate.known[0].replacingOccurrences(of: "\"", with: "\\\""))"}"#
        let qp = try QueueProxyFixture(env: ["OBSERVABILITY_CONFIG": config], app: Scripts.hello("ok"))
        #expect(
            try qp.get("/logged?x=1", headers: ["User-Agent: tester", "traceparent: 00-abc123-def-01"]).status == 200)
        #expect(eventually { qp.proxy.stdout.contains("/logged") })
        let line = try #require(qp.proxy.stdout.split(separator: "\n").first { $0.contains("/logged") })
        let json = try JSON.parse(String(line))
        #expect(json["httpRequest"]?["requestMethod"]?.stringValue == "GET")
        #expect(json["httpRequest"]?["requestUrl"]?.stringValue == "/logged?x=1")
        #expect(line.contains(#"/logged?x\u003D1"#))  // Go's `js` escaping
        #expect(json["httpRequest"]?["status"]?.intValue == 200)
        #expect(json["httpRequest"]?["userAgent"]?.stringValue == "tester")
        #expect(json["traceId"]?.stringValue == "abc123")
    }

    @Test func customRequestLogTemplateIsReportedAsUnsupported() throws {
        let qp = try QueueProxyFixture(
            env: ["OBSERVABILITY_CONFIG": #"{"enableRequestLog":true,"requestLogTemplate":"{{.Request.Method}}"}"#],
            app: Scripts.hello("ok"))
        #expect(qp.proxy.stderr.contains("custom Go templates are not supported"))
    }
}
