// The activator's per-revision throttler without sockets: subsetting, capacity, the LB policies for each cc,
// and the bounded FIFO queue. The loop is only there because pods own (unused) upstream pools.
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

struct RevisionThrottlerTests {
    private final class Harness {
        let loop: EventLoop
        let throttler: RevisionThrottler
        var admitted: [(String, String)] = []

        init(cc: Int, pods: Int, maxQueued: Int = 100, maxQueuedBytes: Int = 1 << 20) throws {
            loop = try EventLoop(clock: .manual(ManualClock()))
            var spec = RevisionSpec(namespace: "ns", name: "rev")
            spec.containerConcurrency = cc
            throttler = RevisionThrottler(spec: spec, loop: loop, maxQueued: maxQueued, maxQueuedBytes: maxQueuedBytes)
            let added = throttler.setEndpoints((1...max(pods, 1)).prefix(pods).map { Self.address($0) })
            for pod in added { pod.isHealthy = true }
            throttler.onAdmit = { [unowned self] handle, pod in
                let fake = handle as! FakeRequestHandle
                fake.context.flags &= ~ActivatorFlags.waiting
                self.admitted.append((fake.name, pod.address.description))
            }
        }

        deinit { _ = throttler.setEndpoints([]) }  // pods hold their throttler strongly

        static func address(_ n: Int) -> SocketAddress { SocketAddress(ip: "10.0.0.\(n)", port: 8012)! }

        func waiter(_ name: String) -> FakeRequestHandle {
            FakeRequestHandle(name, flags: ActivatorFlags.waiting)
        }

        func pod(_ n: Int) -> PodTracker { throttler.pods.first { $0.address == Self.address(n) }! }
    }

    // MARK: - Subsetting and capacity

    @Test(arguments: [
        // (pods, activators, index, cc) → indices
        (5, 2, 0, 1, [0, 1, 4]), (5, 2, 1, 1, [2, 3]), (6, 3, 2, 1, [4, 5]), (2, 3, 2, 1, [0]),
        (4, 2, 1, 0, [0, 1, 2, 3]), (1, 4, 3, 5, [0]), (3, 1, 0, 2, [0, 1, 2]),
    ])
    func subsettingMatchesUpstreamsAssignSlice(_ c: (Int, Int, Int, Int, [Int])) {
        #expect(RevisionThrottler.assignedIndices(pods: c.0, activators: c.1, index: c.2, cc: c.3) == c.4)
    }

    @Test(arguments: [
        // (cc, backends, activators) → capacity
        (0, 0, 1, 0), (0, 3, 2, Int(Int32.max)), (10, 3, 1, 30), (10, 3, 4, 7), (1, 1, 5, 1), (2, 0, 1, 0),
    ])
    func clusterIPCapacity(_ c: (Int, Int, Int, Int)) {
        #expect(RevisionThrottler.clusterIPCapacity(cc: c.0, backends: c.1, activators: c.2) == c.3)
    }

    @Test func capacityCountsHealthyAssignedPods() throws {
        let h = try Harness(cc: 3, pods: 3)
        #expect(h.throttler.capacity == 9)
        h.pod(2).isHealthy = false
        #expect(h.throttler.capacity == 6)
        let unlimited = try Harness(cc: 0, pods: 3)
        #expect(unlimited.throttler.capacity == 1)
        for pod in unlimited.throttler.pods { pod.isHealthy = false }
        #expect(unlimited.throttler.capacity == 0)
    }

    @Test func endpointsKeepKnownPodsAndReportOnlyNewOnes() throws {
        let h = try Harness(cc: 1, pods: 2)
        let first = h.pod(1)
        let added = h.throttler.setEndpoints([Harness.address(3), Harness.address(1)])
        #expect(added.map(\.address) == [Harness.address(3)])
        #expect(h.throttler.pods.map(\.address) == [Harness.address(1), Harness.address(3)])
        #expect(h.pod(1) === first)
        #expect(first.isHealthy)
        #expect(!h.pod(3).isHealthy)  // probed before use
    }

    // MARK: - Load-balancing policies

    @Test func smallConcurrencyTakesTheFirstFreePodInAddressOrder() throws {
        let h = try Harness(cc: 2, pods: 3)
        let picks = (0..<6).map { _ in h.throttler.acquire()!.address }
        #expect(picks == [1, 1, 2, 2, 3, 3].map(Harness.address))
        #expect(h.throttler.acquire() == nil)
        h.throttler.release(h.pod(2))
        #expect(h.throttler.acquire()?.address == Harness.address(2))
    }

    @Test func largerConcurrencyRoundRobins() throws {
        let h = try Harness(cc: 4, pods: 3)
        let picks = (0..<6).map { _ in h.throttler.acquire()!.address }
        #expect(picks == [1, 2, 3, 1, 2, 3].map(Harness.address))
        h.pod(2).isHealthy = false
        let next = (0..<4).map { _ in h.throttler.acquire()!.address }
        #expect(next == [1, 3, 1, 3].map(Harness.address))
    }

    @Test func unlimitedConcurrencyPicksTheLessLoadedOfTwo() throws {
        let h = try Harness(cc: 0, pods: 2)
        h.pod(1).inFlight = 5
        for _ in 0..<20 {
            let pod = h.throttler.acquire()!
            #expect(pod.address == Harness.address(2))
            pod.inFlight -= 1  // keep pod 2 the lighter one
        }
    }

    // MARK: - Waiting

    @Test func waitersAreAdmittedInArrivalOrderAsSlotsFree() throws {
        let h = try Harness(cc: 1, pods: 2)
        let a = h.throttler.acquire()!
        let b = h.throttler.acquire()!
        for name in ["w1", "w2", "w3"] { #expect(h.throttler.enqueue(h.waiter(name), bytes: 10) == .queued) }
        #expect(h.throttler.waiting == 3)
        #expect(h.throttler.queuedBytes == 30)
        h.throttler.release(b)
        h.throttler.release(a)
        #expect(h.admitted.map(\.0) == ["w1", "w2"])
        #expect(h.admitted.map(\.1) == [b.address.description, a.address.description])
        #expect(h.throttler.waiting == 1)
        #expect(h.throttler.queuedBytes == 10)
    }

    @Test func theQueueIsBoundedByCountAndBytes() throws {
        let h = try Harness(cc: 1, pods: 0, maxQueued: 2, maxQueuedBytes: 100)
        #expect(h.throttler.enqueue(h.waiter("a"), bytes: 60) == .queued)
        #expect(h.throttler.enqueue(h.waiter("b"), bytes: 41) == .full)  // 101 bytes
        #expect(h.throttler.enqueue(h.waiter("c"), bytes: 40) == .queued)
        #expect(h.throttler.enqueue(h.waiter("d"), bytes: 0) == .full)  // 3 waiters
    }

    @Test func leaversAreSkippedAndRetriesGoToTheFront() throws {
        let h = try Harness(cc: 1, pods: 1)
        let holder = h.throttler.acquire()!
        let gone = h.waiter("gone")
        _ = h.throttler.enqueue(gone, bytes: 5)
        _ = h.throttler.enqueue(h.waiter("second"), bytes: 5)
        gone.context.flags &= ~ActivatorFlags.waiting
        gone.isPending = false
        h.throttler.leave(bytes: 5)
        _ = h.throttler.enqueue(h.waiter("retry"), bytes: 5, front: true)  // a request whose pod failed
        h.throttler.release(holder)
        #expect(h.admitted.map(\.0) == ["retry"])
        h.throttler.release(h.pod(1))
        #expect(h.admitted.map(\.0) == ["retry", "second"])
        #expect(h.throttler.waiting == 0)
        #expect(h.throttler.queuedBytes == 0)
    }

    @Test func aPodBecomingHealthyDispatchesWaiters() throws {
        let h = try Harness(cc: 1, pods: 1)
        h.pod(1).isHealthy = false
        _ = h.throttler.enqueue(h.waiter("w"), bytes: 1)
        h.throttler.dispatch()
        #expect(h.admitted.isEmpty)
        h.pod(1).isHealthy = true
        h.throttler.dispatch()
        #expect(h.admitted.map(\.0) == ["w"])
    }

    @Test func drainingTheQueueReturnsLiveWaitersOnly() throws {
        let h = try Harness(cc: 1, pods: 0)
        let live = h.waiter("live")
        let answered = h.waiter("answered")
        _ = h.throttler.enqueue(live, bytes: 1)
        _ = h.throttler.enqueue(answered, bytes: 1)
        answered.isPending = false
        let drained = h.throttler.drainQueue()
        #expect(drained.map { ($0 as! FakeRequestHandle).name } == ["live"])
        #expect(h.throttler.waiting == 0)
        #expect(h.throttler.queuedBytes == 0)
    }
}
