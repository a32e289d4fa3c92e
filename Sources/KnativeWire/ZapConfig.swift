// Knative's logging configuration: the zap JSON of config-logging's `zap-logger-config`, as the queue-proxy
// gets it in SERVING_LOGGING_CONFIG, turned into the engine's `LogFormat`. zap's rules: an empty or absent
// encoderConfig key leaves that field out; unknown time and level encoder names fall back to zap's defaults.
import ProxyCore

public struct ZapConfig: Sendable {
    public var level = LogLevel.info
    public var format = LogFormat()
    /// Settings read but not honoured (file output paths, custom time layouts), for a startup warning.
    public var warnings: [String] = []

    /// Upstream's default (knative/serving config/core/configmaps/logging.yaml).
    public static let knativeDefault = """
        {"level": "info", "development": false, "outputPaths": ["stdout"], "errorOutputPaths": ["stderr"],
         "encoding": "json", "encoderConfig": {"timeKey": "timestamp", "levelKey": "severity",
         "nameKey": "logger", "callerKey": "caller", "messageKey": "message", "stacktraceKey": "stacktrace",
         "lineEnding": "", "levelEncoder": "", "timeEncoder": "iso8601", "durationEncoder": "",
         "callerEncoder": ""}}
        """

    /// - Returns: nil for an empty (or all-blank) text: the caller keeps its standard format.
    /// - Throws: `JSONFieldError` naming the field, e.g. `encoding: expected json or console, got a string ("xml")`.
    public static func parse(_ text: String) throws(JSONFieldError) -> ZapConfig? {
        guard text.contains(where: { !$0.isWhitespace }) else { return nil }
        let json: JSON
        do { json = try JSON.parse(text) } catch { throw JSONFieldError("invalid JSON (\(error))") }
        let root = try JSONObjectReader(json, at: "")
        var config = ZapConfig()
        if let name = try root.string("level"), !name.isEmpty {
            guard let level = LogLevel(name: name) else {
                throw JSONObjectReader.mismatch("level", "debug, info, warn or error", .string(name))
            }
            config.level = level
        }
        switch try root.string("encoding") {
        case nil, "json": config.format.encoding = .json
        case "console": config.format.encoding = .console
        case let other?: throw JSONObjectReader.mismatch("encoding", "json or console", .string(other))
        }
        config.format.outputs = try config.outputs(root, "outputPaths")
        _ = try config.outputs(root, "errorOutputPaths")

        let encoder = try JSONObjectReader(root.value("encoderConfig") ?? .object([]), at: "encoderConfig")
        config.format.messageKey = try encoder.string("messageKey") ?? ""
        config.format.levelKey = try encoder.string("levelKey") ?? ""
        config.format.timeKey = try encoder.string("timeKey") ?? ""
        config.format.nameKey = try encoder.string("nameKey") ?? ""
        config.format.callerKey = try encoder.string("callerKey") ?? ""
        let ending = try encoder.string("lineEnding") ?? ""
        config.format.lineEnding = ending.isEmpty ? "\n" : ending
        switch try encoder.string("levelEncoder") {
        case "capital", "capitalColor": config.format.level = .capital
        default: config.format.level = .lowercase
        }
        switch encoder.value("timeEncoder") {
        case .string(let name)?: config.format.time = timeEncoding(name)
        case nil: config.format.time = .epochSeconds
        case .object?:
            config.format.time = .iso8601
            config.warnings.append("encoderConfig.timeEncoder: custom layouts are not supported; using iso8601")
        case let other?: throw JSONObjectReader.mismatch(encoder.path("timeEncoder"), "a string", other)
        }
        return config
    }

    /// zap's names (either case); anything else is zap's default, epoch seconds.
    static func timeEncoding(_ name: String) -> LogFormat.TimeEncoding {
        switch name {
        case "iso8601", "ISO8601": return .iso8601
        case "rfc3339", "RFC3339": return .rfc3339
        case "rfc3339nano", "RFC3339Nano": return .rfc3339Nano
        case "millis": return .epochMillis
        case "nanos": return .epochNanos
        default: return .epochSeconds
        }
    }

    /// `stdout` → 1, `stderr` → 2; other paths are reported in `warnings` and stderr is used instead.
    /// Absent or empty: stderr (zap's production default).
    private mutating func outputs(_ root: JSONObjectReader, _ key: String) throws(JSONFieldError) -> [Int32] {
        guard let items = try root.array(key, expected: "an array of paths") else { return [2] }
        var fds: [Int32] = []
        for (index, item) in items.enumerated() {
            guard case .string(let path) = item else {
                throw JSONObjectReader.mismatch("\(key)[\(index)]", "a path string", item)
            }
            let fd: Int32
            switch path {
            case "stdout": fd = 1
            case "stderr": fd = 2
            default:
                fd = 2
                warnings.append("\(key): \(JSON.quote(path)) is not supported (only stdout and stderr); using stderr")
            }
            if !fds.contains(fd) { fds.append(fd) }
        }
        return fds.isEmpty ? [2] : fds
    }
}
