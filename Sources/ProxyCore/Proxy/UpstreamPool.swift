// Per-loop keep-alive pool for one upstream address, and the upstream side of an exchange.
// An HTTP/1 upstream connection carries one exchange at a time; idle ones wait here, LIFO (the warmest first).
import Glibc

/// Pool settings (immutable, shared by every loop).
public struct UpstreamConfig: Sendable {
    public var address: SocketAddress
    /// Most idle connections kept per loop (Knative: cc, or 1000 when cc = 0).
    public var maxIdle: Int
    /// How long an idle connection is kept (Go's transport default: 90 s).
    public var idleTimeoutMs: Int64

    public init(address: SocketAddress, maxIdle: Int = 1000, idleTimeoutMs: Int64 = 90_000) {
        self.address = address
        self.maxIdle = maxIdle
        self.idleTimeoutMs = idleTimeoutMs
    }
}

/// The idle connections to one upstream, on one loop.
public final class UpstreamPool {
    public let config: UpstreamConfig
    unowned(unsafe) let loop: EventLoop
    private var idle: [UpstreamConnection] = []
    /// Connections opened (for tests and stats).
    public private(set) var connectsTotal = 0

    public init(config: UpstreamConfig, loop: EventLoop) {
        self.config = config
        self.loop = loop
        idle.reserveCapacity(min(config.maxIdle, 1024))
        loop.onDrain { [unowned self] in self.closeIdle() }
    }

    public var idleCount: Int { idle.count }

    /// An idle connection if there is one, else a new one (connecting).
    /// - Throws: `SysError` when the connect fails at once (e.g. refused on loopback).
    func acquire() throws(SysError) -> UpstreamConnection {
        if let connection = idle.popLast() {
            connection.idleIndex = -1
            loop.cancel(connection)
            connection.isReused = true
            return connection
        }
        let (fd, isConnected) = try Socket.connect(to: config.address)
        connectsTotal += 1
        let connection = UpstreamConnection(pool: self)
        connection.isConnected = isConnected
        connection.canWrite = isConnected  // writing before the handshake ends would fail
        try loop.register(connection, fd: fd)
        return connection
    }

    /// Takes a connection back after a complete exchange, or closes it if the pool is full or draining.
    func release(_ connection: UpstreamConnection) {
        connection.exchange = nil
        connection.releaseInputIfEmpty()
        connection.releaseOutputIfEmpty()
        guard idle.count < config.maxIdle, !loop.draining, connection.input == nil else {
            connection.close()
            return
        }
        connection.idleIndex = idle.count
        idle.append(connection)
        loop.schedule(connection, at: loop.nowMs + config.idleTimeoutMs)
    }

    /// Removes an idle connection that is closing (the upstream hung up, or it timed out).
    func remove(_ connection: UpstreamConnection) {
        let index = connection.idleIndex
        guard index >= 0 else { return }
        let last = idle.removeLast()
        if index < idle.count {
            idle[index] = last
            last.idleIndex = index
        }
        connection.idleIndex = -1
    }

    func closeIdle() {
        while let connection = idle.last { connection.close() }
    }
}

/// The upstream side: a client HTTP/1 connection owned by the pool between exchanges.
final class UpstreamConnection: StreamConnection {
    unowned(unsafe) let pool: UpstreamPool
    /// The exchange using this connection, nil while idle.
    var exchange: ProxyExchange?
    var isConnected = false
    var isReused = false
    var idleIndex = -1

    init(pool: UpstreamPool) {
        self.pool = pool
    }

    override func onReadiness() {
        guard let exchange else {
            // Idle: any readiness means the upstream closed it or sent garbage; either way it is unusable.
            close()
            return
        }
        exchange.upstreamReady(self)
    }

    override func timerFired(nowMs: Int64) {
        if exchange == nil { close() }  // idle timeout
        else { exchange?.upstreamTimerFired(self) }
    }

    override func beginDrain() {
        if exchange == nil { close() }
    }

    override func didClose() {
        super.didClose()
        pool.remove(self)
    }
}
