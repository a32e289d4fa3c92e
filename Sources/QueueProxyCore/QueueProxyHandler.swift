// The queue-proxy's request pipeline (spec §1.3, §1.4): health checks and probes answered here, then stats,
// Host restore, the breaker, timeouts and the Forwarded shim, then the proxy to the user container.
// One handler per loop; what must be process-wide (stats, drain state, metrics) is shared and Sendable.
import KnativeWire
import ProxyCore
import Synchronization

/// Everything the queue-proxy's behaviour depends on, parsed from its environment.
public struct QueueProxySettings: Sendable {
    public var containerConcurrency = 0
    public var timeoutMs: Int64 = 300_000
    public var responseStartTimeoutMs: Int64 = 0
    public var idleTimeoutMs: Int64 = 0
    public var namespace = ""
    public var revision = ""
    public var service = ""
    public var configuration = ""
    public var podName = ""
    public var podIP = ""
    public var probes: [ProbeSpec] = []
    /// ENABLE_HTTP2_AUTO_DETECTION: HTTP readiness probes try h2c first.
    public var autodetectHTTP2 = false
    public var requestLog = false
    public var requestLogProbes = false

    public init() {}
}

/// Process-wide state shared by every loop and the main thread.
public final class QueueProxyShared: Sendable {
    public let stats: RequestStats
    public let drainer: Drainer
    public let metrics: QueueMetrics
    /// The last completed window's `Stat`, encoded (what `/metrics` on the stats port returns).
    public let statSnapshot: Mutex<[UInt8]>
    public let startMs: Int64

    public init(settings: QueueProxySettings, drainQuietMs: Int64, nowMs: Int64) {
        stats = RequestStats(nowMs: nowMs)
        drainer = Drainer(quietMs: drainQuietMs)
        metrics = QueueMetrics(
            labels:
                "namespace_name=\"\(settings.namespace)\",revision_name=\"\(settings.revision)\",pod_name=\"\(settings.podName)\""
        )
        statSnapshot = Mutex(Stat(podName: settings.podName).encoded())  // before the first tick: pod name only
        startMs = nowMs
    }

    /// Closes the stats window and publishes the `Stat` for the autoscaler (every 1 s, spec §1.9).
    public func reportWindow(nowMs: Int64, podName: String) {
        let window = stats.closeWindow(nowMs: nowMs)
        var stat = Stat(podName: podName)
        stat.averageConcurrentRequests = window.averageConcurrency
        stat.averageProxiedConcurrentRequests = window.averageProxiedConcurrency
        stat.requestCount = Double(window.requestCount)  // per 1 s period: the count is the rate
        stat.proxiedRequestCount = Double(window.proxiedRequestCount)
        stat.processUptime = Double(nowMs - startMs) / 1000
        let bytes = stat.encoded()
        statSnapshot.withLock { $0 = bytes }
        metrics.setConcurrency(stats.concurrency)
    }
}

/// Headers the pipeline looks at, found in one pass over the fields.
struct KnativeRequestFields {
    var userAgent: Range<Int>?
    var networkProbe: Range<Int>?
    var networkHash: Range<Int>?
    var kubeletProbe: Range<Int>?
    var proxyRequest: Range<Int>?
    var originalHost: Range<Int>?
    var originalHostIndex = -1
    var forwarded = false
    var forwardedFor: Range<Int>?
    var forwardedHost: Range<Int>?
    var forwardedProto: Range<Int>?
    var servingHeaders = FieldSet()
    var servingTag: Range<Int>?
    var defaultRoute: Range<Int>?

    init(_ request: RequestView) {
        let b = request.bytes
        for (index, field) in request.head.fields.enumerated() {
            let name = field.name
            switch field.kind {
            case .userAgent: if userAgent == nil { userAgent = field.value }
            case .xForwardedFor: if forwardedFor == nil { forwardedFor = field.value }
            case .other:
                switch name.count {
                case 9: if HTTP1Parser.equalsLower(b, name, "forwarded") { forwarded = true }
                case 14:
                    if networkHash == nil && HTTP1Parser.equalsLower(b, name, "k-network-hash") {
                        networkHash = field.value
                    }
                case 15:
                    if HTTP1Parser.equalsLower(b, name, "k-network-probe") {
                        if networkProbe == nil { networkProbe = field.value }
                    } else if HTTP1Parser.equalsLower(b, name, "k-kubelet-probe") {
                        if kubeletProbe == nil { kubeletProbe = field.value }
                    } else if HTTP1Parser.equalsLower(b, name, "k-proxy-request") {
                        if proxyRequest == nil { proxyRequest = field.value }
                    } else if HTTP1Parser.equalsLower(b, name, "k-original-host") {
                        if originalHost == nil {
                            originalHost = field.value
                            originalHostIndex = index
                        }
                    }
                case 16:
                    if forwardedHost == nil && HTTP1Parser.equalsLower(b, name, "x-forwarded-host") {
                        forwardedHost = field.value
                    }
                case 17:
                    if forwardedProto == nil && HTTP1Parser.equalsLower(b, name, "x-forwarded-proto") {
                        forwardedProto = field.value
                    }
                case 19:
                    if servingTag == nil && HTTP1Parser.equalsLower(b, name, "knative-serving-tag") {
                        servingTag = field.value
                    }
                case 24:
                    if HTTP1Parser.equalsLower(b, name, "knative-serving-revision") { servingHeaders.insert(index) }
                case 25:
                    if HTTP1Parser.equalsLower(b, name, "knative-serving-namespace") { servingHeaders.insert(index) }
                case 29:
                    if defaultRoute == nil && HTTP1Parser.equalsLower(b, name, "knative-serving-default-route") {
                        defaultRoute = field.value
                    }
                default: break
                }
            default: break
            }
        }
    }

    /// A health-check user agent (spec §0.2): kubelet, the activator's or the autoscaler's prober.
    func isHealthCheck(_ b: UnsafeRawBufferPointer) -> Bool {
        guard let ua = userAgent else { return false }
        return HTTP1Parser.hasPrefixExact(b, ua, "kube-probe/")
            || HTTP1Parser.hasPrefixExact(b, ua, "Knative-Activator-Probe")
            || HTTP1Parser.hasPrefixExact(b, ua, "Knative-Autoscaling-Probe")
    }
}

/// The `kn.route.tag` attribute (spec §1.11) from `Knative-Serving-Tag` and `Knative-Serving-Default-Route`.
public enum RouteTag {
    public static func value(tag: String?, defaultRoute: String?) -> String {
        let tag = tag ?? ""
        let isDefault = defaultRoute ?? ""
        if tag.isEmpty { return isDefault.isEmpty ? "kn:disabled" : "kn:default" }
        return isDefault == "true" ? "kn:undefined" : tag
    }
}

/// What the queue-proxy keeps per request (`RequestContext.state`); most requests keep nothing.
enum QueueRequestState: RequestState {
    /// The request carried route-tag headers: the tag its metrics are labelled with.
    case routeTag(String)
    /// Request logging is on: the entry, which also holds the route tag.
    case logged(RequestLogEntry)

    var routeTag: String? {
        switch self {
        case .routeTag(let tag): tag
        case .logged(let entry): entry.routeTag
        }
    }
}

/// Lets a probe verdict that arrives during `dispose` be answered directly instead of through `resume`.
private final class ProbeVerdict {
    var isSettled = false
    var immediate: Bool?
}

/// The main port's responder.
public final class QueueProxyHandler: HTTPResponder {
    let settings: QueueProxySettings
    let shared: QueueProxyShared
    let pool: UpstreamPool
    unowned(unsafe) let loop: EventLoop  // the loop keeps us in its locals and outlives us
    public private(set) var breaker: Breaker?
    public let prober: ReadinessProber
    private let baseOptions: ProxyOptions
    private let forwardedShim = ForwardedShim()

    // Prepared answers: nothing is built per request on these paths.
    private let queueReady = LocalResponse.text(200, "queue")
    private let queueNotReady = LocalResponse(status: 503)
    private let shuttingDown = LocalResponse.error(503, "shutting down")
    private let hashMissing = LocalResponse.error(
        400, "a probe request must contain a non-empty \"K-Network-Hash\" header")
    private let queueFull = LocalResponse.error(503, "pending request queue full")
    private let requestTimeout = LocalResponse.text(504, "request timeout")

    public init(settings: QueueProxySettings, shared: QueueProxyShared, pool: UpstreamPool, loop: EventLoop) {
        self.settings = settings
        self.shared = shared
        self.pool = pool
        self.loop = loop
        prober = ReadinessProber(specs: settings.probes, loop: loop, autodetectHTTP2: settings.autodetectHTTP2)
        var options = ProxyOptions()
        options.timeoutMs = settings.timeoutMs
        options.responseStartTimeoutMs = settings.responseStartTimeoutMs
        options.idleTimeoutMs = settings.idleTimeoutMs
        options.timeoutMessage = "request timeout"  // upstream's timeout handler text (spec §1.7)
        baseOptions = options
        if settings.containerConcurrency > 0 {
            breaker = Breaker(capacity: settings.containerConcurrency, queueDepth: 10 * settings.containerConcurrency) {
                [unowned self] handle in self.admitted(handle)
            }
        }
    }

    public func dispose(_ request: RequestView) -> Disposition {
        let b = request.bytes
        let fields = KnativeRequestFields(request)
        let handle = request.handle
        let isProbe = fields.networkProbe.map { !$0.isEmpty } ?? false
        if isProbe { handle.context.flags |= QueueProxyFlags.probe }
        // Route tags are rare: only requests that carry the headers pay for a String.
        var routeTag: String?
        if fields.servingTag != nil || fields.defaultRoute != nil {
            let tag = RouteTag.value(
                tag: fields.servingTag.map(request.string), defaultRoute: fields.defaultRoute.map(request.string))
            routeTag = tag
            handle.context.state = QueueRequestState.routeTag(tag)
        }
        if settings.requestLog {
            let entry = RequestLogEntry(request)
            entry.routeTag = routeTag
            handle.context.state = QueueRequestState.logged(entry)
        }

        // Drainer and health handler (table 1.4).
        if fields.isHealthCheck(b) {
            handle.context.flags |= QueueProxyFlags.probe
            if shared.drainer.isDraining { return .respond(shuttingDown) }
            guard let value = fields.networkProbe, HTTP1Parser.equalsExact(b, value, "queue") else {
                let text = fields.networkProbe.map(request.string) ?? ""
                return .respond(.error(400, "unexpected probe header value: \(text)"))
            }
            // The verdict may come at once (no probe configured, a refused connect) or after a round.
            let verdict = ProbeVerdict()
            prober.probe { [queueReady, queueNotReady] ready in
                if verdict.isSettled {
                    handle.resume(.respond(ready ? queueReady : queueNotReady))
                } else {
                    verdict.immediate = ready
                }
            }
            verdict.isSettled = true
            if let ready = verdict.immediate { return .respond(ready ? queueReady : queueNotReady) }
            return .pending
        }
        if let value = fields.networkProbe, HTTP1Parser.equalsExact(b, value, "probe") {
            if shared.drainer.isDraining { return .respond(shuttingDown) }
            guard let hash = fields.networkHash, !hash.isEmpty else { return .respond(hashMissing) }
            return .respond(LocalResponse(status: 200, extraHeaders: [("K-Network-Hash", request.string(hash))]))
        }
        shared.drainer.requestArrived(nowMs: loop.nowMs)

        // Forwarded shim and the revision headers' removal apply to every proxied request.
        var options = baseOptions
        options.rewrite.dropped = fields.servingHeaders
        if !fields.forwarded
            && (fields.forwardedFor != nil || fields.forwardedHost != nil || fields.forwardedProto != nil)
        {
            options.rewrite.fieldWriter = forwardedShim
            options.rewrite.writerValues = (fields.forwardedFor, fields.forwardedHost, fields.forwardedProto)
        }
        // A kubelet probe by header bypasses stats, Host restore and the breaker (spec §1.3 step 1).
        if let kubelet = fields.kubeletProbe, !kubelet.isEmpty {
            handle.context.admittedMs = loop.nowMs
            return .proxy(pool, options)
        }
        let proxied = fields.proxyRequest.map { HTTP1Parser.equalsExact(b, $0, "activator") } ?? false
        handle.context.flags |= QueueProxyFlags.counted | (proxied ? QueueProxyFlags.proxied : 0)
        shared.stats.requestIn(proxied: proxied, nowMs: loop.nowMs)
        if let host = fields.originalHost, !host.isEmpty {
            options.rewrite.host = host
            options.rewrite.dropped.insert(fields.originalHostIndex)
        }
        guard let breaker else {
            handle.context.admittedMs = loop.nowMs
            return .proxy(pool, options)
        }
        switch breaker.acquire(handle) {
        case .admitted:
            handle.context.flags |= QueueProxyFlags.holdsSlot
            handle.context.admittedMs = loop.nowMs
            shared.metrics.setQueueDepth(breaker.depth)
            return .proxy(pool, options)
        case .queued:
            handle.context.flags |= QueueProxyFlags.waiting
            handle.context.options = options
            handle.armDeadline(atMs: handle.context.startMs + settings.timeoutMs)
            shared.metrics.setQueueDepth(breaker.depth)
            return .pending
        case .rejected:
            return .respond(queueFull)
        }
    }

    /// The breaker gave a waiting request its slot.
    private func admitted(_ handle: RequestHandle) {
        handle.context.flags = (handle.context.flags & ~QueueProxyFlags.waiting) | QueueProxyFlags.holdsSlot
        handle.context.admittedMs = loop.nowMs
        handle.resume(.proxy(pool, handle.context.options))
    }

    public func pendingExpired(_ request: RequestHandle) {
        leaveQueue(request)
        request.resume(.respond(requestTimeout))
    }

    public func pendingCancelled(_ request: RequestHandle) {
        leaveQueue(request)
    }

    private func leaveQueue(_ request: RequestHandle) {
        guard request.context.flags & QueueProxyFlags.waiting != 0 else { return }
        request.context.flags &= ~QueueProxyFlags.waiting
        breaker?.cancelWaiting()
    }

    public func requestEnded(_ request: RequestHandle, status: Int, responseBytes: Int) {
        let flags = request.context.flags
        let now = loop.nowMs
        if flags & QueueProxyFlags.counted != 0 {
            shared.stats.requestOut(proxied: flags & QueueProxyFlags.proxied != 0, nowMs: now)
        }
        if flags & QueueProxyFlags.holdsSlot != 0 {
            request.context.flags &= ~QueueProxyFlags.holdsSlot
            breaker?.release()
        }
        if let breaker { shared.metrics.setQueueDepth(breaker.depth) }
        let isProbe = flags & QueueProxyFlags.probe != 0
        let state = request.context.state(as: QueueRequestState.self)
        if !isProbe && request.context.admittedMs > 0 {
            shared.metrics.observe(
                status: status, seconds: Double(now - request.context.admittedMs) / 1000,
                routeTag: state?.routeTag ?? "kn:disabled")
        }
        if case .logged(let entry) = state, !isProbe || settings.requestLogProbes {
            let latency = Double(now - request.context.startMs) / 1000
            Log.write(
                entry.line(status: status, size: responseBytes, latencySeconds: latency, podIP: settings.podIP), to: 1)
        }
        request.context.state = nil
    }
}

/// The admin port (spec §1.15): `/wait-for-drain` only.
public final class QueueProxyAdminHandler: HTTPResponder {
    private let drainer: Drainer
    private unowned(unsafe) let loop: EventLoop  // the loop keeps us (its listener's responder) and outlives us
    private var waiters: [RequestHandle] = []
    private var timer: LoopTimer?
    private var resetAtMs = Int64.max
    private let notFound = LocalResponse.error(404, "404 page not found")

    public init(drainer: Drainer, loop: EventLoop) {
        self.drainer = drainer
        self.loop = loop
    }

    public func dispose(_ request: RequestView) -> Disposition {
        guard Self.path(request) == "/wait-for-drain" else { return .respond(notFound) }
        check()  // an overdue reset or a finished drain answers the earlier waiters first
        drainer.start(nowMs: loop.nowMs)
        if isDone { return .respond(LocalResponse(status: 200)) }
        waiters.append(request.handle)
        // Without SIGTERM within 1 s the drain is reset (a container restarted by its liveness probe).
        if !drainer.receivedSigterm { resetAtMs = min(resetAtMs, loop.nowMs + 1000) }
        check()
        return .pending
    }

    /// Drain() has returned: reset, or the quiet period passed.
    private var isDone: Bool {
        !drainer.isDraining || (drainer.drainedAtMs.map { loop.nowMs >= $0 } ?? true)
    }

    /// Answers the waiters when the drain is over; otherwise re-arms for the next moment that matters.
    private func check() {
        if loop.nowMs >= resetAtMs {
            resetAtMs = .max
            if !drainer.receivedSigterm { drainer.reset() }
        }
        if isDone {
            let done = waiters
            waiters.removeAll()
            for handle in done { handle.resume(.respond(LocalResponse(status: 200))) }
            return
        }
        let next = min(resetAtMs, drainer.drainedAtMs ?? .max)
        let timer = self.timer ?? LoopTimer { [unowned self] _ in self.check() }
        self.timer = timer
        loop.schedule(timer, at: next)
    }

    public func pendingCancelled(_ request: RequestHandle) {
        waiters.removeAll { $0 === request }
    }

    public func pendingExpired(_ request: RequestHandle) {}

    static func path(_ request: RequestView) -> String {
        let target = request.string(request.head.target)
        return String(target.prefix { $0 != "?" })
    }
}

extension MetricsEndpoint {
    /// The queue-proxy's autoscaler stats: the last window's `Stat`, always protobuf whatever `Accept` says.
    public static func autoscalerStats(_ shared: QueueProxyShared) -> MetricsEndpoint {
        MetricsEndpoint {
            LocalResponse(status: 200, body: shared.statSnapshot.withLock { $0 }, contentType: "application/protobuf")
        }
    }
}
