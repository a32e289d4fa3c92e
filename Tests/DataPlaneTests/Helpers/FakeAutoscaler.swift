// A websocket stat server standing in for Knative's autoscaler: it accepts the activator's connection and
// decodes every binary message as WireStatMessages, with its arrival time.
import Foundation
import Glibc

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

final class FakeAutoscaler: @unchecked Sendable {
    let port: UInt16
    private let server: ScriptedUpstream
    private let received: Seen<(Date, [WireStatMessage])>
    private let connected: Seen<Int>

    init() throws {
        let received = Seen<(Date, [WireStatMessage])>()
        let connected = Seen<Int>()
        self.received = received
        self.connected = connected
        server = try ScriptedUpstream { conn, index in
            let (_, fields) = try conn.readHead()
            guard let key = fields.first(where: { $0.0.lowercased() == "sec-websocket-key" })?.1 else { return }
            try conn.send(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Accept: \(webSocketAccept(key: key))\r\n\r\n")
            connected.add(index)
            while true {
                let header = try conn.read(count: 2)
                var length = Int(header[1] & 0x7F)
                if length == 126 { length = try conn.read(count: 2).reduce(0) { $0 << 8 | Int($1) } }
                if length == 127 { length = try conn.read(count: 8).reduce(0) { $0 << 8 | Int($1) } }
                let mask = header[1] & 0x80 != 0 ? try conn.read(count: 4) : [0, 0, 0, 0]
                var payload = try conn.read(count: length)
                for i in payload.indices { payload[i] ^= mask[i & 3] }
                if header[0] & 0x0F == 0x2, let messages = WireStatMessages.decode(payload) {
                    received.add((Date(), messages))
                }
            }
        }
        port = server.port
    }

    var url: String { "ws://127.0.0.1:\(port)/" }
    var messages: [(Date, [WireStatMessage])] { received.all }
    var connectionCount: Int { connected.all.count }

    /// Waits until `predicate` holds for the received messages.
    @discardableResult
    func waitFor(seconds: Double = 5, _ predicate: ([(Date, [WireStatMessage])]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if predicate(messages) { return true }
            usleep(5_000)
        }
        return false
    }

    func stop() { server.stop() }
}
