// The autoscaler's websocket stat server (spec §3.3): the activator connects and sends binary frames of
// WireStatMessages every second (and a poke at once when a revision at zero gets a request). Any path; a
// kubelet-UA request without Upgrade gets 200. Blocking threads: one accepts, one per connection reads.
// Stats go to `deliver`, which hands them to the controller's loop.
import Glibc
import KnativeWire
import ProxyCore

public final class StatServer: Sendable {
    public let port: UInt16
    private let listenFD: Int32

    /// Binds 127.0.0.1:`port` (0 = any free port) and starts accepting.
    public init(port: UInt16, deliver: @escaping @Sendable ([WireStatMessage]) -> Void) throws {
        let fd: Int32
        do {
            // The engine's listener (one bind/listen for every server here), made blocking for the accept thread.
            fd = try Socket.listen(on: SocketAddress(ip: "127.0.0.1", port: port)!, reusePort: false, backlog: 64)
            do {
                try Socket.setBlocking(fd)
                self.port = try Socket.localAddress(fd).port
            } catch {
                closeDescriptor(fd)
                throw error
            }
        } catch {
            throw ManifestError("stat server: cannot listen on 127.0.0.1:\(port): \(error)")
        }
        listenFD = fd
        Threads.detach {
            while true {
                let accepted: IOResult<(Int32, SocketAddress)>
                do throws(SysError) { accepted = try Socket.accept(fd) } catch {
                    switch error.code {
                    case ECONNABORTED: continue
                    case EMFILE, ENFILE:
                        usleep(100_000)  // out of descriptors: a back-off pause, not a wait for an event
                        continue
                    default: return  // the listener was closed
                    }
                }
                guard case .processed((let client, _)) = accepted else { continue }
                // Each connection has a thread of its own and blocking reads.
                do { try Socket.setBlocking(client) } catch {
                    closeDescriptor(client)
                    continue
                }
                Threads.detach {
                    var connection = StatConnection(fd: client, deliver: deliver)
                    connection.run()
                }
            }
        }
    }
}

/// One websocket connection from an activator.
struct StatConnection {
    let fd: Int32
    let deliver: @Sendable ([WireStatMessage]) -> Void
    var buffer: [UInt8] = []

    init(fd: Int32, deliver: @escaping @Sendable ([WireStatMessage]) -> Void) {
        self.fd = fd
        self.deliver = deliver
    }

    mutating func run() {
        defer { closeDescriptor(fd) }
        guard let head = readHead() else { return }
        let lines = head.split(separator: "\r\n")
        var key: String?
        var upgrade = false
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = String(line[line.index(after: colon)...].drop { $0 == " " })
            if name == "sec-websocket-key" { key = value }
            if name == "upgrade" && value.lowercased() == "websocket" { upgrade = true }
        }
        guard upgrade, let key else {
            // A probe (kubelet) or a stray request: 200, nothing else.
            send(Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
            return
        }
        send(
            Array(
                ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Accept: \(webSocketAccept(key: key))\r\n\r\n").utf8))
        var message: [UInt8] = []
        var messageOpcode: UInt8 = 0
        while let (fin, opcode, payload) = readFrame() {
            switch opcode {
            case 0x8:  // close: echo it and end
                send([0x88, 0x00])
                return
            case 0x9:  // ping → pong
                send([0x8A, UInt8(min(payload.count, 125))] + payload.prefix(125))
            case 0xA:
                continue
            default:
                if opcode != 0 {
                    messageOpcode = opcode
                    message = []
                }
                message += payload
                if message.count > 1 << 20 { return }  // nobody sends stats this large
                if fin {
                    // Only binary messages are processed (spec §3.3); text is dropped.
                    if messageOpcode == 0x2, let decoded = WireStatMessages.decode(message) {
                        deliver(decoded.filter { $0.stat != nil })
                    }
                    message = []
                }
            }
        }
    }

    private mutating func readHead() -> String? {
        var parser = HTTP1Parser(maxHeadLength: 16384)
        while true {
            let end: Int?
            do {
                end = try buffer.withUnsafeBytes { (raw) throws(HTTPParseError) in try parser.findHeadEnd(raw) }
            } catch {
                return nil  // over 16 KiB without an end
            }
            if let end {
                let head = String(decoding: buffer[0..<end], as: UTF8.self)
                buffer.removeFirst(end)
                return head
            }
            if !fill() { return nil }
        }
    }

    private mutating func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 8192)
        let result = chunk.withUnsafeMutableBytes { bytes in
            Result { () throws(SysError) in try Socket.read(fd, into: bytes) }
        }
        guard case .success(.processed(let n)) = result, n > 0 else { return false }
        buffer += chunk[0..<n]
        return true
    }

    private mutating func need(_ count: Int) -> Bool {
        while buffer.count < count { if !fill() { return false } }
        return true
    }

    /// One frame (RFC 6455 §5.2): FIN, opcode and the unmasked payload.
    private mutating func readFrame() -> (Bool, UInt8, [UInt8])? {
        guard need(2) else { return nil }
        let fin = buffer[0] & 0x80 != 0
        let opcode = buffer[0] & 0x0F
        let masked = buffer[1] & 0x80 != 0
        var length = Int(buffer[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard need(4) else { return nil }
            length = Int(buffer[2]) << 8 | Int(buffer[3])
            offset = 4
        } else if length == 127 {
            guard need(10) else { return nil }
            // ≥ 4 GiB: never stats
            if buffer[2] != 0 || buffer[3] != 0 || buffer[4] != 0 || buffer[5] != 0 { return nil }
            length = 0
            for i in 2..<10 { length = length << 8 | Int(buffer[i]) }
            offset = 10
            if length > 1 << 20 { return nil }
        }
        let maskOffset = offset
        if masked { offset += 4 }
        guard need(offset + length) else { return nil }
        var payload = Array(buffer[offset..<(offset + length)])
        if masked {
            for i in payload.indices { payload[i] ^= buffer[maskOffset + (i & 3)] }
        }
        buffer.removeFirst(offset + length)
        return (fin, opcode, payload)
    }

    private func send(_ bytes: [UInt8]) { try? BlockingClient.sendAll(fd, bytes) }
}
