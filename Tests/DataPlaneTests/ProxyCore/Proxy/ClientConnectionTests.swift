// The engine's client side (ClientConnection.swift): the loop connection's send queue, and BlockingClient
// (kn-local's calls to its children and the CLI's to kn-local), whose response is bounded as a whole.
import Glibc
import Testing

@testable import ProxyCore

struct ClientConnectionTests {
    final class Owner: ClientConnectionDelegate {
        var connected = false
        var ending: ClientConnection.Ending?
        func clientConnected(_ connection: ClientConnection) { connected = true }
        func clientReceived(_ connection: ClientConnection, _ bytes: UnsafeRawBufferPointer) {}
        func clientEnded(_ connection: ClientConnection, _ ending: ClientConnection.Ending) { self.ending = ending }
    }

    /// A queue far beyond the socket's buffers, to a peer that starts reading only once it is queued: it leaves
    /// in many partial writes (the queue keeps an offset and compacts now and then) and arrives whole, in order.
    @Test func aLongQueueToASlowReaderArrivesWholeAndInOrder() throws {
        let total = 8 << 20
        let pattern = (0..<total).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }
        let startReading = Gate()
        let received = Locked<[UInt8]>([])
        let peer = try ScriptedUpstream { conn, _ in
            startReading.wait()
            while received.withLock({ $0.count }) < total, try conn.fill() {
                let bytes = conn.takeBuffered()
                received.withLock { $0 += bytes }
            }
        }
        defer { peer.stop() }
        let loop = try EventLoop()
        let owner = Owner()
        let connection = ClientConnection.connect(
            to: SocketAddress(ip: "127.0.0.1", port: peer.port)!, on: loop, delegate: owner)
        #expect(
            eventually {
                loop.runOnce()
                return owner.connected
            })
        var offset = 0
        var size = 1_000
        while offset < total {  // uneven pieces, so writes end mid-piece
            let end = min(total, offset + size)
            connection.send(Array(pattern[offset..<end]))
            offset = end
            size = size * 3 % 200_003 + 1
        }
        #expect(connection.unsentCount > 0, "the socket took all 8 MiB at once: nothing was queued")
        startReading.open()
        #expect(
            eventually {
                loop.runOnce()
                return connection.unsentCount == 0
            })
        #expect(eventually { received.withLock { $0.count } >= total })
        let got = received.withLock { $0 }
        let firstDifference =
            got.indices.first { $0 >= total || got[$0] != pattern[$0] } ?? (got.count == total ? nil : got.count)
        #expect(firstDifference == nil, "\(got.count) bytes arrived; the first wrong one at \(firstDifference ?? -1)")
        // The peer may have closed after reading it all; anything else is a failure.
        #expect(owner.ending == nil || owner.ending == .peerClosed, "\(String(describing: owner.ending))")
        connection.close()
    }
}

struct BlockingClientTests {
    @Test func aServerThatDripsItsResponseCannotHoldTheCallerPastTheBound() throws {
        // 40 body bytes, one every 50 ms: each read is quick, the whole response takes 2 s.
        let server = try ScriptedUpstream { conn, _ in
            _ = try conn.readHead()
            try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 40\r\nConnection: close\r\n\r\n")
            for _ in 0..<40 {
                usleep(50_000)  // the drip: the fake server's pace, not a wait for an event
                try conn.send("x")
            }
        }
        defer { server.stop() }
        let address = SocketAddress(ip: "127.0.0.1", port: server.port)!
        #expect {
            _ = try BlockingClient.request("GET", address, "/", timeoutMs: 300)
        } throws: { error in
            "\(error)".contains("i/o timeout")
        }

        // A prompt answer within the bound is read whole.
        let prompt = try ScriptedUpstream { conn, _ in
            _ = try conn.readHead()
            try conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        }
        defer { prompt.stop() }
        let response = try BlockingClient.request(
            "GET", SocketAddress(ip: "127.0.0.1", port: prompt.port)!, "/", timeoutMs: 300)
        #expect(response.status == 200 && response.body == Array("ok".utf8))
    }
}
