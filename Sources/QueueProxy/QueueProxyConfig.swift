// The queue-proxy's environment contract (spec §1.1), parsed and validated once at start. Every error names
// the variable and the form it expects; the process then exits 1 (as upstream's envconfig does).
import KnativeWire
import ProxyCore
import QueueProxyCore

struct ConfigError: Error, CustomStringConvertible {
    let description: String
}

struct QueueProxyConfig {
    var settings = QueueProxySettings()
    var servingPort: UInt16 = 0
    var userPort: UInt16 = 0
    /// The app speaks only h2c (QUEUE_USER_PROTOCOL): HTTP/1.1 requests are translated.
    var userSpeaksH2c = false
    var adminPort: UInt16 = 8022
    var metricsPort: UInt16 = 9090
    /// 0 = the Prometheus listener is off.
    var userMetricsPort: UInt16 = 9091
    var drainQuietMs: Int64 = 30_000
    var loops = 1
    var logLevel = LogLevel.info
    var logFormat = LogFormat.standard
    /// zap settings read but not honoured, logged once logging is configured.
    var logWarnings: [String] = []

    var userAddress: SocketAddress { SocketAddress(ip: "127.0.0.1", port: userPort)! }

    static let help = """
        queue-proxy: Knative Serving's queue sidecar, a drop-in for the queue-sidecar-image.

        Usage: queue-proxy            (configured by environment, exactly as Knative's controller sets it)
               queue-proxy --help

        Required environment (spec §1.1; missing or malformed → a message naming it, exit 1):
          CONTAINER_CONCURRENCY       int   max requests in the app at once; 0 = unlimited. 10×cc more wait
                                            (FIFO), the rest get 503 "pending request queue full"
          QUEUE_SERVING_PORT          port  main port (HTTP/1.1 and h2c): probes and the proxy to the app
          QUEUE_SERVING_TLS_PORT      port  accepted for compatibility; TLS is not served (README): with
                                            /var/lib/knative/certs/tls.{crt,key} present (system-internal-tls)
                                            the queue-proxy exits 1 at start
          USER_PORT                   port  the app, on 127.0.0.1
          REVISION_TIMEOUT_SECONDS    int   overall request timeout → 504 "request timeout"
          SERVING_LOGGING_CONFIG      JSON  config-logging's zap-logger-config: level, encoding (json|console),
                                            outputPaths (stdout|stderr), encoderConfig keys (message, level,
                                            time, name, caller; empty = left out), timeEncoder (iso8601,
                                            rfc3339, rfc3339nano, epoch, millis, nanos), levelEncoder
                                            (lowercase|capital). "" = JSON lines on stderr (severity, level,
                                            ts, logger, msg)
          SERVING_LOGGING_LEVEL       debug|info|warn|error; overrides the config's level ("" = keep it)
          SERVING_NAMESPACE, SERVING_CONFIGURATION, SERVING_REVISION, SERVING_POD, SERVING_POD_IP

        Optional environment:
          REVISION_RESPONSE_START_TIMEOUT_SECONDS  int   0 = off
          REVISION_IDLE_TIMEOUT_SECONDS            int   0 = off
          SERVING_READINESS_PROBE     JSON  Kubernetes Probe (tcpSocket, httpGet, grpc over h2c); exec or no
                                            handler: never ready, probes get 503 at once
          ENABLE_MULTI_CONTAINER_PROBES  bool  the probe JSON is an array
          ENABLE_HTTP_FULL_DUPLEX     bool  accepted (HTTP/1 is always full duplex)
          ENABLE_HTTP2_AUTO_DETECTION bool  HTTP readiness probes try h2c first (upstream's rule)
          OBSERVABILITY_CONFIG        JSON  enableRequestLog / requestLogTemplate (Knative's default template
                                            only) / enableProbeRequestLog
          SERVING_SERVICE             string
        Accepted and not acted on (Knative's controller sets them): SYSTEM_NAMESPACE, HOST_IP, ROOT_CA and
          QUEUE_PROXY_TLS_{MIN_VERSION,MAX_VERSION,CIPHER_SUITES,CURVE_PREFERENCES} (no TLS in this build).
        Extensions (for several queue-proxies on one host):
          QUEUE_ADMIN_PORT            port  /wait-for-drain (default 8022)
          QUEUE_METRICS_PORT          port  autoscaler stats, protobuf /metrics (default 9090)
          QUEUE_USER_METRICS_PORT     port  Prometheus text /metrics (default 9091; 0 = off)
          QUEUE_DRAIN_QUIET_PERIOD    duration  e.g. 30s, 500ms (default 30s)
          QUEUE_USER_PROTOCOL         http1|h2c  what the app speaks (default h2c when QUEUE_SERVING_PORT is
                                            8013, Knative's port for h2c revisions, else http1). HTTP/2
                                            clients always reach the app over h2c (upstream's rule); with h2c,
                                            HTTP/1.1 clients do too (translated; websockets stay HTTP/1.1)
          QUEUE_EVENT_LOOPS           int   loop threads sharing the port (default 1; >1 needs cc = 0,
                                            because the breaker counts exactly on one loop)

        Signals: SIGTERM/SIGINT → probes answer 503 "shutting down", traffic is still served until the quiet
        period passes with no request, then in-flight requests finish and it exits 0.

        """

    init(environment env: [String: String]) throws(ConfigError) {
        settings.containerConcurrency = try Self.int(env, "CONTAINER_CONCURRENCY", required: true, min: 0) ?? 0
        servingPort = try Self.port(env, "QUEUE_SERVING_PORT", required: true)!
        _ = try Self.port(env, "QUEUE_SERVING_TLS_PORT", required: true)
        userPort = try Self.port(env, "USER_PORT", required: true)!
        settings.timeoutMs = Int64(try Self.int(env, "REVISION_TIMEOUT_SECONDS", required: true, min: 0) ?? 0) * 1000
        settings.responseStartTimeoutMs =
            Int64(try Self.int(env, "REVISION_RESPONSE_START_TIMEOUT_SECONDS", required: false, min: 0) ?? 0) * 1000
        settings.idleTimeoutMs =
            Int64(try Self.int(env, "REVISION_IDLE_TIMEOUT_SECONDS", required: false, min: 0) ?? 0) * 1000
        for name in [
            "SERVING_LOGGING_CONFIG", "SERVING_LOGGING_LEVEL", "SERVING_NAMESPACE", "SERVING_CONFIGURATION",
            "SERVING_REVISION", "SERVING_POD", "SERVING_POD_IP",
        ] where env[name] == nil {
            throw ConfigError(description: "required key \(name) missing value")
        }
        settings.namespace = env["SERVING_NAMESPACE"]!
        settings.configuration = env["SERVING_CONFIGURATION"]!
        settings.revision = env["SERVING_REVISION"]!
        settings.podName = env["SERVING_POD"]!
        settings.podIP = env["SERVING_POD_IP"]!
        settings.service = env["SERVING_SERVICE"] ?? ""
        do {
            if let zap = try ZapConfig.parse(env["SERVING_LOGGING_CONFIG"]!) {
                (logLevel, logFormat, logWarnings) = (zap.level, zap.format, zap.warnings)
            }
        } catch {
            throw ConfigError(description: "SERVING_LOGGING_CONFIG: \(error)")
        }
        let levelName = env["SERVING_LOGGING_LEVEL"]!
        if !levelName.isEmpty {
            guard let level = LogLevel(name: levelName) else {
                throw ConfigError(
                    description: "SERVING_LOGGING_LEVEL=\"\(levelName)\": expected debug, info, warn or error")
            }
            logLevel = level
        }
        _ = try Self.bool(env, "ENABLE_HTTP_FULL_DUPLEX")
        settings.autodetectHTTP2 = try Self.bool(env, "ENABLE_HTTP2_AUTO_DETECTION")
        switch env["QUEUE_USER_PROTOCOL"] {
        // Knative gives 8013 exactly to revisions whose port is named h2c
        case nil, "": userSpeaksH2c = servingPort == 8013
        case "h2c": userSpeaksH2c = true
        case "http1": userSpeaksH2c = false
        case let other?: throw ConfigError(description: "QUEUE_USER_PROTOCOL=\"\(other)\": expected http1 or h2c")
        }
        let multi = try Self.bool(env, "ENABLE_MULTI_CONTAINER_PROBES")
        do {
            settings.probes = try ProbeSpec.parse(
                env["SERVING_READINESS_PROBE"] ?? "", userPort: userPort, multiContainer: multi)
        } catch {
            throw ConfigError(description: error.description)
        }
        try parseObservability(env["OBSERVABILITY_CONFIG"])
        adminPort = try Self.port(env, "QUEUE_ADMIN_PORT", required: false) ?? 8022
        metricsPort = try Self.port(env, "QUEUE_METRICS_PORT", required: false) ?? 9090
        if env["QUEUE_USER_METRICS_PORT"] == "0" {
            userMetricsPort = 0
        } else {
            userMetricsPort = try Self.port(env, "QUEUE_USER_METRICS_PORT", required: false) ?? 9091
        }
        if let text = env["QUEUE_DRAIN_QUIET_PERIOD"] {
            guard let ms = GoDuration.milliseconds(text) else {
                throw ConfigError(
                    description: "QUEUE_DRAIN_QUIET_PERIOD=\"\(text)\": expected a duration such as 30s or 500ms")
            }
            drainQuietMs = ms
        }
        loops = try Self.int(env, "QUEUE_EVENT_LOOPS", required: false, min: 1) ?? 1
        if loops > 1 && settings.containerConcurrency > 0 {
            throw ConfigError(
                description:
                    "QUEUE_EVENT_LOOPS=\(loops): more than one loop needs CONTAINER_CONCURRENCY=0 (the breaker is per loop)"
            )
        }
    }

    private mutating func parseObservability(_ text: String?) throws(ConfigError) {
        guard let text, !text.isEmpty else { return }
        let json: JSON
        do { json = try JSON.parse(text) } catch {
            throw ConfigError(description: "OBSERVABILITY_CONFIG: invalid JSON (\(error))")
        }
        guard json.objectValue != nil else {
            throw ConfigError(description: "OBSERVABILITY_CONFIG: expected a JSON object")
        }
        let enabled = json["enableRequestLog"]?.boolValue ?? false
        let template = json["requestLogTemplate"]?.stringValue ?? RequestLogTemplate.known[0]
        settings.requestLogProbes = json["enableProbeRequestLog"]?.boolValue ?? false
        guard enabled && !template.isEmpty else { return }
        if RequestLogTemplate.known.contains(template) {
            settings.requestLog = true
        } else {
            // Reported, not silently ignored: we do not interpret Go templates.
            Log.error(
                "OBSERVABILITY_CONFIG.requestLogTemplate: custom Go templates are not supported; request logging is off (use Knative's default template)"
            )
        }
    }

    // MARK: - Typed readers

    private static func port(_ env: [String: String], _ name: String, required: Bool) throws(ConfigError) -> UInt16? {
        guard let text = env[name] else {
            if required { throw ConfigError(description: "required key \(name) missing value") }
            return nil
        }
        guard let value = UInt16(text), value > 0 else {
            throw ConfigError(description: "\(name)=\"\(text)\": expected a port number 1-65535")
        }
        return value
    }

    private static func int(_ env: [String: String], _ name: String, required: Bool, min: Int) throws(ConfigError)
        -> Int?
    {
        guard let text = env[name] else {
            if required { throw ConfigError(description: "required key \(name) missing value") }
            return nil
        }
        guard let value = Int(text), value >= min else {
            throw ConfigError(description: "\(name)=\"\(text)\": expected an integer ≥ \(min)")
        }
        return value
    }

    /// Go's strconv.ParseBool.
    private static func bool(_ env: [String: String], _ name: String) throws(ConfigError) -> Bool {
        guard let text = env[name] else { return false }
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default: throw ConfigError(description: "\(name)=\"\(text)\": expected true or false")
        }
    }
}
