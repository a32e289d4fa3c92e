// The real queue-proxy and helloworld binaries: streaming with bounded memory, drain on SIGTERM, config errors.
import Foundation
import Glibc
import KnativeWire
import ProxyCore
import Testing

@Suite(.serialized, .timeLimit(.minutes(2)))
struct QueueProxyProcessTests {
    /// An upstream that answers with a chunked 200 and echoes the raw chunked request body back as it arrives.
    static func chunkedEcho() -> @Sendable (TestSocket, Int) throws -> Void {
        { conn, _ in
            _ = try conn.readHead()
            try conn.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            var buffer = [UInt8](repeating: 0, count: 65536)
            var tail: [UInt8] = conn.takeBuffered()  // body bytes that arrived with the head
            try conn.send(tail)
            tail = Array(tail.suffix(5))
            while tail != Array("0\r\n\r\n".utf8) {
                let n = buffer.withUnsafeMutableBytes { recv(conn.fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                try conn.send(Array(buffer[0..<n]))
                tail = Array((tail + buffer[0..<n]).suffix(5))
            }
        }
    }

    @Test func helloWorldThroughQueueProxy() throws {
        let appPort = freePort()
        let app = try ChildProcess("helloworld", environment: ["PORT": "\(appPort)", "TARGET": "Knative"])
        #expect(app.waitForPort(appPort))
        let port = freePort()
        let proxy = try ChildProcess("queue-proxy", environment: queueProxyEnvironment(port: port, userPort: appPort))
        #expect(proxy.waitForPort(port))
        let client = try TestSocket.connect(port: port)
        let response = try client.exchange("GET / HTTP/1.1\r\nHost: helloworld-go.default.example.com\r\n\r\n")
        #expect(response.status == 200)
        #expect(response.bodyText == "Hello Knative!\n")
        #expect(response.header("Content-Type") == "text/plain; charset=utf-8")
        app.signal(SIGTERM)
        proxy.signal(SIGTERM)
        #expect(app.waitForExit() == 0)
        #expect(proxy.waitForExit() == 0)
    }

    @Test func hundredMegabyteChunkedEchoKeepsMemoryBounded() throws {
        let upstream = try ScriptedUpstream(script: Self.chunkedEcho())
        let port = freePort()
        let proxy = try ChildProcess(
            "queue-proxy", environment: queueProxyEnvironment(port: port, userPort: upstream.port))
        #expect(proxy.waitForPort(port))
        let baseline = proxy.memoryKB().rss
        let client = try TestSocket.connect(port: port)
        let total = 100 * 1024 * 1024
        let chunk = 64 * 1024
        let sender = Thread {
            let piece =
                Array((String(chunk, radix: 16) + "\r\n").utf8) + [UInt8](repeating: 0x61, count: chunk) + [0x0D, 0x0A]
            try? client.send("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in 0..<(total / chunk) { try? client.send(piece) }
            try? client.send("0\r\n\r\n")
        }
        sender.start()
        let response = try client.readResponse()
        #expect(response.status == 200)
        #expect(response.isComplete)
        #expect(response.body.count == total)
        let memory = proxy.memoryKB()
        // A few buffers per exchange: the peak stays within a few MB of the idle figure, far below 100 MB.
        #expect(memory.peak - baseline < 8 * 1024, "peak \(memory.peak) kB, baseline \(baseline) kB")
    }

    @Test func slowReaderGetsBackpressureNotBuffering() throws {
        let size = 32 * 1024 * 1024
        let pushedBack = Gate()
        let upstream = try ScriptedUpstream { conn, _ in
            _ = try conn.readHead()
            try conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(size)\r\n\r\n")
            let block = [UInt8](repeating: 0x62, count: 1024 * 1024)
            for _ in 0..<32 { try conn.send(block, whenBlocked: { pushedBack.open() }) }
        }
        let port = freePort()
        let proxy = try ChildProcess(
            "queue-proxy", environment: queueProxyEnvironment(port: port, userPort: upstream.port))
        #expect(proxy.waitForPort(port))
        let baseline = proxy.memoryKB().rss
        let client = try TestSocket.connect(port: port)
        var small: Int32 = 64 * 1024
        setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &small, 4)
        try client.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        // The client reads nothing while the upstream pushes 32 MB: backpressure must reach the upstream (its
        // send blocks) instead of the proxy buffering.
        #expect(pushedBack.wait(seconds: 20), "the upstream never felt backpressure")
        let stalled = proxy.memoryKB()
        #expect(stalled.peak - baseline < 8 * 1024, "peak \(stalled.peak) kB while stalled, baseline \(baseline) kB")
        let response = try client.readResponse()
        #expect(response.body.count == size)
        #expect(response.body.allSatisfy { $0 == 0x62 })
    }

    @Test func sigtermLetsTwentyInFlightRequestsFinish() throws {
        let arrived = Seen<Int>()
        let upstream = try ScriptedUpstream { conn, index in
            _ = try conn.readHead()
            arrived.add(index)
            usleep(500_000)  // the app's work: longer than the drain's quiet period (200 ms)
            try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        }
        let port = freePort()
        let proxy = try ChildProcess(
            "queue-proxy", environment: queueProxyEnvironment(port: port, userPort: upstream.port))
        #expect(proxy.waitForPort(port))
        let clients = try (0..<20).map { _ in try TestSocket.connect(port: port) }
        for client in clients { try client.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n") }
        #expect(eventually { arrived.all.count == 20 })
        proxy.signal(SIGTERM)
        for client in clients {
            let response = try client.readResponse()
            #expect(response.status == 200 && response.bodyText == "done")
        }
        #expect(proxy.waitForExit() == 0)
        #expect((try? TestSocket.connect(port: port)) == nil)
    }

    @Test(
        arguments: [
            ("CONTAINER_CONCURRENCY", nil, "required key CONTAINER_CONCURRENCY missing value"),
            ("QUEUE_SERVING_PORT", "80a", "QUEUE_SERVING_PORT=\"80a\": expected a port"),
            ("USER_PORT", "99999", "USER_PORT"),
            ("CONTAINER_CONCURRENCY", "x", "CONTAINER_CONCURRENCY=\"x\""),
            ("REVISION_TIMEOUT_SECONDS", "", "REVISION_TIMEOUT_SECONDS"),
            ("SERVING_POD", nil, "required key SERVING_POD missing value"),
            ("SERVING_READINESS_PROBE", "{", "SERVING_READINESS_PROBE: invalid JSON"),
            (
                "SERVING_READINESS_PROBE", #"{"tcpSocket": {"port": 8080}, "periodSeconds": "10"}"#,
                #"SERVING_READINESS_PROBE.periodSeconds: expected a non-negative integer, got a string ("10")"#
            ),
            (
                "SERVING_READINESS_PROBE", #"{"httpGet": {"path": 5}}"#,
                "SERVING_READINESS_PROBE.httpGet.path: expected a string, got 5"
            ),
            (
                "SERVING_READINESS_PROBE", #"{"tcpSocket": "8080"}"#,
                #"SERVING_READINESS_PROBE.tcpSocket: expected an object, got a string ("8080")"#
            ),
            ("OBSERVABILITY_CONFIG", "[1", "OBSERVABILITY_CONFIG: invalid JSON"),
            ("ENABLE_HTTP_FULL_DUPLEX", "yes", "ENABLE_HTTP_FULL_DUPLEX"),
            ("QUEUE_DRAIN_QUIET_PERIOD", "soon", "QUEUE_DRAIN_QUIET_PERIOD"),
            ("SERVING_LOGGING_CONFIG", "{", "SERVING_LOGGING_CONFIG: invalid JSON"),
            (
                "SERVING_LOGGING_CONFIG", #"{"encoding": "xml"}"#,
                #"SERVING_LOGGING_CONFIG: encoding: expected json or console, got a string ("xml")"#
            ),
        ] as [(String, String?, String)])
    func badEnvironmentNamesTheVariable(_ variable: String, _ value: String?, _ message: String) throws {
        var environment = queueProxyEnvironment(port: freePort(), userPort: freePort())
        environment[variable] = value
        let proxy = try ChildProcess("queue-proxy", environment: environment)
        #expect(proxy.waitForExit() == 1)
        #expect(proxy.stderr.contains(message), "stderr: \(proxy.stderr)")
    }

    /// Issue 14 §2: with config-logging's default zap config, lines go to stdout with upstream's keys.
    @Test func upstreamZapConfigShapesTheLogLines() throws {
        let port = freePort()
        let proxy = try ChildProcess(
            "queue-proxy",
            environment: queueProxyEnvironment(
                port: port, userPort: freePort(), extra: ["SERVING_LOGGING_CONFIG": ZapConfig.knativeDefault]))
        #expect(proxy.waitForPort(port))
        proxy.signal(SIGTERM)
        #expect(proxy.waitForExit() == 0)
        let line = try #require(
            proxy.stdout.split(separator: "\n").first { $0.contains("queue-proxy serving on") },
            "stdout: \(proxy.stdout)")
        let json = try JSON.parse(String(line))
        #expect(json["message"]?.stringValue?.hasPrefix("queue-proxy serving on :\(port)") == true)
        #expect(json["severity"]?.stringValue == "info")
        #expect(json["logger"]?.stringValue == "queueproxy")
        #expect(json["caller"]?.stringValue?.hasPrefix("QueueProxy/main.swift:") == true)
        #expect(json["knative.dev/key"]?.stringValue == "default/hello-00001")
        #expect(json["msg"] == nil && json["ts"] == nil && json["level"] == nil)
        let timestamp = try #require(json["timestamp"]?.stringValue)
        // 2026-12-05T07:13:42.123Z
        let shape = timestamp.map { $0.isNumber ? "9" : String($0) }.joined()
        #expect(shape == "9999-99-99T99:99:99.999Z", "\(timestamp)")
        #expect(!proxy.stderr.contains("queue-proxy serving on"), "stderr: \(proxy.stderr)")
    }

    /// Issue 14 §1: where Knative mounts system-internal TLS certificates, both products refuse to start with
    /// one line (this build has no TLS). The files are made in a private mount namespace, seen by that process
    /// only.
    @Test(
        .enabled(if: PrivateMounts.available, "needs root and unshare -m"),
        arguments: ["queue-proxy", "activator"])
    func systemInternalTLSIsRefusedAtStart(_ product: String) throws {
        let binary = ChildProcess.buildDirectory.appendingPathComponent(product).path
        let certs = SystemInternalTLS.certificateDirectory
        let script =
            "mkdir -p \(certs) && mount -t tmpfs tmpfs \(certs) && touch \(certs)/tls.crt \(certs)/tls.key && exec \"$0\""
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["-m", "--propagation", "private", "sh", "-c", script, binary]
        process.environment = queueProxyEnvironment(port: freePort(), userPort: freePort()).merging(
            ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]) { $1 }
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 1, "\(text)")
        #expect(text.hasPrefix("\(product): system-internal-tls is not supported by this build"), "\(text)")
        #expect(text.split(separator: "\n").count == 1, "one line: \(text)")
    }

    @Test func portInUseExitsWithAMessage() throws {
        let upstream = try ScriptedUpstream(script: Scripts.hello())
        let proxy = try ChildProcess(
            "queue-proxy", environment: queueProxyEnvironment(port: upstream.port, userPort: upstream.port))
        #expect(proxy.waitForExit() == 1)
        #expect(proxy.stderr.contains("cannot listen on port \(upstream.port)"), "stderr: \(proxy.stderr)")
    }

    /// Two queue-proxies of one user on one port: the second must fail, not share it through SO_REUSEPORT.
    @Test func aSecondQueueProxyOnTheSamePortFails() throws {
        let port = freePort()
        let first = try ChildProcess(
            "queue-proxy",
            environment: queueProxyEnvironment(
                port: port, userPort: freePort(),
                extra: [
                    "QUEUE_ADMIN_PORT": "\(freePort())", "QUEUE_METRICS_PORT": "\(freePort())",
                    "QUEUE_USER_METRICS_PORT": "0",
                ]))
        #expect(first.waitForPort(port))
        let second = try ChildProcess(
            "queue-proxy",
            environment: queueProxyEnvironment(
                port: port, userPort: freePort(),
                extra: [
                    "QUEUE_ADMIN_PORT": "\(freePort())", "QUEUE_METRICS_PORT": "\(freePort())",
                    "QUEUE_USER_METRICS_PORT": "0",
                ]))
        #expect(second.waitForExit() == 1)
        #expect(second.stderr.contains("cannot listen on port \(port)"), "stderr: \(second.stderr)")
        first.signal(SIGKILL)
        _ = first.waitForExit()
    }
}

/// Whether tests may make a private mount namespace (root and unshare; not in every container).
enum PrivateMounts {
    static let available: Bool = {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return false }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["-m", "--propagation", "private", "true"]
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }()
}
