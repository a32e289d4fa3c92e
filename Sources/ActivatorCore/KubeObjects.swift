// The Kubernetes objects the activator reads, decoded from the API's JSON (off the hot path: once per watch
// event): Knative's Revision, core/v1 Endpoints and ConfigMap, the list and watch-event envelopes and
// metav1.Status. Shapes from knative.dev/serving pkg/apis/serving/v1 and k8s.io/api core/v1, meta/v1.
// Only the fields the activator acts on are read; a field of the wrong JSON type is an error naming its path.
import KnativeWire
import ProxyCore

/// Labels and values Knative puts on the objects (spec §0.4).
public enum KnativeLabels {
    public static let revision = "serving.knative.dev/revision"
    public static let serviceType = "networking.internal.knative.dev/serviceType"
}

/// An object's identity and version (`metadata`).
public struct KubeMeta: Sendable, Equatable {
    public var namespace = ""
    public var name = ""
    public var resourceVersion = ""
    public var labels: [String: String] = [:]

    public var key: String { namespace + "/" + name }

    public init() {}

    /// Reads `metadata` of `object`.
    public init(of object: JSONObjectReader) throws(JSONFieldError) {
        guard let value = object.value("metadata") else { return }
        let meta = try JSONObjectReader(value, at: object.path("metadata"))
        namespace = try meta.string("namespace") ?? ""
        name = try meta.string("name") ?? ""
        resourceVersion = try meta.string("resourceVersion") ?? ""
        for (key, value) in try meta.object("labels") ?? [] {
            guard let text = value.stringValue else {
                throw JSONObjectReader.mismatch(meta.path("labels") + "." + key, "a string", value)
            }
            labels[key] = text
        }
    }
}

/// A LIST answer: `{"kind": "…List", "metadata": {"resourceVersion": "…", "continue": "…"}, "items": [...]}`.
public struct KubeList {
    public var resourceVersion: String
    /// The token for the next page of a `limit`ed LIST; "" on the last (or only) page.
    public var continueToken: String
    public var items: [JSON]

    public static func parse(_ json: JSON) throws(JSONFieldError) -> KubeList {
        let root = try JSONObjectReader(json, at: "list")
        let meta = try KubeMeta(of: root)
        var token = ""
        if let metadata = root.value("metadata") {
            token = try JSONObjectReader(metadata, at: root.path("metadata")).string("continue") ?? ""
        }
        return KubeList(
            resourceVersion: meta.resourceVersion, continueToken: token, items: try root.array("items") ?? [])
    }
}

/// metav1.Status: what the API answers instead of an object (an HTTP error body, a watch ERROR event).
public struct KubeStatus: Sendable, Equatable {
    public var code: Int
    public var reason: String
    public var message: String

    /// - Returns: nil when `json` is not a Status object.
    public static func parse(_ json: JSON) -> KubeStatus? {
        guard json["kind"]?.stringValue == "Status" else { return nil }
        return KubeStatus(
            code: json["code"]?.intValue ?? 0, reason: json["reason"]?.stringValue ?? "",
            message: json["message"]?.stringValue ?? "")
    }

    /// 410 Gone (reason `Expired` or `Gone`): the resourceVersion is too old; the client must list again.
    public var isGone: Bool { code == 410 || reason == "Expired" || reason == "Gone" }
}

/// One line of a watch stream: `{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": {...}}`.
public struct KubeWatchEvent {
    public enum Kind: String, Sendable {
        case added = "ADDED"
        case modified = "MODIFIED"
        case deleted = "DELETED"
        case bookmark = "BOOKMARK"
        case error = "ERROR"
    }

    public var kind: Kind
    public var object: JSON

    /// Decodes one line of the stream. - Throws: naming what is wrong with it.
    public static func parse(_ line: String) throws(JSONFieldError) -> KubeWatchEvent {
        let json: JSON
        do { json = try JSON.parse(line) } catch { throw JSONFieldError("watch event: invalid JSON (\(error))") }
        let root = try JSONObjectReader(json, at: "event")
        guard let type = try root.string("type") else { throw JSONFieldError("event.type: expected a string") }
        guard let kind = Kind(rawValue: type) else {
            throw JSONObjectReader.mismatch("event.type", "ADDED, MODIFIED, DELETED, BOOKMARK or ERROR", .string(type))
        }
        guard let object = root.value("object") else { throw JSONFieldError("event.object: expected an object") }
        _ = try JSONObjectReader(object, at: "event.object")
        return KubeWatchEvent(kind: kind, object: object)
    }
}

/// A Knative Revision (serving.knative.dev/v1) → the activator's `RevisionSpec`.
public enum KubeRevision {
    /// Knative's defaulting webhook fills `timeoutSeconds` (config-defaults `revision-timeout-seconds`, 300);
    /// an object without it (never admitted through the webhook) gets that default.
    static let defaultTimeoutSeconds = 300

    /// - Throws: a field of the wrong type or range, naming its path (`revision.spec.containerConcurrency: …`).
    public static func spec(_ json: JSON) throws(JSONFieldError) -> RevisionSpec {
        let root = try JSONObjectReader(json, at: "revision")
        let meta = try KubeMeta(of: root)
        guard !meta.namespace.isEmpty, !meta.name.isEmpty else {
            throw JSONFieldError("revision.metadata: expected a namespace and a name")
        }
        var revision = RevisionSpec(namespace: meta.namespace, name: meta.name)
        revision.timeoutSeconds = defaultTimeoutSeconds
        guard let specValue = root.value("spec") else { return revision }
        let spec = try JSONObjectReader(specValue, at: root.path("spec"))
        func int(_ key: String, _ value: inout Int) throws(JSONFieldError) {
            if let v = try spec.int(key, in: 0...Int(Int32.max), expected: "an integer from 0 to 2147483647") {
                value = v
            }
        }
        try int("containerConcurrency", &revision.containerConcurrency)
        try int("timeoutSeconds", &revision.timeoutSeconds)
        try int("responseStartTimeoutSeconds", &revision.responseStartTimeoutSeconds)
        try int("idleTimeoutSeconds", &revision.idleTimeoutSeconds)
        // Knative's GetProtocol: the serving container (the one with ports, else the first) is h2c when its
        // first port is named "h2c".
        let containers = try spec.array("containers") ?? []
        var serving: JSONObjectReader?
        for (i, item) in containers.enumerated() {
            let container = try JSONObjectReader(item, at: "\(spec.path("containers"))[\(i)]")
            if serving == nil { serving = container }
            if let ports = try container.array("ports"), !ports.isEmpty {
                serving = container
                break
            }
        }
        if let serving, let first = try serving.array("ports")?.first {
            let port = try JSONObjectReader(first, at: "\(serving.path("ports"))[0]")
            if try port.string("name") == "h2c" { revision.protocolName = "h2c" }
        }
        return revision
    }
}

/// core/v1 Endpoints: `subsets[].{addresses, notReadyAddresses}[].ip` with `subsets[].ports[].{name, port}`.
public struct KubeEndpoints: Sendable, Equatable {
    public var meta: KubeMeta
    /// Ready addresses on the port named `http` or `http2` (the revision's private or public Service port),
    /// sorted by `ip:port` text.
    public var ready: [SocketAddress]
    /// Not-ready addresses on that port, sorted the same way: upstream's activator probes these too and sends
    /// traffic to one as soon as its own probe passes, ahead of the kubelet's readiness reaching the Endpoints.
    public var notReady: [SocketAddress]

    /// The revision whose endpoints these are (label `serving.knative.dev/revision`): "ns/name", or nil.
    public var revisionKey: String? {
        guard let name = meta.labels[KnativeLabels.revision], !name.isEmpty else { return nil }
        return meta.namespace + "/" + name
    }

    /// The ready IPs as the API wrote them, sorted as strings, without duplicates (the activators' list for
    /// subsetting, upstream's `healthyAddresses`).
    public var readyIPs: [String]

    public static func parse(_ json: JSON) throws(JSONFieldError) -> KubeEndpoints {
        let root = try JSONObjectReader(json, at: "endpoints")
        let meta = try KubeMeta(of: root)
        var ready: [SocketAddress] = []
        var notReady: [SocketAddress] = []
        var ips: Set<String> = []
        for (s, item) in (try root.array("subsets") ?? []).enumerated() {
            let subset = try JSONObjectReader(item, at: "endpoints.subsets[\(s)]")
            var servingPort: UInt16?
            for (p, portItem) in (try subset.array("ports") ?? []).enumerated() {
                let port = try JSONObjectReader(portItem, at: "\(subset.path("ports"))[\(p)]")
                let name = try port.string("name") ?? ""
                guard name == "http" || name == "http2" else { continue }
                guard let number = try port.int("port", in: 1...65535, expected: "a port number 1-65535") else {
                    throw JSONFieldError("\(port.path("port")): expected a port number 1-65535")
                }
                servingPort = UInt16(number)
            }
            guard let servingPort else { continue }
            for key in ["addresses", "notReadyAddresses"] {
                for (a, addressItem) in (try subset.array(key) ?? []).enumerated() {
                    let address = try JSONObjectReader(addressItem, at: "\(subset.path(key))[\(a)]")
                    let ip = try address.string("ip") ?? ""
                    guard let socketAddress = SocketAddress(ip: ip, port: servingPort) else {
                        throw JSONObjectReader.mismatch(address.path("ip"), "an IP address", .string(ip))
                    }
                    if key == "addresses" {
                        if !ready.contains(socketAddress) { ready.append(socketAddress) }
                        ips.insert(ip)
                    } else if !notReady.contains(socketAddress) {
                        notReady.append(socketAddress)
                    }
                }
            }
        }
        ready.sort { $0.description < $1.description }
        notReady.removeAll { ready.contains($0) }
        notReady.sort { $0.description < $1.description }
        return KubeEndpoints(meta: meta, ready: ready, notReady: notReady, readyIPs: ips.sorted())
    }
}

/// core/v1 ConfigMap: its `data`.
public enum KubeConfigMap {
    public static func data(_ json: JSON) throws(JSONFieldError) -> [String: String] {
        let root = try JSONObjectReader(json, at: "configmap")
        var data: [String: String] = [:]
        for (key, value) in try root.object("data") ?? [] {
            guard let text = value.stringValue else {
                throw JSONObjectReader.mismatch("configmap.data." + key, "a string", value)
            }
            data[key] = text
        }
        return data
    }
}

/// The cluster's DNS domain as a pod sees it (knative.dev/pkg network's rule): the first `svc.<domain>` in
/// resolv.conf's `search` line.
public enum KubeCluster {
    /// - Returns: `<domain>` of the first `search` entry `svc.<domain>` (a trailing dot dropped), or nil.
    public static func domain(resolvConf text: String) -> String? {
        for line in text.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.first == "search" else { continue }
            for word in words.dropFirst() where word.hasPrefix("svc.") {
                var domain = word.dropFirst(4)
                while domain.hasSuffix(".") { domain = domain.dropLast() }
                if !domain.isEmpty { return String(domain) }
            }
        }
        return nil
    }
}

/// Upstream's `inferIndex` and the public Endpoints' rule (throttler.go `handlePubEpsUpdate`): this activator's
/// index is its IP's position among the ready activator IPs, sorted as strings.
public enum ActivatorSubset {
    /// - Returns: (count, index) for `selfIP` among `ips`; nil when `selfIP` is not among them (upstream then
    ///   ignores the update: this activator is not in the revision's path yet, and keeps what it had).
    public static func infer(ips: [String], selfIP: String) -> (count: Int, index: Int)? {
        let sorted = Array(Set(ips)).sorted()
        guard let index = sorted.firstIndex(of: selfIP) else { return nil }
        return (sorted.count, index)
    }
}

/// Splits a watch stream's payload into lines: events are newline-delimited JSON objects, and a line may be cut
/// anywhere by the chunked framing and by reads. Blank lines are skipped; a line longer than `maxLine` is an
/// error (the API never sends one; a stream that does is broken).
public struct WatchLineSplitter {
    private var partial: [UInt8] = []
    public let maxLine: Int

    public init(maxLine: Int = 16 << 20) {
        self.maxLine = maxLine
    }

    /// Bytes held of an unfinished line.
    public var pendingCount: Int { partial.count }

    /// Feeds `bytes`. - Returns: the complete lines in them, without their newline.
    /// - Throws: when an unfinished line grows beyond `maxLine`.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(JSONFieldError) -> [String] {
        var lines: [String] = []
        var start = 0
        for i in 0..<bytes.count where bytes[i] == 0x0A {
            partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
            if partial.last == 0x0D { partial.removeLast() }
            if partial.contains(where: { $0 != 0x20 && $0 != 0x09 }) {
                lines.append(String(decoding: partial, as: UTF8.self))
            }
            partial.removeAll(keepingCapacity: true)
            start = i + 1
        }
        partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...]))
        guard partial.count <= maxLine else {
            partial = []
            throw JSONFieldError("watch stream: a line longer than \(maxLine) bytes")
        }
        return lines
    }

    public mutating func feed(_ bytes: [UInt8]) throws(JSONFieldError) -> [String] {
        let result: Result<[String], JSONFieldError> = bytes.withUnsafeBytes { raw in
            do throws(JSONFieldError) { return .success(try feed(raw)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    public mutating func reset() { partial = [] }
}
