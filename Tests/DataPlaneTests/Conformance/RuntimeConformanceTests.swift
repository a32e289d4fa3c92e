// Knative's runtime conformance tests (upstream test/conformance/runtime), run against kn-local in both pod
// network modes: what the user container sees (env, request headers, protocol) and when it gets traffic.
// Each test is named after the upstream test it mirrors.
import Foundation
import Glibc
import Testing

@Suite(.timeLimit(.minutes(2)))
struct RuntimeConformanceTests {
    /// `TestMustEnvVars`: `PORT` is the containerPort. A MUST only in namespace mode: loopback pods share one
    /// network, so each gets a port of its own as `PORT` (README, kn-local) and the app must honour it.
    @Test("TestMustEnvVars", arguments: PodMode.available)
    func mustEnvVars(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        try cluster.apply(ServiceSpec(name: "must-env", app: "runtime", containerPort: 8801).yaml)
        try await cluster.waitReady("must-env")
        let info = try cluster.runtimeInfo(host: cluster.host("must-env"))
        switch mode {
        case .namespace:
            #expect(info.env["PORT"] == "8801")
        case .loopback:
            let port = cluster.kn.pods().first?["userPort"] as? Int
            #expect(port != nil && info.env["PORT"] == port.map(String.init), "\(info.env)")
        }
    }

    /// `TestShouldEnvVars`: `K_SERVICE`, `K_CONFIGURATION` and `K_REVISION` name the serving objects.
    @Test("TestShouldEnvVars", arguments: PodMode.available)
    func shouldEnvVars(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        try cluster.apply(ServiceSpec(name: "should-env", app: "runtime").yaml)
        try await cluster.waitReady("should-env")
        let info = try cluster.runtimeInfo(host: cluster.host("should-env"))
        #expect(info.env["K_SERVICE"] == "should-env")
        #expect(info.env["K_CONFIGURATION"] == "should-env")
        #expect(info.env["K_REVISION"] == "should-env-00001")
    }

    /// `TestMustHaveHeadersSet`: the request arrives with the Host the client used (the activator's own
    /// routing header, K-Original-Host, is gone by then), as a GET to the path it asked for.
    @Test("TestMustHaveHeadersSet", arguments: PodMode.available)
    func mustHaveHeadersSet(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        try cluster.apply(ServiceSpec(name: "must-headers", app: "runtime").yaml)
        try await cluster.waitReady("must-headers")
        let info = try cluster.runtimeInfo(host: cluster.host("must-headers"))
        #expect(info.host == "must-headers.default.example.com")
        #expect(info.values("Host") == ["must-headers.default.example.com"])
        #expect(info.method == "GET" && info.path == "/runtime")
        #expect(info.values("K-Original-Host").isEmpty, "\(info.headers)")
    }

    /// `TestShouldHaveHeadersSet`: user headers pass as sent; X-Forwarded-Proto is http(s); X-Forwarded-For is
    /// a list of IP addresses; Forwarded (RFC 7239, made by the queue-proxy from X-Forwarded-*) names the
    /// client and the proto; a W3C `traceparent` passes unchanged (upstream checks B3 ids that its tracing
    /// adds; we trace nothing, so the client's context must arrive intact).
    @Test("TestShouldHaveHeadersSet", arguments: PodMode.available)
    func shouldHaveHeadersSet(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        try cluster.apply(ServiceSpec(name: "should-headers", app: "runtime").yaml)
        try await cluster.waitReady("should-headers")
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let info = try cluster.runtimeInfo(
            host: cluster.host("should-headers"),
            headers: [("this-was-user-set", "a value"), ("traceparent", traceparent)])
        #expect(info.values("this-was-user-set") == ["a value"])
        #expect(info.values("traceparent") == [traceparent])
        let proto = info.values("X-Forwarded-Proto")
        #expect(!proto.isEmpty && proto.allSatisfy { $0 == "http" || $0 == "https" }, "\(info.headers)")
        let forwardedFor = info.values("X-Forwarded-For")
        #expect(forwardedFor.count == 1, "\(info.headers)")
        let nodes = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(!nodes.isEmpty && nodes.allSatisfy(isIPAddress), "X-Forwarded-For: \(forwardedFor)")
        #expect(nodes.first == "127.0.0.1", "the client's address first: \(nodes)")
        let forwarded = info.values("Forwarded")
        #expect(forwarded.count == 1, "\(info.headers)")
        #expect(forwarded.first?.hasPrefix("for=127.0.0.1") == true, "Forwarded: \(forwarded)")
        #expect(forwarded.first?.contains("proto=http") == true, "Forwarded: \(forwarded)")
        #expect(info.values("K-Original-Host").isEmpty)
    }

    /// `TestProtocols`: a port named h2c gets HTTP/2 (h2c) at the app, http1 or no name HTTP/1.1, whatever the
    /// client spoke (here HTTP/1.1 through the ingress).
    @Test("TestProtocols", arguments: PodMode.available)
    func protocols(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        let cases: [(String, String?, String)] = [
            ("proto-h2c", "h2c", "HTTP/2.0"), ("proto-http1", "http1", "HTTP/1.1"), ("proto-default", nil, "HTTP/1.1"),
        ]
        for (name, port, _) in cases {
            try cluster.apply(ServiceSpec(name: name, app: "protocols", portName: port).yaml)
        }
        for (name, port, want) in cases {
            try await cluster.waitReady(name)
            let response = try cluster.get(host: cluster.host(name))
            let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
            #expect(object?["protocol"] as? String == want, "port \(port ?? "(no name)"): \(response.bodyText)")
        }
    }

    /// `TestProbeRuntime` (httpGet, tcpSocket): a revision with either readiness probe gets ready and serves,
    /// and still scales to zero when idle (the probes are not traffic).
    @Test("TestProbeRuntime", arguments: PodMode.available)
    func probeRuntime(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        let probes = [
            ("probe-http", "            httpGet:\n              path: /healthz\n"),
            ("probe-tcp", "            tcpSocket: {}\n"),
        ]
        for (name, probe) in probes {
            try cluster.apply(ServiceSpec(name: name, app: "readiness", readinessProbe: probe).yaml)
        }
        for (name, _) in probes {
            try await cluster.waitReady(name)
            #expect(try cluster.get(host: cluster.host(name)).bodyText.hasPrefix("ready "))
        }
        // Idle for the stable window (3 s) + grace (1 s): both back at zero.
        #expect(await pollUntil(seconds: 20) { cluster.kn.pods(phase: nil).isEmpty }, "\(cluster.kn.process.stdout)")
    }

    /// Readiness (the runtime contract's "not ready → no traffic", upstream `TestProbeRuntime`'s premise): a
    /// revision whose readiness probe never passes gets no request; the service answers as not ready.
    @Test("TestProbeRuntime (never ready: no traffic)", arguments: PodMode.available)
    func neverReadyGetsNoTraffic(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode, ["--progress-deadline=2s"])
        defer { cluster.stop() }
        let probe = "            httpGet:\n              path: /healthz\n            periodSeconds: 1\n"
        // min-scale 1: without traffic the autoscaler would otherwise take the pod away after the stable window
        // (3 s here), which a loaded machine can reach before the pod is seen failing its probe.
        try cluster.apply(
            ServiceSpec(
                name: "never-ready", app: "readiness", env: [("READY", "false")], readinessProbe: probe,
                annotations: ["autoscaling.knative.dev/min-scale": "1"]
            ).yaml)
        // The pod runs, its app listens and answers the probes 503.
        #expect(
            await pollUntil(seconds: 20) {
                cluster.kn.pods(phase: nil).contains { ($0["status"] as? String) == "ProbeFailing" }
            },
            "\(cluster.kn.objects("pods")) (control API: \(cluster.kn.lastControlError.withLock { $0 }))\n\(cluster.kn.process.stdout.suffix(3000))"
        )
        for _ in 0..<5 {
            let response = try cluster.get(host: cluster.host("never-ready"))
            #expect(response.status == 404, "\(response.status) \(response.bodyText)")
        }
        let logs = cluster.kn.pods(phase: nil).compactMap { $0["logs"] as? String }
        #expect(!logs.isEmpty)
        for directory in logs {
            let log = (try? String(contentsOfFile: directory + "/user-container.log", encoding: .utf8)) ?? ""
            #expect(!log.contains("request "), "the app got traffic: \(log)")
        }
    }

    /// A pod whose readiness probe starts failing after it was ready leaves the endpoints (Kubernetes'
    /// periodic readiness probe, `periodSeconds`/`failureThreshold`): with two pods, traffic goes to the
    /// other one only, and `get pods` shows it 1/2 ProbeFailing.
    @Test(
        "TestProbeRuntime (ready, then failing: no more traffic)",
        arguments: PodMode.available)
    func failingAfterStartupGetsNoTraffic(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        let probe = """
                        httpGet:
                          path: /healthz
                        periodSeconds: 1
                        failureThreshold: 1

            """
        try cluster.apply(
            ServiceSpec(
                name: "flaky", app: "readiness", readinessProbe: probe,
                annotations: ["autoscaling.knative.dev/min-scale": "2"]
            ).yaml)
        try await cluster.waitReady("flaky")
        #expect(await pollUntil(seconds: 20) { cluster.kn.pods().count == 2 })
        let toggled = try cluster.get(host: cluster.host("flaky"), path: "/toggle").bodyText
        let pid = toggled.split(whereSeparator: \.isWhitespace).last.map(String.init) ?? "?"
        #expect(toggled.hasPrefix("ready=false"))
        // Within a few probe periods the toggled pod gets nothing more (20 in a row from the other pod: by
        // chance 1 in a million while both get traffic).
        let moved = await pollUntil(seconds: 10) {
            (0..<20).allSatisfy { _ in
                let body = (try? cluster.get(host: cluster.host("flaky")).bodyText) ?? ""
                return body.hasPrefix("ready ") && !body.hasSuffix(" \(pid)\n")
            }
        }
        #expect(moved, "pod \(pid) still gets traffic")
        let pod = cluster.kn.pods(phase: nil).first { ($0["userPid"] as? Int).map(String.init) == pid }
        #expect(pod?["ready"] as? String == "1/2" && pod?["status"] as? String == "ProbeFailing", "\(pod ?? [:])")
    }
}

/// Whether `text` is an IPv4 or IPv6 address.
func isIPAddress(_ text: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
}
