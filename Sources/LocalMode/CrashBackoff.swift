// Crash-loop back-off of one revision's pods: how long a replacement waits after a pod died, and when that wait
// starts over. Pure logic over explicit times (milliseconds), so tests drive it without processes.

/// The back-off between replacements of a revision's pods that die on their own (not scale-down or deletion).
///
/// The rule (kubelet's idea, on our time scale):
///
/// | event                                                          | count            | next pod may start   |
/// |----------------------------------------------------------------|------------------|----------------------|
/// | a pod dies before it was ready, or ready for < `healthyAfterMs` | +1               | 1 s, 2 s, 4 s … 30 s |
/// | a pod dies after being ready for ≥ `healthyAfterMs`             | 0                | at once              |
/// | a pod of the revision has been ready for `healthyAfterMs`       | 0 (once per pod) | at once              |
///
/// Why 10 s: kubelet resets a container's back-off once it has run for 10 min (twice its 5 min cap); our pods
/// start in milliseconds and our cap is 30 s, so a pod that served for 10 s has proved the revision can run. A pod
/// that dies sooner after its first ready answer still counts, so an app that flaps (ready, then crashes) is
/// slowed down like one that never gets ready. "Once per pod" keeps a long-lived pod from resetting the count
/// over and over while a sibling crash-loops.
struct CrashBackoff: Equatable {
    static let initialMs: Int64 = 1_000
    static let maxMs: Int64 = 30_000
    static let healthyAfterMs: Int64 = 10_000

    /// Consecutive crashes since the last reset.
    private(set) var crashes = 0
    /// No replacement starts before this time.
    private(set) var nextStartMs: Int64 = 0

    /// The wait after `crashes` consecutive crashes: 1 s doubling, at most 30 s (0 for none).
    static func delayMs(crashes: Int) -> Int64 {
        guard crashes > 0 else { return 0 }
        return min(maxMs, initialMs << Int64(min(crashes - 1, 16)))
    }

    /// Whether a pod ready since `readySinceMs` has proved the revision healthy at `nowMs`.
    static func isHealthy(readySinceMs: Int64?, atMs nowMs: Int64) -> Bool {
        guard let since = readySinceMs else { return false }
        return nowMs - since >= healthyAfterMs
    }

    /// A pod died on its own.
    /// - Parameters:
    ///   - readySinceMs: when it became ready; nil if it never was.
    ///   - nowMs: now.
    mutating func podDied(readySinceMs: Int64?, atMs nowMs: Int64) {
        if Self.isHealthy(readySinceMs: readySinceMs, atMs: nowMs) {
            reset()
            return
        }
        crashes += 1
        nextStartMs = nowMs + Self.delayMs(crashes: crashes)
    }

    /// A pod has been ready for `healthyAfterMs`: the count starts over (call once per pod).
    mutating func reset() {
        crashes = 0
        nextStartMs = 0
    }

    /// Whether a replacement has to wait at `nowMs`.
    func isWaiting(atMs nowMs: Int64) -> Bool { nowMs < nextStartMs }
}
