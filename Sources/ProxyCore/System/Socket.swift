// TCP sockets over Glibc: listen, accept, connect, read, write. All descriptors are non-blocking and close-on-exec.
// Ownership of the returned descriptors passes to the caller (a Channel closes it).
import CLinuxShims
import Glibc

/// An IPv4 or IPv6 endpoint kept as its sockaddr bytes.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    var storage: sockaddr_storage
    var length: socklen_t

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool { a.description == b.description }

    /// Parses `host:port` (IPv4 literal, `[v6]:port`, or `localhost`).
    public static func parse(_ text: String) -> SocketAddress? {
        var host = Substring(text)
        guard let colon = host.lastIndex(of: ":") else { return nil }
        guard let port = UInt16(host[host.index(after: colon)...]) else { return nil }
        host = host[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        if host.isEmpty || host == "localhost" { host = "127.0.0.1" }
        return SocketAddress(ip: String(host), port: port)
    }

    /// An address from a numeric IP and a port; nil when `ip` is not a literal address.
    public init?(ip: String, port: UInt16) {
        storage = sockaddr_storage()
        var ok = false
        if ip.contains(":") {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            ok = inet_pton(AF_INET6, ip, &sin6.sin6_addr) == 1
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin6) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            ok = inet_pton(AF_INET, ip, &sin.sin_addr) == 1
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        if !ok { return nil }
    }

    init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    public var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in
            // sin_port and sin6_port sit at the same offset (2) in both layouts.
            UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        }
    }

    public var isIPv6: Bool { Int32(storage.ss_family) == AF_INET6 }

    /// The IP alone, as text ("127.0.0.1", "::1").
    public var ipString: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        withUnsafeBytes(of: storage) { raw in
            if isIPv6 {
                var addr = raw.loadUnaligned(fromByteOffset: 8, as: in6_addr.self)
                _ = inet_ntop(AF_INET6, &addr, &text, socklen_t(text.count))
            } else {
                var addr = raw.loadUnaligned(fromByteOffset: 4, as: in_addr.self)
                _ = inet_ntop(AF_INET, &addr, &text, socklen_t(text.count))
            }
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String { isIPv6 ? "[\(ipString)]:\(port)" : "\(ipString):\(port)" }

    /// Lends the sockaddr to a C call.
    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: storage) { raw in
            // sockaddr_storage is layout-compatible with sockaddr by definition.
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }
}

/// Thin wrappers around the socket calls; argument labels in place of C's positional ones.
public enum Socket {
    /// Creates a listening TCP socket bound to `address`.
    /// - Parameter reusePort: set SO_REUSEPORT so that each loop can own a listener on the same port.
    public static func listen(on address: SocketAddress, reusePort: Bool, backlog: Int32 = 4096) throws(SysError)
        -> Int32
    {
        let family = address.isIPv6 ? AF_INET6 : AF_INET
        let fd = try sys("socket") {
            socket(family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if reusePort { try setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1) }
            _ = try sys("bind") { address.withSockaddr { bind(fd, $0, $1) } }
            _ = try sys("listen") { Glibc.listen(fd, backlog) }
        } catch {
            closeDescriptor(fd)
            throw error
        }
        return fd
    }

    /// Accepts one connection; `.wouldBlock` when the queue is empty.
    public static func accept(_ fd: Int32) throws(SysError) -> IOResult<(Int32, SocketAddress)> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try withUnsafeMutableBytes(of: &storage) { (raw) throws(SysError) -> IOResult<Int32> in
            let sa = raw.baseAddress!.assumingMemoryBound(to: sockaddr.self)  // storage is large enough for any family
            return try sysNonBlocking("accept4") {
                CLinuxShims_accept4(fd, sa, &length, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
            }
        }
        switch result {
        case .wouldBlock: return .wouldBlock
        case .processed(let newFD): return .processed((newFD, SocketAddress(storage: storage, length: length)))
        }
    }

    /// Starts a non-blocking connect. Returns the descriptor and whether it connected at once; otherwise
    /// completion shows up as EPOLLOUT (then check `pendingError`).
    public static func connect(to address: SocketAddress) throws(SysError) -> (fd: Int32, isConnected: Bool) {
        let family = address.isIPv6 ? AF_INET6 : AF_INET
        let fd = try sys("socket") {
            socket(family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            try setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let result = try sysNonBlocking("connect") { address.withSockaddr { Glibc.connect(fd, $0, $1) } }
            if case .processed = result { return (fd, true) }
            return (fd, false)
        } catch {
            closeDescriptor(fd)
            throw error
        }
    }

    /// A blocking connect for threads without a loop; `timeoutMs` also becomes the socket's send and receive
    /// timeout (a blocking read or write that times out reports `.wouldBlock`).
    public static func connectBlocking(to address: SocketAddress, timeoutMs: Int) throws(SysError) -> Int32 {
        let family = address.isIPv6 ? AF_INET6 : AF_INET
        let fd = try sys("socket") { socket(family, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0) }
        do {
            var tv = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
            for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
                _ = try sys("setsockopt") {
                    setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
                }
            }
            try setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            _ = try sys("connect") { address.withSockaddr { Glibc.connect(fd, $0, $1) } }
            return fd
        } catch {
            closeDescriptor(fd)
            throw error
        }
    }

    /// The error a non-blocking connect ended with (0 = connected).
    public static func pendingError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length)
        return value
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(SysError) {
        var v = value
        _ = try sys("setsockopt") { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// Makes a descriptor blocking (helpers that serve on a thread of their own, e.g. kn-local's stat server).
    public static func setBlocking(_ fd: Int32) throws(SysError) {
        let flags = try sys("fcntl") { fcntl(fd, F_GETFL) }
        _ = try sys("fcntl") { fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
    }

    /// The local address a socket is bound to (used to learn an ephemeral port).
    public static func localAddress(_ fd: Int32) throws(SysError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutableBytes(of: &storage) { (raw) throws(SysError) -> Int32 in
            let sa = raw.baseAddress!.assumingMemoryBound(to: sockaddr.self)  // storage fits any family
            return try sys("getsockname") { getsockname(fd, sa, &length) }
        }
        return SocketAddress(storage: storage, length: length)
    }

    /// Reads into `buffer`. `.processed(0)` is end of stream.
    @inline(__always)
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SysError) -> IOResult<Int> {
        try sysNonBlocking("read") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// Writes from `buffer` (MSG_NOSIGNAL: a dead peer gives EPIPE, not SIGPIPE).
    @inline(__always)
    public static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(SysError) -> IOResult<Int> {
        try sysNonBlocking("send") { send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Gathers two regions into one send (response head + body bytes in one syscall).
    @inline(__always)
    public static func write(
        _ fd: Int32, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer
    ) throws(SysError) -> IOResult<Int> {
        if b.isEmpty { return try write(fd, from: a) }
        if a.isEmpty { return try write(fd, from: b) }
        var vectors = (
            iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)
        )
        return try withUnsafeMutableBytes(of: &vectors) { (raw) throws(SysError) -> IOResult<Int> in
            // A homogeneous tuple of two iovecs is laid out as a C array of two.
            let iov = raw.baseAddress!.assumingMemoryBound(to: iovec.self)
            var header = msghdr()
            header.msg_iov = iov
            header.msg_iovlen = 2
            return try sysNonBlocking("sendmsg") { sendmsg(fd, &header, Int32(MSG_NOSIGNAL)) }
        }
    }

    /// For an idle keep-alive connection: true when the peer has neither closed it nor sent anything.
    public static func isIdleAndOpen(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
    }

    /// Whether the peer closed its side (EOF waiting at the front), without consuming anything.
    public static func peerHasClosed(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    }

    public static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }
}
