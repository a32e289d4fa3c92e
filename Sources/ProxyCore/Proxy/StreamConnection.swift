// The byte-moving half of every TCP connection: lazy pooled buffers, edge-triggered readiness flags,
// direct writes with a bounded spill-over buffer. Protocol logic lives in subclasses.
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import CLinuxShims
import Glibc

/// A TCP connection with an input and an output buffer, both borrowed from the loop's pool only while in use.
public class StreamConnection: Channel {
    @exclusivity(unchecked) var input: ByteBuffer?
    @exclusivity(unchecked) var output: ByteBuffer?
    /// Edge-triggered epoll reports a change once: these remember that the kernel may have more for us.
    @exclusivity(unchecked) var canRead = true
    @exclusivity(unchecked) var canWrite = true
    /// The peer's FIN (or an error) was reported: a short read then does not mean "drained", because no
    /// further edge will come for the end of stream (nginx's `pending_eof`).
    @exclusivity(unchecked) var peerClosed = false
    /// How much unsent output we hold before pushing back on the source (bytes).
    static let outputLimit = 64 * 1024

    override func handleEvent(_ events: UInt32) {
        if events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            canRead = true
        }
        if events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { peerClosed = true }
        if events & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { canWrite = true }
        onReadiness()
    }

    /// Readiness changed: subclasses flush and read.
    func onReadiness() {}

    override func didClose() {
        if let buffer = input { loop.buffers.give(buffer) }
        if let buffer = output { loop.buffers.give(buffer) }
        input = nil
        output = nil
    }

    // MARK: - Input

    /// The input buffer, borrowed from the pool on first use.
    @inline(__always) func inputBuffer() -> ByteBuffer {
        if let buffer = input { return buffer }
        let buffer = loop.buffers.take()
        input = buffer
        return buffer
    }

    /// Gives an empty input buffer back so that an idle connection holds no memory.
    @inline(__always) func releaseInputIfEmpty() {
        if let buffer = input, buffer.isEmpty {
            loop.buffers.give(buffer)
            input = nil
        }
    }

    enum ReadOutcome { case data, eof, wouldBlock, full }

    /// One read into the input buffer (growing it up to `limit` if it is full).
    /// A short read means the socket is drained for now (edge-triggered: a new edge comes with new data),
    /// which saves the extra read that would only return EAGAIN.
    func readInput(limit: Int) throws(SysError) -> ReadOutcome {
        let buffer = inputBuffer()
        if buffer.writableCount == 0 && !buffer.reserve(buffer.capacity < limit ? 4096 : 1, limit: limit) {
            return .full
        }
        let room = buffer.writableCount
        switch try buffer.read(from: fd) {
        case .wouldBlock:
            canRead = false
            return .wouldBlock
        case .processed(0):
            canRead = false
            return .eof
        case .processed(let n):
            if n < room && !peerClosed { canRead = false }
            return .data
        }
    }

    // MARK: - Output

    var hasPendingOutput: Bool { !(output?.isEmpty ?? true) }

    /// Bytes this side can take now without exceeding `outputLimit`.
    var outputRoom: Int { StreamConnection.outputLimit - (output?.readableCount ?? 0) }

    /// Sends what it can of `bytes`: straight to the socket when nothing is queued (no copy), else behind the
    /// queued bytes, up to `outputLimit` in all. Queued bytes are written at once if the socket allows.
    /// - Returns: how many bytes were taken (sent or queued). Fewer than `bytes.count` means "push back".
    func send(_ bytes: UnsafeRawBufferPointer) throws(SysError) -> Int {
        var taken = 0
        if !hasPendingOutput {
            if canWrite {
                switch try Socket.write(fd, from: bytes) {
                case .processed(let n): taken = n
                case .wouldBlock: break
                }
                if taken == bytes.count { return taken }
                canWrite = false  // a short write means the socket buffer is full
            }
        }
        let queued = min(outputRoom, bytes.count - taken)
        if queued > 0 {
            outputBuffer().append(UnsafeRawBufferPointer(rebasing: bytes[taken..<(taken + queued)]))
        }
        if taken == 0 { try flush() }  // bytes queued behind earlier output: push them out together
        return taken + queued
    }

    /// Queues what fits of `bytes` behind the pending output, without a syscall. - Returns: bytes taken.
    func queue(_ bytes: UnsafeRawBufferPointer) -> Int {
        let queued = min(outputRoom, bytes.count)
        if queued > 0 { outputBuffer().append(UnsafeRawBufferPointer(rebasing: bytes[0..<queued])) }
        return queued
    }

    @inline(__always) func outputBuffer() -> ByteBuffer {
        if let buffer = output { return buffer }
        let buffer = loop.buffers.take()
        output = buffer
        return buffer
    }

    /// Writes queued output. - Returns: true when nothing is left queued.
    @discardableResult
    func flush() throws(SysError) -> Bool {
        guard let buffer = output else { return true }
        while !buffer.isEmpty {
            guard canWrite else { return false }
            switch try Socket.write(fd, from: buffer.readable) {
            case .wouldBlock:
                canWrite = false
                return false
            case .processed(let n):
                if n < buffer.readableCount { canWrite = false }
                buffer.moveReader(by: n)
            }
        }
        return true
    }

    /// Gives an empty output buffer back.
    @inline(__always) func releaseOutputIfEmpty() {
        if let buffer = output, buffer.isEmpty {
            loop.buffers.give(buffer)
            output = nil
        }
    }
}
