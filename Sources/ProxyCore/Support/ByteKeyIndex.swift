// A dictionary looked up by bytes straight from a request buffer (no String built per request): FNV-1a over
// the key's bytes, optionally lower-cased, with the stored key compared byte for byte on a hit.

package struct ByteKeyIndex<Value: AnyObject> {
    private var buckets: [UInt64: [(key: [UInt8], value: Value)]] = [:]

    package init() {}

    package mutating func removeAll() { buckets.removeAll() }

    /// Stores `value` under `key` (compared as given: lower-case it first for case-insensitive lookups).
    package mutating func insert(_ key: String, _ value: Value) {
        let bytes = Array(key.utf8)
        var hash = Self.start
        for b in bytes { hash = Self.step(hash, b) }
        buckets[hash, default: []].removeAll { $0.key == bytes }
        buckets[hash, default: []].append((bytes, value))
    }

    /// Looks up the concatenation of `parts` (joined by `separator` when given), lower-casing when asked.
    package func lookup(_ parts: UnsafeRawBufferPointer..., separator: UInt8? = nil, lowercase: Bool = false) -> Value?
    {
        var hash = Self.start
        var length = 0
        for (i, part) in parts.enumerated() {
            if i > 0, let separator {
                hash = Self.step(hash, separator)
                length += 1
            }
            for b in part { hash = Self.step(hash, lowercase ? ByteClass.lower(b) : b) }
            length += part.count
        }
        guard let bucket = buckets[hash] else { return nil }
        candidates: for (key, value) in bucket where key.count == length {
            var k = 0
            for (i, part) in parts.enumerated() {
                if i > 0, let separator {
                    if key[k] != separator { continue candidates }
                    k += 1
                }
                for b in part {
                    if key[k] != (lowercase ? ByteClass.lower(b) : b) { continue candidates }
                    k += 1
                }
            }
            return value
        }
        return nil
    }

    private static var start: UInt64 { 0xcbf2_9ce4_8422_2325 }
    @inline(__always) private static func step(_ hash: UInt64, _ byte: UInt8) -> UInt64 {
        (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }
}
