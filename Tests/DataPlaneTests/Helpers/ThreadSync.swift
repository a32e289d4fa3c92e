// Small thread-safe helpers shared by the scenario tests: what fake servers saw, and one-shot signals.
import Foundation
import Synchronization

/// Thread-safe box for what an upstream script saw.
final class Seen<T: Sendable>: Sendable {
    private let storage: Locked<[T]>
    init() { storage = Locked([]) }
    func add(_ value: T) { storage.withLock { $0.append(value) } }
    var all: [T] { storage.withLock { $0 } }
}

/// A one-shot signal between threads.
final class Gate: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func open() { semaphore.signal() }
    @discardableResult func wait(seconds: Double = 10) -> Bool { semaphore.wait(timeout: .now() + seconds) == .success }
}

/// A value behind a pthread lock. The tests use it rather than Synchronization's `Mutex`, whose futex-based lock
/// the thread sanitizer cannot see: it reports every `Mutex`-guarded access from two threads as a race (README
/// says how to run the suite under -sanitize=thread).
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
