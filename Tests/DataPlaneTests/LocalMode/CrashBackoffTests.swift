// The crash-loop back-off rule of kn-local's pods (CrashBackoff), driven with explicit times.
import Testing

@testable import LocalMode

@Suite struct CrashBackoffTests {
    @Test func crashesBeforeReadyDoubleUpToTheCap() {
        var backoff = CrashBackoff()
        var delays: [Int64] = []
        var t: Int64 = 1_000
        for _ in 0..<8 {
            backoff.podDied(readySinceMs: nil, atMs: t)
            delays.append(backoff.nextStartMs - t)
            t = backoff.nextStartMs + 50
        }
        #expect(delays == [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000])
        #expect(backoff.crashes == 8)
        #expect(backoff.isWaiting(atMs: t - 100))
        #expect(!backoff.isWaiting(atMs: t))
    }

    /// The fix of issue 13: a pod that had served for a while is replaced at once, whatever came before it.
    @Test func aPodReadyLongEnoughIsReplacedAtOnceAndTheCountStartsOver() {
        var backoff = CrashBackoff()
        for t: Int64 in [0, 2_000, 5_000, 10_000] { backoff.podDied(readySinceMs: nil, atMs: t) }
        #expect(backoff.crashes == 4)
        // The fifth pod got ready at 30 s and died at 45 s: ready for 15 s ≥ 10 s.
        backoff.podDied(readySinceMs: 30_000, atMs: 45_000)
        #expect(backoff.crashes == 0)
        #expect(!backoff.isWaiting(atMs: 45_000))
        // Its replacement crashes before ready: 1 s again, not 16 s.
        backoff.podDied(readySinceMs: nil, atMs: 46_000)
        #expect(backoff.nextStartMs == 47_000)
    }

    /// An app that gets ready and then dies within seconds is a crash loop too (no hot restart loop).
    @Test func aPodThatFlapsStillBacksOff() {
        var backoff = CrashBackoff()
        backoff.podDied(readySinceMs: 0, atMs: 3_000)
        backoff.podDied(readySinceMs: 5_000, atMs: 9_000)
        #expect(backoff.crashes == 2)
        #expect(backoff.nextStartMs == 11_000)
    }

    @Test func aResetClearsAPendingWait() {
        var backoff = CrashBackoff()
        for t: Int64 in [0, 1_500, 4_000] { backoff.podDied(readySinceMs: nil, atMs: t) }
        #expect(backoff.isWaiting(atMs: 5_000))
        backoff.reset()
        #expect(!backoff.isWaiting(atMs: 5_000))
        #expect(backoff.crashes == 0)
        #expect(CrashBackoff.isHealthy(readySinceMs: 0, atMs: CrashBackoff.healthyAfterMs))
        #expect(!CrashBackoff.isHealthy(readySinceMs: 0, atMs: CrashBackoff.healthyAfterMs - 1))
        #expect(!CrashBackoff.isHealthy(readySinceMs: nil, atMs: 1_000_000))
    }
}
