// One GET to the Kubernetes API on the activator's loop, never blocking it: a `ClientConnection`, the head
// parsed by the engine's response parser (`ResponseHead`), the body de-framed as it arrives (chunked by
// `ChunkedDecoder`, or by length, or until the close) and handed on in pieces. A LIST collects the pieces; a
// WATCH splits them into event lines as they come. Plain HTTP only: the API is a `kubectl proxy` sidecar.
import ProxyCore

/// The plain-HTTP Kubernetes API endpoint (`--kube-api http://host:port`).
public struct KubeAPIEndpoint: Sendable, Equatable {
    public let host: String
    public let port: UInt16
    /// A path prefix before `/api` and `/apis` (usually empty).
    public let pathPrefix: String

    /// Parses `http://host[:port][/prefix]`: host an IP literal (`[v6]`) or a DNS name; port 80 by default.
    public init?(url: String) {
        guard url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst(7)
        let hostPort = rest.prefix { $0 != "/" }
        guard let (host, port) = WebSocketClient.splitHostPort(hostPort, defaultPort: 80) else { return nil }
        var prefix = String(rest.dropFirst(hostPort.count))
        while prefix.hasSuffix("/") { prefix.removeLast() }
        guard !prefix.contains("?"), !prefix.contains("#") else { return nil }
        self.host = host
        self.port = port
        pathPrefix = prefix
        hostHeader = String(hostPort)
    }

    /// The Host field's value.
    public let hostHeader: String
}

/// What a `KubeGet` reports to its owner, on the loop.
protocol KubeGetDelegate: AnyObject {
    /// The response head arrived.
    func kubeGet(_ get: KubeGet, status: Int)
    /// Body bytes (de-framed), valid only during the call. The owner may `cancel()` the get from here.
    func kubeGet(_ get: KubeGet, body: UnsafeRawBufferPointer)
    /// The exchange is over: `error` nil when the whole body arrived, else why not. Called once, unless the
    /// owner cancelled.
    func kubeGet(_ get: KubeGet, endedWith error: String?)
}

/// One GET with `Connection: close`.
final class KubeGet: ClientConnectionDelegate {
    private weak var delegate: KubeGetDelegate?
    private let request: [UInt8]
    private var connection: ClientConnection?
    private var head: ResponseHead?
    private var inbound: [UInt8] = []
    private var chunked = ChunkedDecoder()
    private var remaining = 0
    private var isOver = false
    static let maxHeadBytes = 64 * 1024

    /// A GET of `target` (path and query) at `api`; `start` sends it.
    init(_ target: String, api: KubeAPIEndpoint, delegate: KubeGetDelegate) {
        self.delegate = delegate
        request = Array(
            ("GET \(target) HTTP/1.1\r\nHost: \(api.hostHeader)\r\nAccept: application/json\r\n"
                + "User-Agent: activator (knative-dataplane-swift)\r\nConnection: close\r\n\r\n").utf8)
    }

    /// Connects to `address` and sends the request. A connect that fails at once ends the get (the delegate
    /// hears it) before this returns, so the owner must hold the get before starting it.
    /// - Parameter deadlineMs: loop time by which the whole exchange must be over.
    func start(address: SocketAddress, loop: EventLoop, deadlineMs: Int64) {
        let connection = ClientConnection.connect(to: address, on: loop, deadlineMs: deadlineMs, delegate: self)
        if !isOver { self.connection = connection }
    }

    /// Ends the exchange; the delegate hears nothing more.
    func cancel() {
        isOver = true
        delegate = nil
        connection?.close()
        connection = nil
    }

    func clientConnected(_ connection: ClientConnection) {
        connection.send(request)
    }

    func clientReceived(_ connection: ClientConnection, _ bytes: UnsafeRawBufferPointer) {
        guard !isOver else { return }
        guard let head else {
            inbound.append(contentsOf: bytes)
            let parsed: ResponseHead?
            do { parsed = try ResponseHead.parse(inbound) } catch {
                return finish("malformed response head (\(error))")
            }
            guard let parsed else {
                if inbound.count > Self.maxHeadBytes { finish("response head over \(Self.maxHeadBytes) bytes") }
                return
            }
            self.head = parsed
            if case .length(let n) = parsed.framing { remaining = n }
            delegate?.kubeGet(self, status: parsed.status)
            guard !isOver else { return }
            let rest = Array(inbound[parsed.length...])
            inbound = []
            if parsed.framing == .none || parsed.framing == .length(0) { return finish(nil) }
            rest.withUnsafeBytes { body($0, framing: parsed.framing) }
            return
        }
        body(bytes, framing: head.framing)
    }

    private func body(_ bytes: UnsafeRawBufferPointer, framing: BodyFraming) {
        guard !bytes.isEmpty, !isOver else { return }
        switch framing {
        case .none:
            finish(nil)
        case .untilClose:
            delegate?.kubeGet(self, body: bytes)
        case .length:
            let take = min(remaining, bytes.count)
            remaining -= take
            delegate?.kubeGet(self, body: UnsafeRawBufferPointer(rebasing: bytes[0..<take]))
            if remaining == 0 && !isOver { finish(nil) }
        case .chunked:
            do {
                _ = try chunked.consume(bytes) { range in
                    if !isOver { delegate?.kubeGet(self, body: UnsafeRawBufferPointer(rebasing: bytes[range])) }
                }
            } catch {
                return finish("malformed chunked body")
            }
            if chunked.isDone && !isOver { finish(nil) }
        }
    }

    func clientEnded(_ connection: ClientConnection, _ ending: ClientConnection.Ending) {
        self.connection = nil
        guard !isOver else { return }
        switch ending {
        case .peerClosed:
            if let head, head.framing == .untilClose { return finish(nil) }
            finish(head == nil ? "connection closed before the response" : "stream ended early")
        case .connectFailed(let code): finish("connect: \(SysError.text(code))")
        case .failed(let code): finish("\(SysError.text(code))")
        case .deadline: finish("no answer in time")
        case .draining: finish("shutting down")
        }
    }

    private func finish(_ error: String?) {
        guard !isOver else { return }
        isOver = true
        connection?.close()
        connection = nil
        let delegate = self.delegate
        self.delegate = nil
        delegate?.kubeGet(self, endedWith: error)
    }
}
