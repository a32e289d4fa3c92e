// HTTP/2 through the real binaries (issue 6): h2c by prior knowledge and by Upgrade with Debian's nghttp, gRPC's
// four call kinds with grpcio (Tests/grpc/echo.py, run from the virtualenv ./test.sh makes), per-message timing
// that would expose buffering, cc=1 holding ten streams of one connection to one at a time, timeouts, flow
// control against a reader that never reads, GOAWAY on drain, and HTTP/1.1 clients of an h2c-only app.
import Foundation
import Glibc
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

/// The gRPC peer: `Tests/grpc/echo.py` under the test virtualenv's python.
enum GRPCPeer {
    static var packageRoot: URL { PackageRoot.url }

    static var python: URL {
        if let path = ProcessInfo.processInfo.environment["KN_TEST_PYTHON"] { return URL(fileURLWithPath: path) }
        return packageRoot.appendingPathComponent(".build/test-venv/bin/python")
    }

    static var script: String { packageRoot.appendingPathComponent("Tests/grpc/echo.py").path }

    static func checkInstalled() throws {
        guard FileManager.default.isExecutableFile(atPath: python.path) else {
            throw TestError("no grpcio virtualenv at \(python.path): run ./test.sh (it creates .build/test-venv)")
        }
    }

    /// Starts the gRPC server on a free port.
    static func server() throws -> (ChildProcess, UInt16) {
        try checkInstalled()
        let port = freePort()
        let process = try ChildProcess(executable: python, environment: [:], arguments: [script, "server", "\(port)"])
        guard process.waitForPort(port, seconds: 20) else {
            throw TestError("gRPC server did not start: \(process.stderr)")
        }
        return (process, port)
    }

    /// Starts one client call of `kind` through 127.0.0.1:`port` (see echo.py).
    static func start(_ port: UInt16, _ kind: String, authority: String? = nil) throws -> ChildProcess {
        try checkInstalled()
        return try ChildProcess(
            executable: python, environment: [:],
            arguments: [script, "client", "127.0.0.1:\(port)", kind] + (authority.map { [$0] } ?? []))
    }

    /// The JSON line a finished client printed.
    static func result(_ client: ChildProcess) throws -> [String: Any] {
        guard client.waitForExit(seconds: 40) == 0,
            let line = client.stdout.split(separator: "\n").last,
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        else { throw TestError("gRPC client failed: \(client.stdout) \(client.stderr.suffix(1500))") }
        return object
    }

    static func call(_ port: UInt16, _ kind: String, authority: String? = nil) throws -> [String: Any] {
        try result(try start(port, kind, authority: authority))
    }
}

/// Our `helloworld` (HTTP/1.1 and h2c on one port) on a free port.
func startHelloworld() throws -> (ChildProcess, UInt16) {
    let port = freePort()
    let app = try ChildProcess("helloworld", environment: ["PORT": "\(port)"])
    guard app.waitForPort(port) else { throw TestError("helloworld did not start: \(app.stderr)") }
    return (app, port)
}

/// Debian's nghttp client, run to the end. - Returns: its verbose output.
func nghttp(_ arguments: [String]) throws -> String {
    let url = URL(fileURLWithPath: "/usr/bin/nghttp")
    guard FileManager.default.isExecutableFile(atPath: url.path) else {
        throw TestError("nghttp missing: ./test.sh installs nghttp2-client")
    }
    let process = try ChildProcess(executable: url, environment: [:], arguments: arguments)
    guard process.waitForExit(seconds: 20) == 0 else {
        throw TestError("nghttp \(arguments) failed: \(process.stdout) \(process.stderr)")
    }
    return process.stdout
}

@Suite(.serialized, .timeLimit(.minutes(3)))
struct HTTP2ProxyTests {
    /// The four call kinds and trailers, with timing: a proxy that held a stream back would show a message
    /// arriving ≥ 200 ms (the gap between sends) after it left, or a ping-pong that deadlocks.
    static func checkAllCallKinds(_ port: UInt16, authority: String? = nil) throws {
        let unary = try GRPCPeer.call(port, "unary", authority: authority)
        #expect(unary["reply"] as? String == "echo:hello")
        #expect(unary["code"] as? String == "OK")
        #expect((unary["trailers"] as? [String: String])?["x-detail"] == "trailer-kept")

        let failing = try GRPCPeer.call(port, "unary-error", authority: authority)
        #expect(failing["code"] as? String == "NOT_FOUND")
        #expect(failing["details"] as? String == "no such thing: fail")
        #expect((failing["trailers"] as? [String: String])?["x-detail"] == "trailer-kept")

        for kind in ["server-stream", "client-stream"] {
            let result = try GRPCPeer.call(port, kind, authority: authority)
            let delays = result["delays"] as? [Double] ?? []
            #expect(delays.count == 5, "\(kind): \(result)")
            #expect(delays.allSatisfy { $0 < 150 }, "\(kind) delays (ms) \(delays): a message waited for the next")
        }
        let bidi = try GRPCPeer.call(port, "bidi", authority: authority)
        let rtts = bidi["rtts"] as? [Double] ?? []
        #expect(rtts.count == 5 && rtts.allSatisfy { $0 < 150 }, "bidi round trips (ms) \(rtts)")
    }

    @Test func grpcCallKindsThroughQueueProxy() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        try Self.checkAllCallKinds(qp.port)
    }

    @Test func grpcCallKindsThroughActivatorAndQueueProxy() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        let activator = try ActivatorFixture()
        try activator.revision("grpc-00001", cc: 0)
        let put = try activator.admin(
            "PUT", "/v1/revisions/default/grpc-00001/endpoints", #"{"addresses": ["127.0.0.1:\#(qp.port)"]}"#)
        #expect(put.status == 200)
        // Routed by Host: <revision>.<namespace>.svc.<cluster domain> (spec §2.3).
        try Self.checkAllCallKinds(activator.port, authority: "grpc-00001.default.svc.cluster.local")

        // What the app sees after both proxies' header rules (spec §1.8, §2.7), over h2c.
        let seen = try GRPCPeer.call(activator.port, "headers", authority: "grpc-00001.default.svc.cluster.local")
        let headers = seen["headers"] as? [String: String] ?? [:]
        #expect(headers["knative-serving-revision"] == nil && headers["knative-serving-namespace"] == nil, "\(headers)")
        #expect(headers["k-proxy-request"] == "activator", "\(headers)")
        #expect(headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1, 127.0.0.1", "\(headers)")
        // The queue-proxy's Forwarded shim reads X-Forwarded-For as it arrived (before its own append).
        #expect(headers["forwarded"] == "for=10.0.0.1, for=127.0.0.1", "\(headers)")
    }

    @Test func activatorHoldsStreamsAtZeroAndKeepsCcOneAcrossStreams() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        // The queue-proxy has no limit: only the activator's throttler can hold the app to one call at a time.
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        let activator = try ActivatorFixture()
        try activator.revision("grpc-00001", cc: 1)
        let authority = "grpc-00001.default.svc.cluster.local"
        // At zero: the stream (with its request body) waits in the activator until a pod appears.
        let waiting = try GRPCPeer.start(activator.port, "unary", authority: authority)
        let queued = eventually(seconds: 20) {
            let metrics = try? TestSocket.connect(port: activator.metricsPort)
                .exchange("GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").bodyText
            return metrics?.contains("kn_revision_request_queued{revision=\"default/grpc-00001\"} 1") == true
        }
        #expect(queued, "the stream never showed as queued")
        let put = try activator.admin(
            "PUT", "/v1/revisions/default/grpc-00001/endpoints", #"{"addresses": ["127.0.0.1:\#(qp.port)"]}"#)
        #expect(put.status == 200)
        let unary = try GRPCPeer.result(waiting)
        #expect(unary["reply"] as? String == "echo:hello" && unary["code"] as? String == "OK", "\(unary)")
        // Ten streams on one connection, cc = 1: the throttler lets one at a time reach the pod.
        let burst = try GRPCPeer.call(activator.port, "concurrent-10", authority: authority)
        #expect(burst["ok"] as? Int == 10 && burst["max"] as? Int == 1, "\(burst)")
    }

    @Test func h2cPriorKnowledgeAndUpgradeThroughBothProxies() throws {
        let (app, appPort) = try startHelloworld()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        let activator = try ActivatorFixture()
        try activator.revision("hello-00001", cc: 0)
        _ = try activator.admin(
            "PUT", "/v1/revisions/default/hello-00001/endpoints", #"{"addresses": ["127.0.0.1:\#(qp.port)"]}"#)
        let routing = ["-H", "knative-serving-namespace: default", "-H", "knative-serving-revision: hello-00001"]
        for (port, headers) in [(qp.port, [String]()), (activator.port, routing)] {
            let prior = try nghttp(["-v"] + headers + ["http://127.0.0.1:\(port)/"])
            #expect(prior.contains(":status: 200") && prior.contains("Hello World!"), "\(prior)")
            #expect(!prior.contains("HTTP Upgrade"))
            let upgraded = try nghttp(["-v", "-u"] + headers + ["http://127.0.0.1:\(port)/"])
            #expect(upgraded.contains("HTTP Upgrade success") && upgraded.contains("Hello World!"), "\(upgraded)")
            // The same port still speaks HTTP/1.1.
            let client = try TestSocket.connect(port: port)
            let plain = try client.exchange(
                "GET / HTTP/1.1\r\nHost: h\r\n"
                    + stride(from: 1, to: headers.count, by: 2).map { headers[$0] + "\r\n" }.joined() + "\r\n")
            #expect(plain.status == 200 && plain.bodyText == "Hello World!\n")
        }
    }

    @Test func ccOneLetsOneOfTenStreamsOnOneConnectionIntoTheAppAtATime() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let limited = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "1"], app: nil)
        let result = try GRPCPeer.call(limited.port, "concurrent-10")
        #expect(result["ok"] as? Int == 10)
        #expect(result["max"] as? Int == 1, "\(result)")
        // Control: without a limit the same ten streams overlap in the app (so the check above can fail).
        let unlimited = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        let free = try GRPCPeer.call(unlimited.port, "concurrent-10")
        #expect((free["max"] as? Int ?? 0) > 1, "\(free)")
    }

    @Test func grpcReadinessProbeAgainstAGrpcioHealthService() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let probe = #"{"grpc": {"port": \#(appPort), "service": ""}, "periodSeconds": 1, "timeoutSeconds": 1}"#
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "SERVING_READINESS_PROBE": probe], app: nil)
        let kubelet = ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"]
        let ready = try qp.get(headers: kubelet)
        #expect(ready.status == 200 && ready.bodyText == "queue", "\(ready.status) \(ready.bodyText)")
        app.signal(SIGKILL)
        _ = app.waitForExit()
        let gone = try qp.get(headers: kubelet)
        #expect(gone.status == 503, "\(gone.status) \(gone.bodyText)")
    }

    @Test func http2AutoDetectionProbesOverH2c() throws {
        // An app that speaks only HTTP/2: with ENABLE_HTTP2_AUTO_DETECTION the HTTP probe finds it ready over h2c
        // (a plain GET, then one with the probe's headers); without, the HTTP/1.1 probe cannot reach it.
        let app = try FakeH2Server()
        defer { app.server.stop() }
        let probe =
            #"{"httpGet": {"port": \#(app.port), "path": "/ready", "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}, "periodSeconds": 1, "timeoutSeconds": 1}"#
        let kubelet = ["User-Agent: kube-probe/1.30", "K-Network-Probe: queue"]
        let detecting = try QueueProxyFixture(
            env: [
                "USER_PORT": "\(app.port)", "SERVING_READINESS_PROBE": probe, "ENABLE_HTTP2_AUTO_DETECTION": "true",
            ], app: nil)
        let ready = try detecting.get(headers: kubelet)
        #expect(ready.status == 200 && ready.bodyText == "queue", "\(ready.status) \(ready.bodyText)")
        let requests = app.requests.all
        #expect(requests.count >= 2, "\(requests)")
        #expect(requests.first.map { !$0.contains { $0.0 == "x-probe" } } == true, "the first GET has no custom header")
        #expect(requests.dropFirst().first.map { $0.contains { $0 == ("x-probe", "yes") } } == true, "\(requests)")
        #expect(
            requests.allSatisfy {
                $0.contains { $0 == (":path", "/ready") } && $0.contains { $0 == ("user-agent", "kube-probe//") }
            })

        let plain = try QueueProxyFixture(
            env: ["USER_PORT": "\(app.port)", "SERVING_READINESS_PROBE": probe], app: nil)
        #expect(try plain.get(headers: kubelet).status == 503)
    }

    @Test func timeoutsGive504BeforeTheResponseAndEndTheStreamAfter() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0", "REVISION_TIMEOUT_SECONDS": "1"], app: nil)
        let started = Date()
        let slow = try GRPCPeer.call(qp.port, "slow-8000")
        #expect(slow["code"] as? String == "UNAVAILABLE", "\(slow)")
        #expect((slow["details"] as? String ?? "").contains("504"), "\(slow)")
        // The 504 came from the 1 s timeout, not the app's answer at 8 s (the gap absorbs the Python client's
        // start-up on a loaded machine).
        #expect(Date().timeIntervalSince(started) < 7.5)
        // 12 messages 200 ms apart outlast the 1 s timeout: some arrive, then `request timeout` and END_STREAM
        // (spec §1.7, as upstream): gRPC sees a stream that ended without trailers (H2ProxyStreamTests checks
        // the bytes and the clean end).
        let long = try GRPCPeer.call(qp.port, "long-12")
        #expect(long["code"] as? String == "UNKNOWN", "\(long)")
        let received = long["received"] as? Int ?? 0
        #expect(received >= 3 && received < 12, "\(long)")
    }

    @Test func http1ClientsReachAnH2cOnlyApp() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let message: [UInt8] = [0, 0, 0, 0, 5] + Array("hello".utf8)
        func unaryOverHTTP1(_ port: UInt16) throws -> TestResponse {
            let client = try TestSocket.connect(port: port)
            let chunk = String(message.count, radix: 16)
            try client.send(
                "POST /test.Echo/Unary HTTP/1.1\r\nHost: grpc\r\nContent-Type: application/grpc\r\nTE: trailers\r\n"
                    + "Transfer-Encoding: chunked\r\n\r\n\(chunk)\r\n")
            try client.send(message + Array("\r\n0\r\n\r\n".utf8))
            return try client.readResponse()
        }
        let h2c = try QueueProxyFixture(
            env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0", "QUEUE_USER_PROTOCOL": "h2c"], app: nil)
        let answer = try unaryOverHTTP1(h2c.port)
        #expect(answer.status == 200)
        #expect(answer.header("Content-Type") == "application/grpc")
        #expect(answer.body == [0, 0, 0, 0, 10] + Array("echo:hello".utf8))
        #expect(answer.trailers.contains { $0.0 == "grpc-status" && $0.1 == "0" }, "\(answer.trailers)")
        #expect(answer.trailers.contains { $0.0 == "x-detail" && $0.1 == "trailer-kept" })
        // Control: spoken to in HTTP/1.1, the same app fails (so the translation above is what made it work).
        let http1 = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        #expect(try unaryOverHTTP1(http1.port).status == 502)
    }

    @Test func drainSendsGoAwayAndOpenStreamsFinish() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(
            env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0", "QUEUE_DRAIN_QUIET_PERIOD": "200ms"],
            app: nil)
        let client = try GRPCPeer.start(qp.port, "long-8")  // 1.4 s of messages
        #expect(eventually { client.stdout.contains("first") })  // the stream is flowing
        qp.proxy.signal(SIGTERM)
        let result = try GRPCPeer.result(client)
        #expect(result["code"] as? String == "OK" && result["received"] as? Int == 8, "\(result)")
        #expect(qp.proxy.waitForExit(seconds: 10) == 0)
    }

    @Test func knLocalServesAGrpcServiceOnAnH2cPortFromZero() throws {
        try GRPCPeer.checkInstalled()
        let kn = try KnLocalInstance(["--initial-scale=0", "--allow-zero-initial-scale=true"])
        defer { kn.stop() }
        let yaml = """
            apiVersion: serving.knative.dev/v1
            kind: Service
            metadata:
              name: grpc
            spec:
              template:
                spec:
                  containers:
                    - image: example.com/grpc-echo
                      command: ["\(GRPCPeer.python.path)", "\(GRPCPeer.script)", "server", "$(PORT)"]
                      ports:
                        - name: h2c
                          containerPort: 8080

            """
        let (status, out, err) = try kn.apply(yaml)
        #expect(status == 0, "\(out) \(err)")
        #expect(kn.pods().isEmpty)
        // gRPC (HTTP/2) through kn-local's ingress (the activator) from zero, routed by :authority.
        let unary = try GRPCPeer.call(kn.port, "unary", authority: "grpc.default.example.com")
        #expect(unary["reply"] as? String == "echo:hello" && unary["code"] as? String == "OK", "\(unary)")
        // HTTP/1.1 to the same h2c-only app: the queue-proxy translates (QUEUE_USER_PROTOCOL=h2c from the port name).
        let client = try TestSocket.connect(port: kn.port)
        let message: [UInt8] = [0, 0, 0, 0, 2] + Array("hi".utf8)
        try client.send(
            "POST /test.Echo/Unary HTTP/1.1\r\nHost: grpc.default.example.com\r\nContent-Type: application/grpc\r\n"
                + "TE: trailers\r\nContent-Length: \(message.count)\r\n\r\n")
        try client.send(message)
        let answer = try client.readResponse()
        #expect(
            answer.status == 200 && answer.body == [0, 0, 0, 0, 7] + Array("echo:hi".utf8),
            "\(answer.status) \(answer.bodyText)")
        #expect(answer.trailers.contains { $0.0 == "grpc-status" && $0.1 == "0" }, "\(answer.trailers)")
    }

    @Test func aResetStreamFreesItsSlotAndGarbageClosesOnlyItsConnection() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "1"], app: nil)
        // A 10 s call takes the only slot; its client resets it; the next call must not wait for the 10 s.
        let slow = try RawH2Client(port: qp.port)
        try slow.request(path: "/test.Echo/Slow", body: [0, 0, 0, 0, 5] + Array("10000".utf8))
        try slow.pump(seconds: 0.2, untilBytes: 1)
        try slow.reset()
        let started = Date()
        let unary = try GRPCPeer.call(qp.port, "unary")
        #expect(unary["code"] as? String == "OK", "\(unary)")
        #expect(Date().timeIntervalSince(started) < 9, "the reset stream kept its breaker slot")

        // Garbage after the preface: that connection gets a GOAWAY and closes; the proxy serves on.
        let garbage = try TestSocket.connect(port: qp.port)
        try garbage.send(
            H2cUpgrade.preface + [0, 0, 4, 0xFF, 0xFF, 0, 0, 0, 7, 1, 2, 3, 4] + Array(repeating: 0xAB, count: 64))
        garbage.setTimeout(seconds: 5)
        _ = try? garbage.readToEnd()
        #expect(garbage.isClosedByPeer())
        // A header block beyond our limits (here 300 fields; 256 is the most a head may have) answers 431 on
        // its stream only. (nghttp2 clients refuse to send blocks over 64 KiB, so the byte limit cannot be hit.)
        let big = try RawH2Client(port: qp.port)
        try big.request(
            path: "/test.Echo/Unary", body: [], extra: Array(repeating: H2Field("x-many", "value"), count: 300))
        try big.pump(seconds: 5, untilBytes: .max, untilClosed: true)
        #expect(big.status == "431", "status \(big.status)")
        #expect(try GRPCPeer.call(qp.port, "unary")["code"] as? String == "OK")
    }

    @Test func anAnswerBeforeTheRequestBodyEndsResetsTheStream() throws {
        // The queue-proxy answers a kubelet probe itself; the client announced a body it never sends. Go's server
        // resets such a stream (NO_ERROR) once the response is out; so do we, or it would stay open (and hold
        // whatever it holds) for as long as the client waits.
        let (app, appPort) = try startHelloworld()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)"], app: nil)
        let client = try RawH2Client(port: qp.port)
        try client.request(
            path: "/", body: nil, method: "GET",
            extra: [H2Field("user-agent", "kube-probe/1.30"), H2Field("k-network-probe", "queue")])
        try client.pump(seconds: 5, untilBytes: .max, untilClosed: true)
        #expect(
            client.status == "200" && client.closedCode == .noError,
            "status \(client.status), closed \(String(describing: client.closedCode))")
        // The same with an answer that is only a head (END_STREAM on HEADERS): the head must still arrive
        // before the reset (a reset submitted too early makes nghttp2 drop it).
        let headOnly = try RawH2Client(port: qp.port)
        try headOnly.request(
            path: "/", body: nil, method: "GET",
            extra: [H2Field("k-network-probe", "probe"), H2Field("k-network-hash", "h1")])
        try headOnly.pump(seconds: 5, untilBytes: .max, untilClosed: true)
        #expect(
            headOnly.status == "200" && headOnly.closedCode == .noError,
            "status \(headOnly.status), closed \(String(describing: headOnly.closedCode))")
    }

    @Test func streamsAreCountedAndLoggedAsHTTP2Requests() throws {
        let (app, appPort) = try startHelloworld()
        defer { app.signal(SIGKILL) }
        let template = RequestLogTemplate.known[0].replacingOccurrences(of: "\"", with: "\\\"")
        let qp = try QueueProxyFixture(
            env: [
                "USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0",
                "OBSERVABILITY_CONFIG": #"{"enableRequestLog":true,"requestLogTemplate":"\#(template)"}"#,
            ], app: nil)
        // one connection, two streams
        let output = try nghttp(["http://127.0.0.1:\(qp.port)/h2-logged?a", "http://127.0.0.1:\(qp.port)/h2-logged?b"])
        #expect(output.components(separatedBy: "Hello World!").count == 3, "\(output)")
        #expect(eventually(seconds: 5) { qp.proxy.stdout.components(separatedBy: "/h2-logged").count == 3 })
        let line = try #require(qp.proxy.stdout.split(separator: "\n").first { $0.contains("/h2-logged") })
        let json = try JSON.parse(String(line))
        #expect(json["httpRequest"]?["protocol"]?.stringValue == "HTTP/2.0", "\(line)")
        #expect(json["httpRequest"]?["status"]?.intValue == 200)
        // Prometheus: both streams counted as requests.
        let metrics = try qp.request(
            "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n", port: qp.userMetricsPort
        ).bodyText
        let counted = metrics.split(separator: "\n").first {
            $0.hasPrefix("kn_serving_requests_total{") && $0.contains("status_class=\"2xx\"")
        }
        #expect(counted?.hasSuffix(" 2") == true, "\(metrics)")
    }

    @Test func upgradeH2cWithABodyIsServedAsHTTP1() throws {
        let seen = Seen<[(String, String)]>()
        let qp = try QueueProxyFixture(env: [:]) { conn, _ in
            let (_, fields) = try conn.readHead()
            seen.add(fields)
            _ = try conn.readBody(fields: fields, untilClose: false)
            try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
        let answer = try qp.request(
            "POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                + "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 4\r\n\r\nbody")
        #expect(answer.status == 200 && answer.bodyText == "ok")
        let fields = seen.all.first ?? []
        #expect(!fields.contains { ["upgrade", "http2-settings"].contains($0.0.lowercased()) }, "\(fields)")
    }

    @Test func aReaderThatNeverReadsHoldsTheProxyToOneWindow() throws {
        let (app, appPort) = try GRPCPeer.server()
        defer { app.signal(SIGKILL) }
        let qp = try QueueProxyFixture(env: ["USER_PORT": "\(appPort)", "CONTAINER_CONCURRENCY": "0"], app: nil)
        let before = qp.proxy.memoryKB().rss
        let client = try RawH2Client(port: qp.port)
        // 200 messages of 1 MiB, which the app pushes as fast as it may.
        try client.request(path: "/test.Echo/Big", body: [0, 0, 0, 0, 3] + Array("200".utf8))
        try client.pump(seconds: 1.0, untilBytes: .max)
        #expect(client.received > 0 && client.received <= 65_535, "got \(client.received) bytes past a 64 KiB window")
        let grown = qp.proxy.memoryKB().rss - before
        #expect(!memoryBoundsApply || grown < 8_000, "queue-proxy grew by \(grown) kB while the reader held still")
        // The held stream pins only its own window: other streams to the same app (over the same shared
        // upstream connection) still flow.
        let started = Date()
        let other = try GRPCPeer.call(qp.port, "unary")
        #expect(other["code"] as? String == "OK" && Date().timeIntervalSince(started) < 5, "\(other)")
        // Reading again, the bytes flow.
        client.startConsuming()
        try client.pump(seconds: 20, untilBytes: 20 << 20)
        #expect(client.received >= 20 << 20)
    }
}

/// A bare HTTP/2 client on a blocking socket, built on our codec: it controls its own flow-control window.
final class RawH2Client: H2SessionDelegate {
    let socket: TestSocket
    var session: H2Session!
    var received = 0
    var status = ""
    /// The stream's close code (nil while open).
    var closedCode: H2ErrorCode?
    private var closed: Bool { closedCode != nil }
    private var consuming = false
    private var stream: Int32 = -1

    init(port: UInt16) throws {
        socket = try TestSocket.connect(port: port)
        session = try H2Session(role: .client, delegate: self)
    }

    /// Opens a stream; `body` nil leaves the request side open (a body announced and never sent).
    func request(path: String, body: [UInt8]?, method: String = "POST", extra: [H2Field] = []) throws {
        stream = try session.submitRequest(
            [
                H2Field(":method", method), H2Field(":scheme", "http"), H2Field(":authority", "test"),
                H2Field(":path", path), H2Field("content-type", "application/grpc"), H2Field("te", "trailers"),
            ] + extra, endStream: false)
        body?.withUnsafeBytes { session.send(stream: stream, $0, end: true) }
        try flush()
    }

    func reset() throws {
        session.reset(stream: stream, code: .cancel)
        try flush()
    }

    func startConsuming() {
        consuming = true
        session.consume(stream: stream, count: received)
    }

    private func flush() throws {
        var out: [UInt8] = []
        try session.writeOutput { out += $0 }
        if !out.isEmpty { try socket.send(out) }
    }

    /// Reads and answers frames for `seconds`, or until `untilBytes` body bytes arrived (or the stream closed).
    func pump(seconds: Double, untilBytes: Int, untilClosed: Bool = false) throws {
        socket.setTimeout(seconds: 0, microseconds: 50_000)
        let deadline = Date().addingTimeInterval(seconds)
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while Date() < deadline && received < untilBytes && !(untilClosed && closed) {
            let n = chunk.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { throw TestError("the proxy closed the connection") }
            if n > 0 { try chunk[0..<n].withUnsafeBytes { _ = try session.receive($0) } }
            try flush()
        }
    }

    func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
        if let value = block.value(of: ":status") { status = String(decoding: value, as: UTF8.self) }
    }
    func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
        received += bytes.count
        if consuming { session.consume(stream: stream, count: bytes.count) }
    }
    func h2EndStream(_ session: H2Session, stream: Int32) {}
    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) { closedCode = errorCode }
}

/// An HTTP/2-only server (prior knowledge) on our codec: answers every request 200 `ok` and records its fields.
final class FakeH2Server: @unchecked Sendable {
    let server: ScriptedUpstream
    let requests = Seen<[(String, String)]>()
    var port: UInt16 { server.port }

    final class Handler: H2SessionDelegate {
        let requests: Seen<[(String, String)]>
        init(requests: Seen<[(String, String)]>) { self.requests = requests }

        func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool) {
            guard !isTrailers else { return }
            requests.add(
                block.fields.map {
                    (String(decoding: $0.name, as: UTF8.self), String(decoding: $0.value, as: UTF8.self))
                })
            try? session.submitResponse(
                stream: stream, [H2Field(":status", "200"), H2Field("content-length", "2")], endStream: false)
            Array("ok".utf8).withUnsafeBytes { session.send(stream: stream, $0, end: true) }
        }
        func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer) {
            session.consume(stream: stream, count: bytes.count)
        }
        func h2EndStream(_ session: H2Session, stream: Int32) {}
        func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode) {}
    }

    init() throws {
        let requests = self.requests
        server = try ScriptedUpstream { conn, _ in try serveH2(conn, Handler(requests: requests)) }
    }
}

/// Runs a server session with `handler` on one test connection until the peer closes it.
/// `afterWrite`: runs once the frames of a pass went out (to act on the wire, e.g. reset a stream after its 1xx).
func serveH2(_ conn: TestSocket, _ handler: H2SessionDelegate, afterWrite: (H2Session) -> Void = { _ in }) throws {
    let session = try H2Session(role: .server, delegate: handler)
    defer { withExtendedLifetime(handler) {} }  // the session does not retain its delegate
    var chunk = [UInt8](repeating: 0, count: 16384)
    while true {
        var out: [UInt8] = []
        try session.writeOutput { out += $0 }
        if !out.isEmpty {
            try conn.send(out)
            afterWrite(session)
            continue
        }
        let buffered = conn.takeBuffered()
        if !buffered.isEmpty {
            try buffered.withUnsafeBytes { _ = try session.receive($0) }
            continue
        }
        let n = chunk.withUnsafeMutableBytes { recv(conn.fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { return }
        try chunk[0..<n].withUnsafeBytes { _ = try session.receive($0) }
    }
}
