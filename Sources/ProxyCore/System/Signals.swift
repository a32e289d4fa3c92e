// Signals arrive as data: they are blocked in every thread and read from a signalfd (STYLE.md §5).
import CLinuxShims
import Glibc

public enum Signals {
    /// Blocks `signals` in the calling thread; call before starting threads so that they inherit the mask.
    /// SIGPIPE is ignored outright (sends use MSG_NOSIGNAL anyway; this covers writes to pipes).
    public static func block(_ signals: [Int32]) {
        signal(SIGPIPE, SIG_IGN)
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// A blocking signalfd for `signals` (which must already be blocked).
    public static func makeDescriptor(_ signals: [Int32]) throws(SysError) -> Int32 {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        return try sys("signalfd") { signalfd(-1, &set, Int32(SFD_CLOEXEC)) }
    }

    /// Waits for the next signal on a descriptor from `makeDescriptor`; returns its number.
    public static func next(_ fd: Int32) -> Int32 {
        var info = signalfd_siginfo()
        while true {
            let n = read(fd, &info, MemoryLayout<signalfd_siginfo>.size)
            if n == MemoryLayout<signalfd_siginfo>.size { return Int32(info.ssi_signo) }
            if n < 0 && errno == EINTR { continue }
            return -1
        }
    }
}

public enum ResourceLimits {
    /// Raises the soft limit on open descriptors to the hard limit: a proxy holding thousands of connections
    /// (the activator buffering at zero) must not fail at 1024, the usual soft default.
    /// - Returns: the new soft limit.
    @discardableResult
    public static func raiseDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(limit.rlim_cur)
    }
}
