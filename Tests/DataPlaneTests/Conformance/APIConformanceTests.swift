// Knative's API conformance tests (upstream test/conformance/api/v1) that concern the data path, run against
// kn-local in both pod network modes: containerConcurrency, timeoutSeconds, traffic splits and tags, and the
// move of a latestRevision route to a new revision. Each test is named after the upstream test it mirrors.
import Foundation
import Glibc
import Synchronization
import Testing

@Suite(.timeLimit(.minutes(2)))
struct APIConformanceTests {
    /// `TestSingleConcurrency`: with containerConcurrency 1 the app never sees two requests at once, however
    /// many clients send at the same time (the app answers 500 to an overlapping request).
    @Test("TestSingleConcurrency", arguments: PodMode.available)
    func singleConcurrency(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        try cluster.apply(ServiceSpec(name: "single", app: "singlethreaded", containerConcurrency: 1).yaml)
        try await cluster.waitReady("single")
        let statuses = Locked<[Int: Int]>([:])
        let done = Atomic<Int>(0)
        let (host, port) = (cluster.host("single"), cluster.kn.port)
        for _ in 0..<5 {
            Thread {
                defer { done.add(1, ordering: .relaxed) }
                guard let socket = try? TestSocket.connect(port: port) else {
                    statuses.withLock { $0[-1, default: 0] += 1 }
                    return
                }
                for _ in 0..<8 {
                    let status = (try? ingressGet(port: port, host: host, on: socket).status) ?? -1
                    statuses.withLock { $0[status, default: 0] += 1 }
                }
            }.start()
        }
        #expect(await pollUntil(seconds: 30) { done.load(ordering: .relaxed) == 5 })
        #expect(statuses.withLock { $0 } == [200: 40])
    }

    /// `TestRevisionTimeout` (timeoutSeconds 1 for upstream's 10, the sleeps scaled alike): a response
    /// started in time is a 200; one that has not started by the timeout is a 504; a response whose first
    /// bytes came in time stays a 200 even when the rest comes late.
    @Test("TestRevisionTimeout", arguments: PodMode.available)
    func revisionTimeout(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        try cluster.apply(ServiceSpec(name: "timeout", app: "timeout", timeoutSeconds: 1).yaml)
        try await cluster.waitReady("timeout")
        let cases: [(name: String, initialMs: Int, sleepMs: Int, status: Int)] = [
            ("does not exceed timeout seconds", 200, 0, 200),
            ("exceeds timeout seconds", 1_500, 0, 504),
            ("writes first byte before timeout", 0, 1_500, 200),
        ]
        let results = Locked<[String: String]>([:])
        let done = Atomic<Int>(0)
        let (host, port) = (cluster.host("timeout"), cluster.kn.port)
        for c in cases {
            Thread {
                defer { done.add(1, ordering: .relaxed) }
                let start = Date()
                let response = try? ingressGet(
                    port: port, host: host, path: "/?initialTimeout=\(c.initialMs)&timeout=\(c.sleepMs)")
                let ms = Int(Date().timeIntervalSince(start) * 1000)
                let seen = response.map { "\($0.status) \($0.bodyText.prefix(8))" } ?? "no response"
                results.withLock { $0[c.name] = "\(seen) after \(ms) ms" }
            }.start()
        }
        #expect(await pollUntil(seconds: 20) { done.load(ordering: .relaxed) == cases.count })
        let seen = results.withLock { $0 }
        for c in cases {
            let result = seen[c.name] ?? "none"
            #expect(result.hasPrefix("\(c.status) "), "\(c.name): \(result)")
            if c.status == 200 { #expect(result.hasPrefix("200 initial\n"), "\(c.name): \(result)") }
        }
    }

    /// `TestBlueGreenRoute`: a 50/50 split across two revisions sends each at least 25 % of the requests
    /// (upstream's minimum split share) and the tag hosts (`blue-…`, `green-…`) reach their revision every time.
    @Test("TestBlueGreenRoute", arguments: PodMode.available)
    func blueGreenRoute(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        var spec = ServiceSpec(name: "bg", app: "readiness", env: [("TEXT", "blue")])
        try cluster.apply(spec.yaml)
        try await cluster.waitReady("bg", revision: "bg-00001")
        spec.env = [("TEXT", "green")]
        try cluster.apply(spec.yaml)
        try await cluster.waitReady("bg", revision: "bg-00002")
        spec.traffic = """
              traffic:
                - revisionName: bg-00001
                  percent: 50
                  tag: blue
                - revisionName: bg-00002
                  percent: 50
                  tag: green

            """
        try cluster.apply(spec.yaml)
        #expect(
            await pollUntil(seconds: 10) {
                (try? cluster.get(host: cluster.host("bg", tag: "blue")).bodyText.hasPrefix("blue ")) == true
            })
        func texts(_ host: String, _ count: Int) throws -> [String: Int] {
            let socket = try TestSocket.connect(port: cluster.kn.port)
            var counts: [String: Int] = [:]
            for _ in 0..<count {
                let response = try cluster.get(host: host, on: socket)
                let text =
                    response.status == 200 ? String(response.bodyText.prefix { $0 != " " }) : "\(response.status)"
                counts[text, default: 0] += 1
            }
            return counts
        }
        let split = try texts(cluster.host("bg"), 200)
        #expect((split["blue"] ?? 0) >= 50 && (split["green"] ?? 0) >= 50, "\(split)")
        #expect((split["blue"] ?? 0) + (split["green"] ?? 0) == 200, "\(split)")
        #expect(try texts(cluster.host("bg", tag: "blue"), 50) == ["blue": 50])
        #expect(try texts(cluster.host("bg", tag: "green"), 50) == ["green": 50])
    }

    /// `TestServiceCreateAndUpdate` (a latestRevision route across an update, as upstream's blue-green
    /// rollout): while the new revision is not ready yet, traffic stays on the old one; once it is ready, all
    /// traffic moves to it; a client sending all along sees no error and never goes back to the old text.
    @Test("TestServiceCreateAndUpdate", arguments: PodMode.available)
    func serviceCreateAndUpdate(mode: PodMode) async throws {
        let cluster = try ConformanceCluster(mode)
        defer { cluster.stop() }
        let probe = "            httpGet:\n              path: /healthz\n"
        var spec = ServiceSpec(name: "rollout", app: "readiness", env: [("TEXT", "one")], readinessProbe: probe)
        try cluster.apply(spec.yaml)
        try await cluster.waitReady("rollout", revision: "rollout-00001")
        let seen = Locked<[String]>([])
        let stop = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        let (host, port) = (cluster.host("rollout"), cluster.kn.port)
        Thread {
            defer { finished.store(true, ordering: .relaxed) }
            guard let socket = try? TestSocket.connect(port: port) else {
                seen.withLock { $0.append("connect failed") }
                return
            }
            while !stop.load(ordering: .relaxed) {
                let text: String
                if let response = try? ingressGet(port: port, host: host, on: socket) {
                    text =
                        response.status == 200 ? String(response.bodyText.prefix { $0 != " " }) : "\(response.status)"
                } else {
                    text = "no response"
                }
                seen.withLock { $0.append(text) }
                usleep(10_000)  // the client's pace (about 100 requests a second), not a wait for an event
            }
        }.start()
        // The new revision is ready 1.5 s after its app starts.
        spec.env = [("TEXT", "two"), ("READY_AFTER_MS", "1500")]
        try cluster.apply(spec.yaml)
        let appliedAt = seen.withLock { $0.count }
        #expect(
            await pollUntil(seconds: 5) {
                let s = cluster.service("rollout")
                return s?["latestCreatedRevisionName"] as? String == "rollout-00002"
                    && s?["latestReadyRevisionName"] as? String == "rollout-00001"
            }, "the new revision is created but not ready yet")
        try await cluster.waitReady("rollout", revision: "rollout-00002")
        let readyAt = seen.withLock { $0.count }
        #expect(await pollUntil(seconds: 10) { seen.withLock { $0.count } >= readyAt + 20 })
        stop.store(true, ordering: .relaxed)
        #expect(await pollUntil(seconds: 10) { finished.load(ordering: .relaxed) })
        let texts = seen.withLock { $0 }
        #expect(Set(texts).isSubset(of: ["one", "two"]), "errors during the switch: \(Set(texts))")
        let firstTwo = texts.firstIndex(of: "two") ?? texts.count
        // The new app needs 1.5 s to get ready: the client got many answers from the old one meanwhile.
        #expect(firstTwo - appliedAt >= 5, "the new revision took traffic before it was ready: \(texts)")
        #expect(!texts[firstTwo...].contains("one"), "traffic went back to the old revision")
        #expect(texts.suffix(10).allSatisfy { $0 == "two" }, "\(texts.suffix(40))")
    }
}
