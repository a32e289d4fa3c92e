import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

private final class Probe: TimerEntry {
    var firedAt: [Int64] = []
    var onFire: ((Int64) -> Void)?
    override func timerFired(nowMs: Int64) {
        firedAt.append(nowMs)
        onFire?(nowMs)
    }
}

struct TimerWheelTests {
    @Test func firesAtTheDeadlineNotBefore() {
        let wheel = TimerWheel(nowMs: 1_000)
        let probe = Probe()
        wheel.schedule(probe, deadlineMs: 1_100)
        wheel.advance(nowMs: 1_099)
        #expect(probe.firedAt.isEmpty)
        wheel.advance(nowMs: 1_100)
        #expect(probe.firedAt == [1_100])
        #expect(wheel.count == 0)
        #expect(wheel.pollTimeoutMs(nowMs: 1_100) == -1)
    }

    @Test func laterDeadlinesAreLazyAndEarlierOnesMove() {
        let wheel = TimerWheel(nowMs: 0)
        let probe = Probe()
        wheel.schedule(probe, deadlineMs: 100)
        wheel.schedule(probe, deadlineMs: 500)  // lazy: stays filed at 100, re-filed there
        wheel.advance(nowMs: 200)
        #expect(probe.firedAt.isEmpty)
        wheel.schedule(probe, deadlineMs: 300)  // earlier: moves now
        wheel.advance(nowMs: 300)
        #expect(probe.firedAt == [300])
    }

    @Test func cancelAndLongDeadlinesBeyondOneTurn() {
        let wheel = TimerWheel(nowMs: 0)
        let cancelled = Probe()
        let far = Probe()
        wheel.schedule(cancelled, deadlineMs: 50)
        wheel.cancel(cancelled)
        let turnMs = TimerWheel.tickMs * Int64(TimerWheel.slotCount)
        wheel.schedule(far, deadlineMs: 3 * turnMs + 20)
        var now: Int64 = 0
        while now + 1_000 < 3 * turnMs + 20 {
            now += 1_000
            wheel.advance(nowMs: now)
            #expect(far.firedAt.isEmpty || now >= 3 * turnMs + 20)
        }
        wheel.advance(nowMs: 3 * turnMs + 20)
        #expect(cancelled.firedAt.isEmpty)
        #expect(far.firedAt == [3 * turnMs + 20])
    }

    @Test func pollTimeoutPointsAtTheEarliestEntry() {
        let wheel = TimerWheel(nowMs: 0)
        let probe = Probe()
        wheel.schedule(probe, deadlineMs: 80)
        let timeout = wheel.pollTimeoutMs(nowMs: 0)
        #expect(timeout >= 80 && timeout <= 80 + Int32(TimerWheel.tickMs))
    }

    @Test func callbacksMayCancelOrMoveOtherDueEntries() {
        // Entries sharing a slot: the first one's callback cancels the second and re-arms the third.
        let wheel = TimerWheel(nowMs: 0)
        let first = Probe()
        let second = Probe()
        let third = Probe()
        let fourth = Probe()
        for probe in [fourth, third, second, first] { wheel.schedule(probe, deadlineMs: 100) }
        first.onFire = { now in
            wheel.cancel(second)
            wheel.schedule(third, deadlineMs: now + 50)
        }
        wheel.advance(nowMs: 100)
        #expect(first.firedAt == [100])
        #expect(second.firedAt.isEmpty)
        #expect(third.firedAt.isEmpty)
        #expect(fourth.firedAt == [100])
        wheel.advance(nowMs: 150)
        #expect(third.firedAt == [150])
        #expect(wheel.count == 0)
    }

    @Test func manyEntriesAllFireOnce() {
        let wheel = TimerWheel(nowMs: 0)
        let probes = (0..<10_000).map { _ in Probe() }
        for (i, probe) in probes.enumerated() { wheel.schedule(probe, deadlineMs: Int64(i % 20_000)) }
        var now: Int64 = 0
        while now <= 20_000 {
            wheel.advance(nowMs: now)
            now += 7
        }
        #expect(probes.allSatisfy { $0.firedAt.count == 1 })
        #expect(probes.enumerated().allSatisfy { $1.firedAt[0] >= Int64($0) })
    }
}
