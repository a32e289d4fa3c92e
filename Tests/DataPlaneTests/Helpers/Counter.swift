// A thread-safe counter for tests: loop threads and fake servers count what they saw, the test reads it.
import Synchronization

final class Counter: Sendable {
    private let storage = Atomic<Int>(0)

    init() {}

    var value: Int { storage.load(ordering: .acquiring) }

    func increment() { _ = storage.add(1, ordering: .acquiringAndReleasing) }
}
