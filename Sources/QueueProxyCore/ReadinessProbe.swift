import Glibc
import KnativeWire
// The user container's readiness probe (spec §1.5): a prober that runs the `SERVING_READINESS_PROBE` specs
// (KnativeWire's `ProbeSpec`) on a loop with non-blocking sockets. Probe rounds are single-flight: callers arriving during a round
// wait for its result.
import ProxyCore

/// Runs probe rounds on one loop.
public final class ReadinessProber {
    public static let aggressiveIntervalMs: Int64 = 50
    public static let aggressiveAttemptTimeoutMs: Int64 = 100
    public static let aggressiveLimitMs: Int64 = 10_000

    private let specs: [ProbeSpec]
    private unowned(unsafe) let loop: EventLoop  // the loop owns its responders and they own us
    /// Consecutive successes per probe; persists across rounds, reset by a failure (upstream's habit).
    private var consecutive: [Int]
    private var roundResults: [Bool?] = []
    private var roundRunning = false
    private var waiters: [(Bool) -> Void] = []

    /// ENABLE_HTTP2_AUTO_DETECTION: HTTP probes try h2c first (spec §1.5).
    private let autodetectHTTP2: Bool

    public init(specs: [ProbeSpec], loop: EventLoop, autodetectHTTP2: Bool = false) {
        self.specs = specs
        self.loop = loop
        self.autodetectHTTP2 = autodetectHTTP2
        consecutive = Array(repeating: 0, count: specs.count)
    }

    public var isAlwaysReady: Bool { specs.isEmpty }

    /// Runs (or joins) a probe round; `completion` gets the verdict on the loop thread.
    public func probe(_ completion: @escaping (Bool) -> Void) {
        if specs.isEmpty {
            completion(true)
            return
        }
        waiters.append(completion)
        guard !roundRunning else { return }
        roundRunning = true
        roundResults = Array(repeating: nil, count: specs.count)
        let startMs = loop.nowMs
        for index in specs.indices { runAttempt(index, roundStartMs: startMs) }
    }

    private func runAttempt(_ index: Int, roundStartMs: Int64) {
        let spec = specs[index]
        let timeoutMs = spec.isAggressive ? Self.aggressiveAttemptTimeoutMs : Int64(spec.timeoutSeconds) * 1000
        ProbeAttempt.run(spec.handler, timeoutMs: timeoutMs, loop: loop, autodetectHTTP2: autodetectHTTP2) {
            [unowned self] ok in
            self.attemptFinished(index, ok: ok, roundStartMs: roundStartMs)
        }
    }

    private func attemptFinished(_ index: Int, ok: Bool, roundStartMs: Int64) {
        let spec = specs[index]
        if ok { consecutive[index] += 1 } else { consecutive[index] = 0 }
        if consecutive[index] >= spec.successThreshold {
            finish(index, true)
        } else if !spec.isAggressive || spec.isUnusable || loop.nowMs - roundStartMs >= Self.aggressiveLimitMs {
            finish(index, false)
        } else {
            let timer = LoopTimer { [unowned self] _ in self.runAttempt(index, roundStartMs: roundStartMs) }
            loop.schedule(timer, at: loop.nowMs + Self.aggressiveIntervalMs)
        }
    }

    private func finish(_ index: Int, _ ok: Bool) {
        roundResults[index] = ok
        guard roundResults.allSatisfy({ $0 != nil }) else { return }
        let ready = roundResults.allSatisfy { $0 == true }
        roundRunning = false
        let pending = waiters
        waiters.removeAll()
        for waiter in pending { waiter(ready) }
    }
}
