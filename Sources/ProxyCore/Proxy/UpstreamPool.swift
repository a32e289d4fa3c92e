// Per-loop keep-alive pool for one upstream address, and the upstream side of an exchange.
// An HTTP/1 upstream connection carries one exchange at a time; idle ones wait here, LIFO (the warmest first).
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import Glibc

/// Pool settings (immutable, shared by every loop).
public struct UpstreamConfig: Sendable {
    public var address: SocketAddress
    /// Most idle connections kept per loop (Knative: cc, or 1000 when cc = 0).
    public var maxIdle: Int
    /// How long an idle connection is kept (Go's transport default: 90 s).
    public var idleTimeoutMs: Int64
    /// The upstream speaks only h2c (a revision whose port is named `h2c`): HTTP/1.1 requests are translated
    /// (`H1ToH2Bridge`). HTTP/2 requests go over h2c whatever this says (Knative's rule, spec §1.8).
    public var speaksH2c: Bool

    public init(address: SocketAddress, maxIdle: Int = 1000, idleTimeoutMs: Int64 = 90_000, speaksH2c: Bool = false) {
        self.address = address
        self.speaksH2c = speaksH2c
        self.maxIdle = maxIdle
        self.idleTimeoutMs = idleTimeoutMs
    }
}

/// The idle connections to one upstream, on one loop.
public final class UpstreamPool {
    public let config: UpstreamConfig
    /// The address as a Host value, for requests that arrive without one (HTTP/1.0), as Go's transport does.
    let hostBytes: [UInt8]
    unowned(unsafe) let loop: EventLoop  // pools are made per loop by its responders; the loop outlives them
    @exclusivity(unchecked) private var idle: [UpstreamConnection] = []
    /// Upstream h2c connections (HTTP/2 requests), each multiplexing many streams.
    @exclusivity(unchecked) var h2Connections: [H2UpstreamConnection] = []
    /// Set when the upstream went away (a pod removed): connections coming back from exchanges are closed.
    public var isRetired = false {
        didSet { if isRetired { closeIdle() } }
    }

    public init(config: UpstreamConfig, loop: EventLoop) {
        self.config = config
        hostBytes = Array(config.address.description.utf8)
        self.loop = loop
        idle.reserveCapacity(min(config.maxIdle, 1024))
        // No drain hook: on a drain every channel is told, and idle connections close themselves.
    }

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
        guard idle.count < config.maxIdle, !loop.draining, !isRetired, connection.input == nil else {
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
        for connection in h2Connections where connection.streams.isEmpty { connection.close() }
    }
}

/// The upstream side: a client HTTP/1 connection owned by the pool between exchanges.
final class UpstreamConnection: StreamConnection {
    /// Strong: a pool may outlive its owner's interest (a pod removed while a request to it is in flight).
    /// The cycle with `idle` is broken when the connection closes.
    let pool: UpstreamPool
    /// The exchange using this connection, nil while idle.
    @exclusivity(unchecked) var exchange: ProxyExchange?
    @exclusivity(unchecked) var isConnected = false
    @exclusivity(unchecked) var isReused = false
    @exclusivity(unchecked) var idleIndex = -1

    init(pool: UpstreamPool) {
        self.pool = pool
    }

    override func onReadiness() {
        guard let exchange else {
            // Idle. A late edge for bytes we already read (they arrived while we were reading) is harmless;
            // anything else — EOF, an error, or bytes nobody asked for — makes the connection unusable.
            if !Socket.isIdleAndOpen(fd) { close() }
            return
        }
        exchange.upstreamReady(self)
    }

    override func timerFired(nowMs: Int64) {
        if exchange == nil { close() }  // idle timeout (a busy connection's deadlines live on the downstream)
    }

    override func beginDrain() {
        if exchange == nil { close() }
    }

    override func didClose() {
        super.didClose()
        pool.remove(self)
    }
}
