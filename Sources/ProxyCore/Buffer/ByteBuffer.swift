// A byte buffer with a reader and a writer index over one malloc'd slab. Raw pointers stay in this file:
// callers get `UnsafeRawBufferPointer`s lent through closures or short-lived views valid until the next mutation.
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import Glibc

/// A contiguous, growable (up to a hard cap) byte buffer: `[0, readerIndex)` consumed,
/// `[readerIndex, writerIndex)` readable, `[writerIndex, capacity)` writable.
public final class ByteBuffer {
    @usableFromInline var base: UnsafeMutableRawPointer
    @exclusivity(unchecked) public private(set) var capacity: Int
    @exclusivity(unchecked) public var readerIndex = 0
    @exclusivity(unchecked) public var writerIndex = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        // malloc never returns nil on Linux with overcommit; a nil here is out of memory, which we cannot handle.
        base = malloc(capacity)!
        self.capacity = capacity
    }

    deinit { free(base) }

    @inlinable public var readableCount: Int { writerIndex - readerIndex }
    @inlinable public var writableCount: Int { capacity - writerIndex }
    @inlinable public var isEmpty: Bool { readerIndex == writerIndex }

    /// The readable bytes. Valid until the buffer is next mutated.
    @inlinable public var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + readerIndex, count: writerIndex - readerIndex)
    }

    /// The writable tail. Valid until the buffer is next mutated.
    @inlinable public var writable: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + writerIndex, count: capacity - writerIndex)
    }

    /// Bytes at absolute offsets (parsers keep ranges relative to the buffer start).
    @inlinable public func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= writerIndex)
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    @inlinable public subscript(offset: Int) -> UInt8 {
        base.load(fromByteOffset: offset, as: UInt8.self)
    }

    @inlinable public func moveReader(by n: Int) {
        readerIndex += n
        if readerIndex == writerIndex {
            readerIndex = 0
            writerIndex = 0
        }
    }

    @inlinable public func clear() {
        readerIndex = 0
        writerIndex = 0
    }

    /// Moves the readable bytes to the front so that the tail is as large as possible.
    public func compact() {
        guard readerIndex > 0 else { return }
        let count = readableCount
        if count > 0 { memmove(base, base + readerIndex, count) }
        readerIndex = 0
        writerIndex = count
    }

    /// Makes room for at least `n` more bytes, compacting first and then growing to at most `limit`.
    /// - Returns: false when `limit` does not allow it.
    @discardableResult
    public func reserve(_ n: Int, limit: Int) -> Bool {
        if writableCount >= n { return true }
        compact()
        if writableCount >= n { return true }
        let needed = writerIndex + n
        guard needed <= limit else { return false }
        var newCapacity = capacity
        while newCapacity < needed { newCapacity *= 2 }
        newCapacity = min(newCapacity, limit)
        base = realloc(base, newCapacity)!  // see init: nil is out of memory
        capacity = newCapacity
        return true
    }

    /// Appends bytes, growing without a cap (used for small, bounded things such as rewritten heads).
    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        reserve(bytes.count, limit: Int.max)
        (base + writerIndex).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        writerIndex += bytes.count
    }

    public func append(_ text: StaticString) {
        append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Appends a String's UTF-8 (a separate label so that literals pick the StaticString overload).
    public func append(string text: String) {
        var text = text
        text.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    public func append(byte: UInt8) {
        reserve(1, limit: Int.max)
        base.storeBytes(of: byte, toByteOffset: writerIndex, as: UInt8.self)
        writerIndex += 1
    }

    /// Appends a non-negative integer in decimal, without building a String.
    public func append(decimal value: Int) {
        precondition(value >= 0)
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch: enough for Int.max
        var v = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { scratch in
            repeat {
                scratch[23 - count] = UInt8(48 + v % 10)
                v /= 10
                count += 1
            } while v > 0
            append(UnsafeRawBufferPointer(rebasing: scratch[(24 - count)...]))
        }
    }

    /// Appends a non-negative integer in lower-case hex (chunk sizes).
    public func append(hex value: Int) {
        precondition(value >= 0)
        var digits: (UInt64, UInt64) = (0, 0)
        var v = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { scratch in
            repeat {
                let d = UInt8(v & 15)
                scratch[15 - count] = d < 10 ? 48 + d : 87 + d
                v >>= 4
                count += 1
            } while v > 0
            append(UnsafeRawBufferPointer(rebasing: scratch[(16 - count)...]))
        }
    }

    /// Reads from `fd` into the writable tail. The caller reserves room first.
    @inline(__always)
    public func read(from fd: Int32) throws(SysError) -> IOResult<Int> {
        let result = try Socket.read(fd, into: writable)
        if case .processed(let n) = result { writerIndex += n }
        return result
    }

    /// A copy of the readable bytes as a String (tests, logs and errors only: never the hot path).
    public var readableString: String { String(decoding: readable, as: UTF8.self) }
}

/// A per-loop free list of equally sized buffers. Connections borrow one when data arrives and give it back
/// when it is empty, so an idle keep-alive connection holds no buffer (the HAProxy/h2o habit).
public final class BufferPool {
    public let bufferSize: Int
    @exclusivity(unchecked) private var free: [ByteBuffer] = []
    private let maxFree: Int

    public init(bufferSize: Int = 16 * 1024, maxFree: Int = 256) {
        self.bufferSize = bufferSize
        self.maxFree = maxFree
        free.reserveCapacity(maxFree)
    }

    @inline(__always)
    public func take() -> ByteBuffer {
        if let buffer = free.popLast() { return buffer }
        return ByteBuffer(capacity: bufferSize)
    }

    /// Returns a buffer. Grown buffers (large heads) are dropped so the pool stays uniform.
    @inline(__always)
    public func give(_ buffer: ByteBuffer) {
        buffer.clear()
        if buffer.capacity == bufferSize && free.count < maxFree { free.append(buffer) }
    }

    /// Drops spare buffers beyond `count` (after a burst: their memory can go back to the system).
    public func shrink(keeping count: Int) {
        if free.count > count { free.removeLast(free.count - count) }
    }

    /// Spare buffers held.
    public var spareCount: Int { free.count }
}
