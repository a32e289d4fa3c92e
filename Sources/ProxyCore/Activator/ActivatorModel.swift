// The activator's view of the world, standing in for Kubernetes informers: revisions, their endpoints (the
// queue-proxies of their pods) and routes. Loaded from a JSON document, changed through the admin API.

/// A revision as the activator needs it.
public struct RevisionSpec: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var containerConcurrency = 0
    public var timeoutSeconds = 300
    public var responseStartTimeoutSeconds = 0
    public var idleTimeoutSeconds = 0
    /// "http1" or "h2c" (h2c arrives with the HTTP/2 issue; accepted and proxied as HTTP/1.1 until then).
    public var protocolName = "http1"

    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }

    public var key: String { namespace + "/" + name }

    var json: JSON {
        .object([
            ("namespace", .string(namespace)), ("name", .string(name)),
            ("containerConcurrency", .number(Double(containerConcurrency))),
            ("timeoutSeconds", .number(Double(timeoutSeconds))),
            ("responseStartTimeoutSeconds", .number(Double(responseStartTimeoutSeconds))),
            ("idleTimeoutSeconds", .number(Double(idleTimeoutSeconds))), ("protocol", .string(protocolName)),
        ])
    }
}

/// One traffic target of a route.
public struct TrafficTarget: Sendable, Equatable {
    public var revisionName: String
    public var percent: Int
    public var tag: String?

    public init(revisionName: String, percent: Int, tag: String? = nil) {
        self.revisionName = revisionName
        self.percent = percent
        self.tag = tag
    }
}

/// A route: host names → revisions by percent (beyond upstream: the activator acting as the ingress).
public struct RouteSpec: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var hosts: [String]
    public var traffic: [TrafficTarget]

    public init(namespace: String, name: String, hosts: [String], traffic: [TrafficTarget]) {
        self.namespace = namespace
        self.name = name
        self.hosts = hosts
        self.traffic = traffic
    }

    public var key: String { namespace + "/" + name }

    var json: JSON {
        .object([
            ("namespace", .string(namespace)), ("name", .string(name)), ("hosts", .array(hosts.map { .string($0) })),
            ("traffic", .array(traffic.map { t in
                var members: [(String, JSON)] = [("revisionName", .string(t.revisionName)), ("percent", .number(Double(t.percent)))]
                if let tag = t.tag { members.append(("tag", .string(tag))) }
                return .object(members)
            })),
        ])
    }
}

/// The whole state, as the config file and `GET /v1/state` write it.
public struct ActivatorDocument: Sendable, Equatable {
    public var revisions: [RevisionSpec] = []
    /// "namespace/name" → queue-proxy addresses.
    public var endpoints: [String: [SocketAddress]] = [:]
    public var routes: [RouteSpec] = []

    public init() {}

    /// A validation error naming the field, e.g. `revisions[1].containerConcurrency: expected an integer ≥ 0`.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
        public init(_ text: String) { description = text }
    }

    public static func parse(_ text: String) throws(Invalid) -> ActivatorDocument {
        let json: JSON
        do { json = try JSON.parse(text) } catch { throw Invalid("invalid JSON: \(error)") }
        guard json.objectValue != nil else { throw Invalid("expected a JSON object with revisions, endpoints, routes") }
        var document = ActivatorDocument()
        for (i, item) in (json["revisions"]?.arrayValue ?? []).enumerated() {
            document.revisions.append(try parseRevision(item, at: "revisions[\(i)]"))
        }
        if let endpoints = json["endpoints"] {
            guard let members = endpoints.objectValue else { throw Invalid("endpoints: expected an object") }
            for (key, value) in members {
                document.endpoints[key] = try parseAddresses(value, at: "endpoints[\(JSON.quote(key))]")
            }
        }
        for (i, item) in (json["routes"]?.arrayValue ?? []).enumerated() {
            document.routes.append(try parseRoute(item, at: "routes[\(i)]"))
        }
        return document
    }

    public static func parseRevision(_ json: JSON, at path: String, namespace: String? = nil, name: String? = nil)
        throws(Invalid) -> RevisionSpec
    {
        guard json.objectValue != nil else { throw Invalid("\(path): expected an object") }
        guard let ns = namespace ?? json["namespace"]?.stringValue, !ns.isEmpty else {
            throw Invalid("\(path).namespace: expected a non-empty string")
        }
        guard let n = name ?? json["name"]?.stringValue, !n.isEmpty else {
            throw Invalid("\(path).name: expected a non-empty string")
        }
        var revision = RevisionSpec(namespace: ns, name: n)
        func int(_ key: String, _ value: inout Int) throws(Invalid) {
            guard let field = json[key] else { return }
            guard let v = field.intValue, v >= 0 else { throw Invalid("\(path).\(key): expected an integer ≥ 0") }
            value = v
        }
        try int("containerConcurrency", &revision.containerConcurrency)
        try int("timeoutSeconds", &revision.timeoutSeconds)
        try int("responseStartTimeoutSeconds", &revision.responseStartTimeoutSeconds)
        try int("idleTimeoutSeconds", &revision.idleTimeoutSeconds)
        if let p = json["protocol"] {
            guard let value = p.stringValue, value == "http1" || value == "h2c" else {
                throw Invalid("\(path).protocol: expected \"http1\" or \"h2c\"")
            }
            revision.protocolName = value
        }
        return revision
    }

    public static func parseAddresses(_ json: JSON, at path: String) throws(Invalid) -> [SocketAddress] {
        let list = json["addresses"]?.arrayValue ?? json.arrayValue
        guard let list else { throw Invalid("\(path): expected {\"addresses\": [\"host:port\", …]}") }
        var result: [SocketAddress] = []
        for (i, item) in list.enumerated() {
            guard let text = item.stringValue, let address = SocketAddress.parse(text) else {
                throw Invalid("\(path).addresses[\(i)]: expected \"ip:port\"")
            }
            result.append(address)
        }
        return result
    }

    public static func parseRoute(_ json: JSON, at path: String, namespace: String? = nil, name: String? = nil)
        throws(Invalid) -> RouteSpec
    {
        guard json.objectValue != nil else { throw Invalid("\(path): expected an object") }
        guard let ns = namespace ?? json["namespace"]?.stringValue, !ns.isEmpty else {
            throw Invalid("\(path).namespace: expected a non-empty string")
        }
        guard let n = name ?? json["name"]?.stringValue, !n.isEmpty else {
            throw Invalid("\(path).name: expected a non-empty string")
        }
        guard let hostList = json["hosts"]?.arrayValue else { throw Invalid("\(path).hosts: expected a list of host names") }
        var hosts: [String] = []
        for (i, h) in hostList.enumerated() {
            guard let host = h.stringValue, !host.isEmpty else { throw Invalid("\(path).hosts[\(i)]: expected a host name") }
            hosts.append(host.lowercased())
        }
        guard let trafficList = json["traffic"]?.arrayValue, !trafficList.isEmpty else {
            throw Invalid("\(path).traffic: expected a non-empty list")
        }
        var traffic: [TrafficTarget] = []
        var total = 0
        for (i, t) in trafficList.enumerated() {
            guard let revisionName = t["revisionName"]?.stringValue, !revisionName.isEmpty else {
                throw Invalid("\(path).traffic[\(i)].revisionName: expected a revision name")
            }
            let percent = t["percent"]?.intValue ?? 0
            guard (0...100).contains(percent) else { throw Invalid("\(path).traffic[\(i)].percent: expected 0-100") }
            total += percent
            traffic.append(TrafficTarget(revisionName: revisionName, percent: percent, tag: t["tag"]?.stringValue))
        }
        guard total == 100 else { throw Invalid("\(path).traffic: traffic targets sum to \(total), want 100") }
        return RouteSpec(namespace: ns, name: n, hosts: hosts, traffic: traffic)
    }

    public var json: JSON {
        .object([
            ("revisions", .array(revisions.map(\.json))),
            ("endpoints", .object(endpoints.sorted { $0.key < $1.key }.map { ($0.key, .object([("addresses", .array($0.value.map { .string($0.description) }))])) })),
            ("routes", .array(routes.map(\.json))),
        ])
    }
}
