// The queue-proxy's environment contract (spec §1.1), parsed and validated once at start.
import ProxyCore

/// A configuration error that names the variable and the expected form.
struct ConfigError: Error, CustomStringConvertible {
    let description: String
}

struct QueueProxyConfig {
    var servingPort: UInt16
    var userPort: UInt16
    var loops: Int
    var maxIdleUpstream: Int
    var namespace: String
    var revision: String
    var pod: String
    var logLevel: LogLevel

    var servingAddress: SocketAddress { SocketAddress(ip: "0.0.0.0", port: servingPort)! }
    var userAddress: SocketAddress { SocketAddress(ip: "127.0.0.1", port: userPort)! }

    static let help = """
        queue-proxy: Knative Serving's queue sidecar, drop-in for the queue-sidecar-image.

        Usage: queue-proxy            (configured by environment, as Knative's controller sets it)
               queue-proxy --help

        Environment:
          QUEUE_SERVING_PORT    required  port to serve on (Knative: 8012, or 8013 for h2c revisions)
          USER_PORT             required  the user container's port on 127.0.0.1
          CONTAINER_CONCURRENCY           max requests in the app at once (0 = unlimited; default 0).
                                          Sizes the upstream keep-alive pool (cc, or 1000 when 0).
          SERVING_NAMESPACE, SERVING_REVISION, SERVING_POD
                                          identify this pod in log lines (knative.dev/key, knative.dev/pod)
          SERVING_LOGGING_LEVEL           debug|info|warn|error (default: info; only start/stop lines at info)
          QUEUE_EVENT_LOOPS               event-loop threads sharing the port via SO_REUSEPORT (default 1)

        Signals: SIGTERM or SIGINT stop accepting, let in-flight requests finish, then exit 0.

        """

    init(environment env: [String: String]) throws(ConfigError) {
        servingPort = try Self.port(env, "QUEUE_SERVING_PORT", required: true)!
        userPort = try Self.port(env, "USER_PORT", required: true)!
        let cc = try Self.int(env, "CONTAINER_CONCURRENCY", default: 0, range: 0...Int(Int32.max))
        maxIdleUpstream = cc == 0 ? 1000 : cc
        loops = try Self.int(env, "QUEUE_EVENT_LOOPS", default: 1, range: 1...256)
        namespace = env["SERVING_NAMESPACE"] ?? ""
        revision = env["SERVING_REVISION"] ?? ""
        pod = env["SERVING_POD"] ?? ""
        let levelName = env["SERVING_LOGGING_LEVEL"] ?? ""
        if levelName.isEmpty {
            logLevel = .info
        } else if let level = LogLevel(name: levelName) {
            logLevel = level
        } else {
            throw ConfigError(description: "SERVING_LOGGING_LEVEL=\"\(levelName)\": expected debug, info, warn or error")
        }
    }

    private static func port(_ env: [String: String], _ name: String, required: Bool) throws(ConfigError) -> UInt16? {
        guard let text = env[name] else {
            if required { throw ConfigError(description: "required key \(name) missing value (expected a port, 1-65535)") }
            return nil
        }
        guard let value = UInt16(text), value > 0 else {
            throw ConfigError(description: "\(name)=\"\(text)\": expected a port number 1-65535")
        }
        return value
    }

    private static func int(
        _ env: [String: String], _ name: String, default value: Int, range: ClosedRange<Int>
    ) throws(ConfigError) -> Int {
        guard let text = env[name] else { return value }
        guard let parsed = Int(text), range.contains(parsed) else {
            throw ConfigError(
                description: "\(name)=\"\(text)\": expected an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return parsed
    }
}
