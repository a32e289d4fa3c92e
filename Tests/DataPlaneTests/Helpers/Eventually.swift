// Waiting for an event instead of sleeping for a guess: poll a condition (a gauge, the fake app's request
// list, a child's output) until it holds. The deadline is only a safety net against a hung test; a loaded
// machine makes the wait longer, never the test wrong.
import Foundation

/// Polls `condition` every `pollMs` until it is true or `seconds` have passed.
/// - Returns: whether the condition held (the caller `#expect`s it, so a timeout names what never happened).
@discardableResult
func eventually(seconds: Double = 20, pollMs: UInt32 = 5, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if try condition() { return true }
        if Date() >= deadline { return false }
        usleep(pollMs * 1_000)
    }
}

/// The async form of `eventually`: polls `condition` every 20 ms until it holds or `seconds` pass, sleeping as
/// a task. The tests are many and wait mostly for processes; a blocked thread would hold one of the cooperative
/// pool's few threads (one per core), so that only that many tests would run at once.
func pollUntil(seconds: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}
