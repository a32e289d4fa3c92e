// The KPA (spec §3.2–3.5; pkg/autoscaler/scaling/autoscaler.go and pkg/reconciler/autoscaling/kpa/scaler.go):
// per-second metric buckets, stable and panic window averages, desired pods bounded by the scale rates,
// panic mode, min/max/initial scale, and scale to zero after the stable window plus the grace period.
// Pure logic over explicit times (milliseconds) so tests can drive it without waiting.
import KnativeWire
import ProxyCore

/// Knative's config-autoscaler keys (spec §3.4), settable at start with `--<key>=<value>`.
public struct AutoscalerConfig: Sendable, Equatable {
    public var containerConcurrencyTargetPercentage = 0.7
    public var containerConcurrencyTargetDefault = 100.0
    public var requestsPerSecondTargetDefault = 200.0
    public var targetBurstCapacity = -1.0
    public var stableWindowMs: Int64 = 60_000
    public var panicWindowPercentage = 10.0
    public var panicThresholdPercentage = 200.0
    public var maxScaleUpRate = 1000.0
    public var maxScaleDownRate = 2.0
    public var scaleToZeroGracePeriodMs: Int64 = 30_000
    public var scaleToZeroPodRetentionPeriodMs: Int64 = 0
    public var scaleDownDelayMs: Int64 = 0
    public var enableScaleToZero = true
    public var initialScale = 1
    public var allowZeroInitialScale = false
    public var minScale = 0
    public var maxScale = 0
    public var activationScale = 1
    /// How often every revision is re-decided (Knative's tickInterval, 2 s; a poke decides at once).
    public var tickIntervalMs: Int64 = 2_000

    public init() {}

    /// Key, default and meaning, for `--help`.
    public static let keys: [(String, String, String)] = [
        ("container-concurrency-target-percentage", "70", "target share of containerConcurrency per pod"),
        ("container-concurrency-target-default", "100", "soft concurrency target when containerConcurrency is 0"),
        ("requests-per-second-target-default", "200", "target for the rps metric"),
        ("target-burst-capacity", "-1", "only -1 (activator always in the path) is supported"),
        ("stable-window", "60s", "averaging window for scaling decisions (3s..1h; upstream 6s..1h)"),
        ("panic-window-percentage", "10", "panic window as a percentage of the stable window"),
        ("panic-threshold-percentage", "200", "panic when panic-window demand reaches this % of ready pods"),
        ("max-scale-up-rate", "1000", "at most this × ready pods per decision"),
        ("max-scale-down-rate", "2", "at least ready pods ÷ this per decision"),
        ("scale-to-zero-grace-period", "30s", "time inactive before the last pod goes"),
        ("scale-to-zero-pod-retention-period", "0s", "minimum time the last pod stays after traffic stopped"),
        ("scale-down-delay", "0s", "scale down only to the highest decision within this time"),
        ("enable-scale-to-zero", "true", "false keeps at least one pod"),
        ("initial-scale", "1", "pods a new revision starts with"),
        ("allow-zero-initial-scale", "false", "whether initial-scale may be 0"),
        ("min-scale", "0", "cluster-wide lower bound"),
        ("max-scale", "0", "cluster-wide upper bound (0 = none)"),
        ("activation-scale", "1", "pods started when a revision leaves zero"),
        ("tick-interval", "2s", "kn-local: how often decisions are made (Knative: 2s)"),
    ]

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Sets one key; the error names the key and the expected form.
    public mutating func set(_ key: String, _ value: String) throws(Invalid) {
        func number(_ range: ClosedRange<Double>) throws(Invalid) -> Double {
            guard let v = Double(value), range.contains(v) else {
                throw Invalid(
                    description: "--\(key)=\(value): expected a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        func duration(min: Int64 = 0) throws(Invalid) -> Int64 {
            guard let ms = GoDuration.milliseconds(value), ms >= min else {
                throw Invalid(description: "--\(key)=\(value): expected a duration like 30s or 500ms (≥ \(min) ms)")
            }
            return ms
        }
        func integer() throws(Invalid) -> Int {
            guard let v = Int(value), v >= 0 else {
                throw Invalid(description: "--\(key)=\(value): expected an integer ≥ 0")
            }
            return v
        }
        func boolean() throws(Invalid) -> Bool {
            switch value.lowercased() {
            case "true": return true
            case "false": return false
            default: throw Invalid(description: "--\(key)=\(value): expected true or false")
            }
        }
        switch key {
        case "container-concurrency-target-percentage":
            let v = try number(1...100)
            containerConcurrencyTargetPercentage = v / 100
        case "container-concurrency-target-default": containerConcurrencyTargetDefault = try number(0.01...1e9)
        case "requests-per-second-target-default": requestsPerSecondTargetDefault = try number(0.01...1e9)
        case "target-burst-capacity":
            guard try number(-1...(-1)) == -1 else { break }
            targetBurstCapacity = -1
        case "stable-window":
            // Upstream's minimum is 6 s; 3 s still spans the gap between two 1 s activator reports (a 1 s
            // window reads that gap as no demand and flaps to zero under load). Short windows are for tests.
            let ms = try duration(min: 3_000)
            stableWindowMs = ms
        case "panic-window-percentage": panicWindowPercentage = try number(1...100)
        case "panic-threshold-percentage": panicThresholdPercentage = try number(110...1000)
        case "max-scale-up-rate": maxScaleUpRate = try number(1.000001...1e9)
        case "max-scale-down-rate": maxScaleDownRate = try number(1.000001...1e9)
        case "scale-to-zero-grace-period": scaleToZeroGracePeriodMs = try duration()
        case "scale-to-zero-pod-retention-period": scaleToZeroPodRetentionPeriodMs = try duration()
        case "scale-down-delay": scaleDownDelayMs = try duration()
        case "enable-scale-to-zero": enableScaleToZero = try boolean()
        case "initial-scale": initialScale = try integer()
        case "allow-zero-initial-scale": allowZeroInitialScale = try boolean()
        case "min-scale": minScale = try integer()
        case "max-scale": maxScale = try integer()
        case "activation-scale":
            let v = try integer()
            guard v >= 1 else { throw Invalid(description: "--\(key)=\(value): expected an integer ≥ 1") }
            activationScale = v
        case "tick-interval": tickIntervalMs = try duration(min: 10)
        default: throw Invalid(description: "--\(key): not a config-autoscaler key (see --help)")
        }
    }

    /// Cross-key checks, after all keys are set.
    public func validate() throws(Invalid) {
        if initialScale == 0 && !allowZeroInitialScale {
            throw Invalid(description: "--initial-scale=0 needs --allow-zero-initial-scale=true")
        }
        if maxScale != 0 && minScale > maxScale {
            throw Invalid(description: "--min-scale=\(minScale) is greater than --max-scale=\(maxScale)")
        }
    }
}

/// Per-second buckets of one metric (Knative's TimedFloat64Buckets): values recorded in the same second add up
/// (several pods, the activator); the window average divides by the seconds since data began, at most the window.
public struct MetricBuckets: Sendable {
    private var buckets: [Double]
    private var firstSecond: Int64 = -1
    private var lastSecond: Int64 = -1

    public init(windowSeconds: Int) { buckets = Array(repeating: 0, count: max(1, windowSeconds)) }

    public var isEmpty: Bool { firstSecond < 0 }

    public mutating func record(_ value: Double, atMs nowMs: Int64) {
        guard value.isFinite, value >= 0 else { return }
        let second = nowMs / 1000
        if firstSecond < 0 || second - lastSecond >= Int64(buckets.count) {
            // No data for a whole window: start over (the old values have all aged out anyway).
            for i in buckets.indices { buckets[i] = 0 }
            firstSecond = second
        } else if second > lastSecond {
            // Clear the seconds skipped since the last write.
            var s = lastSecond + 1
            while s <= second {
                buckets[index(s)] = 0
                s += 1
            }
        }
        if second < lastSecond && lastSecond - second >= Int64(buckets.count) { return }
        buckets[index(second)] += value
        lastSecond = max(lastSecond, second)
    }

    /// The average per second over the last `windowSeconds` (≤ the bucket count) ending at `nowMs`.
    public func average(windowSeconds: Int, atMs nowMs: Int64) -> Double {
        guard firstSecond >= 0 else { return 0 }
        let now = nowMs / 1000
        let window = Int64(min(windowSeconds, buckets.count))
        if now - lastSecond >= window { return 0 }
        // Upstream's divisor: the seconds since data began, at most the window, minus the seconds after the last
        // write (a tick usually lands before the current second's stats arrive; they do not count as zeros).
        let gap = max(0, now - lastSecond)
        let start = max(now - window + 1, firstSecond)
        guard start <= lastSecond else { return 0 }
        var sum = 0.0
        var s = start
        while s <= lastSecond {
            sum += buckets[index(s)]
            s += 1
        }
        let divisor = min(lastSecond - firstSecond + 1, window - gap)
        guard divisor > 0 else { return 0 }
        return (sum / Double(divisor) * 1e6).rounded() / 1e6
    }

    private func index(_ second: Int64) -> Int { Int(second % Int64(buckets.count)) }
}

/// The per-revision inputs that come from its template.
public struct ScalingSpec: Sendable, Equatable {
    public var containerConcurrency: Int
    public var annotations: ScalingAnnotations

    public init(containerConcurrency: Int, annotations: ScalingAnnotations) {
        self.containerConcurrency = containerConcurrency
        self.annotations = annotations
    }
}

/// One revision's KPA.
public struct RevisionAutoscaler: Sendable {
    public let config: AutoscalerConfig
    public let spec: ScalingSpec
    public let stableWindowMs: Int64
    public let panicWindowMs: Int64
    /// Per-pod target of the metric.
    public let target: Double
    public let minScale: Int
    public let maxScale: Int
    public let initialScale: Int
    public let activationScale: Int
    let panicThreshold: Double
    let scaleDownDelayMs: Int64
    let retentionMs: Int64
    /// The progress deadline + 30 s: a revision that never gets a ready pod is scaled back to 0 after it.
    let activationTimeoutMs: Int64

    private var concurrency: MetricBuckets
    private var requests: MetricBuckets
    private var panicSinceMs: Int64?
    private var maxPanicPods = 0
    /// Recent decisions for scale-down-delay: (time, pods).
    private var recentDecisions: [(Int64, Int)] = []
    /// Active = the revision has (or is getting) pods for traffic; inactive since = marked idle, grace running.
    private var activeSinceMs: Int64?
    private var inactiveSinceMs: Int64?
    /// Since when pods are wanted but none is ready (activation).
    private var activatingSinceMs: Int64?
    private var initialized: Bool
    public private(set) var lastScale: Int

    /// - Parameters:
    ///   - progressDeadlineMs: Knative's config-deployment progress deadline (600 s); activation gives up 30 s
    ///     after it (kpa/scaler.go `activationTimeoutBuffer`).
    public init(config: AutoscalerConfig, spec: ScalingSpec, nowMs: Int64, progressDeadlineMs: Int64 = 600_000) {
        self.config = config
        self.spec = spec
        activationTimeoutMs = progressDeadlineMs + 30_000
        let a = spec.annotations
        stableWindowMs = a.windowMs ?? config.stableWindowMs
        // Rounded to the second, at least 1 s (resources/metric.go).
        let panicPercentage = a.panicWindowPercentage ?? config.panicWindowPercentage
        panicWindowMs = max(1000, (Int64((Double(stableWindowMs) * panicPercentage / 100 / 1000).rounded())) * 1000)
        panicThreshold = (a.panicThresholdPercentage ?? config.panicThresholdPercentage) / 100
        scaleDownDelayMs = a.scaleDownDelayMs ?? config.scaleDownDelayMs
        retentionMs = a.podRetentionMs ?? config.scaleToZeroPodRetentionPeriodMs
        let windowSeconds = Int(stableWindowMs / 1000)
        concurrency = MetricBuckets(windowSeconds: windowSeconds)
        requests = MetricBuckets(windowSeconds: windowSeconds)
        let cc = Double(spec.containerConcurrency)
        if a.metric == "rps" {
            // The RPS metric has no config-map utilisation: 0.7 unless the annotation says otherwise (spec §3.4).
            let utilization = a.utilizationPercentage.map { $0 / 100 } ?? 0.7
            target = max(0.01, (a.target ?? config.requestsPerSecondTargetDefault) * utilization)
        } else {
            let utilization = a.utilizationPercentage.map { $0 / 100 } ?? config.containerConcurrencyTargetPercentage
            var total = a.target ?? (cc > 0 ? cc : config.containerConcurrencyTargetDefault)
            if cc > 0 { total = min(total, cc) }
            target = max(0.01, total * utilization)
        }
        minScale = a.minScale ?? config.minScale
        var maxScale = a.maxScale ?? config.maxScale
        if maxScale != 0 && maxScale < minScale { maxScale = minScale }
        self.maxScale = maxScale
        activationScale = a.activationScale ?? config.activationScale
        var initial = a.initialScale ?? config.initialScale
        if initial == 0 && !config.allowZeroInitialScale { initial = 1 }
        initial = max(initial, minScale)
        if maxScale > 0 { initial = min(initial, maxScale) }
        initialScale = initial
        initialized = initialScale == 0
        lastScale = initialScale
        if initialScale > 0 {
            activeSinceMs = nowMs
            activatingSinceMs = nowMs
        }
    }

    /// Takes up the scale a revision had before kn-local restarted, as if just decided with no metrics yet
    /// (Knative keeps it in the Deployment, so a node reboot does not reset a revision to its initial scale).
    public mutating func resume(atScale scale: Int, nowMs: Int64) {
        var pods = max(0, scale)
        if maxScale > 0 { pods = min(pods, maxScale) }
        lastScale = pods
        initialized = true
        activeSinceMs = pods > 0 ? nowMs : nil
        activatingSinceMs = pods > 0 ? nowMs : nil
        inactiveSinceMs = nil
    }

    /// Records one stat (already net of what the activator reports itself, spec §3.2).
    public mutating func record(concurrency value: Double, requests count: Double, atMs nowMs: Int64) {
        concurrency.record(value, atMs: nowMs)
        requests.record(count, atMs: nowMs)
    }

    /// Whether a stat should trigger an immediate decision (Knative's Poke: at zero with demand).
    public func wantsPoke(concurrency value: Double) -> Bool { lastScale == 0 && value > 0 }

    /// Decides the pod count. `readyPods` are pods that passed readiness; `routable` = in a route's traffic.
    /// Returns the new scale (possibly unchanged).
    public mutating func decide(readyPods: Int, routable: Bool, atMs nowMs: Int64) -> Int {
        if !initialized && readyPods >= initialScale { initialized = true }
        if readyPods > 0 { activatingSinceMs = nil }
        let metrics = spec.annotations.metric == "rps" ? requests : concurrency
        var want: Int
        if metrics.isEmpty {
            want = initialized ? lastScale : initialScale  // no data yet: Knative keeps the scale
        } else {
            let ready = Double(max(1, readyPods))
            let observedStable = metrics.average(windowSeconds: Int(stableWindowMs / 1000), atMs: nowMs)
            let observedPanic = metrics.average(windowSeconds: Int(panicWindowMs / 1000), atMs: nowMs)
            let maxUp = (config.maxScaleUpRate * ready).rounded(.up)
            let maxDown = routable ? (ready / config.maxScaleDownRate).rounded(.down) : 0
            let dspc = (observedStable / target).rounded(.up)
            let dppc = (observedPanic / target).rounded(.up)
            var desiredStable = Self.pods(min(max(dspc, maxDown), maxUp))
            var desiredPanic = Self.pods(min(max(dppc, maxDown), maxUp))
            if activationScale > 1 {
                if dspc > 0 && activationScale > desiredStable { desiredStable = activationScale }
                if dppc > 0 && activationScale > desiredPanic { desiredPanic = activationScale }
            }
            let overThreshold = dppc / ready >= panicThreshold
            if overThreshold {
                panicSinceMs = nowMs
            } else if let since = panicSinceMs, since + stableWindowMs < nowMs {
                panicSinceMs = nil
                maxPanicPods = 0
            }
            want = desiredStable
            if panicSinceMs != nil {
                // Never scale down while panicking.
                maxPanicPods = max(maxPanicPods, desiredStable, desiredPanic)
                want = maxPanicPods
            }
            if scaleDownDelayMs > 0 && routable {
                recentDecisions.append((nowMs, want))
                recentDecisions.removeAll { $0.0 + scaleDownDelayMs <= nowMs }
                want = recentDecisions.map(\.1).max() ?? want
            }
            if !initialized { want = max(want, initialScale) }
        }
        if routable { want = max(want, minScale) }
        if maxScale > 0 { want = min(want, maxScale) }
        want = scaleToZero(want, atMs: nowMs)
        if let since = activatingSinceMs, want > 0, nowMs - since >= activationTimeoutMs {
            // Activation failed for the progress deadline + 30 s: back to zero (kpa/scaler.go).
            want = 0
            initialized = true
        }
        if want > 0 && lastScale == 0 {
            activeSinceMs = nowMs
            inactiveSinceMs = nil
            if readyPods == 0 { activatingSinceMs = nowMs }
        }
        if want == 0 { activatingSinceMs = nil }
        lastScale = want
        return want
    }

    /// A pod count from a finite, non-negative Double (NaN and overflow cannot trap).
    static func pods(_ value: Double) -> Int {
        guard value.isFinite, value > 0 else { return 0 }
        return value >= 1e9 ? 1_000_000_000 : Int(value)
    }

    /// handleScaleToZero: 0 only after the revision was active for a stable window, then inactive for the grace
    /// period (and the pod retention period since the last demand).
    private mutating func scaleToZero(_ want: Int, atMs nowMs: Int64) -> Int {
        if want != 0 {
            if inactiveSinceMs != nil {
                inactiveSinceMs = nil
                activeSinceMs = nowMs
            }
            return want
        }
        guard lastScale > 0 else { return 0 }
        guard config.enableScaleToZero else { return 1 }
        if let since = inactiveSinceMs {
            let retention = max(config.scaleToZeroGracePeriodMs, retentionMs)
            return nowMs - since >= retention ? 0 : lastScale
        }
        let activeFor = nowMs - (activeSinceMs ?? nowMs)
        if activeFor >= stableWindowMs {
            inactiveSinceMs = nowMs
            return lastScale
        }
        return min(lastScale, 1)
    }
}
