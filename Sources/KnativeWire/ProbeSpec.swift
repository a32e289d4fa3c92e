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
    /// multi-container probing is on.
    public static func parse(_ text: String, userPort: UInt16, multiContainer: Bool) throws(ParseError) -> [ProbeSpec] {
        if text.isEmpty { return [] }
        let json: JSON
        do { json = try JSON.parse(text) } catch {
            throw ParseError(description: "SERVING_READINESS_PROBE: invalid JSON (\(error))")
        }
        if multiContainer, let items = json.arrayValue {
            return try items.map { (item) throws(ParseError) in try parse(item, userPort) }
        }
        return [try parse(json, userPort)]
    }

    private static func parse(_ json: JSON, _ userPort: UInt16) throws(ParseError) -> ProbeSpec {
        guard json.objectValue != nil else {
            throw ParseError(description: "SERVING_READINESS_PROBE: expected a JSON object (a Kubernetes Probe)")
        }
        func port(_ handler: JSON) throws(ParseError) -> UInt16 {
            if let n = handler["port"]?.intValue, let p = UInt16(exactly: n), p > 0 { return p }
            if let s = handler["port"]?.stringValue, let p = UInt16(s), p > 0 { return p }
            if handler["port"] == nil { return userPort }
            throw ParseError(description: "SERVING_READINESS_PROBE: port must be a number 1-65535")
        }
        let handler: Handler
        if let tcp = json["tcpSocket"] {
            handler = .tcp(port: try port(tcp))
        } else if let http = json["httpGet"] {
            var path = http["path"]?.stringValue ?? "/"
            if !path.hasPrefix("/") { path = "/" + path }
            if let scheme = http["scheme"]?.stringValue, scheme.uppercased() != "HTTP" {
                handler = .unusable("httpGet scheme \(scheme) is not supported (HTTP only)")
            } else {
                var headers: [String] = []
                for header in http["httpHeaders"]?.arrayValue ?? [] {
                    guard let name = header["name"]?.stringValue, let value = header["value"]?.stringValue else {
                        throw ParseError(description: "SERVING_READINESS_PROBE: httpHeaders need name and value")
                    }
                    headers.append("\(name): \(value)")
                }
                handler = .http(port: try port(http), target: path, headers: headers)
            }
        } else if let grpc = json["grpc"] {
            handler = .grpc(port: try port(grpc), service: grpc["service"]?.stringValue ?? "")
        } else if json["exec"] != nil {
            handler = .unusable("exec probe not supported")  // upstream's words
        } else {
            handler = .unusable("no probe found")  // upstream's words: no httpGet, tcpSocket or grpc
        }
        var spec = ProbeSpec(handler: handler)
        spec.periodSeconds = json["periodSeconds"]?.intValue ?? 0
        spec.timeoutSeconds = json["timeoutSeconds"]?.intValue ?? 0
        spec.successThreshold = max(1, json["successThreshold"]?.intValue ?? 1)
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
