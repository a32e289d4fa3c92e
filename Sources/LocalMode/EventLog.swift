// Human-readable events and the small file helpers kn-local's control plane shares.
import Glibc
import KnativeWire
import ProxyCore

/// Makes a directory and its parents.
func makeDirectory(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw ManifestError("cannot create \(current): \(SysError.text(errno))")
        }
    }
}

/// The last `count` lines of a log file (read from its last 4 KiB: logs can be large), without empty lines;
/// `["(no log: …)"]` when it cannot be read.
func tailLines(_ path: String, count: Int = 5) -> [String] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return ["(no log: \(SysError.text(errno)))"] }
    defer { close(fd) }
    let size = lseek(fd, 0, SEEK_END)
    let start = max(0, size - 4096)
    var bytes = [UInt8](repeating: 0, count: Int(size - start))
    var filled = 0
    while filled < bytes.count {
        let n = bytes[filled...].withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, start + off_t(filled)) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        filled += n
    }
    var lines = String(decoding: bytes[0..<filled], as: UTF8.self).split(separator: "\n").map {
        String($0.hasSuffix("\r") ? $0.dropLast() : $0)
    }
    // A line cut by the 4 KiB window is dropped (unless it is all there is).
    if start > 0 && lines.count > 1 { lines.removeFirst() }
    return lines.filter { !$0.allSatisfy(\.isWhitespace) }.suffix(count).map { String($0.prefix(300)) }
}

/// Human-readable events on stdout: `HH:MM:SS.mmm text`.
public final class EventLog: Sendable {
    let verbose: Bool
    public init(verbose: Bool) { self.verbose = verbose }

    public func emit(_ text: String, verbose isVerbose: Bool = false) {
        if isVerbose && !verbose { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let s = Int(ts.tv_sec % 86400)
        let stamp =
            String(format2(s / 3600)) + ":" + format2((s / 60) % 60) + ":" + format2(s % 60) + "."
            + format3(Int(ts.tv_nsec / 1_000_000))
        let line = stamp + " " + text + "\n"
        var bytes = Array(line.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeMutableBytes { write(1, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            offset += n
        }
    }

    private func format2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
    private func format3(_ v: Int) -> String { v < 10 ? "00\(v)" : v < 100 ? "0\(v)" : "\(v)" }
}
