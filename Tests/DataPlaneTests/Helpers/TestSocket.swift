// Blocking sockets for tests: a client that speaks just enough HTTP/1.1 to check what the proxy sends,
// written independently of the code under test.
import Foundation
import Glibc
import ProxyCore
import Synchronization

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// A parsed response as the client saw it.
struct TestResponse {
    var status: Int
    var reason: String
    var headers: [(String, String)]
    var body: [UInt8]
    var trailers: [(String, String)] = []
    /// Whether the body ended with correct framing (false: the connection closed early).
    var isComplete = true

    var bodyText: String { String(decoding: body, as: UTF8.self) }

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    func headers(_ name: String) -> [String] {
        headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
    }
}

/// A blocking TCP socket with a receive timeout.
final class TestSocket: @unchecked Sendable {
    let fd: Int32
    private var buffer: [UInt8] = []
    private(set) var isClosed = false

    init(fd: Int32) {
        self.fd = fd
        setTimeout(seconds: 10)
    }

    /// Tests open thousands of sockets at once (the activator's buffering tests): lift the soft limit once.
    private static let descriptorLimit = ResourceLimits.raiseDescriptorLimit()

    /// Connects to 127.0.0.1:`port`.
    static func connect(port: UInt16, timeoutSeconds: Int = 10) throws -> TestSocket {
        _ = descriptorLimit
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let code = errno
            Glibc.close(fd)
            throw TestError("connect to \(port): errno \(code)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        let socket = TestSocket(fd: fd)
        socket.setTimeout(seconds: timeoutSeconds)
        return socket
    }

    func setTimeout(seconds: Int, microseconds: Int = 0) {
        var tv = timeval(tv_sec: seconds, tv_usec: microseconds)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close() }

    func close() {
        if !isClosed {
            isClosed = true
            Glibc.close(fd)
        }
    }

    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n <= 0 { throw TestError("send failed: errno \(errno)") }
            offset += n
        }
    }

    /// Sends all of `bytes` like `send`, calling `whenBlocked` each time the kernel cannot take more (the peer
    /// stopped reading and the socket buffers are full): backpressure as an event a test can wait for.
    func send(_ bytes: [UInt8], whenBlocked: () -> Void) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                whenBlocked()
                var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&entry, 1, -1)  // until the peer reads (or goes away: the next send fails)
                continue
            }
            if n <= 0 { throw TestError("send failed: errno \(errno)") }
            offset += n
        }
    }

    /// Reads more bytes into the internal buffer. - Returns: false on EOF.
    @discardableResult
    func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw TestError("read timed out") }
            if errno == ECONNRESET { return false }
            throw TestError("recv failed: errno \(errno)")
        }
        if n == 0 { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// The bytes read from the socket but not consumed yet (taken out of the buffer).
    func takeBuffered() -> [UInt8] {
        defer { buffer.removeAll() }
        return buffer
    }

    /// Reads until EOF; returns everything not yet consumed.
    func readToEnd() throws -> [UInt8] {
        while try fill() {}
        defer { buffer.removeAll() }
        return buffer
    }

    /// Whether the peer closed (EOF or reset) within the receive timeout, with no further data.
    func isClosedByPeer() -> Bool {
        (try? fill()) == false
    }

    /// Reads exactly `count` bytes.
    func read(count: Int) throws -> [UInt8] {
        while buffer.count < count {
            guard try fill() else { throw TestError("EOF after \(buffer.count) of \(count) bytes") }
        }
        let out = Array(buffer[0..<count])
        buffer.removeFirst(count)
        return out
    }

    /// Reads a line ending in CRLF (without it).
    func readLine() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 0x0A) {
                var line = Array(buffer[0..<i])
                buffer.removeFirst(i + 1)
                if line.last == 0x0D { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            guard try fill() else { throw TestError("EOF while reading a line") }
        }
    }

    /// Reads a request or response head: the start line and the fields.
    func readHead() throws -> (String, [(String, String)]) {
        let start = try readLine()
        var fields: [(String, String)] = []
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { throw TestError("bad field line \(line)") }
            fields.append(
                (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return (start, fields)
    }

    /// Reads a body framed by the given fields (content-length / chunked); `untilClose` reads to EOF.
    func readBody(fields: [(String, String)], untilClose: Bool) throws -> ([UInt8], [(String, String)], Bool) {
        let lookup = { (name: String) in fields.first { $0.0.lowercased() == name }?.1 }
        if lookup("transfer-encoding")?.lowercased().contains("chunked") == true {
            var body: [UInt8] = []
            while true {
                guard let sizeLine = try? readLine() else { return (body, [], false) }
                let hex = sizeLine.split(separator: ";").first.map(String.init) ?? ""
                guard let size = Int(hex.trimmingCharacters(in: .whitespaces), radix: 16) else {
                    throw TestError("bad chunk size \(sizeLine)")
                }
                if size == 0 {
                    var trailers: [(String, String)] = []
                    while true {
                        let line = try readLine()
                        if line.isEmpty { break }
                        if let colon = line.firstIndex(of: ":") {
                            trailers.append(
                                (
                                    String(line[..<colon]),
                                    line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                                ))
                        }
                    }
                    return (body, trailers, true)
                }
                guard let data = try? read(count: size) else { return (body + buffer, [], false) }
                body += data
                guard (try? read(count: 2)) == [0x0D, 0x0A] else { return (body, [], false) }
            }
        }
        if let length = lookup("content-length").flatMap({ Int($0) }) {
            do {
                return (try read(count: length), [], true)
            } catch {
                let partial = buffer
                buffer.removeAll()
                return (partial, [], false)
            }
        }
        if untilClose { return (try readToEnd(), [], true) }
        return ([], [], true)
    }

    /// Reads one response. `headRequest`: the request was HEAD (no body whatever the fields say).
    func readResponse(headRequest: Bool = false) throws -> TestResponse {
        let (start, fields) = try readHead()
        let parts = start.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else { throw TestError("bad status line \(start)") }
        var response = TestResponse(
            status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: fields, body: [])
        if headRequest || status < 200 || status == 204 || status == 304 { return response }
        let (body, trailers, complete) = try readBody(fields: fields, untilClose: true)
        response.body = body
        response.trailers = trailers
        response.isComplete = complete
        return response
    }

    /// Sends a request and reads the response.
    func exchange(_ request: String, headRequest: Bool = false) throws -> TestResponse {
        try send(request)
        return try readResponse(headRequest: headRequest)
    }
}

/// A listening TCP socket on 127.0.0.1:`port` (0: the kernel picks one), `SO_REUSEADDR` set.
/// - Returns: the descriptor and the port it is bound to.
func listenOnLoopback(port: UInt16, backlog: Int32) throws -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(4))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = port.bigEndian
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard rc == 0, listen(fd, backlog) == 0 else {
        let code = errno
        Glibc.close(fd)
        throw TestError("cannot listen on 127.0.0.1:\(port): errno \(code)")
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, UInt16(bigEndian: addr.sin_port))
}

/// Ports handed out so far (by `freePort` and taken by test servers): a port is never used twice in one test
/// process. Without this, a port released by `freePort` for a child process could be taken by a test server's
/// bind to port 0 before the child binds it, and the test would talk to the wrong server.
let issuedPorts = Locked<Set<UInt16>>([])

/// A free ephemeral port (bound and released; good enough for tests on loopback).
func freePort() -> UInt16 {
    while true {
        let port = kernelFreePort()
        let isNew = issuedPorts.withLock { $0.insert(port).inserted }
        if isNew { return port }
    }
}

/// A port below the kernel's ephemeral range (32768–60999 here) that binds now. Outside that range no client
/// socket of the test process can hold it as its source port, so a child process can always bind it, and a
/// connect to it while nothing listens cannot "self-connect" (source port = destination port) and look alive.
private func kernelFreePort() -> UInt16 {
    while true {
        let candidate = UInt16.random(in: 20_000..<32_000)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = candidate.bigEndian
        addr.sin_addr.s_addr = INADDR_ANY
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc == 0 { return candidate }
    }
}
