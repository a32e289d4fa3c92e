// Typed reads of one JSON object's members for configuration decoders (admin API bodies, config files).
// A member of the wrong JSON type is an error naming its path and the expected type, never "absent".
import ProxyCore

/// A configuration value that does not fit its field; the text names the field's path, e.g.
/// `route.traffic[0].percent: expected an integer 0-100, got a string ("fifty")`.
public struct JSONFieldError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ text: String) { description = text }
}

/// One JSON object and its path in the document. `null` counts as absent (as Go's decoder leaves a field
/// untouched for null); any other value of the wrong type throws.
public struct JSONObjectReader {
    public let path: String
    private let members: [(String, JSON)]

    /// - Throws: `JSONFieldError` when `json` is not an object.
    public init(_ json: JSON, at path: String) throws(JSONFieldError) {
        guard case .object(let members) = json else { throw Self.mismatch(path, "an object", json) }
        self.path = path
        self.members = members
    }

    /// The member's path: `path.key`.
    public func path(_ key: String) -> String { path.isEmpty ? key : path + "." + key }

    /// The member, or nil when absent or null.
    public func value(_ key: String) -> JSON? {
        guard let value = members.first(where: { $0.0 == key })?.1, value != .null else { return nil }
        return value
    }

    /// - Returns: the string member, nil when absent.
    /// - Throws: when present with another type.
    public func string(_ key: String) throws(JSONFieldError) -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let s) = value else { throw Self.mismatch(path(key), "a string", value) }
        return s
    }

    /// - Returns: the integer member within `range`, nil when absent.
    /// - Throws: when present with another type, a fraction, or outside `range`.
    public func int(_ key: String, in range: ClosedRange<Int>, expected: String) throws(JSONFieldError) -> Int? {
        guard let value = value(key) else { return nil }
        guard let n = value.intValue, range.contains(n) else { throw Self.mismatch(path(key), expected, value) }
        return n
    }

    /// - Returns: the array member, nil when absent.
    /// - Throws: when present with another type.
    public func array(_ key: String, expected: String = "an array") throws(JSONFieldError) -> [JSON]? {
        guard let value = value(key) else { return nil }
        guard case .array(let items) = value else { throw Self.mismatch(path(key), expected, value) }
        return items
    }

    /// - Returns: the object member's members, nil when absent.
    /// - Throws: when present with another type.
    public func object(_ key: String) throws(JSONFieldError) -> [(String, JSON)]? {
        guard let value = value(key) else { return nil }
        guard case .object(let members) = value else { throw Self.mismatch(path(key), "an object", value) }
        return members
    }

    /// `<path>: expected <expected>, got <what value is>`.
    public static func mismatch(_ path: String, _ expected: String, _ value: JSON) -> JSONFieldError {
        JSONFieldError("\(path): expected \(expected), got \(describe(value))")
    }

    /// The value's JSON type, and the value itself when it is short: `a string ("fifty")`, `150`, `an object`.
    public static func describe(_ value: JSON) -> String {
        switch value {
        case .null: return "null"
        case .bool(let b): return "a boolean (\(b))"
        case .number: return value.intValue != nil ? "\(value.text)" : "a number (\(value.text))"
        case .string(let s):
            let shown = s.count > 40 ? String(s.prefix(40)) + "…" : s
            return "a string (\(JSON.quote(shown)))"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}
