import Glibc
import KnativeWire
// The activator's request pipeline (spec §2.3–2.7): health, network and activator probes; the target
// revision from headers, Host, or (beyond upstream) a route; per-revision throttling with buffering at zero;
// the proxy to a queue-proxy with upstream's header changes; stats to the autoscaler.
import ProxyCore

/// Process-level settings.
public struct ActivatorSettings: Sendable {
    public var podName = "activator"
    public var clusterDomain = "cluster.local"
    public var activatorCount = 1
    public var activatorIndex = 0
    public var probeIntervalMs: Int64 = 200
    public var probeTimeoutMs: Int64 = 300
    /// Waiting requests per revision, and the bytes they may hold, before 503 + Retry-After.
    public var maxQueuedPerRevision = 10_000
    public var maxQueuedBytesPerRevision = 64 * 1024 * 1024
    public var autoscalerURL: String? = nil

    public init() {}
}

/// The loop-confined state and the data-path responder (one per process: the activator runs one loop so that
/// per-pod slots and FIFO order are exact; see README).
public final class Activator: HTTPResponder {
    public let settings: ActivatorSettings
    unowned(unsafe) let loop: EventLoop  // the loop keeps us in its locals and outlives us
    public private(set) var throttlers: [String: RevisionThrottler] = [:]
    public private(set) var routes: [String: RouteSpec] = [:]
    /// Byte-keyed views for the request path (no String per request): "ns/name" → throttler; host (lower-case,
    /// no port) → route; tag host `<tag>-<host>` → the tagged revision's throttler.
    private var throttlerIndex = ByteKeyIndex<RevisionThrottler>()
    private var routeIndex = ByteKeyIndex<RouteBox>()
    private var tagIndex = ByteKeyIndex<RouteBox>()
    private var endpoints: [String: [SocketAddress]] = [:]
    /// Per-revision activator count and index (Kubernetes mode: from each revision's public Endpoints), kept
    /// for revisions not created yet too. Absent: the global `--activator-count`/`--activator-index`.
    public private(set) var subsets: [String: (count: Int, index: Int)] = [:]
    /// Why the kubelet's probe must fail although the process serves (Kubernetes mode: the first lists have
    /// not arrived, as upstream serves only once its informers synced); nil when ready.
    public var notReadyReason: String?
    public let stats: ActivatorStats
    public private(set) var reporter: WebSocketClient?
    public private(set) var isShuttingDown = false
    private var probeTimer: LoopTimer?

    private static let proxyRequestLine = Array("K-Proxy-Request: activator\r\n".utf8)
    /// As the ingress (a request routed by Host to a route), the activator also says which scheme the client
    /// used, as Knative's ingresses do; the queue-proxy's Forwarded shim turns it into `proto=`. Plain HTTP only:
    /// this build serves no TLS.
    private static let ingressRequestLines = Array("K-Proxy-Request: activator\r\nX-Forwarded-Proto: http\r\n".utf8)
    private let healthOK = LocalResponse(status: 200)
    private let sigtermAnswer = LocalResponse.error(500, "received SIGTERM from kubelet")
    /// Upstream's health check is the websocket's `Status()`: `ErrConnectionNotEstablished` whenever there is no
    /// connection, whatever made it fail (spec §2.9, vector A1). The cause goes to the log instead.
    private let notEstablishedAnswer = LocalResponse.error(500, "connection has not yet been established")
    private let activatorAnswer = LocalResponse.text(200, "activator")
    private let hashMissing = LocalResponse.error(
        400, "a probe request must contain a non-empty \"K-Network-Hash\" header")
    private let queueFull = LocalResponse(
        status: 503, body: Array("pending request queue full\n".utf8), contentType: "text/plain; charset=utf-8",
        noSniff: true, extraHeaders: [("Retry-After", "1")])
    private let timeoutAnswer = LocalResponse.text(504, "activator request timeout")

    public init(settings: ActivatorSettings, loop: EventLoop) {
        self.settings = settings
        self.loop = loop
        stats = ActivatorStats(podName: settings.podName)
        if let url = settings.autoscalerURL, let client = WebSocketClient(url: url) {
            reporter = client
            client.start(on: loop)
        }
        let ticker = LoopTimer { [unowned self] now in self.statsTick(now) }
        statsTimer = ticker
        loop.schedule(ticker, at: loop.nowMs + 1000)
    }

    private var statsTimer: LoopTimer?

    // MARK: - State changes

    /// Replaces the whole state (config file load or SIGHUP). Waiting requests of kept revisions stay queued.
    public func apply(_ document: ActivatorDocument) {
        let keep = Set(document.revisions.map(\.key))
        for key in throttlers.keys where !keep.contains(key) { deleteRevision(key: key) }
        for revision in document.revisions { putRevision(revision) }
        endpoints = [:]
        for (key, addresses) in document.endpoints { setEndpoints(key: key, addresses) }
        routes = [:]
        for route in document.routes { routes[route.key] = route }
        rebuildHostIndex()
    }

    public func putRevision(_ spec: RevisionSpec) {
        if let throttler = throttlers[spec.key] {
            throttler.update(spec: spec)
            return
        }
        let throttler = RevisionThrottler(
            spec: spec, loop: loop, maxQueued: settings.maxQueuedPerRevision,
            maxQueuedBytes: settings.maxQueuedBytesPerRevision)
        let subset = subsets[spec.key] ?? (settings.activatorCount, settings.activatorIndex)
        throttler.activatorCount = subset.count
        throttler.activatorIndex = subset.index
        throttler.onAdmit = { [unowned self] handle, pod in self.admit(handle, to: pod) }
        throttlers[spec.key] = throttler
        throttlerIndex.insert(spec.key, throttler)
        if let addresses = endpoints[spec.key] { setEndpoints(key: spec.key, addresses) }
    }

    public func deleteRevision(key: String) {
        guard let throttler = throttlers.removeValue(forKey: key) else { return }
        rebuildThrottlerIndex()
        _ = throttler.setEndpoints([])
        for handle in throttler.drainQueue() {
            handle.context.flags &= ~ActivatorFlags.waiting
            handle.resume(.respond(LocalResponse(status: 500)))
        }
    }

    /// Sets a revision's endpoints; new pods are probed before they get traffic.
    public func setEndpoints(key: String, _ addresses: [SocketAddress]) {
        endpoints[key] = addresses
        guard let throttler = throttlers[key] else { return }
        let added = throttler.setEndpoints(addresses)
        for pod in added { probe(pod) }
        throttler.dispatch()
    }

    /// Forgets a revision's endpoints (their Endpoints object was deleted): no pod is left for it.
    public func removeEndpoints(key: String) {
        guard endpoints.removeValue(forKey: key) != nil, let throttler = throttlers[key] else { return }
        _ = throttler.setEndpoints([])
        throttler.dispatch()
    }

    /// Sets how many activators share revision `key` and which one this is (subsetting, spec §2.5).
    public func setSubset(key: String, count: Int, index: Int) {
        if let old = subsets[key], old == (count, index) { return }
        subsets[key] = (count, index)
        Log.info("revision \(key): this activator is \(index) of \(count)")
        guard let throttler = throttlers[key] else { return }
        throttler.setActivators(count: count, index: index)
        throttler.dispatch()
    }

    /// Forgets revision `key`'s share (its public Endpoints are gone). A throttler still running keeps the share
    /// it has; one made later starts from the flags' count and index.
    public func forgetSubset(key: String) {
        subsets.removeValue(forKey: key)
    }

    public func putRoute(_ route: RouteSpec) {
        routes[route.key] = route
        rebuildHostIndex()
    }

    public func deleteRoute(key: String) {
        routes.removeValue(forKey: key)
        rebuildHostIndex()
    }

    private func rebuildThrottlerIndex() {
        throttlerIndex.removeAll()
        for (key, throttler) in throttlers { throttlerIndex.insert(key, throttler) }
    }

    private func rebuildHostIndex() {
        routeIndex.removeAll()
        tagIndex.removeAll()
        for route in routes.values {
            let box = RouteBox(route)
            for host in route.hosts {
                routeIndex.insert(host.lowercased(), box)
                for target in route.traffic {
                    if let tag = target.tag {
                        tagIndex.insert("\(tag)-\(host)".lowercased(), RouteBox(route, tag: tag))
                    }
                }
            }
        }
    }

    public var document: ActivatorDocument {
        var d = ActivatorDocument()
        d.revisions = throttlers.values.map(\.spec).sorted { $0.key < $1.key }
        d.endpoints = endpoints
        d.routes = routes.values.sorted { $0.key < $1.key }
        return d
    }

    /// What `GET /v1/state` shows: the document, plus each revision's activator count and index in use.
    public var stateJSON: JSON {
        guard case .object(var members) = document.json else { return document.json }
        let subsetting = throttlers.sorted { $0.key < $1.key }.map { key, throttler in
            (
                key,
                JSON.object([
                    ("activatorCount", .number(Double(throttler.activatorCount))),
                    ("activatorIndex", .number(Double(throttler.activatorIndex))),
                    ("assignedPods", .array(throttler.assigned.map { .string($0.address.description) })),
                ])
            )
        }
        members.append(("subsetting", .object(subsetting)))
        return .object(members)
    }

    // MARK: - Pod probing (spec §2.6)

    private static let probeRequest = Array(
        "GET /healthz HTTP/1.1\r\nHost: activator-probe\r\nK-Network-Probe: queue\r\nUser-Agent: Knative-Activator-Probe\r\nConnection: close\r\n\r\n"
            .utf8)
    private static let probeBody = Array("queue".utf8)

    private func probe(_ pod: PodTracker) {
        guard !pod.isProbing, !pod.isHealthy else { return }
        pod.isProbing = true
        ProbeAttempt.run(
            address: pod.address, request: Self.probeRequest, requiredBody: Self.probeBody,
            timeoutMs: settings.probeTimeoutMs, loop: loop
        ) { [unowned self] ok in
            pod.isProbing = false
            guard self.throttlers[pod.throttler.key] === pod.throttler,
                pod.throttler.pods.contains(where: { $0 === pod })
            else { return }  // the pod (or its revision) went away meanwhile
            if ok {
                pod.isHealthy = true
                pod.throttler.dispatch()
            } else {
                self.scheduleProbe(pod)
            }
        }
    }

    private func scheduleProbe(_ pod: PodTracker) {
        let timer = LoopTimer { [unowned self] _ in self.probe(pod) }
        loop.schedule(timer, at: loop.nowMs + settings.probeIntervalMs)
    }

    // MARK: - Requests

    public func dispose(_ request: RequestView) -> Disposition {
        let b = request.bytes
        let fields = ActivatorRequestFields(request)
        let handle = request.handle
        // 1. Health (kubelet): answered here, never forwarded.
        if fields.isKubeletProbe(b) {
            if isShuttingDown { return .respond(sigtermAnswer) }
            if let notReadyReason { return .respond(.error(500, notReadyReason)) }
            if let reporter, !reporter.isEstablished {
                Log.rateLimited("health check failed: autoscaler connection: \(reporter.lastError)")
                return .respond(notEstablishedAnswer)
            }
            return .respond(healthOK)
        }
        // 2. Network (ingress) probe.
        if let probe = fields.networkProbe, HTTP1Parser.equalsExact(b, probe, "probe") {
            guard let hash = fields.networkHash, !hash.isEmpty else { return .respond(hashMissing) }
            return .respond(LocalResponse(status: 200, extraHeaders: [("K-Network-Hash", request.string(hash))]))
        }
        // 3. "Are you an activator?"
        if let probe = fields.networkProbe, !probe.isEmpty {
            if HTTP1Parser.equalsExact(b, probe, "activator") { return .respond(activatorAnswer) }
            return .respond(.error(400, "unexpected probe header value: \"\(Self.htmlEscape(request.string(probe)))\""))
        }
        // 5. Which revision.
        let throttler: RevisionThrottler
        var actsAsIngress = false
        switch resolve(request, fields) {
        case .revision(let found, let viaRoute):
            throttler = found
            actsAsIngress = viaRoute
        case .missing(let name):
            let name = name ?? fields.revision.map(request.string) ?? ""
            return .respond(
                .error(404, "Error getting active endpoint: revision.serving.knative.dev \"\(name)\" not found"))
        case .notReady(let route):
            // Knative programs no ingress rule for a Route that is not ready, so its gateway answers 404; we keep
            // that status and say which revision is not ready and why (the route's message, from kn-local).
            return .respond(.error(404, route.notReady ?? "route \(route.key) is not ready"))
        }
        // 10. Concurrency reporter: the first request for a revision pokes the autoscaler at once.
        handle.context.flags |= ActivatorFlags.counted
        handle.context.state = ActivatorRequestState.revision(throttler)
        let spec = throttler.spec
        if let poke = stats.requestIn(namespace: spec.namespace, name: spec.name, key: throttler.key, nowMs: loop.nowMs)
        {
            reporter?.sendBinary(WireStatMessages.encode([poke]))
        }
        var options = ProxyOptions()
        options.timeoutMs = Int64(spec.timeoutSeconds) * 1000
        options.responseStartTimeoutMs = Int64(spec.responseStartTimeoutSeconds) * 1000
        options.idleTimeoutMs = Int64(spec.idleTimeoutSeconds) * 1000
        options.timeoutMessage = "activator request timeout"
        options.rewrite.dropped = fields.dropped
        // The pod's address becomes Host (`proxy(_:to:)`); the client's Host goes on as K-Original-Host unless
        // an earlier hop set one.
        options.rewrite.originalHostField = fields.hasOriginalHost ? nil : "K-Original-Host: "
        // A scheme a hop before us stated (X-Forwarded-Proto, or Forwarded's proto=) is never contradicted.
        options.rewrite.extraLines =
            actsAsIngress && !fields.hasForwardedProto && !fields.hasForwarded
            ? Self.ingressRequestLines : Self.proxyRequestLine
        handle.context.options = options
        // 12. Throttle: a pod with a free slot now, or wait.
        if let pod = throttler.acquire() { return proxy(handle, to: pod) }
        return wait(handle, on: throttler, bytes: request.bytes.count + 256 + request.pendingBodyLimit)
    }

    private func proxy(_ handle: RequestHandle, to pod: PodTracker) -> Disposition {
        handle.context.flags |= ActivatorFlags.holdsPod
        handle.context.state = ActivatorRequestState.pod(pod)
        handle.context.admittedMs = loop.nowMs
        var options = handle.context.options
        options.rewrite.hostLiteral = pod.addressBytes
        return .proxy(pod.pool, options)
    }

    private func wait(_ handle: RequestHandle, on throttler: RevisionThrottler, bytes: Int, front: Bool = false)
        -> Disposition
    {
        switch throttler.enqueue(handle, bytes: bytes, front: front) {
        case .full:
            return .respond(queueFull)
        case .queued:
            handle.context.flags |= ActivatorFlags.waiting
            handle.context.state = ActivatorRequestState.waiting(throttler, bytes: bytes)
            handle.armDeadline(atMs: handle.context.startMs + handle.context.options.timeoutMs)
            return .pending
        }
    }

    private func admit(_ handle: RequestHandle, to pod: PodTracker) {
        handle.context.flags &= ~ActivatorFlags.waiting
        handle.resume(proxy(handle, to: pod))
    }

    public func pendingExpired(_ request: RequestHandle) {
        leaveQueue(request)
        request.resume(.respond(timeoutAnswer))
    }

    public func pendingCancelled(_ request: RequestHandle) {
        leaveQueue(request)
    }

    private func leaveQueue(_ request: RequestHandle) {
        guard request.context.flags & ActivatorFlags.waiting != 0 else { return }
        request.context.flags &= ~ActivatorFlags.waiting
        guard case .waiting(let throttler, let bytes) = request.context.state(as: ActivatorRequestState.self) else {
            return
        }
        throttler.leave(bytes: bytes)
        request.context.state = ActivatorRequestState.revision(throttler)
    }

    /// The pod refused the connection before anything was sent: it goes back to probing and the request
    /// tries another pod (beyond upstream: Knative returns the 502, its issues #9888/#14818).
    public func connectFailed(_ request: RequestHandle, pool: UpstreamPool) -> Disposition? {
        guard case .pod(let pod) = request.context.state(as: ActivatorRequestState.self) else { return nil }
        let throttler = pod.throttler
        markUnhealthy(pod)
        request.context.flags &= ~ActivatorFlags.holdsPod
        request.context.state = ActivatorRequestState.revision(throttler)
        throttler.release(pod)
        if let other = throttler.acquire() { return proxy(request, to: other) }
        return wait(request, on: throttler, bytes: 512, front: true)
    }

    public func alternativePool(for request: RequestHandle, after pool: UpstreamPool) -> UpstreamPool? {
        guard case .pod(let pod) = request.context.state(as: ActivatorRequestState.self) else { return nil }
        let throttler = pod.throttler
        markUnhealthy(pod)
        guard let other = throttler.acquire() else { return nil }
        pod.inFlight -= 1
        request.context.state = ActivatorRequestState.pod(other)
        return other.pool
    }

    private func markUnhealthy(_ pod: PodTracker) {
        guard pod.isHealthy else { return }
        pod.isHealthy = false
        scheduleProbe(pod)
    }

    public func requestEnded(_ request: RequestHandle, status: Int, responseBytes: Int) {
        let flags = request.context.flags
        if flags & ActivatorFlags.waiting != 0 { leaveQueue(request) }
        let state = request.context.state(as: ActivatorRequestState.self)
        if flags & ActivatorFlags.counted != 0, let throttler = state?.throttler {
            stats.requestOut(key: throttler.key, nowMs: loop.nowMs)
        }
        if flags & ActivatorFlags.holdsPod != 0, case .pod(let pod) = state {
            request.context.flags &= ~ActivatorFlags.holdsPod
            pod.throttler.release(pod)
        }
        request.context.state = nil
    }

    // MARK: - Routing (spec §2.4, plus routes)

    /// Where a request goes: a revision's throttler; a revision that does not exist (named when a route names
    /// it; nil: the request's own revision header or none); or a route that is not ready.
    enum Resolution {
        /// `viaRoute`: found by a route's host (the activator is the ingress), not by the revision's headers or
        /// its cluster-local host.
        case revision(RevisionThrottler, viaRoute: Bool)
        case missing(String?)
        case notReady(RouteSpec)
    }

    private func resolve(_ request: RequestView, _ fields: ActivatorRequestFields) -> Resolution {
        let b = request.bytes
        if let ns = fields.namespace, let name = fields.revision, !ns.isEmpty, !name.isEmpty {
            return found(throttlerIndex.lookup(slice(b, ns), slice(b, name), separator: 0x2F))
        }
        guard let hostRange = fields.host else { return .missing(nil) }
        // <rev>.<ns>.svc.<cluster-domain>[:port]: split on the first three dots.
        var host = hostRange
        if let colon = (host.lowerBound..<host.upperBound).first(where: { b[$0] == 0x3A }) {
            host = host.lowerBound..<colon
        }
        var dots: [Int] = []
        for i in host where b[i] == 0x2E {
            dots.append(i)
            if dots.count == 3 { break }
        }
        if dots.count == 3,
            HTTP1Parser.equalsLower(b, (dots[1] + 1)..<dots[2], "svc"),
            Self.equalsLower(b, (dots[2] + 1)..<host.upperBound, clusterDomainBytes),
            let throttler = throttlerIndex.lookup(
                slice(b, (dots[0] + 1)..<dots[1]), slice(b, host.lowerBound..<dots[0]), separator: 0x2F, lowercase: true
            )
        {
            return .revision(throttler, viaRoute: false)
        }
        // Not a revision's host (or no such revision: a route may claim the same form, as kn-local's
        // `<service>.<ns>.svc.cluster.local`): the routes.
        if let box = routeIndex.lookup(slice(b, host), lowercase: true) {
            if box.route.notReady != nil || box.route.traffic.isEmpty { return .notReady(box.route) }
            let index = pickTarget(box.route)
            return found(
                throttlers[box.targetKeys[index]], name: box.route.traffic[index].revisionName, viaRoute: true)
        }
        if let box = tagIndex.lookup(slice(b, host), lowercase: true), let tag = box.tag,
            let index = box.route.traffic.firstIndex(where: { $0.tag == tag })
        {
            return found(
                throttlers[box.targetKeys[index]], name: box.route.traffic[index].revisionName, viaRoute: true)
        }
        return .missing(nil)
    }

    private func found(_ throttler: RevisionThrottler?, name: String? = nil, viaRoute: Bool = false) -> Resolution {
        throttler.map { .revision($0, viaRoute: viaRoute) } ?? .missing(name)
    }

    private func slice(_ b: UnsafeRawBufferPointer, _ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: b[range])
    }

    private lazy var clusterDomainBytes: [UInt8] = Array(settings.clusterDomain.lowercased().utf8)

    private static func equalsLower(_ b: UnsafeRawBufferPointer, _ range: Range<Int>, _ lower: [UInt8]) -> Bool {
        guard range.count == lower.count else { return false }
        for (k, i) in range.enumerated() where ByteClass.lower(b[i]) != lower[k] { return false }
        return true
    }

    /// The index of a traffic target picked by percent.
    private func pickTarget(_ route: RouteSpec) -> Int {
        var roll = Int.random(in: 0..<100)
        for (index, target) in route.traffic.enumerated() {
            if roll < target.percent { return index }
            roll -= target.percent
        }
        return route.traffic.count - 1
    }

    // MARK: - Stats and shutdown

    private func statsTick(_ nowMs: Int64) {
        let messages = stats.tick(nowMs: nowMs)
        if !messages.isEmpty { reporter?.sendBinary(WireStatMessages.encode(messages)) }
        if let statsTimer { loop.schedule(statsTimer, at: nowMs + 1000) }
    }

    /// SIGTERM: health answers 500 from now on; traffic is still served.
    public func beginShutdown() { isShuttingDown = true }

    /// Prometheus text for the metrics port.
    public func metricsText() -> String {
        var out = "# TYPE kn_revision_request_concurrency gauge\n"
        for (key, value) in stats.concurrency {
            out += "kn_revision_request_concurrency{revision=\"\(key)\"} \(value)\n"
        }
        out += "# TYPE kn_revision_request_queued gauge\n# TYPE kn_revision_request_active gauge\n"
        out += "# TYPE kn_revision_capacity gauge\n"
        for (key, t) in throttlers.sorted(by: { $0.key < $1.key }) {
            out += "kn_revision_request_queued{revision=\"\(key)\"} \(t.waiting)\n"
            out += "kn_revision_request_active{revision=\"\(key)\"} \(t.pods.reduce(0) { $0 + $1.inFlight })\n"
            out += "kn_revision_capacity{revision=\"\(key)\"} \(t.capacity)\n"
        }
        out += "# TYPE kn_activator_stats_conn_reachable gauge\n"
        out += "kn_activator_stats_conn_reachable{peer=\"autoscaler\"} \(reporter?.isEstablished == true ? 1 : 0)\n"
        return out
    }

    static func htmlEscape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "'": out += "&#39;"
            case "\"": out += "&#34;"
            default: out.append(c)
            }
        }
        return out
    }
}

/// A route in the host indexes (with the tag for tag hosts).
final class RouteBox {
    let route: RouteSpec
    let tag: String?
    /// "ns/revision" per traffic target, built once.
    let targetKeys: [String]
    init(_ route: RouteSpec, tag: String? = nil) {
        self.route = route
        self.tag = tag
        targetKeys = route.traffic.map { "\(route.namespace)/\($0.revisionName)" }
    }
}

/// Headers the activator looks at, in one pass.
struct ActivatorRequestFields {
    var userAgent: Range<Int>?
    var kubeletProbe: Range<Int>?
    var networkProbe: Range<Int>?
    var networkHash: Range<Int>?
    var revision: Range<Int>?
    var namespace: Range<Int>?
    var host: Range<Int>?
    var hasOriginalHost = false
    var hasForwardedProto = false
    /// The client sent `Forwarded` (whose `proto=` the activator must not contradict).
    var hasForwarded = false
    /// Fields not to forward: Knative-Serving-Revision/-Namespace, K-Network-Hash, any K-Proxy-Request.
    var dropped = FieldSet()

    init(_ request: RequestView) {
        let b = request.bytes
        for (index, field) in request.head.fields.enumerated() {
            let name = field.name
            switch field.kind {
            case .userAgent: if userAgent == nil { userAgent = field.value }
            case .host: if host == nil { host = field.value }
            case .other:
                switch name.count {
                case 14:
                    if HTTP1Parser.equalsLower(b, name, "k-network-hash") {
                        if networkHash == nil { networkHash = field.value }
                        dropped.insert(index)
                    }
                case 15:
                    if HTTP1Parser.equalsLower(b, name, "k-network-probe") {
                        if networkProbe == nil { networkProbe = field.value }
                    } else if HTTP1Parser.equalsLower(b, name, "k-kubelet-probe") {
                        if kubeletProbe == nil { kubeletProbe = field.value }
                    } else if HTTP1Parser.equalsLower(b, name, "k-original-host") {
                        hasOriginalHost = true
                    } else if HTTP1Parser.equalsLower(b, name, "k-proxy-request") {
                        dropped.insert(index)
                    }
                case 9:
                    if HTTP1Parser.equalsLower(b, name, "forwarded") { hasForwarded = true }
                case 17:
                    if HTTP1Parser.equalsLower(b, name, "x-forwarded-proto") { hasForwardedProto = true }
                case 24:
                    if HTTP1Parser.equalsLower(b, name, "knative-serving-revision") {
                        if revision == nil { revision = field.value }
                        dropped.insert(index)
                    }
                case 25:
                    if HTTP1Parser.equalsLower(b, name, "knative-serving-namespace") {
                        if namespace == nil { namespace = field.value }
                        dropped.insert(index)
                    }
                default: break
                }
            default: break
            }
        }
    }

    func isKubeletProbe(_ b: UnsafeRawBufferPointer) -> Bool {
        if let kubelet = kubeletProbe, !kubelet.isEmpty { return true }
        guard let ua = userAgent else { return false }
        return HTTP1Parser.hasPrefixExact(b, ua, "kube-probe/")
    }
}
