// Runs one of the package's executables as a child process, and always reaps it.
import Foundation
import Glibc
import Synchronization

/// Every child still running, so that an exiting test process takes them along (a test that fails in an
/// unexpected way must not leave a queue-proxy listening).
private let runningChildren = Locked<Set<Int32>>([])
private let reaperInstalled = Locked(false)

private func registerChild(_ pid: Int32) {
    let install = reaperInstalled.withLock { installed in
        defer { installed = true }
        return !installed
    }
    if install {
        atexit {
            for pid in runningChildren.withLock({ $0 }) { kill(pid, SIGKILL) }
        }
    }
    _ = runningChildren.withLock { $0.insert(pid) }
}

final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let stderrPipe = Pipe()
    private let stdoutPipe = Pipe()
    private var stdoutData = Data()
    private let lock = NSLock()
    private var stderrData = Data()

    /// The directory holding the built executables (next to the test bundle).
    static var buildDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }

    /// Starts `.build/<config>/<name>` with `environment` (added to a minimal base: PATH only).
    convenience init(_ name: String, environment: [String: String], arguments: [String] = []) throws {
        var url = ChildProcess.buildDirectory.appendingPathComponent(name)
        if !FileManager.default.fileExists(atPath: url.path) {
            // The runner may sit inside a bundle directory: look one level up too.
            url = ChildProcess.buildDirectory.deletingLastPathComponent().appendingPathComponent(name)
        }
        try self.init(executable: url, environment: environment, arguments: arguments)
    }

    /// Starts any executable (the test virtualenv's python, nghttp).
    init(executable url: URL, environment: [String: String], arguments: [String] = []) throws {
        process.executableURL = url
        process.arguments = arguments
        // TSAN_OPTIONS and ASAN_OPTIONS pass on so that sanitized children use the suite's settings (README, Tests).
        var base = ["PATH": "/usr/bin:/bin"]
        for name in ["TSAN_OPTIONS", "ASAN_OPTIONS"] {
            if let value = ProcessInfo.processInfo.environment[name] { base[name] = value }
        }
        process.environment = base.merging(environment) { $1 }
        process.standardError = stderrPipe
        process.standardOutput = stdoutPipe
        try process.run()
        // Plain reader threads (not Dispatch read sources, which crashed under heavy parallel tests).
        startReader(stdoutPipe.fileHandleForReading.fileDescriptor) { [weak self] bytes in
            guard let self else { return }
            self.lock.withLock { self.stdoutData.append(contentsOf: bytes) }
        }
        startReader(stderrPipe.fileHandleForReading.fileDescriptor) { [weak self] bytes in
            guard let self else { return }
            self.lock.withLock { self.stderrData.append(contentsOf: bytes) }
        }
        registerChild(process.processIdentifier)
    }

    var pid: Int32 { process.processIdentifier }

    /// Signalled once per reader at EOF, so that output is complete when `waitForExit` returns.
    private let readersDone = DispatchSemaphore(value: 0)

    /// Reads `fd` until EOF on its own thread (the child's exit closes the pipe's write end).
    private func startReader(_ fd: Int32, _ sink: @escaping @Sendable ([UInt8]) -> Void) {
        let done = readersDone
        Thread {
            defer { done.signal() }
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                sink(Array(chunk[0..<n]))
            }
        }.start()
    }

    private var readersJoined = false

    var stderr: String { lock.withLock { String(decoding: stderrData, as: UTF8.self) } }
    var stdout: String { lock.withLock { String(decoding: stdoutData, as: UTF8.self) } }

    /// Waits until `port` accepts connections (or the process died). - Returns: whether it is listening.
    @discardableResult
    func waitForPort(_ port: UInt16, seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if !process.isRunning { return false }
            if let socket = try? TestSocket.connect(port: port) {
                socket.close()
                return true
            }
            usleep(10_000)
        }
        return false
    }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// Starts server `name` on the ports `configure` picks and waits until it listens on every one of them.
    /// A port `freePort` found free can still be taken by another process (a parallel test run elsewhere on the
    /// machine) before the child binds it; the child then exits with "cannot listen", and it is started again
    /// on fresh ports. Any other failure is thrown with the child's stderr.
    /// - Parameters:
    ///   - configure: returns the ports to wait for, the child's environment and arguments, and a value the
    ///     caller keeps (its port numbers), called once per attempt.
    /// - Returns: the running child and the value of the attempt that worked.
    static func startServer<Config>(
        _ name: String, attempts: Int = 3,
        configure: () -> (ports: [UInt16], environment: [String: String], arguments: [String], config: Config)
    ) throws -> (ChildProcess, Config) {
        var lastError = ""
        for _ in 0..<attempts {
            let setup = configure()
            let child = try ChildProcess(name, environment: setup.environment, arguments: setup.arguments)
            if setup.ports.allSatisfy({ child.waitForPort($0) }) { return (child, setup.config) }
            child.signal(SIGKILL)
            _ = child.waitForExit()
            lastError = child.stderr
            guard lastError.contains("cannot listen") else { break }
        }
        throw TestError("\(name) did not start: \(lastError)")
    }

    /// Waits for exit. - Returns: the exit status, or nil on timeout.
    func waitForExit(seconds: Double = 10) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning { return nil }
        // The child is gone: let both readers reach EOF so that `stderr`/`stdout` hold everything it wrote.
        if !readersJoined {
            readersJoined = true
            for _ in 0..<2 { _ = readersDone.wait(timeout: .now() + 2) }
        }
        return process.terminationStatus
    }

    /// Peak and current resident set size in kB from /proc.
    func memoryKB() -> (rss: Int, peak: Int) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return 0 }
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
        }
        return (field("VmRSS:"), field("VmHWM:"))
    }

    deinit {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        _ = runningChildren.withLock { $0.remove(pid) }

    }
}

/// The environment Knative's controller gives a queue-proxy (spec §1.1), for `port` → `userPort`.
func queueProxyEnvironment(port: UInt16, userPort: UInt16, extra: [String: String] = [:]) -> [String: String] {
    [
        "QUEUE_SERVING_PORT": "\(port)", "USER_PORT": "\(userPort)", "CONTAINER_CONCURRENCY": "0",
        "QUEUE_SERVING_TLS_PORT": "\(freePort())", "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_LOGGING_CONFIG": "", "SERVING_LOGGING_LEVEL": "", "SERVING_NAMESPACE": "default",
        "SERVING_CONFIGURATION": "hello", "SERVING_REVISION": "hello-00001", "SERVING_POD": "hello-pod",
        "SERVING_POD_IP": "127.0.0.1", "QUEUE_ADMIN_PORT": "\(freePort())", "QUEUE_METRICS_PORT": "\(freePort())",
        "QUEUE_USER_METRICS_PORT": "\(freePort())", "QUEUE_DRAIN_QUIET_PERIOD": "200ms",
    ].merging(extra) { $1 }
}
