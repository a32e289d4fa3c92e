// Host names → socket addresses with getaddrinfo, off the event loop: getaddrinfo blocks (DNS), so each lookup
// runs on a short-lived thread and posts its Sendable result back through the loop's inbox. Never call it on a
// hot path: it is for the few long-lived client connections (the autoscaler's websocket, the Kubernetes API).
import Glibc

/// Resolves `host:port` for code running on a loop.
public enum HostResolver {
    /// What a lookup gives: the addresses in getaddrinfo's order, or the error text (`lookup x: Name or
    /// service not known`, as Go words it).
    public typealias Result = Swift.Result<[SocketAddress], LookupError>

    public struct LookupError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Resolves `host` (a name or an IP literal) and calls `completion` on `loop`'s thread. An IP literal is
    /// answered at once, before this returns; a name (`localhost` too) is looked up on a new thread.
    /// - Parameters:
    ///   - host: the host name or literal address (IPv6 without brackets).
    ///   - port: the port every address gets.
    ///   - completion: runs on the loop; not called if the loop ended first.
    public static func resolve(
        _ host: String, port: UInt16, on loop: EventLoop, completion: @escaping (Result) -> Void
    ) {
        if let address = SocketAddress(ip: host, port: port) {
            return completion(.success([address]))
        }
        let pending = PendingLookups.on(loop)
        let id = pending.add(completion)
        let inbox = loop.inbox  // the loop itself is not Sendable; its inbox is the door in
        Threads.detach {
            let result = lookup(host, port: port)
            inbox.post { loop in PendingLookups.on(loop).complete(id, result) }
        }
    }

    /// The blocking lookup (TCP addresses, IPv4 and IPv6). Runs on a lookup thread, or in tests.
    public static func lookup(_ host: String, port: UInt16) -> Result {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0 else {
            let text = String(cString: gai_strerror(rc))
            return .failure(LookupError(description: "lookup \(host): \(text)"))
        }
        defer { freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var node = list
        while let entry = node {
            if let sockaddr = entry.pointee.ai_addr, entry.pointee.ai_addrlen <= MemoryLayout<sockaddr_storage>.size {
                var storage = sockaddr_storage()
                // ai_addr points to ai_addrlen bytes of a sockaddr_in or sockaddr_in6, which fit in the storage.
                withUnsafeMutableBytes(of: &storage) { dst in
                    dst.copyMemory(from: UnsafeRawBufferPointer(start: sockaddr, count: Int(entry.pointee.ai_addrlen)))
                }
                var address = SocketAddress(storage: storage, length: entry.pointee.ai_addrlen)
                address.setPort(port)
                if !addresses.contains(address) { addresses.append(address) }
            }
            node = entry.pointee.ai_next
        }
        guard !addresses.isEmpty else { return .failure(LookupError(description: "lookup \(host): no addresses")) }
        // IPv4 first, each family in the resolver's order: callers dial the first address, and a dual-stack
        // name (`localhost` → 127.0.0.1 and ::1) mostly serves on IPv4 (Kubernetes Services are single-stack
        // IPv4 unless the cluster says otherwise).
        return .success(addresses.filter { !$0.isIPv6 } + addresses.filter(\.isIPv6))
    }
}

/// The completions waiting for their lookup thread, kept on the loop (a completion is not Sendable: only its
/// number crosses threads).
private final class PendingLookups {
    private var next = 0
    private var waiting: [Int: (HostResolver.Result) -> Void] = [:]

    static func on(_ loop: EventLoop) -> PendingLookups {
        let key = ObjectIdentifier(PendingLookups.self)
        if let existing = loop.locals[key] as? PendingLookups { return existing }
        let created = PendingLookups()
        loop.locals[key] = created
        return created
    }

    func add(_ completion: @escaping (HostResolver.Result) -> Void) -> Int {
        next += 1
        waiting[next] = completion
        return next
    }

    func complete(_ id: Int, _ result: HostResolver.Result) {
        waiting.removeValue(forKey: id)?(result)
    }
}

extension SocketAddress {
    /// Sets the port (the same offset in sockaddr_in and sockaddr_in6).
    mutating func setPort(_ port: UInt16) {
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self)
        }
    }
}
