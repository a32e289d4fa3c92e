// The queue-proxy's breaker as a pure state machine: slots, FIFO waiters, cancellation, re-entrant release.
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

struct BreakerTests {
    /// A breaker whose admissions are recorded; an admitted waiter leaves the waiting state as the handler does.
    private final class Harness {
        var admitted: [String] = []
        var onAdmit: ((FakeRequestHandle) -> Void)?
        lazy var breaker = Breaker(capacity: capacity, queueDepth: queueDepth) { [unowned self] handle in
            let fake = handle as! FakeRequestHandle
            fake.context.flags &= ~QueueProxyFlags.waiting
            fake.context.flags |= QueueProxyFlags.holdsSlot
            self.admitted.append(fake.name)
            self.onAdmit?(fake)
        }
        let capacity: Int
        let queueDepth: Int

        init(capacity: Int, queueDepth: Int) {
            self.capacity = capacity
            self.queueDepth = queueDepth
        }

        func waiter(_ name: String) -> FakeRequestHandle {
            FakeRequestHandle(name, flags: QueueProxyFlags.waiting)
        }
    }

    @Test func admitsUpToCapacityQueuesUpToDepthRejectsTheRest() {
        let h = Harness(capacity: 2, queueDepth: 1)
        #expect(h.breaker.acquire(h.waiter("a")) == .admitted)
        #expect(h.breaker.acquire(h.waiter("b")) == .admitted)
        #expect(h.breaker.acquire(h.waiter("c")) == .queued)
        #expect(h.breaker.acquire(h.waiter("d")) == .rejected)
        #expect(h.breaker.inFlight == 2)
        #expect(h.breaker.waiting == 1)
        #expect(h.breaker.depth == 3)
    }

    @Test func newcomersQueueBehindWaiters() {
        let h = Harness(capacity: 1, queueDepth: 5)
        #expect(h.breaker.acquire(h.waiter("a")) == .admitted)
        #expect(h.breaker.acquire(h.waiter("b")) == .queued)
        h.breaker.release()  // b gets a's slot
        #expect(h.admitted == ["b"])
        // Every slot is taken again: newcomers queue and are served after b, in their order.
        #expect(h.breaker.acquire(h.waiter("c")) == .queued)
        #expect(h.breaker.acquire(h.waiter("d")) == .queued)
        h.breaker.release()
        h.breaker.release()
        #expect(h.admitted == ["b", "c", "d"])
        #expect(h.breaker.waiting == 0)
        #expect(h.breaker.inFlight == 1)
    }

    @Test func releaseServesWaitersStrictlyFirstInFirstOut() {
        let h = Harness(capacity: 1, queueDepth: 100)
        #expect(h.breaker.acquire(h.waiter("holder")) == .admitted)
        let names = (0..<50).map { "w\($0)" }
        for name in names { #expect(h.breaker.acquire(h.waiter(name)) == .queued) }
        for _ in names { h.breaker.release() }
        #expect(h.admitted == names)
    }

    @Test func cancelledAndReusedWaitersAreSkipped() {
        let h = Harness(capacity: 1, queueDepth: 10)
        _ = h.breaker.acquire(h.waiter("holder"))
        let gone = h.waiter("gone")
        let reused = h.waiter("reused")
        let answered = h.waiter("answered")
        let live = h.waiter("live")
        for w in [gone, reused, answered, live] { _ = h.breaker.acquire(w) }
        // The client left: the handler clears the flag and tells the breaker.
        gone.context.flags &= ~QueueProxyFlags.waiting
        h.breaker.cancelWaiting()
        // The connection moved on to another request: the ticket no longer matches the queue entry.
        reused.context.ticket += 1
        h.breaker.cancelWaiting()
        // Answered some other way (a timeout's 503).
        answered.isPending = false
        h.breaker.cancelWaiting()
        #expect(h.breaker.waiting == 1)
        h.breaker.release()
        #expect(h.admitted == ["live"])
        #expect(h.breaker.inFlight == 1)
        #expect(h.breaker.waiting == 0)
    }

    @Test func anAdmittedRequestThatFailsAtOnceHandsItsSlotOnWithoutRecursion() {
        let h = Harness(capacity: 1, queueDepth: 1_000)
        var depth = 0
        var maxDepth = 0
        h.onAdmit = { _ in
            // The app is down: the admitted request ends inside onAdmit and releases its slot.
            depth += 1
            maxDepth = max(maxDepth, depth)
            h.breaker.release()
            depth -= 1
        }
        _ = h.breaker.acquire(h.waiter("holder"))
        for i in 0..<500 { _ = h.breaker.acquire(h.waiter("w\(i)")) }
        h.breaker.release()
        #expect(h.admitted.count == 500)
        #expect(maxDepth == 1)
        #expect(h.breaker.inFlight == 0)
        #expect(h.breaker.waiting == 0)
    }

    @Test func deadEntriesAreCompactedAndOrderSurvives() {
        let h = Harness(capacity: 1, queueDepth: 10_000)
        _ = h.breaker.acquire(h.waiter("holder"))
        var waiters: [FakeRequestHandle] = []
        for i in 0..<300 {
            let w = h.waiter("w\(i)")
            waiters.append(w)
            _ = h.breaker.acquire(w)
        }
        // All but every 50th give up: enough dead entries to trigger the compaction.
        for (i, w) in waiters.enumerated() where i % 50 != 0 {
            w.context.flags &= ~QueueProxyFlags.waiting
            w.isPending = false
            h.breaker.cancelWaiting()
        }
        #expect(h.breaker.waiting == 6)
        for _ in 0..<6 { h.breaker.release() }
        #expect(h.admitted == stride(from: 0, to: 300, by: 50).map { "w\($0)" })
    }
}
