// Knative `serving.knative.dev/v1` Service manifests: decoding from YAML/JSON values, Knative's defaults, and
// validation with Knative's messages (knative.dev/pkg FieldError rendering: "<message>: <path>[, <path>]").
import KnativeWire
import ProxyCore

/// Knative's validation failure: one or more field errors, rendered one per line like `apis.FieldError`.
public struct ValidationError: Error, CustomStringConvertible, Sendable {
    public var errors: [String]
    public init(_ errors: [String]) { self.errors = errors }
    public var description: String { errors.joined(separator: "\n") }
}

/// The autoscaling annotations of a revision template, parsed.
public struct ScalingAnnotations: Sendable, Equatable {
    public var target: Double?
    public var utilizationPercentage: Double?
    public var minScale: Int?
    public var maxScale: Int?
    public var initialScale: Int?
    public var windowMs: Int64?
    public var metric = "concurrency"
    public var panicWindowPercentage: Double?
    public var panicThresholdPercentage: Double?
    public var scaleDownDelayMs: Int64?
    public var podRetentionMs: Int64?
    public var activationScale: Int?
}

public struct EnvVar: Sendable, Equatable {
    public var name: String
    public var value: String
}

public struct ContainerSpec: Sendable, Equatable {
    public var name = "user-container"
    public var image = ""
    public var command: [String] = []
    public var args: [String] = []
    public var env: [EnvVar] = []
    /// The declared containerPort (default 8080). Locally every pod gets its own port instead (see Pods).
    public var port = 8080
    /// "http1" or "h2c" (the port's name).
    public var portName = "http1"
    /// The user's readinessProbe as given (JSON of a core/v1 Probe), or nil for Knative's default TCP probe.
    public var readinessProbe: JSON?
}

/// `spec.template`: everything that makes a revision. Two equal templates make the same revision.
public struct RevisionTemplate: Sendable, Equatable {
    public var name: String?
    public var labels: [String: String] = [:]
    public var annotations: [String: String] = [:]
    public var containerConcurrency = 0
    public var timeoutSeconds = 300
    public var responseStartTimeoutSeconds: Int?
    public var idleTimeoutSeconds: Int?
    public var container = ContainerSpec()
    public var scaling = ScalingAnnotations()
}

/// One `spec.traffic` entry as written.
public struct TrafficEntry: Sendable, Equatable {
    public var revisionName: String?
    public var latestRevision: Bool?
    public var percent: Int?
    public var tag: String?
}

public struct ServiceManifest: Sendable, Equatable {
    public var namespace = "default"
    public var name = ""
    public var labels: [String: String] = [:]
    public var annotations: [String: String] = [:]
    public var template = RevisionTemplate()
    /// Defaulted to `[{latestRevision: true, percent: 100}]` when absent, as Knative's webhook does.
    public var traffic: [TrafficEntry] = []
}

/// Limits from config-defaults (spec §4.1) and the KPA's annotation bounds.
public enum ManifestLimits {
    public static let maxTimeoutSeconds = 600
    public static let maxContainerConcurrency = 1000
}

public enum Manifest {
    /// Parses a file's text: YAML (any number of `---` documents) or JSON. Each document must be a Service.
    public static func parse(_ text: String, defaultNamespace: String = "default", allowZeroInitialScale: Bool = false)
        throws -> [ServiceManifest]
    {
        try documents(text).map {
            try decode($0, defaultNamespace: defaultNamespace, allowZeroInitialScale: allowZeroInitialScale)
        }
    }

    /// Splits a file's text into its objects as JSON values (YAML documents, a JSON object, array or List),
    /// not decoded yet: kn-local keeps each Service as applied, to restore it after a restart.
    public static func documents(_ text: String) throws -> [JSON] {
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }
        let documents: [JSON]
        if trimmed.first == "{" || trimmed.first == "[" {
            do {
                let json = try JSON.parse(text)
                documents = json["items"]?.arrayValue ?? json.arrayValue ?? [json]
            } catch { throw ManifestError("invalid JSON: \(error)") }
        } else {
            do { documents = try YAML.parseDocuments(text) } catch {
                throw ManifestError("error parsing YAML: \(error)")
            }
        }
        guard !documents.isEmpty else { throw ManifestError("no objects passed to apply") }
        return documents
    }

    /// Decodes and validates one Service object.
    public static func decode(_ json: JSON, defaultNamespace: String = "default", allowZeroInitialScale: Bool = false)
        throws -> ServiceManifest
    {
        guard json.objectValue != nil else {
            throw ManifestError("expected a Service object, got \(json.text.prefix(40))")
        }
        let apiVersion = json["apiVersion"]?.stringValue ?? ""
        let kind = json["kind"]?.stringValue ?? ""
        if apiVersion.isEmpty || kind.isEmpty {
            throw ManifestError(
                "error validating data: [apiVersion not set, kind not set]; every object needs apiVersion: serving.knative.dev/v1 and kind: Service"
            )
        }
        guard apiVersion == "serving.knative.dev/v1", kind == "Service" else {
            throw ManifestError(
                "no matches for kind \"\(kind)\" in version \"\(apiVersion)\" (kn-local serves only serving.knative.dev/v1 Service)"
            )
        }
        var d = Decoder()
        var service = ServiceManifest()
        let metadata = json["metadata"]
        service.name = d.string(metadata?["name"], "metadata.name") ?? ""
        service.namespace = d.string(metadata?["namespace"], "metadata.namespace") ?? defaultNamespace
        service.labels = d.stringMap(metadata?["labels"], "metadata.labels")
        service.annotations = d.stringMap(metadata?["annotations"], "metadata.annotations")
        let spec = json["spec"]
        let template = spec?["template"]
        let tmeta = template?["metadata"]
        var t = RevisionTemplate()
        t.name = d.string(tmeta?["name"], "spec.template.metadata.name")
        t.labels = d.stringMap(tmeta?["labels"], "spec.template.metadata.labels")
        t.annotations = d.stringMap(tmeta?["annotations"], "spec.template.metadata.annotations")
        let tspec = template?["spec"]
        t.containerConcurrency = d.int(tspec?["containerConcurrency"], "spec.template.spec.containerConcurrency") ?? 0
        t.timeoutSeconds = d.int(tspec?["timeoutSeconds"], "spec.template.spec.timeoutSeconds") ?? 300
        t.responseStartTimeoutSeconds = d.int(
            tspec?["responseStartTimeoutSeconds"], "spec.template.spec.responseStartTimeoutSeconds")
        t.idleTimeoutSeconds = d.int(tspec?["idleTimeoutSeconds"], "spec.template.spec.idleTimeoutSeconds")
        let containers = tspec?["containers"]?.arrayValue ?? []
        if containers.isEmpty {
            d.errors.append("missing field(s): spec.template.spec.containers")
        } else if containers.count > 1 {
            d.errors.append(
                "kn-local runs one container per revision (sidecars are not supported): spec.template.spec.containers")
        }
        if let c = containers.first {
            let at = "spec.template.spec.containers[0]"
            var container = ContainerSpec()
            container.name = d.string(c["name"], at + ".name") ?? "user-container"
            if container.name == "queue-proxy" {
                d.errors.append("\"queue-proxy\" is a reserved container name: \(at).name")
            }
            container.image = d.string(c["image"], at + ".image") ?? ""
            container.command = d.stringList(c["command"], at + ".command")
            container.args = d.stringList(c["args"], at + ".args")
            for (i, e) in (c["env"]?.arrayValue ?? []).enumerated() {
                guard let name = d.string(e["name"], "\(at).env[\(i)].name"), !name.isEmpty else {
                    d.errors.append("missing field(s): \(at).env[\(i)].name")
                    continue
                }
                if e["valueFrom"] != nil {
                    d.errors.append("kn-local has no Secrets or ConfigMaps; use value: \(at).env[\(i)].valueFrom")
                }
                if ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"].contains(name) {
                    d.errors.append("\"\(name)\" is a reserved environment variable: \(at).env[\(i)].name")
                }
                container.env.append(EnvVar(name: name, value: d.string(e["value"], "\(at).env[\(i)].value") ?? ""))
            }
            let ports = c["ports"]?.arrayValue ?? []
            if ports.count > 1 {
                d.errors.append(
                    "more than one container port is set: spec.template.spec.containers[*].ports\nOnly a single port is allowed across all containers"
                )
            }
            if let p = ports.first {
                if let port = d.int(p["containerPort"], "\(at).ports[0].containerPort") {
                    if port < 0 || port > 65535 {
                        d.errors.append("expected 0 <= \(port) <= 65535: \(at).ports.containerPort")
                    } else if [8012, 8013, 8022, 9090, 9091, 8008].contains(port) {
                        d.errors.append(
                            "invalid value: \(port) is a reserved port: \(at).ports.containerPort\n\(port) is a reserved port, please use a different value"
                        )
                    }
                    container.port = port
                }
                if let name = d.string(p["name"], "\(at).ports[0].name"), !name.isEmpty {
                    if name == "http1" || name == "h2c" {
                        container.portName = name
                    } else {
                        d.errors.append(
                            "Port name \(name) is not allowed: \(at).ports\nName must be empty, or one of: 'h2c', 'http1'"
                        )
                    }
                }
            }
            if let probe = c["readinessProbe"] {
                guard probe.objectValue != nil else {
                    throw ValidationError(d.errors + ["expected an object: \(at).readinessProbe"])
                }
                if probe["exec"] != nil {
                    d.errors.append(
                        "kn-local cannot run exec probes; use httpGet or tcpSocket: \(at).readinessProbe.exec")
                }
                container.readinessProbe = probe
            }
            if container.image.isEmpty && container.command.isEmpty { d.errors.append("missing field(s): \(at).image") }
            t.container = container
        }
        t.scaling = d.scaling(
            t.annotations, "spec.template.metadata.annotations", allowZeroInitialScale: allowZeroInitialScale)
        service.template = t
        for (i, entry) in (spec?["traffic"]?.arrayValue ?? []).enumerated() {
            let at = "spec.traffic[\(i)]"
            var target = TrafficEntry()
            target.revisionName = d.string(entry["revisionName"], at + ".revisionName")
            target.latestRevision = d.bool(entry["latestRevision"], at + ".latestRevision")
            target.percent = d.int(entry["percent"], at + ".percent")
            target.tag = d.string(entry["tag"], at + ".tag")
            if entry["configurationName"] != nil {
                d.errors.append("must not set the field(s): \(at).configurationName")
            }
            service.traffic.append(target)
        }
        if spec?["traffic"] == nil { service.traffic = [TrafficEntry(latestRevision: true, percent: 100)] }
        let all = (d.errors + validate(service)).sorted()
        if !all.isEmpty { throw ValidationError(all) }
        return service
    }

    /// Knative's semantic checks (pkg/apis/serving/v1 *_validation.go).
    static func validate(_ s: ServiceManifest) -> [String] {
        var errors: [String] = []
        if s.name.isEmpty {
            errors.append("name or generateName is required: metadata.name")
        } else if let problem = dns1035Problem(s.name) {
            errors.append("invalid value: not a DNS 1035 label: [\(problem)]: metadata.name")
        }
        for key in s.annotations.keys.sorted() where key.hasPrefix("autoscaling.knative.dev") {
            errors.append(
                "invalid key name \"\(key)\": metadata.annotations\nautoscaling annotations must be put under \"spec.template.metadata.annotations\" to work"
            )
        }
        if let problem = dns1123Problem(s.namespace) {
            errors.append("invalid value: \(s.namespace): metadata.namespace\n\(problem)")
        }
        let t = s.template
        if let name = t.name, !name.isEmpty, !s.name.isEmpty, !name.hasPrefix(s.name + "-") {
            errors.append("invalid value: \"\(name)\" must have prefix \"\(s.name)-\": spec.template.metadata.name")
        }
        if t.containerConcurrency < 0 || t.containerConcurrency > ManifestLimits.maxContainerConcurrency {
            errors.append(
                "expected 0 <= \(t.containerConcurrency) <= \(ManifestLimits.maxContainerConcurrency): spec.template.spec.containerConcurrency"
            )
        }
        if t.timeoutSeconds < 0 || t.timeoutSeconds > ManifestLimits.maxTimeoutSeconds {
            errors.append(
                "expected 0 <= \(t.timeoutSeconds) <= \(ManifestLimits.maxTimeoutSeconds): spec.template.spec.timeoutSeconds"
            )
        }
        if let v = t.responseStartTimeoutSeconds, v < 0 || v > t.timeoutSeconds {
            errors.append("expected 0 <= \(v) <= \(t.timeoutSeconds): spec.template.spec.responseStartTimeoutSeconds")
        }
        if let v = t.idleTimeoutSeconds, v < 0 || v > t.timeoutSeconds {
            errors.append("expected 0 <= \(v) <= \(t.timeoutSeconds): spec.template.spec.idleTimeoutSeconds")
        }
        var sum = 0
        var tags: [String: [Int]] = [:]
        for (i, entry) in s.traffic.enumerated() {
            let at = "spec.traffic[\(i)]"
            // Defaulting leaves latestRevision nil meaning "revisionName is empty" (route_defaults.go).
            let pinned = !(entry.revisionName ?? "").isEmpty
            if let latest = entry.latestRevision, pinned == latest {
                errors.append(
                    "may not set revisionName \"\(entry.revisionName ?? "")\" when latestRevision is \(latest): \(at).latestRevision"
                )
            }
            if let p = entry.percent {
                if p < 0 || p > 100 { errors.append("expected 0 <= \(p) <= 100: \(at).percent") } else { sum += p }
                if p > 100 && p <= 1_000_000 { sum += p }  // upstream sums what was given; bounded: no overflow
            }
            if let tag = entry.tag {
                tags[tag, default: []].append(i)
                if let problem = dns1035Problem(tag) {
                    errors.append("invalid value: not a DNS 1035 label: [\(problem)]: spec.traffic.tag[\(i)]")
                }
            }
        }
        if !s.traffic.isEmpty && sum != 100 {
            errors.append("Traffic targets sum to \(sum), want 100: spec.traffic")
        }
        for (tag, indexes) in tags.sorted(by: { $0.key < $1.key }) where indexes.count > 1 {
            errors.append(
                "Multiple definitions for \"\(tag)\": "
                    + indexes.map { "spec.traffic[\($0)].tag" }.joined(separator: ", "))
        }
        return errors.sorted()
    }

    static func dns1035Problem(_ name: String) -> String? { DNSName.dns1035LabelProblem(name) }

    static func dns1123Problem(_ name: String) -> String? { DNSName.dns1123LabelProblem(name) }
}

public struct ManifestError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ text: String) { description = text }
}

/// Typed field access that collects errors instead of stopping at the first one.
struct Decoder {
    var errors: [String] = []

    mutating func string(_ value: JSON?, _ path: String) -> String? {
        guard let value else { return nil }
        switch value {
        case .null: return nil
        case .string(let s): return s
        default:
            errors.append("expected a string (quote the value in YAML): \(path)")
            return nil
        }
    }

    mutating func int(_ value: JSON?, _ path: String) -> Int? {
        guard let value else { return nil }
        if case .null = value { return nil }
        guard let number = value.doubleValue, number == number.rounded(), abs(number) < 1e15 else {
            errors.append("expected an integer: \(path)")
            return nil
        }
        return Int(number)
    }

    mutating func bool(_ value: JSON?, _ path: String) -> Bool? {
        guard let value else { return nil }
        if case .null = value { return nil }
        guard let b = value.boolValue else {
            errors.append("expected true or false: \(path)")
            return nil
        }
        return b
    }

    mutating func stringList(_ value: JSON?, _ path: String) -> [String] {
        guard let value else { return [] }
        if case .null = value { return [] }
        guard let list = value.arrayValue else {
            errors.append("expected a list of strings: \(path)")
            return []
        }
        var result: [String] = []
        for (i, item) in list.enumerated() {
            if let s = string(item, "\(path)[\(i)]") { result.append(s) }
        }
        return result
    }

    mutating func stringMap(_ value: JSON?, _ path: String) -> [String: String] {
        guard let value else { return [:] }
        if case .null = value { return [:] }
        guard let members = value.objectValue else {
            errors.append("expected a map of strings: \(path)")
            return [:]
        }
        var result: [String: String] = [:]
        for (key, item) in members {
            if let s = string(item, "\(path).\(key)") { result[key] = s }
        }
        return result
    }

    /// `autoscaling.knative.dev/*` annotations (pkg/apis/autoscaling/annotation_validation.go).
    mutating func scaling(_ annotations: [String: String], _ path: String, allowZeroInitialScale: Bool)
        -> ScalingAnnotations
    {
        var s = ScalingAnnotations()
        let prefix = "autoscaling.knative.dev/"
        func key(_ name: String) -> String { path + "." + prefix + name }
        func number(_ name: String) -> Double? {
            guard let text = annotations[prefix + name] else { return nil }
            guard let v = Double(text), v.isFinite else {
                errors.append("invalid value: \(text): \(key(name))")
                return nil
            }
            return v
        }
        func integer(_ name: String) -> Int? {
            guard let text = annotations[prefix + name] else { return nil }
            guard let v = Int(text) else {
                errors.append("invalid value: \(text): \(key(name))")
                return nil
            }
            return v
        }
        // getIntGE0: a non-negative int32.
        func scale(_ name: String) -> Int? {
            guard let v = integer(name) else { return nil }
            guard v >= 0 && v <= Int(Int32.max) else {
                errors.append("expected 0 <= \(v) <= 2147483647: \(key(name))")
                return nil
            }
            return v
        }
        func duration(_ name: String, max: Int64 = 3_600_000) -> Int64? {
            guard let text = annotations[prefix + name] else { return nil }
            guard let ms = GoDuration.milliseconds(text) else {
                errors.append("invalid value: \(text): \(key(name))")
                return nil
            }
            if ms > max {
                errors.append("expected 0s <= \(text) <= 1h0m0s: \(key(name))")
                return nil
            }
            if ms % 1000 != 0 {
                errors.append("must be specified with at most second precision: \(key(name))")
                return nil
            }
            return ms
        }
        if let v = number("target") {
            if v < 0.01 {
                errors.append("target \(annotations[prefix + "target"]!) should be at least 0.01: \(key("target"))")
            } else {
                s.target = v
            }
        }
        if let v = number("target-utilization-percentage") {
            if v < 1 || v > 100 {
                errors.append(
                    "expected 1 <= \(annotations[prefix + "target-utilization-percentage"]!) <= 100: \(key("target-utilization-percentage"))"
                )
            } else {
                s.utilizationPercentage = v
            }
        }
        s.minScale = scale("min-scale")
        s.maxScale = scale("max-scale")
        if let lo = s.minScale, let hi = s.maxScale, hi != 0, lo > hi {
            errors.append("max-scale=\(hi) is less than min-scale=\(lo): \(key("max-scale")), \(key("min-scale"))")
        }
        if let v = integer("initial-scale") {
            if v > Int(Int32.max) {
                errors.append("expected 0 <= \(v) <= 2147483647: \(key("initial-scale"))")
            } else if v < 0 {
                errors.append("invalid value: \(v): \(key("initial-scale")) must be greater than 0")
            } else if v == 0 && !allowZeroInitialScale {
                errors.append("invalid value: 0: \(key("initial-scale"))=0 not allowed by cluster")
            } else {
                s.initialScale = v
            }
        }
        if let text = annotations[prefix + "window"] {
            if let ms = GoDuration.milliseconds(text) {
                if ms < 6_000 || ms > 3_600_000 {
                    errors.append("expected 6s <= \(text) <= 1h0m0s: \(key("window"))")
                } else if ms % 1000 != 0 {
                    errors.append("must be specified with at most second precision: \(key("window"))")
                } else {
                    s.windowMs = ms
                }
            } else {
                errors.append("invalid value: \(text): \(key("window"))")
            }
        }
        if let v = number("panic-window-percentage") {
            if v < 1 || v > 100 {
                errors.append(
                    "expected 1 <= \(annotations[prefix + "panic-window-percentage"]!) <= 100: \(key("panic-window-percentage"))"
                )
            } else {
                s.panicWindowPercentage = v
            }
        }
        if let v = number("panic-threshold-percentage") {
            if v < 110 || v > 1000 {
                errors.append(
                    "expected 110 <= \(annotations[prefix + "panic-threshold-percentage"]!) <= 1000: \(key("panic-threshold-percentage"))"
                )
            } else {
                s.panicThresholdPercentage = v
            }
        }
        s.scaleDownDelayMs = duration("scale-down-delay")
        s.podRetentionMs = duration("scale-to-zero-pod-retention-period")
        if let v = number("target-burst-capacity"), v < 0 && v != -1 {
            // Accepted otherwise but without effect: kn-local keeps the activator in the path (TBC −1).
            errors.append(
                "invalid value: \(annotations[prefix + "target-burst-capacity"]!): \(key("target-burst-capacity"))")
        }
        if let v = integer("activation-scale") {
            if v < 1 {
                errors.append("activation-scale=\(v) must be greater than 1: \(key("activation-scale"))")
            } else {
                if let lo = s.minScale, lo > v {
                    errors.append("min-scale=\(lo) is greater than activation-scale=\(v): \(key("activation-scale"))")
                }
                if let hi = s.maxScale, hi != 0, hi < v {
                    errors.append("max-scale=\(hi) is less than activation-scale=\(v): \(key("activation-scale"))")
                }
                s.activationScale = v
            }
        }
        if let algorithm = annotations[prefix + "metric-aggregation-algorithm"],
            !["linear", "weighted-exponential", "weightedExponential"].contains(algorithm)
        {
            // Both are accepted; kn-local averages linearly (upstream's default).
            errors.append("invalid value: \(algorithm): \(key("metric-aggregation-algorithm"))")
        }
        if let metric = annotations[prefix + "metric"] {
            if metric == "concurrency" || metric == "rps" {
                s.metric = metric
            } else {
                errors.append("invalid value: \(metric): \(key("metric"))")
            }
        }
        if let cls = annotations[prefix + "class"], cls != "kpa.autoscaling.knative.dev" {
            errors.append(
                "invalid value: \(cls): \(key("class"))\nkn-local runs only the KPA (kpa.autoscaling.knative.dev)")
        }
        return s
    }
}
