// The shape of one structured log line: JSON or tab-separated console text, which keys name the level, the
// time, the logger, the caller and the message (an empty key leaves that field out), how time and level are
// written, and where lines go. `LogFormat.standard` is the engine's historical line.
import Glibc

public struct LogFormat: Sendable, Equatable {
    public enum Encoding: Sendable, Equatable {
        /// One JSON object per line.
        case json
        /// time, level, logger, caller, message separated by tabs, then the fields as one JSON object.
        case console
    }

    public enum TimeEncoding: Sendable, Equatable {
        /// `2026-12-05T07:13:42.123Z` (milliseconds, UTC).
        case iso8601
        /// `2026-12-05T07:13:42Z`.
        case rfc3339
        /// `2026-12-05T07:13:42.123456789Z`, trailing zeros of the fraction dropped.
        case rfc3339Nano
        /// Seconds since the epoch as a float.
        case epochSeconds
        /// Milliseconds since the epoch as a float.
        case epochMillis
        /// Nanoseconds since the epoch as an integer.
        case epochNanos
    }

    public enum LevelEncoding: Sendable, Equatable {
        /// `info`
        case lowercase
        /// `INFO`
        case capital
    }

    public var encoding = Encoding.json
    public var levelKey = "level"
    public var timeKey = "ts"
    public var nameKey = "logger"
    public var callerKey = ""
    public var messageKey = "msg"
    /// A second level field, always in capitals, written before `levelKey` (the engine's historical line
    /// carries both `severity` and `level`). Empty = none.
    public var severityKey = ""
    public var time = TimeEncoding.epochSeconds
    public var level = LevelEncoding.lowercase
    /// Ends every line.
    public var lineEnding = "\n"
    /// Every line is written to each of these descriptors (1 = stdout, 2 = stderr).
    public var outputs: [Int32] = [2]

    public init() {}

    /// `{"severity":"INFO","level":"info","ts":<epoch seconds>,"logger":…,"msg":…, fields…}` on stderr.
    public static let standard: LogFormat = {
        var format = LogFormat()
        format.severityKey = "severity"
        return format
    }()

    /// One complete line, line ending included.
    public func line(
        _ level: LogLevel, logger: String, caller: String, message: String, fields: [(String, String)],
        seconds: Int, nanoseconds: Int
    ) -> String {
        let levelText = self.level == .capital ? level.name.uppercased() : level.name
        switch encoding {
        case .json:
            var line = "{"
            func add(_ key: String, raw value: String) {
                if line.count > 1 { line += "," }
                line += "\"\(Log.escape(key))\":\(value)"
            }
            if !severityKey.isEmpty { add(severityKey, raw: "\"\(level.name.uppercased())\"") }
            if !levelKey.isEmpty { add(levelKey, raw: "\"\(levelText)\"") }
            if !timeKey.isEmpty { add(timeKey, raw: timeText(seconds, nanoseconds, quoted: true)) }
            if !nameKey.isEmpty && !logger.isEmpty { add(nameKey, raw: JSON.quote(logger)) }
            if !callerKey.isEmpty && !caller.isEmpty { add(callerKey, raw: JSON.quote(caller)) }
            if !messageKey.isEmpty { add(messageKey, raw: JSON.quote(message)) }
            for (key, value) in fields { add(key, raw: JSON.quote(value)) }
            return line + "}" + lineEnding
        case .console:
            var parts: [String] = []
            if !timeKey.isEmpty { parts.append(timeText(seconds, nanoseconds, quoted: false)) }
            if !severityKey.isEmpty { parts.append(level.name.uppercased()) }
            if !levelKey.isEmpty { parts.append(levelText) }
            if !nameKey.isEmpty && !logger.isEmpty { parts.append(logger) }
            if !callerKey.isEmpty && !caller.isEmpty { parts.append(caller) }
            if !messageKey.isEmpty { parts.append(message) }
            if !fields.isEmpty {
                parts.append(
                    "{" + fields.map { "\(JSON.quote($0.0)):\(JSON.quote($0.1))" }.joined(separator: ",") + "}")
            }
            return parts.joined(separator: "\t") + lineEnding
        }
    }

    /// The time as this format writes it; text forms are quoted for JSON when `quoted`.
    func timeText(_ seconds: Int, _ nanoseconds: Int, quoted: Bool) -> String {
        let text: String
        switch time {
        case .epochSeconds: return "\(Double(seconds) + Double(nanoseconds) / 1e9)"
        case .epochMillis: return "\(Double(seconds) * 1e3 + Double(nanoseconds) / 1e6)"
        case .epochNanos: return "\(seconds * 1_000_000_000 + nanoseconds)"
        case .iso8601: text = Self.utc(seconds) + "." + Self.digits(nanoseconds / 1_000_000, 3) + "Z"
        case .rfc3339: text = Self.utc(seconds) + "Z"
        case .rfc3339Nano:
            var fraction = Self.digits(nanoseconds, 9)
            while fraction.last == "0" { fraction.removeLast() }
            text = Self.utc(seconds) + (fraction.isEmpty ? "" : "." + fraction) + "Z"
        }
        return quoted ? "\"" + text + "\"" : text
    }

    /// `YYYY-MM-DDTHH:MM:SS` in UTC.
    static func utc(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        return digits(Int(parts.tm_year) + 1900, 4) + "-" + digits(Int(parts.tm_mon) + 1, 2) + "-"
            + digits(Int(parts.tm_mday), 2) + "T" + digits(Int(parts.tm_hour), 2) + ":"
            + digits(Int(parts.tm_min), 2) + ":" + digits(Int(parts.tm_sec), 2)
    }

    /// `n` with leading zeros to `width` digits.
    static func digits(_ n: Int, _ width: Int) -> String {
        let text = String(n)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}
