// kn-local's pure parts: the YAML subset reader, manifest validation with Knative's messages, and the KPA.
import Foundation
import KnativeWire
import ProxyCore
import Testing

@testable import LocalMode

@Suite struct YAMLTests {
    @Test func helloWorldManifestParses() throws {
        let text = """
            apiVersion: serving.knative.dev/v1 # the classic sample
            kind: Service
            metadata:
              name: helloworld-go
              namespace: default
            spec:
              template:
                metadata:
                  annotations:
                    autoscaling.knative.dev/target: "10"
                spec:
                  containers:
                    - image: registry.cn-hangzhou.aliyuncs.com/knative-sample/helloworld-go:160e4dc8
                      ports:
                        - name: http1
                          containerPort: 8080
                      env:
                        - name: TARGET
                          value: "World"
            """
        let docs = try YAML.parseDocuments(text)
        #expect(docs.count == 1)
        let container = docs[0]["spec"]?["template"]?["spec"]?["containers"]?.arrayValue?.first
        #expect(
            container?["image"]?.stringValue
                == "registry.cn-hangzhou.aliyuncs.com/knative-sample/helloworld-go:160e4dc8")
        #expect(container?["ports"]?.arrayValue?.first?["containerPort"]?.intValue == 8080)
        #expect(container?["env"]?.arrayValue?.first?["value"]?.stringValue == "World")
        #expect(
            docs[0]["spec"]?["template"]?["metadata"]?["annotations"]?["autoscaling.knative.dev/target"]?.stringValue
                == "10")
        let service = try Manifest.decode(docs[0])
        #expect(service.template.scaling.target == 10)
        #expect(service.traffic == [TrafficEntry(latestRevision: true, percent: 100)])
    }

    @Test func scalarsListsAtKeyIndentFlowAndBlockScalars() throws {
        let text = """
            ---
            a: plain text here
            b: 'it''s'
            c: "tab\\tand \\u00e9 # not a comment"
            d: 42
            e: true
            f: ~
            list:
            - x
            - y: 1
              z: [1, "two", three]
            empty: {}
            flow: {k: v, n: 2}
            script: |
              line one
                indented
              line three
            folded: >-
              one
              two
            ---
            second: doc
            """
        let docs = try YAML.parseDocuments(text)
        #expect(docs.count == 2)
        let d = docs[0]
        #expect(d["a"] == .string("plain text here"))
        #expect(d["b"] == .string("it's"))
        #expect(d["c"] == .string("tab\tand é # not a comment"))
        #expect(d["d"] == .number(42))
        #expect(d["e"] == .bool(true))
        #expect(d["f"] == .null)
        #expect(
            d["list"]
                == .array([
                    .string("x"),
                    .object([("y", .number(1)), ("z", .array([.number(1), .string("two"), .string("three")]))]),
                ]))
        #expect(d["empty"] == .object([]))
        #expect(d["flow"] == .object([("k", .string("v")), ("n", .number(2))]))
        #expect(d["script"] == .string("line one\n  indented\nline three\n"))
        #expect(d["folded"] == .string("one two"))
        #expect(docs[1]["second"] == .string("doc"))
    }

    @Test func unsupportedOrBrokenInputNamesTheLine() {
        let cases: [(String, Int, String)] = [
            ("a: 1\nb:\n\t- x\n", 3, "tabs"),
            ("a: &anchor 1\n", 1, "anchors"),
            ("a: *alias\n", 1, "aliases"),
            ("a: !!str 1\n", 1, "tags"),
            ("a:\n  b: 1\n c: 2\n", 3, "indentation"),
            ("a: \"open\n", 1, "unterminated"),
            ("a: 1\na: 2\n", 2, "already defined"),
            ("a: b\n  c\n", 2, "indentation"),
            ("a: [1, 2\n", 1, "flow list"),
            ("a: " + String(repeating: "[", count: 200) + "\n", 1, "nesting"),
            (String(repeating: "- ", count: 200) + "x\n", 1, "nesting"),
        ]
        for (text, line, word) in cases {
            do {
                _ = try YAML.parseDocuments(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.line == line, "\(text): \(error)")
                #expect(error.message.contains(word), "\(text): \(error)")
            }
        }
    }
}

@Suite struct ManifestTests {
    static func service(template: String = "", traffic: String = "", name: String = "hello") -> String {
        """
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: \(name)
        spec:
          template:
        \(template)
            spec:
              containers:
              - image: example/app
        \(traffic)
        """
    }

    func errors(_ text: String) -> String {
        do {
            _ = try Manifest.parse(text)
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test func trafficErrorsUseKnativesMessages() {
        let sum = errors(
            Self.service(
                traffic: """
                      traffic:
                      - latestRevision: true
                        percent: 40
                      - revisionName: hello-00001
                        percent: 50
                    """))
        #expect(sum == "Traffic targets sum to 90, want 100: spec.traffic")
        let tags = errors(
            Self.service(
                traffic: """
                      traffic:
                      - latestRevision: true
                        percent: 50
                        tag: same
                      - revisionName: hello-00001
                        percent: 50
                        tag: same
                    """))
        #expect(tags == "Multiple definitions for \"same\": spec.traffic[0].tag, spec.traffic[1].tag")
        let both = errors(
            Self.service(
                traffic: """
                      traffic:
                      - latestRevision: true
                        revisionName: hello-00001
                        percent: 100
                    """))
        #expect(
            both
                == "may not set revisionName \"hello-00001\" when latestRevision is true: spec.traffic[0].latestRevision"
        )
        let percent = errors(
            Self.service(
                traffic: """
                      traffic:
                      - latestRevision: true
                        percent: 150
                    """))
        #expect(percent.contains("expected 0 <= 150 <= 100: spec.traffic[0].percent"))
    }

    @Test func templateErrorsUseKnativesMessages() {
        let cc = errors(
            Self.service().replacingOccurrences(
                of: "    spec:\n", with: "    spec:\n      containerConcurrency: 2000\n"))
        #expect(cc == "expected 0 <= 2000 <= 1000: spec.template.spec.containerConcurrency")
        let timeout = errors(
            Self.service().replacingOccurrences(of: "    spec:\n", with: "    spec:\n      timeoutSeconds: 601\n"))
        #expect(timeout == "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds")
        let prefix = errors(Self.service(template: "    metadata:\n      name: other-v1"))
        #expect(prefix == "invalid value: \"other-v1\" must have prefix \"hello-\": spec.template.metadata.name")
        let scale = errors(
            Self.service(
                template: """
                        metadata:
                          annotations:
                            autoscaling.knative.dev/min-scale: "5"
                            autoscaling.knative.dev/max-scale: "2"
                    """))
        #expect(
            scale
                == "max-scale=2 is less than min-scale=5: spec.template.metadata.annotations.autoscaling.knative.dev/max-scale, spec.template.metadata.annotations.autoscaling.knative.dev/min-scale"
        )
        let unquoted = errors(
            Self.service(
                template: """
                        metadata:
                          annotations:
                            autoscaling.knative.dev/target: 10
                    """))
        #expect(
            unquoted.contains(
                "expected a string (quote the value in YAML): spec.template.metadata.annotations.autoscaling.knative.dev/target"
            ))
        let name = errors(Self.service(name: "Hello_World"))
        #expect(name.hasPrefix("invalid value: not a DNS 1035 label: [a DNS-1035 label must consist of lower case"))
        let kind = errors("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n")
        #expect(kind.contains("no matches for kind \"Pod\" in version \"v1\""))
        let missing = errors(
            Self.service().replacingOccurrences(of: "      - image: example/app\n", with: "      - name: app\n"))
        #expect(missing == "missing field(s): spec.template.spec.containers[0].image")
    }

    @Test func jsonManifestsWork() throws {
        let json =
            #"{"apiVersion":"serving.knative.dev/v1","kind":"Service","metadata":{"name":"j","namespace":"ns"},"spec":{"template":{"spec":{"containerConcurrency":3,"containers":[{"image":"x","command":["/bin/true"]}]}}}}"#
        let services = try Manifest.parse(json)
        #expect(services.count == 1)
        #expect(services[0].namespace == "ns")
        #expect(services[0].template.containerConcurrency == 3)
        #expect(services[0].template.container.command == ["/bin/true"])
    }

    @Test func readinessProbeEncodingFollowsTheController() throws {
        #expect(
            ReadinessProbeEncoding.encode(nil, userPort: 10001, declaredPort: 8080)
                == #"{"tcpSocket":{"port":10001,"host":"127.0.0.1"},"successThreshold":1}"#)
        let probe = try JSON.parse(#"{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":1}"#)
        let encoded = try JSON.parse(ReadinessProbeEncoding.encode(probe, userPort: 10001, declaredPort: 8080))
        #expect(encoded["httpGet"]?["port"]?.intValue == 10001)
        #expect(encoded["httpGet"]?["host"]?.stringValue == "127.0.0.1")
        #expect(encoded["httpGet"]?["scheme"]?.stringValue == "HTTP")
        #expect(encoded["failureThreshold"]?.intValue == 3)
        #expect(encoded["timeoutSeconds"]?.intValue == 1)
    }
}

@Suite struct ImageMapTests {
    @Test func imageMapResolvesExactThenUntaggedThenTheSamples() throws {
        let path = NSTemporaryDirectory() + "image-map-\(getpid()).yaml"
        try """
        # image → command
        example.com/app:v1: /bin/app --flag
        example.com/other: ["/usr/bin/env", "python3", "-m", "http.server"]
        """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var settings = LocalSettings()
        settings.binDirectory = "/opt/bin"
        settings.imageMap = try LocalSettings.loadImageMap(path)
        #expect(settings.command(forImage: "example.com/app:v1") == ["/bin/app", "--flag"])
        #expect(
            settings.command(forImage: "example.com/other:latest") == ["/usr/bin/env", "python3", "-m", "http.server"])
        #expect(
            settings.command(forImage: "example.com/other@sha256:abc") == [
                "/usr/bin/env", "python3", "-m", "http.server",
            ])
        #expect(
            settings.command(forImage: "registry.cn-hangzhou.aliyuncs.com/knative-sample/helloworld-go:160e4dc8") == [
                "/opt/bin/helloworld"
            ])
        #expect(settings.command(forImage: "example.com/unknown:1") == nil)
        try "example.com/x: 42\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ManifestError.self) { try LocalSettings.loadImageMap(path) }
    }
}

@Suite struct AutoscalerTests {
    func scaler(
        cc: Int = 0, target: Double? = nil, config: AutoscalerConfig = AutoscalerConfig(), initial: Int? = nil,
        minScale: Int? = nil, maxScale: Int? = nil
    ) -> RevisionAutoscaler {
        var annotations = ScalingAnnotations()
        annotations.target = target
        annotations.initialScale = initial
        annotations.minScale = minScale
        annotations.maxScale = maxScale
        return RevisionAutoscaler(
            config: config, spec: ScalingSpec(containerConcurrency: cc, annotations: annotations), nowMs: 0)
    }

    @Test func targetsFollowTheSpec() {
        #expect(scaler().target == 70)  // 100 × 0.7 when cc = 0
        #expect(scaler(cc: 10).target == 7)  // cc × 0.7
        #expect(scaler(cc: 0, target: 10).target == 7)  // annotation × 0.7
        #expect(abs(scaler(cc: 5, target: 10).target - 3.5) < 1e-9)  // annotation capped at cc
    }

    @Test func durationsAndExpansionsNeverTrap() {
        #expect(GoDuration.milliseconds("1m30s") == 90_000)
        #expect(GoDuration.milliseconds("9999999999999999h") == nil)
        #expect(GoDuration.milliseconds("1x") == nil)
        let env = ["PORT=8080", "NAME=x"]
        #expect(
            Controller.expand("--port=$(PORT) $$(NAME) $(NAME) $(MISSING) $", env)
                == "--port=8080 $(NAME) x $(MISSING) $")
    }

    @Test func activationScaleStaysWithinMaxScale() {
        var config = AutoscalerConfig()
        config.allowZeroInitialScale = true
        config.activationScale = 3
        var kpa = scaler(config: config, initial: 0, maxScale: 1)
        kpa.record(concurrency: 1, requests: 1, atMs: 1000)
        #expect(kpa.decide(readyPods: 0, routable: true, atMs: 1000) == 1)
        var unbounded = scaler(config: config, initial: 0)
        unbounded.record(concurrency: 1, requests: 1, atMs: 1000)
        #expect(unbounded.decide(readyPods: 0, routable: true, atMs: 1000) == 3)
    }

    @Test func windowAverageCountsSecondsSinceDataBegan() {
        var buckets = MetricBuckets(windowSeconds: 60)
        buckets.record(6, atMs: 10_000)
        buckets.record(4, atMs: 10_500)  // same second: adds up
        #expect(buckets.average(windowSeconds: 60, atMs: 10_900) == 10)
        buckets.record(0, atMs: 11_000)
        #expect(buckets.average(windowSeconds: 60, atMs: 11_000) == 5)
        #expect(buckets.average(windowSeconds: 60, atMs: 12_500) == 5)  // second 12 has no data yet: not a zero
        #expect(buckets.average(windowSeconds: 60, atMs: 80_000) == 0)  // older than the window
        buckets.record(.nan, atMs: 13_000)
        buckets.record(-.infinity, atMs: 13_000)
        #expect(buckets.average(windowSeconds: 60, atMs: 13_000) == 5)
    }

    @Test func scalesUpOnDemandAndPanics() {
        var config = AutoscalerConfig()
        config.allowZeroInitialScale = true
        var kpa = scaler(cc: 1, config: config, initial: 0)
        #expect(kpa.lastScale == 0)
        #expect(kpa.wantsPoke(concurrency: 1))
        kpa.record(concurrency: 1, requests: 1, atMs: 1000)
        #expect(kpa.decide(readyPods: 0, routable: true, atMs: 1000) == 2)  // ceil(1 / 0.7)
        kpa.record(concurrency: 8, requests: 100, atMs: 2000)
        // Panic: ceil(avg 4.5 / 0.7) = 7 pods over 1 ready ≥ 200 %.
        #expect(kpa.decide(readyPods: 1, routable: true, atMs: 2000) == 7)
        // In panic the count never goes down, even when demand drops.
        kpa.record(concurrency: 0, requests: 0, atMs: 3000)
        #expect(kpa.decide(readyPods: 7, routable: true, atMs: 3000) == 7)
    }

    @Test func scalesToZeroAfterStableWindowThenGrace() {
        var config = AutoscalerConfig()
        config.stableWindowMs = 6_000
        config.scaleToZeroGracePeriodMs = 3_000
        var kpa = scaler(config: config)
        #expect(kpa.lastScale == 1)
        kpa.record(concurrency: 1, requests: 1, atMs: 1_000)
        #expect(kpa.decide(readyPods: 1, routable: true, atMs: 1_000) == 1)
        // 6 s after the last demand the stable average is 0: marked inactive, still 1 pod.
        #expect(kpa.decide(readyPods: 1, routable: true, atMs: 7_500) == 1)
        #expect(kpa.decide(readyPods: 1, routable: true, atMs: 9_000) == 1)
        // Grace over: zero.
        #expect(kpa.decide(readyPods: 1, routable: true, atMs: 10_600) == 0)
    }

    @Test func boundsApply() {
        var kpa = scaler(cc: 1, minScale: 2, maxScale: 3)
        #expect(kpa.initialScale == 2)
        kpa.record(concurrency: 50, requests: 50, atMs: 1000)
        #expect(kpa.decide(readyPods: 2, routable: true, atMs: 1000) == 3)
        var idle = scaler(minScale: 2)
        idle.record(concurrency: 0, requests: 0, atMs: 1000)
        #expect(idle.decide(readyPods: 2, routable: true, atMs: 200_000) == 2)
    }

    @Test func configKeysParseAndNameTheKey() throws {
        var config = AutoscalerConfig()
        try config.set("stable-window", "6s")
        try config.set("scale-to-zero-grace-period", "1m30s")
        try config.set("container-concurrency-target-percentage", "50")
        #expect(config.stableWindowMs == 6_000)
        #expect(config.scaleToZeroGracePeriodMs == 90_000)
        #expect(config.containerConcurrencyTargetPercentage == 0.5)
        #expect(throws: AutoscalerConfig.Invalid.self) { try config.set("stable-window", "soon") }
        do { try config.set("max-scale-up-rate", "x") } catch {
            #expect(error.description.hasPrefix("--max-scale-up-rate=x: expected a number"))
        }
    }
}

@Suite struct ProcessControlTests {
    /// A short tool runs to its end on kn-local's loop; one that hangs is killed at its bound instead of holding
    /// the loop (and its children) forever.
    @Test func aToolRunsToItsEndAndAHungOneIsKilledAtItsBound() throws {
        let done = try ProcessControl.run(["/bin/sh", "-c", "exit 3"], logPath: nil)
        #expect(done.code == 3)
        do {
            _ = try ProcessControl.run(["/bin/sleep", "30"], logPath: nil, limitMs: 100)
            Issue.record("a 30 s sleep finished within a 100 ms bound")
        } catch {
            #expect("\(error)".contains("did not finish in 100 ms (killed)"), "\(error)")
        }
    }
}
