// The autoscaler statistics with time passed in: time-weighted concurrency, counts, the activator's share.
import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

struct RequestStatsTests {
    @Test func concurrencyIsWeightedByTime() {
        let stats = RequestStats(nowMs: 0)
        stats.requestIn(proxied: false, nowMs: 0)
        stats.requestIn(proxied: false, nowMs: 250)
        stats.requestOut(proxied: false, nowMs: 750)
        stats.requestOut(proxied: false, nowMs: 1_000)
        // 1 for 250 ms, 2 for 500 ms, 1 for 250 ms: (250 + 1000 + 250) / 1000.
        let window = stats.closeWindow(nowMs: 1_000)
        #expect(window.averageConcurrency == 1.5)
        #expect(window.requestCount == 2)
        #expect(window.averageProxiedConcurrency == 0)
        #expect(window.proxiedRequestCount == 0)
        #expect(stats.concurrency == 0)
    }

    @Test func theActivatorsShareIsKeptApart() {
        let stats = RequestStats(nowMs: 0)
        stats.requestIn(proxied: true, nowMs: 0)
        stats.requestIn(proxied: false, nowMs: 500)
        stats.requestOut(proxied: true, nowMs: 500)
        let window = stats.closeWindow(nowMs: 1_000)
        #expect(window.averageConcurrency == 1.0)
        #expect(window.averageProxiedConcurrency == 0.5)
        #expect(window.requestCount == 2)
        #expect(window.proxiedRequestCount == 1)
    }

    @Test func concurrencyCarriesIntoTheNextWindowButCountsDoNot() {
        let stats = RequestStats(nowMs: 0)
        stats.requestIn(proxied: true, nowMs: 500)
        let first = stats.closeWindow(nowMs: 1_000)
        #expect(first.averageConcurrency == 0.5)
        #expect(first.requestCount == 1)
        let second = stats.closeWindow(nowMs: 2_000)
        #expect(second.averageConcurrency == 1.0)
        #expect(second.averageProxiedConcurrency == 1.0)
        #expect(second.requestCount == 0)
        #expect(second.proxiedRequestCount == 0)
        #expect(stats.concurrency == 1)
    }

    @Test func anEmptyOrZeroLengthWindowAveragesZero() {
        let stats = RequestStats(nowMs: 100)
        #expect(
            stats.closeWindow(nowMs: 100)
                == .init(
                    averageConcurrency: 0, averageProxiedConcurrency: 0, requestCount: 0, proxiedRequestCount: 0))
        stats.requestIn(proxied: false, nowMs: 100)
        let window = stats.closeWindow(nowMs: 100)
        #expect(window.averageConcurrency == 0)
        #expect(window.requestCount == 1)
    }

    @Test func timeGoingBackIsIgnored() {
        // Loops read their own clocks: one loop's `nowMs` may be a little behind another's.
        let stats = RequestStats(nowMs: 1_000)
        stats.requestIn(proxied: false, nowMs: 1_000)
        stats.requestOut(proxied: false, nowMs: 900)  // no negative interval: the window stays at 0 ms
        let window = stats.closeWindow(nowMs: 2_000)
        // 1 → 0 took effect at 1000 (the last time seen): nothing was integrated, and the 1 s after is at 0.
        #expect(window.averageConcurrency == 0)
        #expect(window.requestCount == 1)
    }
}
