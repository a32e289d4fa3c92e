// BlockingClient (kn-local's calls to its children and the CLI's to kn-local): the response as a whole is
// bounded, not only each read.
import Glibc
import ProxyCore
import Testing

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
