// kn-local end to end: the real kn-local binary running the real activator, queue-proxies and helloworld as
// processes, driven through its CLI and the ingress port, with short autoscaler windows.
import Foundation
import Glibc
import ProxyCore
import Synchronization
import Testing

/// One `kn-local serve` with its own ports and state directory.
final class KnLocalInstance {
    let process: ChildProcess
    let port: UInt16
    let control: UInt16
    let stateDirectory: String
    private var stopped = false
    private static let podRangeIndex = Locked(0)
    /// Why the last control API query failed ("" if it did not): failure messages quote it.
    let lastControlError = Locked("")

    /// - Parameters:
    ///   - stateDirectory: a given --state-dir (a restart, or a prepared state file); kept if the start fails.
    init(_ extra: [String] = [], stateDirectory given: String? = nil) throws {
        // Each instance gets its own block of pod ports (10000–19999; the harness uses 20000–32000).
        let block = Self.podRangeIndex.withLock { i in
            defer { i = (i + 1) % 40 }
            return 10_000 + i * 250
        }
        // A port freePort() found free can be taken by another process before kn-local binds it: kn-local then
        // exits saying so, and starts again on fresh ports (as ChildProcess.startServer does for the proxies).
        // Loopback ports unless a test asks for namespaces (tests run in parallel; each namespace-mode instance
        // needs a --pod-cidr of its own).
        let network = extra.contains { $0.hasPrefix("--pod-network") } ? [] : ["--pod-network", "loopback"]
        var lastError = ""
        for _ in 0..<3 {
            let (port, control) = (freePort(), freePort())
            let stateDirectory = given ?? NSTemporaryDirectory() + "kn-local-test-\(getpid())-\(port)"
            let process = try ChildProcess(
                "kn-local", environment: [:],
                arguments: [
                    "serve", "--port", "\(port)", "--control", "127.0.0.1:\(control)", "--pod-ports",
                    "\(block)-\(block + 249)",
                    "--state-dir", stateDirectory, "--tick-interval=200ms", "--stable-window=3s",
                    "--scale-to-zero-grace-period=1s",
                    "--drain-quiet-period=200ms",
                ] + network + extra)
            _ = eventually(seconds: 20) { process.stdout.contains("kn-local serving") || !process.process.isRunning }
            if process.stdout.contains("kn-local serving") && process.process.isRunning {
                (self.process, self.port, self.control, self.stateDirectory) = (process, port, control, stateDirectory)
                return
            }
            process.signal(SIGKILL)
            _ = process.waitForExit()
            lastError = "\(process.stdout) \(process.stderr)"
            if given == nil { try? FileManager.default.removeItem(atPath: stateDirectory) }
            guard lastError.contains("in use") || lastError.contains("cannot listen") else { break }
        }
        throw TestError("kn-local did not start: \(lastError)")
    }

    /// Runs a client command; returns (exit status, stdout, stderr).
    func cli(_ arguments: [String]) throws -> (Int32, String, String) {
        let client = try ChildProcess(
            "kn-local", environment: ["KN_LOCAL_CONTROL": "127.0.0.1:\(control)"], arguments: arguments)
        let status = client.waitForExit(seconds: 30) ?? -1
        return (status, client.stdout, client.stderr)
    }

    func apply(_ yaml: String) throws -> (Int32, String, String) {
        let path = stateDirectory + "-\(UUID().uuidString).yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try cli(["apply", "-f", path])
    }

    /// `get KIND -o json` through the control API.
    func objects(_ kind: String) -> [[String: Any]] {
        do {
            let socket = try TestSocket.connect(port: control)
            let response = try socket.exchange("GET /v1/get?kind=\(kind)&output=json HTTP/1.1\r\nHost: x\r\n\r\n")
            guard let list = try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]] else {
                lastControlError.withLock { $0 = "HTTP \(response.status): \(response.bodyText.prefix(300))" }
                return []
            }
            return list
        } catch {
            lastControlError.withLock { $0 = "\(error)" }
            return []
        }
    }

    func pods(phase: String? = "Running") -> [[String: Any]] {
        objects("pods").filter { phase == nil || $0["phase"] as? String == phase }
    }

    func get(host: String, on socket: TestSocket? = nil) throws -> TestResponse {
        let s = try socket ?? TestSocket.connect(port: port)
        return try s.exchange("GET / HTTP/1.1\r\nHost: \(host)\r\n\r\n")
    }

    /// Process ids whose parent is kn-local.
    func children() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == process.pid
        }
    }

    /// Stops kn-local with SIGTERM and checks that it exits 0 leaving no child; removes the state directory
    /// unless `keepingState` (for a restart). A second call does nothing.
    func stop(keepingState: Bool = false) {
        guard !stopped else { return }
        stopped = true
        let kids = children()
        process.signal(SIGTERM)
        #expect(process.waitForExit(seconds: 30) == 0, "stdout: \(process.stdout)\nstderr: \(process.stderr)")
        for pid in kids { #expect(isGone(pid), "child \(pid) outlived kn-local") }
        // The shutdown ends once (it printed its last line twice when two exits were reaped in one pass).
        #expect(process.stdout.components(separatedBy: "all children exited").count == 2, "\(process.stdout)")
        if !keepingState { try? FileManager.default.removeItem(atPath: stateDirectory) }
    }
}

/// Whether this machine lets kn-local give pods network namespaces: root, iproute2, and a namespace can
/// really be made (a container without CAP_SYS_ADMIN cannot).
enum PodNamespaces {
    static let available: Bool = {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") else { return false }
        let name = "knl-probe-\(getpid())"
        func ip(_ arguments: [String]) -> Bool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = arguments
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return false }
            process.waitUntilExit()
            return process.terminationStatus == 0
        }
        guard ip(["netns", "add", name]) else { return false }
        return ip(["netns", "del", name])
    }()
}

/// True when `pid` no longer runs (absent, or a zombie waiting for a reaper).
func isGone(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else {
        return true
    }
    return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
}

let helloWorldYAML =
    (try? String(
        contentsOfFile: PackageRoot.url.appendingPathComponent("examples/helloworld-go.yaml").path, encoding: .utf8))
    ?? ""

func serviceYAML(name: String, target: String, cc: Int = 0, annotations: [String: String] = [:], traffic: String = "")
    -> String
{
    var text = """
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: \(name)
        spec:
          template:
            metadata:
              annotations:
                autoscaling.knative.dev/target: "10"

        """
    for (k, v) in annotations.sorted(by: { $0.key < $1.key }) {
        text += "        autoscaling.knative.dev/\(k): \"\(v)\"\n"
    }
    text += """
            spec:
              containerConcurrency: \(cc)
              containers:
                - image: ghcr.io/knative/helloworld-go:latest
                  env:
                    - name: TARGET
                      value: "\(target)"

        """
    return text + traffic
}

@Suite(.serialized, .timeLimit(.minutes(3)))
struct KnLocalTests {
    @Test func helloWorldFromZeroThenWarmThenBackToZero() throws {
        #expect(helloWorldYAML.contains("helloworld-go:160e4dc8"))
        let kn = try KnLocalInstance(["--initial-scale=0", "--allow-zero-initial-scale=true"])
        defer { kn.stop() }
        let (status, out, err) = try kn.apply(helloWorldYAML)
        #expect(status == 0, "\(err)")
        #expect(out == "service.serving.knative.dev/helloworld-go created\n")
        #expect(kn.pods(phase: nil).isEmpty)  // initial scale 0: nothing runs yet
        // From zero: the activator holds the request, kn-local starts a pod, the answer comes.
        let client = try TestSocket.connect(port: kn.port)
        let first = try kn.get(host: "helloworld-go.default.example.com", on: client)
        #expect(first.status == 200)
        #expect(first.bodyText == "Hello World!\n")
        #expect(kn.pods().count == 1)
        let warm = try kn.get(host: "helloworld-go.default.example.com", on: client)
        #expect(warm.bodyText == "Hello World!\n")
        client.close()
        let (_, table, _) = try kn.cli(["get", "ksvc"])
        let lines = table.split(separator: "\n")
        #expect(
            lines.first?.split(separator: " ", omittingEmptySubsequences: true) == [
                "NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON",
            ])
        #expect(
            lines.dropFirst().first?.split(separator: " ", omittingEmptySubsequences: true)
                == [
                    "helloworld-go", "http://helloworld-go.default.example.com", "helloworld-go-00001",
                    "helloworld-go-00001", "True",
                ])
        // Idle for the window (3 s) + grace (1 s): back at zero.
        #expect(eventually(seconds: 15) { kn.pods(phase: nil).isEmpty }, "\(kn.process.stdout)")
        #expect(kn.process.stdout.contains("scaled 1 → 0"))
        // And from zero once more.
        #expect(try kn.get(host: "helloworld-go.default.example.com").bodyText == "Hello World!\n")
    }

    @Test func splitAndTagsReachTheirRevisions() throws {
        let kn = try KnLocalInstance()
        defer { kn.stop() }
        #expect(try kn.apply(serviceYAML(name: "split", target: "One")).0 == 0)
        #expect(eventually(seconds: 10) { kn.pods().count == 1 })
        let traffic = """
              traffic:
                - revisionName: split-00001
                  percent: 50
                  tag: one
                - latestRevision: true
                  percent: 50
                  tag: two

            """
        let (status, out, err) = try kn.apply(serviceYAML(name: "split", target: "Two", traffic: traffic))
        #expect(status == 0, "\(err)")
        #expect(out == "service.serving.knative.dev/split configured\n")
        // The route moves to the new revision once it is ready.
        #expect(
            eventually(seconds: 10) {
                (kn.objects("ksvc").first?["latestReadyRevisionName"] as? String) == "split-00002"
                    && (kn.objects("ksvc").first?["traffic"] as? [Any])?.count == 2
            })
        let client = try TestSocket.connect(port: kn.port)
        var counts: [String: Int] = [:]
        for _ in 0..<400 {
            let response = try kn.get(host: "split.default.example.com", on: client)
            counts[response.bodyText, default: 0] += 1
        }
        #expect((160...240).contains(counts["Hello One!\n"] ?? 0), "\(counts)")
        #expect((160...240).contains(counts["Hello Two!\n"] ?? 0), "\(counts)")
        #expect(counts.values.reduce(0, +) == 400)
        #expect(try kn.get(host: "one-split.default.example.com", on: client).bodyText == "Hello One!\n")
        #expect(try kn.get(host: "two-split.default.example.com", on: client).bodyText == "Hello Two!\n")
        let (_, revisions, _) = try kn.cli(["get", "revisions"])
        #expect(revisions.contains("split-00001") && revisions.contains("split-00002"))
        // Applying the same file again changes nothing.
        #expect(
            try kn.apply(serviceYAML(name: "split", target: "Two", traffic: traffic)).1
                == "service.serving.knative.dev/split unchanged\n")
        // Deleting a service with running pods stops them; kn-local carries on (stop() checks its exit status).
        #expect(try kn.cli(["delete", "ksvc", "split"]).1 == "service.serving.knative.dev \"split\" deleted\n")
        #expect(eventually(seconds: 10) { kn.pods(phase: nil).isEmpty })
        #expect(try kn.get(host: "split.default.example.com").status == 404)
    }

    @Test func concurrencyOneScalesOutUnderLoadWithoutErrors() throws {
        let kn = try KnLocalInstance(["--stable-window=6s"])
        defer { kn.stop() }
        #expect(try kn.apply(serviceYAML(name: "busy", target: "Busy", cc: 1, annotations: ["max-scale": "6"])).0 == 0)
        #expect(eventually(seconds: 10) { kn.pods().count == 1 })
        let failures = Atomic<Int>(0)
        let successes = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let finished = Atomic<Int>(0)
        var threads: [Thread] = []
        for _ in 0..<8 {
            let port = kn.port
            let thread = Thread {
                defer { finished.add(1, ordering: .relaxed) }
                guard let socket = try? TestSocket.connect(port: port) else {
                    failures.add(1, ordering: .relaxed)
                    return
                }
                while !stop.load(ordering: .relaxed) {
                    guard let r = try? socket.exchange("GET / HTTP/1.1\r\nHost: busy.default.example.com\r\n\r\n"),
                        r.status == 200
                    else {
                        failures.add(1, ordering: .relaxed)
                        return
                    }
                    successes.add(1, ordering: .relaxed)
                }
            }
            thread.start()
            threads.append(thread)
        }
        let scaled = eventually(seconds: 20) { kn.pods().count >= 4 }
        stop.store(true, ordering: .relaxed)
        #expect(eventually(seconds: 20) { finished.load(ordering: .relaxed) == 8 })  // their last exchanges ended
        #expect(scaled, "\(kn.process.stdout)")
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(successes.load(ordering: .relaxed) > 100)
        #expect(kn.pods(phase: nil).count <= 6)
    }

    /// Issue 13 §1, Knative's `TestMustEnvVars` (`PORT` is the containerPort): in namespace mode every pod has
    /// its own network, so an app that ignores `PORT` and listens on 8080 runs five times over, each pod at an
    /// address of its own, and everything kn-local made for them is gone after it stops.
    @Test(.enabled(if: PodNamespaces.available, "needs root, iproute2 and permission to make network namespaces"))
    func appsOnTheirContainerPortScaleOutInPodNamespaces() throws {
        let python = ProcessInfo.processInfo.environment["KN_TEST_PYTHON"] ?? "python3"
        let script = """
            import http.server, os
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = ("PORT=%s" % os.environ.get("PORT")).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
            """
        let map = NSTemporaryDirectory() + "kn-local-map-\(getpid()).json"
        let entry = try JSONSerialization.data(withJSONObject: ["example.com/fixed-port": [python, "-c", script]])
        try entry.write(to: URL(fileURLWithPath: map))
        defer { try? FileManager.default.removeItem(atPath: map) }
        let kn = try KnLocalInstance([
            "--pod-network", "namespace", "--pod-cidr", "10.213.\(getpid() % 200 + 20).0/24", "--image-map", map,
        ])
        defer { kn.stop() }
        let prefix = kn.process.stdout.components(separatedBy: "bridge ").dropFirst().first?.prefix(8) ?? ""
        #expect(prefix.hasPrefix("knl"), "\(kn.process.stdout)")
        let yaml = """
            apiVersion: serving.knative.dev/v1
            kind: Service
            metadata:
              name: fixed
            spec:
              template:
                metadata:
                  annotations:
                    autoscaling.knative.dev/min-scale: "5"
                spec:
                  containers:
                    - image: example.com/fixed-port
                      ports:
                        - containerPort: 8080

            """
        #expect(try kn.apply(yaml).0 == 0)
        #expect(eventually(seconds: 60) { kn.pods().count == 5 }, "\(kn.process.stdout)")
        let ips = Set(kn.pods().compactMap { $0["ip"] as? String })
        #expect(ips.count == 5 && ips.allSatisfy { $0.hasPrefix("10.213.") }, "\(ips)")
        let client = try TestSocket.connect(port: kn.port)
        var bodies: [String: Int] = [:]
        for _ in 0..<50 {
            let response = try kn.get(host: "fixed.default.example.com", on: client)
            bodies["\(response.status) \(response.bodyText)", default: 0] += 1
        }
        #expect(bodies == ["200 PORT=8080": 50])
        let (_, wide, _) = try kn.cli(["get", "pods", "-o", "wide"])
        #expect(wide.contains("IP") && ips.allSatisfy { wide.contains($0) }, "\(wide)")
        client.close()
        kn.stop()
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter {
            $0.hasPrefix(prefix + "-")
        }
        #expect(left.isEmpty, "namespaces left: \(left)")
        let links = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []).filter {
            $0.hasPrefix(prefix)
        }
        #expect(links.isEmpty, "links left: \(links)")
    }

    @Test func aKilledPodIsReplaced() throws {
        let kn = try KnLocalInstance()
        defer { kn.stop() }
        #expect(try kn.apply(serviceYAML(name: "phoenix", target: "Again", annotations: ["min-scale": "1"])).0 == 0)
        #expect(eventually(seconds: 10) { kn.pods().count == 1 })
        let before = kn.pods()[0]
        let pid = Int32(before["userPid"] as? Double ?? 0)
        #expect(pid > 0)
        kill(pid, SIGKILL)
        #expect(
            eventually(seconds: 10) {
                let now = kn.pods()
                return now.count == 1 && (now[0]["name"] as? String) != (before["name"] as? String)
            }, "\(kn.process.stdout)")
        #expect(kn.process.stdout.contains("user-container exited (signal 9 (killed)); replacing the pod"))
        #expect(
            isGone(Int32(before["queuePid"] as? Double ?? 0))
                || eventually(seconds: 5) { isGone(Int32(before["queuePid"] as? Double ?? 0)) })
        #expect(try kn.get(host: "phoenix.default.example.com").bodyText == "Hello Again!\n")
    }

    @Test func childrenDieWithKnLocalEvenOnSIGKILL() throws {
        let kn = try KnLocalInstance()
        #expect(try kn.apply(serviceYAML(name: "orphan", target: "X")).0 == 0)
        #expect(eventually(seconds: 10) { kn.pods().count == 1 })
        let kids = kn.children()
        #expect(kids.count == 3)  // activator, helloworld, queue-proxy
        kn.process.signal(SIGKILL)
        #expect(eventually(seconds: 5) { kids.allSatisfy(isGone) })
        for pid in kids where !isGone(pid) { kill(pid, SIGKILL) }  // only if the check above failed
        _ = kn.process.waitForExit(seconds: 10)
        try? FileManager.default.removeItem(atPath: kn.stateDirectory)
    }

    @Test func badManifestsAreRefusedWithKnativesMessages() throws {
        let kn = try KnLocalInstance()
        defer { kn.stop() }
        let traffic = """
              traffic:
                - latestRevision: true
                  percent: 90

            """
        let (status, _, err) = try kn.apply(serviceYAML(name: "bad", target: "X", traffic: traffic))
        #expect(status == 1)
        #expect(err.contains("Error from server (BadRequest): error when creating"))
        #expect(
            err.contains(
                "admission webhook \"validation.webhook.serving.knative.dev\" denied the request: validation failed: Traffic targets sum to 90, want 100: spec.traffic"
            ))
        let (status2, _, err2) = try kn.apply(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n\tname: x\n")
        #expect(status2 == 1)
        #expect(err2.contains("line 4: tabs cannot indent YAML"))
        let (status3, _, err3) = try kn.cli(["get", "ksvc", "nothing"])
        #expect(status3 == 1)
        #expect(err3 == "Error from server (NotFound): services.serving.knative.dev \"nothing\" not found\n")
        // An image nobody maps: the revision fails with a reason, the service says so.
        let unknown = serviceYAML(name: "ghost", target: "X").replacingOccurrences(
            of: "ghcr.io/knative/helloworld-go:latest", with: "example.com/unknown:1")
        #expect(try kn.apply(unknown).0 == 0)
        let row = kn.objects("ksvc").first { $0["name"] as? String == "ghost" }
        #expect(row?["ready"] as? String == "False")
        #expect(row?["reason"] as? String == "RevisionMissing")
        #expect(try kn.cli(["delete", "ksvc", "ghost"]).1 == "service.serving.knative.dev \"ghost\" deleted\n")
    }

    /// Issue 11 §6: a Service that has not served yet answers 404 (as Knative's gateway, which has no rule for a
    /// Route that is not ready) naming its revision and why, not `revision.serving.knative.dev "" not found`.
    @Test func aServiceThatIsNotReadyNamesItsRevision() throws {
        let kn = try KnLocalInstance()
        defer { kn.stop() }
        func sleeper(_ name: String, traffic: String = "") -> String {
            """
            apiVersion: serving.knative.dev/v1
            kind: Service
            metadata:
              name: \(name)
            spec:
              template:
                spec:
                  containers:
                    - image: example.com/sleeper:1
                      command:
                        - sleep
                        - "120"

            """ + traffic
        }
        // Starting: the pod never listens, so the revision stays Deploying.
        #expect(try kn.apply(sleeper("slow")).0 == 0)
        let slow = try kn.get(host: "slow.default.example.com")
        #expect(slow.status == 404)
        #expect(
            slow.bodyText
                == "service \"default/slow\" is not ready: revision \"slow-00001\" is not ready yet (Deploying)\n")
        // Failed: an image nobody maps.
        let ghost = serviceYAML(name: "ghost", target: "X").replacingOccurrences(
            of: "ghcr.io/knative/helloworld-go:latest", with: "example.com/unknown:1")
        #expect(try kn.apply(ghost).0 == 0)
        let failed = try kn.get(host: "ghost.default.example.com")
        #expect(failed.status == 404)
        #expect(
            failed.bodyText.hasPrefix(
                "service \"default/ghost\" is not ready: revision \"ghost-00001\" failed: ContainerMissing: Unable to fetch image \"example.com/unknown:1\""
            ),
            "\(failed.bodyText)")
        // Traffic naming a revision that does not exist.
        let traffic = """
              traffic:
                - revisionName: nope-00009
                  percent: 100

            """
        #expect(try kn.apply(sleeper("nope", traffic: traffic)).0 == 0)
        let nope = try kn.get(host: "nope.default.svc.cluster.local")
        #expect(nope.status == 404)
        #expect(
            nope.bodyText
                == "service \"default/nope\" is not ready: Revision \"nope-00009\" referenced in traffic not found.\n")
        for name in ["slow", "ghost", "nope"] { _ = try kn.cli(["delete", "ksvc", name]) }
    }

    /// Issue 13 §2: an app that never gets ready (it never listens on PORT) is visible: `get pods` shows the
    /// queue-proxy up and the app not (1/2) and why, an event quotes its log, and after the progress deadline
    /// the revision is Ready False / ProgressDeadlineExceeded instead of True with no replica.
    @Test func aPodThatNeverGetsReadyIsReported() throws {
        let kn = try KnLocalInstance(["--progress-deadline", "2s"])
        defer { kn.stop() }
        let yaml = """
            apiVersion: serving.knative.dev/v1
            kind: Service
            metadata:
              name: stuck
            spec:
              template:
                spec:
                  containers:
                    - image: example.com/stuck:1
                      command: ["sh", "-c", "echo booting; echo waiting for db:5432; exec sleep 60"]

            """
        #expect(try kn.apply(yaml).0 == 0)
        #expect(
            eventually(seconds: 10) {
                let pod = kn.pods(phase: nil).first
                return pod?["ready"] as? String == "1/2" && pod?["status"] as? String == "ProbeFailing"
            }, "\(kn.objects("pods"))")
        let (_, pods, _) = try kn.cli(["get", "pods"])
        let row = pods.split(separator: "\n").last?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        #expect(row.count == 5 && row[1] == "1/2" && row[2] == "ProbeFailing" && row[3] == "0", "\(pods)")
        #expect(
            eventually(seconds: 10) { kn.process.stdout.contains("    | waiting for db:5432") }, "\(kn.process.stdout)")
        #expect(kn.process.stdout.contains("not ready after 2s: the app does not accept connections on PORT"))
        #expect(
            eventually(seconds: 10) {
                let revision = kn.objects("revisions").first
                return revision?["ready"] as? String == "False"
                    && revision?["reason"] as? String == "ProgressDeadlineExceeded"
            }, "\(kn.objects("revisions"))")
        let (_, revisions, _) = try kn.cli(["get", "revisions"])
        #expect(
            revisions.split(separator: "\n").last?.split(separator: " ", omittingEmptySubsequences: true)
                == ["stuck-00001", "stuck", "1", "False", "ProgressDeadlineExceeded", "0", "1"], "\(revisions)")
        #expect(kn.process.stdout.contains("revision default/stuck-00001 failed: ProgressDeadlineExceeded"))
        let ksvc = kn.objects("ksvc").first
        #expect(ksvc?["ready"] as? String == "False")
        let answer = try kn.get(host: "stuck.default.example.com")
        #expect(answer.status == 404)
        #expect(
            answer.bodyText
                == "service \"default/stuck\" is not ready: revision \"stuck-00001\" failed: ProgressDeadlineExceeded: Initial scale was never achieved\n",
            "\(answer.bodyText)")
    }

    /// Issue 13 §1: a restart with the same --state-dir brings back the services, their revisions (same names,
    /// generations, status) and routes; pods start anew, so the service answers again.
    @Test func aRestartKeepsServicesRevisionsAndRoutes() throws {
        let first = try KnLocalInstance()
        var keepState = true
        defer { if keepState { try? FileManager.default.removeItem(atPath: first.stateDirectory) } }
        #expect(try first.apply(serviceYAML(name: "keep", target: "One")).0 == 0)
        #expect(try first.apply(serviceYAML(name: "keep", target: "Two")).0 == 0)
        #expect(
            eventually(seconds: 10) {
                first.objects("ksvc").first?["latestReadyRevisionName"] as? String == "keep-00002"
            })
        #expect(try first.get(host: "keep.default.example.com").bodyText == "Hello Two!\n")
        func stable(_ kn: KnLocalInstance) throws -> (String, [[Substring]], String) {
            let (_, ksvc, _) = try kn.cli(["get", "ksvc"])
            // NAME CONFIG GENERATION READY REASON (not the replica columns: they follow the new pods).
            let (_, revisions, _) = try kn.cli(["get", "revisions"])
            let rows = revisions.split(separator: "\n").map {
                Array($0.split(separator: " ", omittingEmptySubsequences: true).dropLast(2))
            }
            let traffic = (kn.objects("ksvc").first?["traffic"] as? [[String: Any]] ?? []).map {
                "\($0["revisionName"] ?? "")=\($0["percent"] ?? "")"
            }
            return (ksvc, rows, traffic.joined(separator: ","))
        }
        let before = try stable(first)
        #expect(before.1.count == 3 && before.2 == "keep-00002=100", "\(before)")
        first.stop(keepingState: true)

        let second = try KnLocalInstance(stateDirectory: first.stateDirectory)
        keepState = false
        defer { second.stop() }
        #expect(
            second.process.stdout.contains("restored 1 service and 2 revisions from \(first.stateDirectory)/state.json")
        )
        let after = try stable(second)
        #expect(after.0 == before.0)
        #expect(after.1 == before.1)
        #expect(after.2 == before.2)
        #expect(try second.get(host: "keep.default.example.com").bodyText == "Hello Two!\n")
        // The same file again changes nothing: no revision 00003.
        #expect(
            try second.apply(serviceYAML(name: "keep", target: "Two")).1
                == "service.serving.knative.dev/keep unchanged\n")
        #expect(second.objects("revisions").count == 2)
    }

    /// Issue 13 §1: a state file that cannot be restored is reported (file and error), kept aside, and kn-local
    /// starts empty.
    @Test func aCorruptStateFileIsMovedAsideAndReported() throws {
        let directory = NSTemporaryDirectory() + "kn-local-corrupt-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let broken = #"{"apiVersion":"kn-local/v1","kind":"State","services":[{"namespace":"default","#
        try broken.write(toFile: directory + "/state.json", atomically: true, encoding: .utf8)
        let kn = try KnLocalInstance(stateDirectory: directory)
        defer { kn.stop() }
        let report = "cannot restore state from \(directory)/state.json: not JSON: "
        #expect(eventually(seconds: 5) { kn.process.stderr.contains(report) }, "\(kn.process.stderr)")
        #expect(kn.process.stdout.contains(report))
        #expect(kn.process.stdout.contains("; moved it to \(directory)/state.json.corrupt-"))
        let aside = try FileManager.default.contentsOfDirectory(atPath: directory).filter {
            $0.hasPrefix("state.json.corrupt-")
        }
        #expect(aside.count == 1)
        #expect(try String(contentsOfFile: directory + "/" + (aside.first ?? ""), encoding: .utf8) == broken)
        #expect(try kn.cli(["get", "ksvc"]).1 == "No resources found in default namespace.\n")
        // A fresh (empty) state file takes its place.
        #expect(
            eventually(seconds: 5) {
                (try? String(contentsOfFile: directory + "/state.json", encoding: .utf8))?.contains(#""services":[]"#)
                    ?? false
            })
    }
}
