// The loop driven by hand with a manual clock (NIO's EmbeddedEventLoop model): timers, inbox jobs and the
// poll timeout, with no sockets, threads or sleeps.
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

struct EventLoopTests {
    private func makeLoop(startMs: Int64 = 10_000) throws -> (EventLoop, ManualClock) {
        let clock = ManualClock(startMs: startMs)
        return (try EventLoop(clock: .manual(clock)), clock)
    }

    @Test func theLoopReadsItsInjectedClock() throws {
        let (loop, clock) = try makeLoop()
        #expect(loop.nowMs == 10_000)
        clock.advance(byMs: 5)
        #expect(loop.nowMs == 10_000)  // read once per pass, not per access
        loop.runOnce()
        #expect(loop.nowMs == 10_005)
    }

    @Test func aTimerFiresWhenTimeReachesItsDeadlineAndNotBefore() throws {
        let (loop, _) = try makeLoop()
        var fired: [Int64] = []
        let timer = LoopTimer { fired.append($0) }
        loop.schedule(timer, at: loop.nowMs + 100)
        loop.advanceTime(byMs: 99)
        #expect(fired.isEmpty)
        loop.advanceTime(byMs: 1)
        #expect(fired == [10_100])
        loop.advanceTime(byMs: 1_000)
        #expect(fired == [10_100])  // one shot
    }

    @Test func aCancelledTimerNeverFires() throws {
        let (loop, _) = try makeLoop()
        var fired = 0
        let timer = LoopTimer { _ in fired += 1 }
        loop.schedule(timer, at: loop.nowMs + 50)
        loop.cancel(timer)
        loop.advanceTime(byMs: 10_000)
        #expect(fired == 0)
        #expect(loop.pollTimeoutMs == -1)
    }

    @Test func aTimerMayRearmItselfFromItsCallback() throws {
        let (loop, _) = try makeLoop(startMs: 0)
        var ticks: [Int64] = []
        var timer: LoopTimer!
        timer = LoopTimer { now in
            ticks.append(now)
            if ticks.count < 3 { loop.schedule(timer, at: now + 1_000) }
        }
        loop.schedule(timer, at: 1_000)
        for _ in 0..<5 { loop.advanceTime(byMs: 1_000) }
        #expect(ticks == [1_000, 2_000, 3_000])
    }

    @Test func pollTimeoutFollowsTheManualClock() throws {
        let (loop, _) = try makeLoop(startMs: 0)
        #expect(loop.pollTimeoutMs == -1)
        let timer = LoopTimer { _ in }
        loop.schedule(timer, at: 400)
        let before = loop.pollTimeoutMs
        #expect(before >= 400 && before <= 400 + Int32(TimerWheel.tickMs))
        loop.advanceTime(byMs: 300)
        let after = loop.pollTimeoutMs
        #expect(after >= 100 && after <= 100 + Int32(TimerWheel.tickMs))
    }

    @Test func inboxJobsRunOnTheNextPass() throws {
        let (loop, _) = try makeLoop()
        let ran = Counter()
        loop.inbox.post { _ in ran.increment() }
        loop.inbox.post { _ in ran.increment() }
        #expect(ran.value == 0)
        loop.runOnce()
        #expect(ran.value == 2)
    }
    /// After a burst of releases the loop gives memory back (its spare buffers, then malloc_trim) once a quiet
    /// second passed; while releases go on (steady load) it does not.
    @Test func aBurstIsTrimmedOnlyOnceItIsOver() throws {
        let (loop, _) = try makeLoop()
        func spares(_ count: Int) {
            let taken = (0..<count).map { _ in loop.buffers.take() }
            for buffer in taken { loop.buffers.give(buffer) }
        }
        spares(100)
        #expect(loop.buffers.spareCount == 100)
        loop.noteReleased(EventLoop.trimAfterReleases)
        // Still busy: another burst's worth ends within the delay, so the trim waits.
        loop.advanceTime(byMs: 500)
        loop.noteReleased(EventLoop.trimAfterReleases)
        loop.advanceTime(byMs: 600)
        #expect(loop.buffers.spareCount == 100)
        // A quiet second: the spare buffers go (down to the reserve).
        loop.advanceTime(byMs: EventLoop.trimDelayMs + Int64(TimerWheel.tickMs))
        #expect(loop.buffers.spareCount == 16)
    }
}
