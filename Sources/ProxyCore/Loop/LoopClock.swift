// The time source a loop and its timer wheel read: the coarse monotonic clock in production, a manual clock
// in tests (swift-nio's `EmbeddedEventLoop.advanceTime` model). It is read once per loop pass, never per request.
import Synchronization

/// Where an `EventLoop` gets its `nowMs`. An enum rather than a protocol or closure: the production case is a
/// direct call to `monotonicMs()` behind one predictable branch, no existential or indirect call per pass.
public enum LoopClock: Sendable {
    /// `CLOCK_MONOTONIC_COARSE` in ms (what every production loop uses).
    case monotonic
    /// Time moves only when a test says so (`ManualClock.advance(byMs:)`).
    case manual(ManualClock)

    /// The current time in ms. (No `@inline(__always)`: one call per loop pass, STYLE.md §6.)
    public func nowMs() -> Int64 {
        switch self {
        case .monotonic: return monotonicMs()
        case .manual(let clock): return clock.nowMs
        }
    }
}

/// A clock that only a test moves. Sendable: the test thread advances it while a loop thread may read it.
/// Advancing it does not wake a loop blocked in `epoll_wait`: drive manual-clock loops by hand
/// (`EventLoop.runOnce()`, `advanceTime(byMs:)`), not with `run()` on a thread.
public final class ManualClock: Sendable {
    private let storage: Atomic<Int64>

    /// - Parameter startMs: the initial reading (any value; loops only ever compare and subtract readings).
    public init(startMs: Int64 = 0) {
        storage = Atomic(startMs)
    }

    /// The current reading in ms.
    public var nowMs: Int64 { storage.load(ordering: .acquiring) }

    /// Moves the clock forward; a manual clock never goes back.
    public func advance(byMs deltaMs: Int64) {
        precondition(deltaMs >= 0, "a monotonic clock does not go back")
        _ = storage.add(deltaMs, ordering: .releasing)
    }
}
