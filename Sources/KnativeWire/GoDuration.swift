// Go duration strings, as Knative writes them in flags, environment variables and annotations.
import ProxyCore

/// Go-style durations for flags, environment variables and annotations.
public enum GoDuration {
    /// "30s", "500ms", "1.5s", "1m30s", "1h0m0s" (units ms, s, m, h, as Go's ParseDuration writes them), or a
    /// bare "0". - Returns: milliseconds, or nil (also for negative, non-finite or absurd values: > ~31 years).
    public static func milliseconds(_ text: String) -> Int64? {
        if text == "0" { return 0 }
        var total: Double = 0
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !digits.isEmpty, let value = Double(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unit = rest.prefix { $0.isLetter }
            rest = rest.dropFirst(unit.count)
            switch unit {
            case "ms": total += value
            case "s": total += value * 1000
            case "m": total += value * 60_000
            case "h": total += value * 3_600_000
            default: return nil
            }
        }
        // Converting user input must never trap.
        guard total.isFinite, total >= 0, total < 1e12 else { return nil }
        return Int64(total)
    }
}
