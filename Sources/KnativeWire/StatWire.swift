// The autoscaler's wire format (spec §3.1): protobuf `Stat` and `WireStatMessages`, encoded by hand (proto3:
// fields in number order, zero values omitted). Byte-exact with test vector W1.
import ProxyCore

/// One pod's (or one activator's per-revision) statistics for a window.
public struct Stat: Equatable, Sendable {
    public var podName: String
    public var averageConcurrentRequests: Double = 0
    public var averageProxiedConcurrentRequests: Double = 0
    public var requestCount: Double = 0
    public var proxiedRequestCount: Double = 0
    public var processUptime: Double = 0
    public var timestamp: Int64 = 0

    public init(podName: String) { self.podName = podName }

    /// The protobuf encoding.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + podName.utf8.count)
        ProtoWriter.string(1, podName, into: &out)
        ProtoWriter.double(2, averageConcurrentRequests, into: &out)
        ProtoWriter.double(3, averageProxiedConcurrentRequests, into: &out)
        ProtoWriter.double(4, requestCount, into: &out)
        ProtoWriter.double(5, proxiedRequestCount, into: &out)
        ProtoWriter.double(6, processUptime, into: &out)
        if timestamp != 0 {
            ProtoWriter.tag(7, wireType: 0, into: &out)
            ProtoWriter.varint(UInt64(bitPattern: timestamp), into: &out)
        }
        return out
    }

    /// Decodes a `Stat` (unknown fields skipped). Used by tests and by the stat server side of kn-local.
    public static func decode(_ bytes: [UInt8]) -> Stat? {
        var stat = Stat(podName: "")
        var reader = ProtoReader(bytes: bytes)
        while let (field, wireType) = reader.nextTag() {
            switch (field, wireType) {
            case (1, 2):
                guard let s = reader.bytes() else { return nil }
                stat.podName = String(decoding: s, as: UTF8.self)
            case (2, 1):
                guard let d = reader.double() else { return nil }
                stat.averageConcurrentRequests = d
            case (3, 1):
                guard let d = reader.double() else { return nil }
                stat.averageProxiedConcurrentRequests = d
            case (4, 1):
                guard let d = reader.double() else { return nil }
                stat.requestCount = d
            case (5, 1):
                guard let d = reader.double() else { return nil }
                stat.proxiedRequestCount = d
            case (6, 1):
                guard let d = reader.double() else { return nil }
                stat.processUptime = d
            case (7, 0):
                guard let v = reader.varint() else { return nil }
                stat.timestamp = Int64(bitPattern: v)
            default: guard reader.skip(wireType: wireType) else { return nil }
            }
        }
        return reader.isValid ? stat : nil
    }
}

/// One revision's stat in the activator's message to the autoscaler.
public struct WireStatMessage: Equatable, Sendable {
    public var namespace: String
    public var name: String
    public var stat: Stat?

    public init(namespace: String, name: String, stat: Stat?) {
        self.namespace = namespace
        self.name = name
        self.stat = stat
    }

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        ProtoWriter.string(1, namespace, into: &out)
        ProtoWriter.string(2, name, into: &out)
        if let stat { ProtoWriter.message(3, stat.encoded(), into: &out) }
        return out
    }
}

/// `WireStatMessages { repeated WireStatMessage messages = 1; }`
public enum WireStatMessages {
    public static func encode(_ messages: [WireStatMessage]) -> [UInt8] {
        var out: [UInt8] = []
        for message in messages { ProtoWriter.message(1, message.encoded(), into: &out) }
        return out
    }

    /// Decodes; entries without a stat are skipped, as the autoscaler does.
    public static func decode(_ bytes: [UInt8]) -> [WireStatMessage]? {
        var result: [WireStatMessage] = []
        var reader = ProtoReader(bytes: bytes)
        while let (field, wireType) = reader.nextTag() {
            guard field == 1, wireType == 2, let body = reader.bytes() else {
                guard reader.skip(wireType: wireType) else { return nil }
                continue
            }
            var inner = ProtoReader(bytes: Array(body))
            var message = WireStatMessage(namespace: "", name: "", stat: nil)
            while let (f, w) = inner.nextTag() {
                switch (f, w) {
                case (1, 2):
                    guard let s = inner.bytes() else { return nil }
                    message.namespace = String(decoding: s, as: UTF8.self)
                case (2, 2):
                    guard let s = inner.bytes() else { return nil }
                    message.name = String(decoding: s, as: UTF8.self)
                case (3, 2):
                    guard let s = inner.bytes() else { return nil }
                    message.stat = Stat.decode(Array(s))
                default: guard inner.skip(wireType: w) else { return nil }
                }
            }
            if message.stat != nil { result.append(message) }
        }
        return reader.isValid ? result : nil
    }
}

enum ProtoWriter {
    static func tag(_ field: Int, wireType: Int, into out: inout [UInt8]) {
        varint(UInt64(field << 3 | wireType), into: &out)
    }

    static func varint(_ value: UInt64, into out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    static func string(_ field: Int, _ value: String, into out: inout [UInt8]) {
        guard !value.isEmpty else { return }
        tag(field, wireType: 2, into: &out)
        varint(UInt64(value.utf8.count), into: &out)
        out.append(contentsOf: value.utf8)
    }

    static func double(_ field: Int, _ value: Double, into out: inout [UInt8]) {
        guard value != 0 else { return }
        tag(field, wireType: 1, into: &out)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { out.append(contentsOf: $0) }
    }

    static func message(_ field: Int, _ body: [UInt8], into out: inout [UInt8]) {
        tag(field, wireType: 2, into: &out)
        varint(UInt64(body.count), into: &out)
        out.append(contentsOf: body)
    }
}

struct ProtoReader {
    let data: [UInt8]
    var index = 0
    var isValid = true

    init(bytes: [UInt8]) { self.data = bytes }

    mutating func nextTag() -> (Int, Int)? {
        guard isValid, index < data.count, let key = varint() else { return nil }
        return (Int(key >> 3), Int(key & 7))
    }

    mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while index < data.count && shift < 64 {
            let b = data[index]
            index += 1
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
        isValid = false
        return nil
    }

    mutating func double() -> Double? {
        guard index + 8 <= data.count else {
            isValid = false
            return nil
        }
        var bits: UInt64 = 0
        for k in 0..<8 { bits |= UInt64(data[index + k]) << UInt64(8 * k) }
        index += 8
        return Double(bitPattern: bits)
    }

    mutating func bytes() -> ArraySlice<UInt8>? {
        guard let length = varint(), index + Int(length) <= data.count else {
            isValid = false
            return nil
        }
        defer { index += Int(length) }
        return data[index..<(index + Int(length))]
    }

    mutating func skip(wireType: Int) -> Bool {
        switch wireType {
        case 0: return varint() != nil
        case 1:
            guard index + 8 <= data.count else {
                isValid = false
                return false
            }
            index += 8
            return true
        case 2: return bytes() != nil
        case 5:
            guard index + 4 <= data.count else {
                isValid = false
                return false
            }
            index += 4
            return true
        default:
            isValid = false
            return false
        }
    }
}
