// A fake Kubernetes API server (what a `kubectl proxy` sidecar serves) for the activator's `--kube-api` mode,
// faithful where the activator depends on it: one global resourceVersion counter; LIST answers carry it in
// `metadata.resourceVersion` and filter by namespace, `labelSelector` (k=v,…) and `fieldSelector`
// (metadata.name=…); WATCH (`watch=1`) replays the history after the given resourceVersion, then streams new
// events as chunked JSON lines (ADDED, MODIFIED, DELETED, BOOKMARK when `allowWatchBookmarks`), ends the
// stream cleanly at `timeoutSeconds`, and answers a compacted (too old) resourceVersion with an ERROR event
// carrying a 410 Status (or HTTP 410, by choice). It can go down and come back on the same port.
// Objects are shaped as the API serves them (knative.dev/serving v1 Revision, core/v1 Endpoints/ConfigMap).
import Foundation
import Glibc

@testable import ProxyCore

final class FakeKubeAPI: @unchecked Sendable {
    /// One stored object.
    struct Object {
        var collection: Collection
        var namespace: String
        var name: String
        var labels: [String: String]
        /// The object's JSON without `metadata.resourceVersion` (added when served).
        var body: [String: Any]
        var resourceVersion: Int
    }

    enum Collection: String {
        case revisions, endpoints, configmaps

        var listKind: String {
            switch self {
            case .revisions: return "RevisionList"
            case .endpoints: return "EndpointsList"
            case .configmaps: return "ConfigMapList"
            }
        }
        var apiVersion: String { self == .revisions ? "serving.knative.dev/v1" : "v1" }
    }

    /// One change, as watches replay it.
    struct Event {
        var type: String
        var object: Object
    }

    /// A request the fake received: its method and path, and the query's parameters.
    struct Request {
        var path: String
        var query: [String: String]
        var isWatch: Bool { query["watch"] == "1" || query["watch"] == "true" }
    }

    private let condition = NSCondition()
    // Guarded by `condition`:
    private var objects: [String: Object] = [:]
    private var history: [Event] = []
    private var version = 100
    /// Versions at or below this are compacted: watching from them is 410 Gone.
    private var compactedThrough = 0
    /// Bumped when open watches must end with an ERROR 410 (`expireWatches`) or be cut (`goDown`).
    private var expiryEpoch = 0
    private var cutEpoch = 0
    private var bookmarkEpoch = 0
    /// Lines sent as they are on every watch open at the time (`sendRaw`), numbered from 1.
    private var rawLines: [(number: Int, line: String)] = []
    private var requestLog: [Request] = []
    /// Watch streams open now, by path.
    private var openWatchCount: [String: Int] = [:]
    private var isUp = false
    private var listenFD: Int32 = -1
    private var acceptThreadDone: DispatchSemaphore?
    private var connections: [TestSocket] = []
    /// Answer a too-old watch with HTTP 410 instead of a 200 stream holding an ERROR event.
    var goneAsHTTPStatus = false
    /// How a scripted watch request is answered (an API, or the proxy in front of it, failing).
    enum WatchAnswer {
        /// An HTTP status with a Status body padded to `bodyBytes`.
        case status(Int, bodyBytes: Int)
        /// A 200 stream whose one event is an ERROR carrying a Status of `code`, then its end.
        case errorEvent(Int)
    }
    /// Answers for the next watch requests of a path, in order, instead of a stream.
    private var scriptedWatchAnswers: [String: [WatchAnswer]] = [:]

    private(set) var port: UInt16 = 0
    var url: String { "http://127.0.0.1:\(port)" }

    init() throws {
        try goUp()
    }

    deinit { goDown() }

    // MARK: - Test controls

    /// The requests so far.
    var requests: [Request] { condition.withLock { requestLog } }

    /// The next watch requests of `path` get these answers, one each, instead of a stream.
    func failNextWatches(_ path: String, _ answers: [WatchAnswer]) {
        condition.withLock { scriptedWatchAnswers[path, default: []] += answers }
    }

    /// LIST requests so far for `path` (e.g. `/apis/serving.knative.dev/v1/revisions`).
    func listCount(_ path: String) -> Int { requests.filter { $0.path == path && !$0.isWatch }.count }

    /// WATCH requests so far for `path`.
    func watches(_ path: String) -> [Request] { requests.filter { $0.path == path && $0.isWatch } }

    /// Watch streams of `path` open now (their 200 head sent, not ended).
    func openWatches(_ path: String) -> Int { condition.withLock { openWatchCount[path, default: 0] } }

    /// The current resourceVersion.
    var resourceVersion: Int { condition.withLock { version } }

    /// Creates or replaces an object (ADDED or MODIFIED).
    func put(
        _ collection: Collection, namespace: String, name: String, labels: [String: String] = [:], _ body: [String: Any]
    ) {
        condition.withLock {
            version += 1
            let key = "\(collection.rawValue)/\(namespace)/\(name)"
            let type = objects[key] == nil ? "ADDED" : "MODIFIED"
            let object = Object(
                collection: collection, namespace: namespace, name: name, labels: labels, body: body,
                resourceVersion: version)
            objects[key] = object
            history.append(Event(type: type, object: object))
            condition.broadcast()
        }
    }

    /// Deletes an object (DELETED, carrying its last state at a new version).
    func delete(_ collection: Collection, namespace: String, name: String) {
        condition.withLock {
            let key = "\(collection.rawValue)/\(namespace)/\(name)"
            guard var object = objects.removeValue(forKey: key) else { return }
            version += 1
            object.resourceVersion = version
            history.append(Event(type: "DELETED", object: object))
            condition.broadcast()
        }
    }

    /// Compacts the history (every version so far is too old) and ends every open watch with an ERROR event
    /// carrying a 410 Status, as the API does when etcd compacted past a watcher.
    func expireWatches() {
        condition.withLock {
            compactedThrough = version
            expiryEpoch += 1
            condition.broadcast()
        }
    }

    /// Sends a BOOKMARK with the current version on every open watch that allowed them.
    func bookmark() {
        condition.withLock {
            bookmarkEpoch += 1
            condition.broadcast()
        }
    }

    /// Sends `line` as it is (plus a newline) on every open watch: a broken API or proxy.
    func sendRaw(_ line: String) {
        condition.withLock {
            rawLines.append((rawLines.count + 1, line))
            condition.broadcast()
        }
    }

    /// Stops listening and cuts every connection (the API is unreachable: connects are refused).
    func goDown() {
        let (fd, done): (Int32, DispatchSemaphore?) = condition.withLock {
            guard isUp else { return (-1, nil) }
            isUp = false
            cutEpoch += 1
            condition.broadcast()
            return (listenFD, acceptThreadDone)
        }
        guard fd >= 0 else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        done?.wait()  // every accepted connection is in `connections` now
        Glibc.close(fd)
        // Under the lock, as each serving thread closes its socket under it: a descriptor is shut down only while
        // it is still this fake's. Outside, a number just closed could already be another socket's (a test
        // client's), which would see an EOF it never caused.
        condition.withLock {
            for connection in connections { shutdown(connection.fd, Int32(SHUT_RDWR)) }
            connections = []
        }
    }

    /// Listens again (on the same port after the first time).
    func goUp() throws {
        let (fd, bound) = try listenOnLoopback(port: port == 0 ? freePort() : port, backlog: 128)
        port = bound
        let done = DispatchSemaphore(value: 0)
        condition.withLock {
            listenFD = fd
            acceptThreadDone = done
            isUp = true
        }
        Thread { [self] in
            defer { done.signal() }
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                let socket = TestSocket(fd: client)
                condition.withLock { connections.append(socket) }
                Thread { [self] in
                    defer {
                        condition.withLock {
                            connections.removeAll { $0 === socket }
                            socket.close()  // under the lock: see `goDown`
                        }
                    }
                    try? serve(socket)
                }.start()
            }
        }.start()
    }

    // MARK: - Serving

    private func serve(_ socket: TestSocket) throws {
        let (start, _) = try socket.readHead()
        let parts = start.split(separator: " ")
        guard parts.count == 3, parts[0] == "GET" else {
            return try socket.send(Self.status(405, "MethodNotAllowed", ""))
        }
        let target = String(parts[1])
        let path = String(target.prefix { $0 != "?" })
        var query: [String: String] = [:]
        if let q = target.firstIndex(of: "?") {
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                query[String(kv[0]).removingPercentEncoding ?? ""] =
                    kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? "") : ""
            }
        }
        let request = Request(path: path, query: query)
        condition.withLock { requestLog.append(request) }
        guard let (collection, namespace) = Self.route(path) else {
            return try socket.send(Self.status(404, "NotFound", "the server could not find the requested resource"))
        }
        let filter = try Filter(query)
        let scripted: WatchAnswer? = condition.withLock {
            guard request.isWatch, scriptedWatchAnswers[path]?.isEmpty == false else { return nil }
            return scriptedWatchAnswers[path]!.removeFirst()
        }
        switch scripted {
        case .status(let code, let bodyBytes):
            let reason = code == 410 ? "Expired" : "InternalError"
            return try socket.send(Self.status(code, reason, String(repeating: "x", count: max(0, bodyBytes - 120))))
        case .errorEvent(let code):
            let line = Array(
                (#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#
                    + #""message":"an error on the server","reason":"InternalError","code":\#(code)}}"# + "\n").utf8)
            return try socket.send(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                    + "Connection: close\r\n\r\n\(String(line.count, radix: 16))\r\n\(String(decoding: line, as: UTF8.self))\r\n0\r\n\r\n"
            )
        case nil:
            break
        }
        if request.isWatch {
            try watch(socket, collection, namespace, filter, query) { isOpen in
                condition.withLock { openWatchCount[path, default: 0] += isOpen ? 1 : -1 }
            }
        } else {
            try list(socket, collection, namespace, filter, query)
        }
    }

    /// `/apis/serving.knative.dev/v1/revisions`, `/api/v1/endpoints`, `/api/v1/namespaces/NS/configmaps`, and
    /// the namespaced forms of each.
    private static func route(_ path: String) -> (Collection, String?)? {
        let p = path.split(separator: "/").map(String.init)
        let base: ArraySlice<String>
        if p.starts(with: ["apis", "serving.knative.dev", "v1"]) {
            base = p[3...]
        } else if p.starts(with: ["api", "v1"]) {
            base = p[2...]
        } else {
            return nil
        }
        var namespace: String?
        var rest = Array(base)
        if rest.count == 3, rest[0] == "namespaces" {
            namespace = rest[1]
            rest = [rest[2]]
        }
        guard rest.count == 1, let collection = Collection(rawValue: rest[0]) else { return nil }
        if collection == .revisions && p[0] != "apis" || collection != .revisions && p[0] != "api" { return nil }
        return (collection, namespace)
    }

    struct Filter {
        var labels: [(String, String)] = []
        var name: String?

        init(_ query: [String: String]) throws {
            for term in (query["labelSelector"] ?? "").split(separator: ",") {
                let kv = term.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { throw TestError("fake kube API: unsupported labelSelector \(term)") }
                labels.append((kv[0], kv[1]))
            }
            for term in (query["fieldSelector"] ?? "").split(separator: ",") {
                let kv = term.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2, kv[0] == "metadata.name" else {
                    throw TestError("fake kube API: unsupported fieldSelector \(term)")
                }
                name = kv[1]
            }
        }

        func matches(_ object: Object, _ collection: Collection, _ namespace: String?) -> Bool {
            object.collection == collection && (namespace == nil || object.namespace == namespace)
                && (name == nil || object.name == name) && labels.allSatisfy { object.labels[$0.0] == $0.1 }
        }
    }

    /// A LIST; with `limit`, one page, and `metadata.continue` naming the next (the token is the first page's
    /// version and the offset: every page reports that version, as the API serves pages of one snapshot).
    private func list(
        _ socket: TestSocket, _ collection: Collection, _ namespace: String?, _ filter: Filter,
        _ query: [String: String]
    ) throws {
        var (items, rv) = condition.withLock {
            (
                objects.values.filter { filter.matches($0, collection, namespace) }.sorted {
                    ($0.namespace, $0.name) < ($1.namespace, $1.name)
                }, version
            )
        }
        var metadata: [String: Any] = [:]
        if let limit = Int(query["limit"] ?? ""), limit > 0 {
            var offset = 0
            if let token = query["continue"], !token.isEmpty {
                let parts = token.split(separator: ":").compactMap { Int($0) }
                guard parts.count == 2 else {
                    return try socket.send(Self.status(400, "BadRequest", "invalid continue token"))
                }
                (rv, offset) = (parts[0], parts[1])
            }
            let end = min(items.count, offset + limit)
            if end < items.count { metadata["continue"] = "\(rv):\(end)" }
            items = Array(items[min(offset, items.count)..<end])
        }
        metadata["resourceVersion"] = "\(rv)"
        let body: [String: Any] = [
            "kind": collection.listKind, "apiVersion": collection.apiVersion, "metadata": metadata,
            "items": items.map { Self.served($0, withKind: collection == .revisions) },
        ]
        let data = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        try socket.send(
            "HTTP/1.1 200 OK\r\nAudit-Id: fake\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(data.count)\r\nConnection: close\r\n\r\n")
        try socket.send(Array(data))
    }

    private func watch(
        _ socket: TestSocket, _ collection: Collection, _ namespace: String?, _ filter: Filter,
        _ query: [String: String], opened: (Bool) -> Void
    ) throws {
        let from = Int(query["resourceVersion"] ?? "") ?? 0
        let timeout = Double(query["timeoutSeconds"] ?? "") ?? 1800
        let bookmarks = query["allowWatchBookmarks"] == "true"
        let deadline = Date().addingTimeInterval(timeout)
        let (compacted, startExpiry, startCut, startBookmark, startRaw) = condition.withLock {
            (compactedThrough, expiryEpoch, cutEpoch, bookmarkEpoch, rawLines.count)
        }
        if from <= compacted && from != 0 && goneAsHTTPStatus {
            return try socket.send(
                Self.status(410, "Expired", "too old resource version: \(from) (\(compacted + 1))"))
        }
        try socket.send(
            "HTTP/1.1 200 OK\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\n"
                + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        opened(true)
        defer { opened(false) }
        func sendEvent(_ json: [String: Any]) throws {
            var line = Array(try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
            line.append(0x0A)
            // Split the line in two chunks now and then, as a proxy may: the reader must join them.
            let cut = line.count > 40 && Bool.random() ? line.count / 2 : line.count
            for part in [line[0..<cut], line[cut...]] where !part.isEmpty {
                try socket.send(Array((String(part.count, radix: 16) + "\r\n").utf8) + part + Array("\r\n".utf8))
            }
        }
        func gone() throws {
            try sendEvent([
                "type": "ERROR",
                "object": [
                    "kind": "Status", "apiVersion": "v1", "metadata": [:] as [String: Any], "status": "Failure",
                    "message": "too old resource version: \(from) (\(compacted + 1))", "reason": "Expired", "code": 410,
                ],
            ])
        }
        if from <= compacted && from != 0 {
            try gone()
            return try socket.send("0\r\n\r\n")
        }
        var sent = from
        var seenBookmark = startBookmark
        var sentRaw = startRaw
        while true {
            var raw: [String] = []
            let (events, expired, cut, bookmarkVersion, timedOut): ([Event], Bool, Bool, Int?, Bool) =
                condition.withLock {
                    while true {
                        let pending = history.filter {
                            $0.object.resourceVersion > sent && filter.matches($0.object, collection, namespace)
                        }
                        let bookmark = bookmarks && bookmarkEpoch != seenBookmark ? version : nil
                        raw = rawLines.filter { $0.number > max(startRaw, sentRaw) }.map(\.line)
                        sentRaw = rawLines.count
                        if !pending.isEmpty || !raw.isEmpty || expiryEpoch != startExpiry || cutEpoch != startCut
                            || bookmark != nil
                            || Date() >= deadline
                        {
                            seenBookmark = bookmarkEpoch
                            return (
                                pending, expiryEpoch != startExpiry, cutEpoch != startCut, bookmark, Date() >= deadline
                            )
                        }
                        _ = condition.wait(until: min(deadline, Date().addingTimeInterval(0.5)))
                    }
                }
            if cut { return }  // the connection is being shut down: no clean end
            if expired {
                try gone()
                return try socket.send("0\r\n\r\n")
            }
            for line in raw {
                let bytes = Array((line + "\n").utf8)
                try socket.send(Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + Array("\r\n".utf8))
            }
            for event in events {
                try sendEvent(["type": event.type, "object": Self.served(event.object, withKind: true)])
                sent = event.object.resourceVersion
            }
            if let bookmarkVersion {
                try sendEvent([
                    "type": "BOOKMARK",
                    "object": [
                        "kind": collection == .revisions
                            ? "Revision" : collection == .endpoints ? "Endpoints" : "ConfigMap",
                        "apiVersion": collection.apiVersion,
                        "metadata": ["resourceVersion": "\(bookmarkVersion)", "creationTimestamp": NSNull()],
                    ],
                ])
                sent = max(sent, bookmarkVersion)
            }
            if timedOut { return try socket.send("0\r\n\r\n") }
        }
    }

    /// The object as served: its body with `metadata.resourceVersion` (and kind/apiVersion in watch events and
    /// in Knative's lists; core lists leave them out of items).
    private static func served(_ object: Object, withKind: Bool) -> [String: Any] {
        var body = object.body
        var metadata = body["metadata"] as? [String: Any] ?? [:]
        metadata["resourceVersion"] = "\(object.resourceVersion)"
        body["metadata"] = metadata
        if !withKind {
            body.removeValue(forKey: "kind")
            body.removeValue(forKey: "apiVersion")
        }
        return body
    }

    private static func status(_ code: Int, _ reason: String, _ message: String) -> String {
        let body =
            #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"\#(message)","reason":"\#(reason)","code":\#(code)}"#
        return "HTTP/1.1 \(code) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\n\r\n\(body)"
    }
}

// MARK: - Objects shaped as the API serves them

extension FakeKubeAPI {
    /// A Knative Revision as the API server stores it after Knative's defaulting webhook.
    func putRevision(_ name: String, ns: String = "default", cc: Int = 0, timeout: Int = 300, h2c: Bool = false) {
        let service = String(name.split(separator: "-").first ?? Substring(name))
        let labels = [
            "serving.knative.dev/configuration": service, "serving.knative.dev/configurationGeneration": "1",
            "serving.knative.dev/configurationUID": "c0ffee00-0000-4000-8000-000000000001",
            "serving.knative.dev/routingState": "active", "serving.knative.dev/service": service,
            "serving.knative.dev/serviceUID": "c0ffee00-0000-4000-8000-000000000002",
        ]
        let body: [String: Any] = [
            "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": [
                "name": name, "namespace": ns, "uid": "uid-\(name)", "generation": 1,
                "creationTimestamp": "2026-12-05T08:00:00Z", "labels": labels,
                "annotations": [
                    "serving.knative.dev/creator": "admin",
                    "serving.knative.dev/routingStateModified": "2026-12-05T08:00:00Z",
                ],
                "ownerReferences": [
                    [
                        "apiVersion": "serving.knative.dev/v1", "kind": "Configuration", "name": service,
                        "uid": "c0ffee00-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true,
                    ]
                ],
            ],
            "spec": [
                "containerConcurrency": cc, "timeoutSeconds": timeout, "enableServiceLinks": false,
                "containers": [
                    [
                        "name": "user-container", "image": "gcr.io/knative-samples/helloworld-go@sha256:0000",
                        "ports": [["containerPort": 8080, "name": h2c ? "h2c" : "http1", "protocol": "TCP"]],
                        "readinessProbe": ["successThreshold": 1, "tcpSocket": ["port": 0]],
                        "resources": [:] as [String: Any],
                    ]
                ],
            ],
            "status": [
                "observedGeneration": 1, "actualReplicas": 0, "desiredReplicas": 0,
                "conditions": [["type": "Ready", "status": "True", "lastTransitionTime": "2026-12-05T08:00:00Z"]],
            ],
        ]
        put(.revisions, namespace: ns, name: name, labels: labels, body)
    }

    func deleteRevision(_ name: String, ns: String = "default") { delete(.revisions, namespace: ns, name: name) }

    /// The revision's private Endpoints (`<rev>-private`, serviceType Private): the queue-proxies. Each pod here
    /// is a port on 127.0.0.1, so each gets its own subset (Kubernetes groups addresses by identical ports).
    func putPrivateEndpoints(_ revision: String, ns: String = "default", ready: [UInt16], notReady: [UInt16] = []) {
        let labels = [
            "serving.knative.dev/revision": revision, "serving.knative.dev/revisionUID": "uid-\(revision)",
            "networking.internal.knative.dev/serverlessservice": revision,
            "networking.internal.knative.dev/serviceType": "Private", "app": revision,
            "serving.knative.dev/service": String(revision.split(separator: "-").first ?? ""),
            "service.kubernetes.io/headless": "",
        ]
        func subset(_ port: UInt16, ready: Bool) -> [String: Any] {
            let address: [String: Any] = [
                "ip": "127.0.0.1", "nodeName": "node-1",
                "targetRef": [
                    "kind": "Pod", "namespace": ns, "name": "\(revision)-deployment-\(port)", "uid": "pod-\(port)",
                ],
            ]
            return [
                ready ? "addresses" : "notReadyAddresses": [address],
                "ports": [
                    ["name": "http-usermetric", "port": 9091, "protocol": "TCP"],
                    ["name": "http", "port": Int(port), "protocol": "TCP"],
                    ["name": "https", "port": 8112, "protocol": "TCP"],
                    ["name": "http-autometric", "port": 9090, "protocol": "TCP"],
                    ["name": "http-istio", "port": Int(port), "protocol": "TCP"],
                ],
            ]
        }
        var body: [String: Any] = [
            "kind": "Endpoints", "apiVersion": "v1",
            "metadata": [
                "name": "\(revision)-private", "namespace": ns, "labels": labels, "uid": "eps-\(revision)-private",
                "creationTimestamp": "2026-12-05T08:00:00Z",
            ],
        ]
        let subsets = ready.map { subset($0, ready: true) } + notReady.map { subset($0, ready: false) }
        if !subsets.isEmpty { body["subsets"] = subsets }  // an Endpoints with no address has no subsets at all
        put(.endpoints, namespace: ns, name: "\(revision)-private", labels: labels, body)
    }

    func deletePrivateEndpoints(_ revision: String, ns: String = "default") {
        delete(.endpoints, namespace: ns, name: "\(revision)-private")
    }

    /// The revision's public Endpoints (named as the revision) go, as with the revision's ServerlessService.
    func deletePublicEndpoints(_ revision: String, ns: String = "default") {
        delete(.endpoints, namespace: ns, name: revision)
    }

    /// The revision's public Endpoints (named as the revision, serviceType Public): in proxy mode, the activators.
    func putPublicEndpoints(_ revision: String, ns: String = "default", activators: [String]) {
        let labels = [
            "serving.knative.dev/revision": revision, "serving.knative.dev/revisionUID": "uid-\(revision)",
            "networking.internal.knative.dev/serverlessservice": revision,
            "networking.internal.knative.dev/serviceType": "Public", "app": revision,
        ]
        var body: [String: Any] = [
            "kind": "Endpoints", "apiVersion": "v1",
            "metadata": ["name": revision, "namespace": ns, "labels": labels, "uid": "eps-\(revision)"],
        ]
        if !activators.isEmpty {
            body["subsets"] = [
                [
                    "addresses": activators.map {
                        [
                            "ip": $0,
                            "targetRef": ["kind": "Pod", "namespace": "knative-serving", "name": "activator-\($0)"],
                        ]
                    },
                    "ports": [
                        ["name": "https", "port": 8112, "protocol": "TCP"],
                        ["name": "http", "port": 8012, "protocol": "TCP"],
                    ],
                ]
            ]
        }
        put(.endpoints, namespace: ns, name: revision, labels: labels, body)
    }

    /// config-logging in `ns`.
    func putLoggingConfig(ns: String = "knative-serving", _ data: [String: String]) {
        let labels = ["app.kubernetes.io/name": "knative-serving", "app.kubernetes.io/component": "logging"]
        put(
            .configmaps, namespace: ns, name: "config-logging", labels: labels,
            [
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": ["name": "config-logging", "namespace": ns, "labels": labels, "uid": "cm-logging"],
                "data": data,
            ])
    }
}
