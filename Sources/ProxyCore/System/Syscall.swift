// The syscall layer: errno becomes a typed `SysError`, EINTR is retried, EAGAIN is an ordinary outcome.
// Nothing above this file reads `errno` directly.
import Glibc

/// A failed system call: the call's name and the errno it left.
public struct SysError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let call: StaticString

    public init(code: Int32, call: StaticString) {
        self.code = code
        self.call = call
    }

    public var description: String { "\(call): \(SysError.text(code))" }

    /// The C library's text for an errno, e.g. "connection refused" (lower-cased the way Go prints it).
    public static func text(_ code: Int32) -> String {
        guard let cString = strerror(code) else { return "errno \(code)" }
        let text = String(cString: cString)
        // Go's syscall.Errno strings are lower-case ("connection refused"); glibc capitalises the first letter.
        guard let first = text.first else { return text }
        return first.lowercased() + text.dropFirst()
    }
}

/// The outcome of a non-blocking call: done with a value, or the kernel said EAGAIN.
public enum IOResult<T> {
    case processed(T)
    case wouldBlock
}

@inline(__always)
private func isUnacceptable(_ code: Int32) -> Bool {
    // EBADF/EFAULT mean a bug in our fd or pointer bookkeeping; continuing would corrupt other connections.
    code == EBADF || code == EFAULT
}

/// Calls `body` until it stops failing with EINTR.
/// - Throws: `SysError` for any other failure.
@inline(__always)
public func sys<T: FixedWidthInteger>(_ call: StaticString, _ body: () -> T) throws(SysError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        precondition(!isUnacceptable(code), "\(call) failed with \(code): a descriptor bookkeeping bug")
        throw SysError(code: code, call: call)
    }
}

/// Like `sys`, but EAGAIN/EWOULDBLOCK (and EINPROGRESS for connect) come back as `.wouldBlock`.
@inline(__always)
public func sysNonBlocking<T: FixedWidthInteger>(
    _ call: StaticString, _ body: () -> T
) throws(SysError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .processed(result) }
        let code = errno
        if code == EINTR { continue }
        if code == EAGAIN || code == EWOULDBLOCK || code == EINPROGRESS { return .wouldBlock }
        precondition(!isUnacceptable(code), "\(call) failed with \(code): a descriptor bookkeeping bug")
        throw SysError(code: code, call: call)
    }
}

/// Closes a descriptor. EINTR is not retried: on Linux the descriptor is gone either way.
public func closeDescriptor(_ fd: Int32) {
    _ = Glibc.close(fd)
}

/// The monotonic clock in milliseconds (coarse: ~4 ms resolution, which is all timeouts need, and cheap).
public func monotonicMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// The precise monotonic clock in nanoseconds, for statistics that need sub-millisecond accuracy.
public func monotonicNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
