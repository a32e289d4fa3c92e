// Runs ProxyCore in-process: a LoopGroup whose loops forward to one upstream port.
import Foundation
import Synchronization

@testable import ProxyCore

final class ProxyHarness: @unchecked Sendable {
    let group: LoopGroup
    let port: UInt16

    init(
        upstreamPort: UInt16, loops: Int = 1, maxIdle: Int = 1000, idleTimeoutMs: Int64 = 90_000,
        server: ServerConfig = ServerConfig()
    ) throws {
        let bound = Mutex<UInt16>(0)
        let upstream = UpstreamConfig(
            address: SocketAddress(ip: "127.0.0.1", port: upstreamPort)!, maxIdle: maxIdle, idleTimeoutMs: idleTimeoutMs)
        let listenPort = loops > 1 ? freePort() : 0
        group = try LoopGroup(count: loops) { loop in
            let responder = ForwardingResponder(pool: UpstreamPool(config: upstream, loop: loop))
            loop.locals[ObjectIdentifier(ForwardingResponder.self)] = responder
            let address = try HTTPServer.listen(
                on: SocketAddress(ip: "127.0.0.1", port: listenPort)!, loop: loop, config: server,
                responder: responder, sharedAcrossLoops: loops > 1)
            bound.withLock { $0 = address.port }
        }
        port = bound.withLock { $0 }
    }

    func stop() {
        group.stop()
        group.join()
    }

    deinit { stop() }
}
