// Knative's drainer (spec §1.15): once started, the component is "draining" until a quiet period passes with
// no new (non-probe) request; each such request restarts the period. `reset` cancels the drain.
// Shared by the loops and the main thread, so it is Sendable; the per-request check is one atomic load.
import KnativeWire
import ProxyCore
import Synchronization

public final class Drainer: Sendable {
    public let quietMs: Int64
    private let draining = Atomic<Bool>(false)
    private let lastRequestMs = Atomic<Int64>(0)
    private let sigterm = Atomic<Bool>(false)

    public init(quietMs: Int64) {
        self.quietMs = quietMs
    }

    public var isDraining: Bool { draining.load(ordering: .acquiring) }
    public var receivedSigterm: Bool { sigterm.load(ordering: .acquiring) }

    /// Starts draining (idempotent: a drain in progress keeps its timer).
    public func start(nowMs: Int64) {
        if draining.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            lastRequestMs.store(nowMs, ordering: .releasing)
        }
    }

    /// SIGTERM (or SIGINT) arrived: the drain is for real and will not be reset by `/wait-for-drain`.
    public func markSigterm(nowMs: Int64) {
        sigterm.store(true, ordering: .releasing)
        start(nowMs: nowMs)
    }

    /// Cancels a drain (the `/wait-for-drain` case without SIGTERM).
    public func reset() {
        guard !receivedSigterm else { return }
        draining.store(false, ordering: .releasing)
    }

    /// A non-probe request arrived: while draining it restarts the quiet period.
    @inline(__always)
    public func requestArrived(nowMs: Int64) {
        if draining.load(ordering: .relaxed) { lastRequestMs.store(nowMs, ordering: .relaxed) }
    }

    /// When the drain completes if nothing else arrives (nil when not draining).
    public var drainedAtMs: Int64? {
        guard isDraining else { return nil }
        return lastRequestMs.load(ordering: .acquiring) + quietMs
    }
}
