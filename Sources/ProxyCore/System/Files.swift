// Reading a whole (small) file: configuration files and manifests, never anything on a request path.
import Glibc

public enum Files {
    /// The file's bytes as UTF-8 text; `-` reads standard input.
    public static func readText(_ path: String) throws(SysError) -> String {
        let fd = path == "-" ? 0 : open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SysError(code: errno, call: "open") }
        defer { if fd != 0 { close(fd) } }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw SysError(code: errno, call: "read") }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
