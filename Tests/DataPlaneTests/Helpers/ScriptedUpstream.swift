// A fake upstream for scenario tests: it accepts connections on 127.0.0.1:0 and runs a script per connection
// on its own thread (HAProxy's reg-tests `server s1 { rxreq; txresp }`, in Swift).
import Foundation
import Glibc
import ProxyCore

final class ScriptedUpstream: @unchecked Sendable {
    let port: UInt16
    private let listenFD: Int32
    private let lock = NSLock()
    private var connections: [TestSocket] = []
    private var accepted = 0
    private let script: @Sendable (TestSocket, Int) throws -> Void
    private let done = DispatchGroup()
    private let acceptEnded = DispatchSemaphore(value: 0)
    private var isStopped = false

    /// - Parameter script: called with each accepted connection and its index (0-based).
    init(script: @escaping @Sendable (TestSocket, Int) throws -> Void) throws {
        self.script = script
        _ = ResourceLimits.raiseDescriptorLimit()
        var chosen: (fd: Int32, port: UInt16)?
        while chosen == nil {
            let (fd, port) = try listenOnLoopback(port: 0, backlog: 512)
            // A port promised to a child process (freePort) must stay free for it.
            if issuedPorts.withLock({ $0.insert(port).inserted }) {
                chosen = (fd, port)
            } else {
                Glibc.close(fd)
            }
        }
        listenFD = chosen!.fd
        port = chosen!.port
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// Connections accepted so far.
    var acceptedCount: Int { lock.withLock { accepted } }

    private func acceptLoop() {
        defer { acceptEnded.signal() }
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if errno == EMFILE || errno == ENFILE, !lock.withLock({ isStopped }) {
                    usleep(10_000)
                    continue
                }
                return  // listener shut down by stop()
            }
            let connection = TestSocket(fd: fd)
            let index: Int = lock.withLock {
                connections.append(connection)
                accepted += 1
                return accepted - 1
            }
            done.enter()
            let script = self.script
            let group = done
            Thread { [self] in
                defer { group.leave() }
                do { try script(connection, index) } catch {}
                // Closed and forgotten under the lock that `stop()` holds while it shuts connections down: a
                // closed descriptor's number is soon reused (by another test's client socket), and shutting
                // down that number would break a stranger's connection.
                lock.withLock {
                    connection.close()
                    connections.removeAll { $0 === connection }
                }
            }.start()
        }
    }

    /// Stops accepting and closes every connection. Idempotent (`deinit` calls it again): a second close of
    /// `listenFD` would close whatever socket reused that number, another test's listener for instance. The
    /// listener is closed only after the accept thread left `accept`, for the same reason.
    func stop() {
        let first = lock.withLock {
            defer { isStopped = true }
            return !isStopped
        }
        guard first else { return }
        shutdown(listenFD, Int32(SHUT_RDWR))  // wakes the accept thread (EINVAL)
        acceptEnded.wait()  // shutdown always wakes accept(); closing earlier could hit a reused descriptor
        Glibc.close(listenFD)
        lock.withLock {
            for c in connections {
                c.shutdownWrite()
                shutdown(c.fd, Int32(SHUT_RDWR))
            }
        }
        _ = done.wait(timeout: .now() + 5)
    }

    deinit { stop() }
}

/// Upstream scripts used by several tests.
enum Scripts {
    /// Answers every request on the connection with 200 and `body`, keeping the connection open.
    static func hello(_ body: String = "Hello World!\n") -> @Sendable (TestSocket, Int) throws -> Void {
        { conn, _ in
            while true {
                let (_, fields) = try conn.readHead()
                _ = try conn.readBody(fields: fields, untilClose: false)
                try conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            }
        }
    }
}
