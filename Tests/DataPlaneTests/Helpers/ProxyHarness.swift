// Runs ProxyCore in-process: a LoopGroup whose loops forward to one upstream port.
import Foundation
import Synchronization

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

final class ProxyHarness: @unchecked Sendable {
    let group: LoopGroup
    let port: UInt16
    /// Requests each loop received (index = loop index): which loop served a connection.
    let requestsPerLoop: [Counter]

    init(
        upstreamPort: UInt16, loops: Int = 1, maxIdle: Int = 1000, idleTimeoutMs: Int64 = 90_000,
        server: ServerConfig = ServerConfig()
    ) throws {
        let bound = Locked<UInt16>(0)
        let upstream = UpstreamConfig(
            address: SocketAddress(ip: "127.0.0.1", port: upstreamPort)!, maxIdle: maxIdle, idleTimeoutMs: idleTimeoutMs
        )
        let listenPort = loops > 1 ? freePort() : 0
        let counters = (0..<loops).map { _ in Counter() }
        requestsPerLoop = counters
        group = try LoopGroup(count: loops) { loop in
            let responder = CountingResponder(
                pool: UpstreamPool(config: upstream, loop: loop), counter: counters[loop.index])
            loop.locals[ObjectIdentifier(CountingResponder.self)] = responder
            let address = try HTTPServer.listen(
                on: SocketAddress(ip: "127.0.0.1", port: listenPort)!, loop: loop, config: server,
                responder: responder, sharedAcrossLoops: loops > 1)
            bound.withLock { $0 = address.port }
        }
        port = bound.withLock { $0 }
    }

    /// Channels registered on all loops (listeners, downstream and upstream connections), each loop asked
    /// on its own thread: how a test sees that a connection was closed or handed back.
    func channelCount() -> Int {
        let counts = Seen<Int>()
        let answered = DispatchSemaphore(value: 0)
        group.broadcast { loop in
            counts.add(loop.channelCount)
            answered.signal()
        }
        for _ in 0..<group.count { answered.wait() }
        return counts.all.reduce(0, +)
    }

    func stop() {
        group.stop()
        group.join()
    }

    deinit { stop() }
}

/// Forwards every request to one pool, counting them (per loop: one responder per loop).
private final class CountingResponder: HTTPResponder {
    let pool: UpstreamPool
    let counter: Counter

    init(pool: UpstreamPool, counter: Counter) {
        self.pool = pool
        self.counter = counter
    }

    func dispose(_ request: RequestView) -> Disposition {
        counter.increment()
        return .proxy(pool)
    }
}
