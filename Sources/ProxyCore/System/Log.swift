// Structured logging in zap's shape: JSON lines (or console text) whose keys, time and level encoding and
// output descriptors come from a `LogFormat` (default: `LogFormat.standard` on stderr).
// Built only when the level is enabled; never on the per-request path at the default level.
import Glibc
import Synchronization

public enum LogLevel: Int, Sendable, Comparable {
    case debug = 0
    case info, warn, error
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    /// Parses zap's level names ("debug", "info", "warn", "error"); nil for anything else.
    public init?(name: String) {
        switch name.lowercased() {
        case "debug": self = .debug
        case "info": self = .info
        case "warn", "warning": self = .warn
        case "error", "dpanic", "panic", "fatal": self = .error
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .debug: return "debug"
        case .info: return "info"
        case .warn: return "warn"
        case .error: return "error"
        }
    }
}

public enum Log {
    private static let state = Mutex<
        (level: LogLevel, logger: String, fields: [(String, String)], format: LogFormat)
    >((.info, "proxy", [], .standard))
    private static let lastRateLimited = Atomic<Int64>(0)

    /// Sets the level, the logger name, fields added to every line (e.g. `knative.dev/key`) and the line format.
    public static func configure(
        level: LogLevel, logger: String, fields: [(String, String)] = [], format: LogFormat = .standard
    ) {
        state.withLock { $0 = (level, logger, fields, format) }
    }

    /// Changes the level and the line format live (a ConfigMap update), keeping the logger name and fields.
    public static func reconfigure(level: LogLevel, format: LogFormat) {
        state.withLock {
            $0.level = level
            $0.format = format
        }
    }

    /// The current level and format.
    public static var current: (level: LogLevel, format: LogFormat) { state.withLock { ($0.level, $0.format) } }

    public static func isEnabled(_ level: LogLevel) -> Bool { state.withLock { level >= $0.level } }

    public static func debug(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        log(.debug, message(), file: file, line: line)
    }
    public static func info(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        log(.info, message(), file: file, line: line)
    }
    public static func warn(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        log(.warn, message(), file: file, line: line)
    }
    public static func error(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        log(.error, message(), file: file, line: line)
    }

    /// At most one line per 10 s for a repeating error (accept failures and the like).
    public static func rateLimited(
        _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line
    ) {
        let now = monotonicMs()
        let last = lastRateLimited.load(ordering: .relaxed)
        guard now - last >= 10_000 || last == 0 else { return }
        lastRateLimited.store(now, ordering: .relaxed)
        log(.warn, message(), file: file, line: line)
    }

    /// `file` and `line` name the caller (`Module/File.swift:42`) where the format has a caller key.
    public static func log(
        _ level: LogLevel, _ message: @autoclosure () -> String, extra: [(String, String)] = [],
        file: StaticString = #fileID, line: UInt = #line
    ) {
        let (minimum, logger, fields, format) = state.withLock { $0 }
        guard level >= minimum else { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let caller = format.callerKey.isEmpty ? "" : "\(file):\(line)"
        let text = format.line(
            level, logger: logger, caller: caller, message: message(), fields: extra.isEmpty ? fields : fields + extra,
            seconds: Int(ts.tv_sec), nanoseconds: Int(ts.tv_nsec))
        for fd in format.outputs { write(text, to: fd) }
    }

    public static func writeStderr(_ text: String) { write(text, to: 2) }

    /// Writes all of `text` to a descriptor (stdout for request logs, stderr for the rest).
    public static func write(_ text: String, to fd: Int32) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }

    /// JSON string escaping (the text between the quotes).
    public static func escape(_ s: String) -> String {
        String(JSON.quote(s).dropFirst().dropLast())
    }
}
