// The unsafe edge of kn-local: spawning and reaping child processes, blocking sockets for the supervisor's own
// small HTTP calls, and port allocation. Everything else in LocalMode is plain Swift over these.
import CLinuxShims
import Glibc
import KnativeWire
import ProxyCore

public enum ProcessControl {
    /// Starts `argv` with `environment`; output appended to `logPath` (created) or inherited when nil.
    /// `networkNamespace`: a path such as `/run/netns/NAME`; the child joins that network namespace.
    /// Must be called on a thread that lives as long as the child should (PR_SET_PDEATHSIG is per thread).
    public static func spawn(
        _ argv: [String], environment: [String], logPath: String?, networkNamespace: String? = nil
    ) throws -> Int32 {
        var outFD: Int32 = -1
        if let logPath {
            outFD = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            if outFD < 0 { throw ManifestError("cannot open \(logPath): \(SysError.text(errno))") }
        }
        defer { if outFD >= 0 { close(outFD) } }
        var netnsFD: Int32 = -1
        if let networkNamespace {
            netnsFD = open(networkNamespace, O_RDONLY | O_CLOEXEC)
            if netnsFD < 0 { throw ManifestError("cannot open \(networkNamespace): \(SysError.text(errno))") }
        }
        defer { if netnsFD >= 0 { close(netnsFD) } }
        let pid = withCStrings(argv) { cArgs in
            withCStrings(environment) { cEnv in CLinuxShims_spawn(argv[0], cArgs, cEnv, outFD, netnsFD) }
        }
        if pid < 0 { throw ManifestError("cannot start \(argv[0]): \(SysError.text(-pid))") }
        return pid
    }

    /// Runs `argv` to its end (a short tool such as `ip`), output to `logPath`. - Returns: its exit.
    /// Only for the controller's loop thread, which is also the only reaper: nobody else can take this child.
    /// It blocks that loop, so it is bounded: a tool still running after `limitMs` (a hung `ip` on a wedged
    /// netlink) is killed, and the call throws saying so.
    public static func run(_ argv: [String], logPath: String?, limitMs: Int32 = 10_000) throws -> Exit {
        let pid = try spawn(argv, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], logPath: logPath)
        if !(try exits(pid, withinMs: limitMs)) {
            signal(pid, SIGKILL)
            _ = try? wait(pid)
            throw ManifestError("`\(argv.joined(separator: " "))` did not finish in \(limitMs) ms (killed)")
        }
        return try wait(pid)
    }

    /// Whether `pid` exits within `ms`, watched through a pidfd (no reaping, no signal handler).
    private static func exits(_ pid: Int32, withinMs ms: Int32) throws -> Bool {
        let fd = CLinuxShims_pidfd_open(pid)
        guard fd >= 0 else { return true }  // a kernel without pidfds (< 5.3): wait unbounded, as before
        defer { close(fd) }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&entry, 1, ms)
            if ready < 0 && errno == EINTR { continue }  // a rare signal restarts the full wait: fine for a bound
            return ready != 0
        }
    }

    /// Reaps `pid`, blocking. - Returns: how it ended.
    private static func wait(_ pid: Int32) throws -> Exit {
        while true {
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, 0)
            if reaped < 0 && errno == EINTR { continue }
            if reaped < 0 { throw ManifestError("waitpid \(pid): \(SysError.text(errno))") }
            if CLinuxShims_wifexited(status) != 0 {
                return Exit(pid: pid, code: CLinuxShims_wexitstatus(status), signal: nil)
            }
            if CLinuxShims_wifsignaled(status) != 0 {
                return Exit(pid: pid, code: nil, signal: CLinuxShims_wtermsig(status))
            }
        }
    }

    /// A NULL-terminated `char *[]` for the duration of `body`.
    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for p in pointers { free(p) } }
        return body(pointers)
    }

    /// Signals the child's whole process group (every child leads its own, see the shim): a shell or a
    /// forking server takes its own children along.
    public static func signal(_ pid: Int32, _ sig: Int32) {
        guard pid > 0 else { return }
        if kill(-pid, sig) != 0 { _ = kill(pid, sig) }
    }

    /// Makes this process the reaper of its orphaned descendants (grandchildren whose parent died), so that
    /// they are reaped here instead of lingering as zombies of init.
    public static func becomeSubreaper() { _ = CLinuxShims_set_child_subreaper() }

    /// How a reaped child ended.
    public struct Exit: Sendable, CustomStringConvertible {
        public let pid: Int32
        public let code: Int32?
        public let signal: Int32?
        public var description: String {
            if let code {
                return code == 127 ? "exit code 127 (command not found or not executable)" : "exit code \(code)"
            }
            return "signal \(signal ?? 0)\(signal == SIGKILL ? " (killed)" : "")"
        }
    }

    /// Every child that has ended since the last call (non-blocking).
    public static func reap() -> [Exit] {
        var result: [Exit] = []
        while let exit = reap(pid: -1) { result.append(exit) }
        return result
    }

    /// `pid` (or any child for -1) if it has ended, without waiting.
    public static func reap(pid: Int32) -> Exit? {
        while true {
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped <= 0 { return nil }
            if CLinuxShims_wifexited(status) != 0 {
                return Exit(pid: reaped, code: CLinuxShims_wexitstatus(status), signal: nil)
            }
            if CLinuxShims_wifsignaled(status) != 0 {
                return Exit(pid: reaped, code: nil, signal: CLinuxShims_wtermsig(status))
            }
            // Stopped/continued reports: not an end; look again.
        }
    }

    /// The absolute path of an executable: as given when it has a slash, else searched in PATH.
    public static func resolve(_ name: String, path: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// The directory of the running executable (where the bundled binaries live).
    public static func ownDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return "." }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    }

    public static func isAlive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 }
}

/// Loopback ports for pods, taken in turn from a range below the kernel's ephemeral range (no clash with
/// client source ports), each checked by binding it first.
public struct PortAllocator: Sendable {
    public let range: ClosedRange<Int>
    private var next: Int

    public init(range: ClosedRange<Int>) {
        self.range = range
        next = range.lowerBound
    }

    public mutating func take() -> UInt16? {
        for _ in 0..<range.count {
            let port = next
            next = next == range.upperBound ? range.lowerBound : next + 1
            if Self.isFree(UInt16(port)) { return UInt16(port) }
        }
        return nil
    }

    /// Whether nothing listens on `port` (any address).
    public static func isFree(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        // As our listeners bind: TIME_WAIT leftovers of an earlier run do not make a port busy.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = 0
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        } == 0
    }
}
