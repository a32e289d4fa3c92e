// Small thread-safe helpers shared by the scenario tests: what fake servers saw, and one-shot signals.
import Foundation
import Synchronization

/// Thread-safe box for what an upstream script saw.
final class Seen<T: Sendable>: Sendable {
    private let storage: Mutex<[T]>
    init() { storage = Mutex([]) }
    func add(_ value: T) { storage.withLock { $0.append(value) } }
    var all: [T] { storage.withLock { $0 } }
}

/// A one-shot signal between threads.
final class Gate: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func open() { semaphore.signal() }
    @discardableResult func wait(seconds: Double = 10) -> Bool { semaphore.wait(timeout: .now() + seconds) == .success }
}
