// The queue-proxy's concurrency limit (spec §1.6): at most `capacity` requests in the app, `queueDepth` more
// waiting, the rest rejected at once. Waiters are served strictly FIFO (upstream does not promise an order;
// we do). Loop-confined: one breaker per loop, which is why queue-proxy runs one loop when cc > 0.
import KnativeWire
import ProxyCore

/// The breaker. Waiting requests are `RequestHandle`s that stay `.pending` until admitted.
public final class Breaker {
    public enum Admission { case admitted, queued, rejected }

    public let capacity: Int
    public let queueDepth: Int
    /// Requests holding a slot.
    public private(set) var inFlight = 0
    /// Requests waiting (cancelled ones excluded).
    public private(set) var waiting = 0
    private var queue: [(handle: RequestHandle, ticket: UInt64)?] = []
    private var queueHead = 0
    private let onAdmit: (RequestHandle) -> Void
    /// Set while `release` hands out slots: an admitted request that fails at once (app down) releases
    /// inside `onAdmit`; that nested call only frees the slot and the outer loop goes on, so the stack
    /// does not grow with the queue.
    private var isAdmitting = false

    /// - Parameter onAdmit: called with a waiter when it gets a slot (it now holds one).
    public init(capacity: Int, queueDepth: Int, onAdmit: @escaping (RequestHandle) -> Void) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.queueDepth = queueDepth
        self.onAdmit = onAdmit
        queue.reserveCapacity(min(queueDepth, 4096))
    }

    /// Running plus waiting: Knative's `kn.serving.queue.depth`.
    public var depth: Int { inFlight + waiting }

    /// Takes a slot, or a place in the queue, or neither.
    public func acquire(_ handle: RequestHandle) -> Admission {
        if inFlight < capacity && waiting == 0 {
            inFlight += 1
            return .admitted
        }
        guard waiting < queueDepth else { return .rejected }
        queue.append((handle, handle.context.ticket))
        waiting += 1
        return .queued
    }

    /// A waiter gave up (client gone, timeout). Its queue entry is skipped when reached.
    public func cancelWaiting() {
        waiting -= 1
        // Dead entries hold their connections: drop them once they dominate (clients timing out at a hung app).
        if queue.count - queueHead > 2 * waiting + 64 {
            queue = queue[queueHead...].filter { entry in
                guard let (handle, ticket) = entry else { return false }
                return handle.isPending && handle.context.ticket == ticket
                    && handle.context.flags & QueueProxyFlags.waiting != 0
            }
            queueHead = 0
        }
    }

    /// A slot holder finished: the oldest live waiter gets the slot.
    public func release() {
        inFlight -= 1
        guard !isAdmitting else { return }
        isAdmitting = true
        defer { isAdmitting = false }
        while inFlight < capacity && queueHead < queue.count {
            let entry = queue[queueHead]
            queue[queueHead] = nil
            queueHead += 1
            guard let (handle, ticket) = entry, handle.isPending, handle.context.ticket == ticket,
                handle.context.flags & QueueProxyFlags.waiting != 0
            else { continue }  // cancelled or already answered
            waiting -= 1
            inFlight += 1
            onAdmit(handle)
        }
        compactIfDrained()
    }

    private func compactIfDrained() {
        if queueHead == queue.count {
            queue.removeAll(keepingCapacity: true)
            queueHead = 0
        } else if queueHead > 1024 && queueHead * 2 > queue.count {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
    }
}

/// Bits the queue-proxy keeps in `RequestContext.flags`.
public enum QueueProxyFlags {
    /// Counted in the autoscaler stats ("in" recorded; "out" owed).
    public static let counted: UInt32 = 1 << 0
    /// Came through the activator (`K-Proxy-Request: activator`).
    public static let proxied: UInt32 = 1 << 1
    /// Holds a breaker slot (release owed).
    public static let holdsSlot: UInt32 = 1 << 2
    /// Waiting in the breaker queue.
    public static let waiting: UInt32 = 1 << 3
    /// A probe (kept out of request metrics and, unless enabled, the request log).
    public static let probe: UInt32 = 1 << 4
}
