// Time-weighted request statistics for the autoscaler (spec §1.9): concurrency integrated over each 1 s
// window, arrivals counted, the activator's share kept apart. Shared by all loops of a process behind one
// uncontended lock (two short critical sections per request).
import ProxyCore
import Synchronization

public final class RequestStats: Sendable {
    public struct Window: Sendable, Equatable {
        public var averageConcurrency: Double
        public var averageProxiedConcurrency: Double
        public var requestCount: Int
        public var proxiedRequestCount: Int
    }

    private struct State {
        var concurrency = 0
        var proxiedConcurrency = 0
        var lastChangeMs: Int64
        var integral: Double = 0
        var proxiedIntegral: Double = 0
        var lengthMs: Int64 = 0
        var requestCount = 0
        var proxiedCount = 0

        mutating func advance(to nowMs: Int64) {
            let elapsed = nowMs - lastChangeMs
            guard elapsed > 0 else { return }  // negative intervals are ignored (upstream does the same)
            integral += Double(concurrency) * Double(elapsed)
            proxiedIntegral += Double(proxiedConcurrency) * Double(elapsed)
            lengthMs += elapsed
            lastChangeMs = nowMs
        }
    }

    private let state: Mutex<State>

    public init(nowMs: Int64) {
        state = Mutex(State(lastChangeMs: nowMs))
    }

    public func requestIn(proxied: Bool, nowMs: Int64) {
        state.withLock { s in
            s.advance(to: nowMs)
            s.concurrency += 1
            s.requestCount += 1
            if proxied {
                s.proxiedConcurrency += 1
                s.proxiedCount += 1
            }
        }
    }

    public func requestOut(proxied: Bool, nowMs: Int64) {
        state.withLock { s in
            s.advance(to: nowMs)
            s.concurrency -= 1
            if proxied { s.proxiedConcurrency -= 1 }
        }
    }

    /// Current concurrency (for the Prometheus gauge).
    public var concurrency: Int { state.withLock { $0.concurrency } }

    /// Closes the window at `nowMs` and starts the next; current concurrency carries over.
    public func closeWindow(nowMs: Int64) -> Window {
        state.withLock { s in
            s.advance(to: nowMs)
            let length = Double(s.lengthMs)
            let window = Window(
                averageConcurrency: length > 0 ? s.integral / length : 0,
                averageProxiedConcurrency: length > 0 ? s.proxiedIntegral / length : 0,
                requestCount: s.requestCount, proxiedRequestCount: s.proxiedCount)
            s.integral = 0
            s.proxiedIntegral = 0
            s.lengthMs = 0
            s.requestCount = 0
            s.proxiedCount = 0
            return window
        }
    }
}
