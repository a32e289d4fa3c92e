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
