// SERVING_READINESS_PROBE (spec §1.5), both sides of the wire: the JSON the controller writes (kn-local) and
// the spec the queue-proxy parses from it.
import ProxyCore

/// One Kubernetes `core/v1 Probe`, reduced to what the queue-proxy executes.
public struct ProbeSpec: Sendable, Equatable {
    public enum Handler: Sendable, Equatable {
        case tcp(port: UInt16)
        /// `target` is the path (with leading slash) and query.
        case http(port: UInt16, target: String, headers: [String])
        case grpc(port: UInt16, service: String)
        /// exec, or no handler: always fails, at once and without polling (upstream's `ProbeContainer` returns
        /// false before any attempt).
        case unusable(String)
    }

    /// A handler that can never succeed: a round ends with "not ready" at once, even in aggressive mode.
    public var isUnusable: Bool {
        if case .unusable = handler { return true }
        return false
    }

    public var handler: Handler
    public var periodSeconds = 0
    public var timeoutSeconds = 0
    public var successThreshold = 1

    /// Aggressive mode (period 0): an attempt every 50 ms with a 100 ms timeout, for at most 10 s.
    public var isAggressive: Bool { periodSeconds == 0 }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses `SERVING_READINESS_PROBE`: "" → no probe (always ready); an object, or an array of objects when
    /// multi-container probing is on. A member of the wrong JSON type is an error naming its path, as Go's
    /// decoder fails the upstream queue-proxy's start on it (never read as absent).
    public static func parse(_ text: String, userPort: UInt16, multiContainer: Bool) throws(ParseError) -> [ProbeSpec] {
        if text.isEmpty { return [] }
        let json: JSON
        do { json = try JSON.parse(text) } catch {
            throw ParseError(description: "SERVING_READINESS_PROBE: invalid JSON (\(error))")
        }
        do throws(JSONFieldError) {
            if multiContainer, let items = json.arrayValue {
                return try items.enumerated().map { (i, item) throws(JSONFieldError) in
                    try parse(item, at: "SERVING_READINESS_PROBE[\(i)]", userPort)
                }
            }
            return [try parse(json, at: "SERVING_READINESS_PROBE", userPort)]
        } catch {
            throw ParseError(description: error.description)
        }
    }

    private static let int32 = 0...Int(Int32.max)

    private static func parse(_ json: JSON, at path: String, _ userPort: UInt16) throws(JSONFieldError) -> ProbeSpec {
        guard json.objectValue != nil else {
            throw JSONObjectReader.mismatch(path, "a JSON object (a Kubernetes Probe)", json)
        }
        let probe = try JSONObjectReader(json, at: path)
        /// `port`: an IntOrString, a number or a numeric string; absent means the user port.
        func port(_ handler: JSONObjectReader) throws(JSONFieldError) -> UInt16 {
            guard let value = handler.value("port") else { return userPort }
            if let n = value.intValue, let p = UInt16(exactly: n), p > 0 { return p }
            if let s = value.stringValue, let p = UInt16(s), p > 0 { return p }
            throw JSONObjectReader.mismatch(handler.path("port"), "a port number 1-65535", value)
        }
        func handlerReader(_ key: String) throws(JSONFieldError) -> JSONObjectReader? {
            guard let value = probe.value(key) else { return nil }
            return try JSONObjectReader(value, at: probe.path(key))
        }
        let handler: Handler
        if let tcp = try handlerReader("tcpSocket") {
            handler = .tcp(port: try port(tcp))
        } else if let http = try handlerReader("httpGet") {
            var path = try http.string("path") ?? "/"
            if !path.hasPrefix("/") { path = "/" + path }
            if let scheme = try http.string("scheme"), scheme.uppercased() != "HTTP" {
                handler = .unusable("httpGet scheme \(scheme) is not supported (HTTP only)")
            } else {
                var headers: [String] = []
                for (i, item) in (try http.array("httpHeaders") ?? []).enumerated() {
                    let header = try JSONObjectReader(item, at: http.path("httpHeaders") + "[\(i)]")
                    guard let name = try header.string("name"), let value = try header.string("value") else {
                        throw JSONFieldError("\(header.path): an HTTP header needs name and value")
                    }
                    headers.append("\(name): \(value)")
                }
                handler = .http(port: try port(http), target: path, headers: headers)
            }
        } else if let grpc = try handlerReader("grpc") {
            handler = .grpc(port: try port(grpc), service: try grpc.string("service") ?? "")
        } else if probe.value("exec") != nil {
            handler = .unusable("exec probe not supported")  // upstream's words
        } else {
            handler = .unusable("no probe found")  // upstream's words: no httpGet, tcpSocket or grpc
        }
        var spec = ProbeSpec(handler: handler)
        spec.periodSeconds = try probe.int("periodSeconds", in: int32, expected: "a non-negative integer") ?? 0
        spec.timeoutSeconds = try probe.int("timeoutSeconds", in: int32, expected: "a non-negative integer") ?? 0
        spec.successThreshold = max(
            1, try probe.int("successThreshold", in: int32, expected: "a non-negative integer") ?? 1)
        if spec.periodSeconds > 0 && spec.timeoutSeconds < 1 { spec.timeoutSeconds = 1 }
        return spec
    }
}

/// SERVING_READINESS_PROBE as Knative's controller writes it (spec §1.5): host 127.0.0.1, the port defaulted to
/// (or mapped onto) this pod's user port, HTTP scheme, threshold defaults; no probe → the default TCP probe.
public enum ReadinessProbeEncoding {
    public static func encode(_ probe: JSON?, userPort: UInt16, declaredPort: Int) -> String {
        guard let probe, let members = probe.objectValue else {
            return #"{"tcpSocket":{"port":\#(userPort),"host":"127.0.0.1"},"successThreshold":1}"#
        }
        func port(_ value: JSON?) -> JSON {
            // The declared containerPort (or none) means the pod's port; locally every pod has its own.
            if let p = value?.intValue, p != declaredPort { return .number(Double(p)) }
            return .number(Double(userPort))
        }
        var out: [(String, JSON)] = []
        let period = probe["periodSeconds"]?.intValue ?? 0
        for (key, value) in members {
            switch key {
            case "httpGet":
                var fields = (value.objectValue ?? []).filter { !["port", "host", "scheme"].contains($0.0) }
                fields.append(("port", port(value["port"])))
                fields.append(("host", .string("127.0.0.1")))
                fields.append(("scheme", value["scheme"] ?? .string("HTTP")))
                out.append((key, .object(fields)))
            case "tcpSocket", "grpc":
                var fields = (value.objectValue ?? []).filter { !["port", "host"].contains($0.0) }
                fields.append(("port", port(value["port"])))
                if key == "tcpSocket" { fields.append(("host", .string("127.0.0.1"))) }
                out.append((key, .object(fields)))
            case "timeoutSeconds":
                if period > 0, (value.intValue ?? 0) < 1 {
                    out.append((key, .number(1)))
                } else {
                    out.append((key, value))
                }
            default:
                out.append((key, value))
            }
        }
        if probe["successThreshold"] == nil { out.append(("successThreshold", .number(1))) }
        if period != 0 {
            if probe["failureThreshold"] == nil { out.append(("failureThreshold", .number(3))) }
            if probe["timeoutSeconds"] == nil { out.append(("timeoutSeconds", .number(1))) }
        }
        return JSON.object(out).text
    }
}
