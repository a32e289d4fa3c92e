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
