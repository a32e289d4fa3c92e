// Per-revision capacity and waiting (spec §2.5): which pods this activator may use, how many requests each
// may have at once (cc), which pod gets the next request (upstream's LB policies), and the FIFO queue of
// requests waiting for a slot — bounded, unlike upstream, by count and by buffered bytes.
import KnativeWire
import ProxyCore

/// One queue-proxy of the revision, as this activator sees it.
public final class PodTracker {
    public let address: SocketAddress
    let addressBytes: [UInt8]
    let pool: UpstreamPool
    /// Strong: a request may still hold the pod after its revision was deleted. The cycle through `pods` is
    /// broken when the revision's endpoints are cleared (`setEndpoints([])` on delete).
    let throttler: RevisionThrottler
    public internal(set) var isHealthy = false
    public internal(set) var inFlight = 0
    var isProbing = false

    init(address: SocketAddress, throttler: RevisionThrottler, loop: EventLoop) {
        self.address = address
        addressBytes = Array(address.description.utf8)
        self.throttler = throttler
        pool = UpstreamPool(config: UpstreamConfig(address: address, maxIdle: 100), loop: loop)
    }
}

public final class RevisionThrottler {
    public private(set) var spec: RevisionSpec
    public let key: String
    /// All known pods, sorted by "ip:port" (upstream's order).
    public private(set) var pods: [PodTracker] = []
    /// The pods assigned to this activator (subsetting when several activators share a revision).
    public private(set) var assigned: [PodTracker] = []
    unowned(unsafe) let loop: EventLoop  // the activator on this loop owns us; the loop outlives both
    var activatorCount = 1
    var activatorIndex = 0
    private var roundRobinIndex = -1
    private var queue: [(handle: RequestHandle, ticket: UInt64, bytes: Int)?] = []
    private var queueHead = 0
    public private(set) var waiting = 0
    public private(set) var queuedBytes = 0
    public var maxQueued: Int
    public var maxQueuedBytes: Int
    /// Called with a waiting request and the pod it may now use.
    var onAdmit: (RequestHandle, PodTracker) -> Void = { _, _ in }
    /// Random source for the power-of-two-choices policy (replaceable in tests).
    var random = SystemRandomNumberGenerator()

    init(spec: RevisionSpec, loop: EventLoop, maxQueued: Int, maxQueuedBytes: Int) {
        self.spec = spec
        key = spec.key
        self.loop = loop
        self.maxQueued = maxQueued
        self.maxQueuedBytes = maxQueuedBytes
    }

    var cc: Int { spec.containerConcurrency }

    func update(spec: RevisionSpec) {
        self.spec = spec
        reassign()
        dispatch()
    }

    // MARK: - Pods

    /// Replaces the endpoint list. New pods start unhealthy (they are probed); gone pods are dropped.
    /// - Returns: the pods that are new (to be probed).
    func setEndpoints(_ addresses: [SocketAddress]) -> [PodTracker] {
        var byAddress: [String: PodTracker] = [:]
        for pod in pods { byAddress[pod.address.description] = pod }
        var next: [PodTracker] = []
        var added: [PodTracker] = []
        for address in addresses {
            if let pod = byAddress.removeValue(forKey: address.description) {
                next.append(pod)
            } else {
                let pod = PodTracker(address: address, throttler: self, loop: loop)
                next.append(pod)
                added.append(pod)
            }
        }
        for gone in byAddress.values { gone.pool.isRetired = true }
        pods = next.sorted { $0.address.description < $1.address.description }
        reassign()
        return added
    }

    /// This activator's share of the revision changed (public Endpoints): every pod's slots are reassigned.
    func setActivators(count: Int, index: Int) {
        activatorCount = count
        activatorIndex = index
        reassign()
    }

    /// Subsetting (spec §2.5): with cc > 0 and several activators, each takes a slice of the sorted pods.
    private func reassign() {
        let indices = Self.assignedIndices(pods: pods.count, activators: activatorCount, index: activatorIndex, cc: cc)
        assigned = indices.map { pods[$0] }
        roundRobinIndex = min(roundRobinIndex, assigned.count - 1)
    }

    /// Upstream's `assignSlice`: which of `pods` sorted pods activator `index` of `activators` uses.
    public static func assignedIndices(pods: Int, activators: Int, index: Int, cc: Int) -> [Int] {
        if cc == 0 || pods <= 1 || index < 0 || activators <= 1 { return Array(0..<pods) }
        if activators > pods { return [index % pods] }
        let size = pods / activators
        var result = Array((index * size)..<((index + 1) * size))
        let remainder = pods % activators
        if remainder > index { result.append(pods - remainder + index) }
        return result
    }

    /// The revision's capacity in pod mode: cc × healthy assigned pods; with cc = 0, 1 if any pod is healthy.
    public var capacity: Int {
        let healthy = assigned.filter(\.isHealthy).count
        if cc == 0 { return healthy > 0 ? 1 : 0 }
        return min(cc * healthy, Int(Int32.max))
    }

    /// Upstream's cluster-IP capacity (spec §2.5, A11): cc × ready backends ÷ activators, at least 1 if > 0.
    public static func clusterIPCapacity(cc: Int, backends: Int, activators: Int) -> Int {
        if cc == 0 { return backends > 0 ? Int(Int32.max) : 0 }
        let product = cc * backends
        guard product > 0 else { return 0 }
        return min(max(product / max(1, activators), 1), Int(Int32.max))
    }

    // MARK: - Slots

    /// A pod with a free slot, chosen by upstream's policy for this cc; takes the slot.
    func acquire() -> PodTracker? {
        guard let pod = choose() else { return nil }
        pod.inFlight += 1
        return pod
    }

    private func choose() -> PodTracker? {
        let candidates = assigned
        if cc == 0 {
            // Power of two choices on in-flight requests, ties broken at random.
            let healthy = candidates.filter(\.isHealthy)
            guard !healthy.isEmpty else { return nil }
            if healthy.count == 1 { return healthy[0] }
            let a = Int.random(in: 0..<healthy.count, using: &random)
            var b = Int.random(in: 0..<(healthy.count - 1), using: &random)
            if b >= a { b += 1 }
            let x = healthy[a]
            let y = healthy[b]
            if x.inFlight == y.inFlight { return Bool.random(using: &random) ? x : y }
            return x.inFlight < y.inFlight ? x : y
        }
        if cc <= 3 {
            // First available, in address order.
            return candidates.first { $0.isHealthy && $0.inFlight < cc }
        }
        // Round robin from after the last pick.
        let n = candidates.count
        guard n > 0 else { return nil }
        for step in 1...n {
            let index = (roundRobinIndex + step) % n
            let pod = candidates[index]
            if pod.isHealthy && pod.inFlight < cc {
                roundRobinIndex = index
                return pod
            }
        }
        return nil
    }

    /// A request on `pod` ended: its slot goes to the oldest waiter that can use a pod.
    func release(_ pod: PodTracker) {
        pod.inFlight -= 1
        dispatch()
    }

    // MARK: - Waiting

    enum QueueOutcome { case queued, full }

    /// Queues a request that found no free slot; `bytes` is what it holds in memory while it waits.
    func enqueue(_ handle: RequestHandle, bytes: Int, front: Bool = false) -> QueueOutcome {
        guard waiting < maxQueued, queuedBytes + bytes <= maxQueuedBytes else { return .full }
        let entry = (handle, handle.context.ticket, bytes)
        if front && queueHead > 0 {
            queueHead -= 1
            queue[queueHead] = entry
        } else if front {
            queue.insert(entry, at: 0)
        } else {
            queue.append(entry)
        }
        waiting += 1
        queuedBytes += bytes
        return .queued
    }

    /// A waiter left (client gone, timeout): its entry is skipped when reached.
    func leave(bytes: Int) {
        waiting -= 1
        queuedBytes -= bytes
        // Dead entries hold their connections: drop them once they dominate (clients giving up at zero).
        if queue.count - queueHead > 2 * waiting + 64 {
            queue = queue[queueHead...].filter { entry in
                guard let entry else { return false }
                return entry.handle.isPending && entry.handle.context.ticket == entry.ticket
                    && entry.handle.context.flags & ActivatorFlags.waiting != 0
            }
            queueHead = 0
        }
    }

    /// Set while `dispatch` runs: a request admitted and failing at once releases its slot inside `onAdmit`;
    /// the nested call returns and this loop picks the slot up (no recursion as deep as the queue).
    private var isDispatching = false

    /// Hands free slots to waiters, oldest first.
    func dispatch() {
        guard !isDispatching else { return }
        isDispatching = true
        defer { isDispatching = false }
        while waiting > 0 && queueHead < queue.count {
            guard let entry = queue[queueHead] else {
                queueHead += 1
                continue
            }
            guard entry.handle.isPending, entry.handle.context.ticket == entry.ticket,
                entry.handle.context.flags & ActivatorFlags.waiting != 0
            else {
                queue[queueHead] = nil
                queueHead += 1
                continue  // already gone; its accounting was undone by `leave`
            }
            guard let pod = acquire() else { break }
            queue[queueHead] = nil
            queueHead += 1
            waiting -= 1
            queuedBytes -= entry.bytes
            onAdmit(entry.handle, pod)
        }
        if queueHead == queue.count {
            queue.removeAll(keepingCapacity: true)
            queueHead = 0
        } else if queueHead > 4096 && queueHead * 2 > queue.count {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
    }

    /// Every waiter (revision deleted): the caller answers them.
    func drainQueue() -> [RequestHandle] {
        var result: [RequestHandle] = []
        for case let entry? in queue[queueHead...]
        where entry.handle.isPending && entry.handle.context.ticket == entry.ticket {
            result.append(entry.handle)
        }
        queue.removeAll()
        queueHead = 0
        waiting = 0
        queuedBytes = 0
        return result
    }
}

/// Bits the activator keeps in `RequestContext.flags`.
public enum ActivatorFlags {
    public static let counted: UInt32 = 1 << 0
    public static let holdsPod: UInt32 = 1 << 1
    public static let waiting: UInt32 = 1 << 2
}

/// What the activator keeps per request (`RequestContext.state`), by phase.
enum ActivatorRequestState: RequestState {
    /// Routed to a revision (counted in its concurrency), not yet at a pod.
    case revision(RevisionThrottler)
    /// Waiting in the revision's queue, holding `bytes` of the queue's byte budget.
    case waiting(RevisionThrottler, bytes: Int)
    /// Proxied to a pod, holding one of its slots.
    case pod(PodTracker)

    var throttler: RevisionThrottler {
        switch self {
        case .revision(let throttler), .waiting(let throttler, _): throttler
        case .pod(let pod): pod.throttler
        }
    }
}
