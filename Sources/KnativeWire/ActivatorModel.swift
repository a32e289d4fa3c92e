// The activator's view of the world, standing in for Kubernetes informers: revisions, their endpoints (the
// queue-proxies of their pods) and routes. Loaded from a JSON document, changed through the admin API.
import ProxyCore

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

    package var json: JSON {
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
/// A route that is not ready has no traffic, only a message for its hosts' requests (kn-local: a Service whose
/// revision never became ready; see `Activator.dispose`).
public struct RouteSpec: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var hosts: [String]
    public var traffic: [TrafficTarget]
    /// Why the route serves nothing yet, e.g. `revision "hello-00001" is not ready yet`.
    public var notReady: String?

    public init(namespace: String, name: String, hosts: [String], traffic: [TrafficTarget], notReady: String? = nil) {
        self.namespace = namespace
        self.name = name
        self.hosts = hosts
        self.traffic = traffic
        self.notReady = notReady
    }

    public var key: String { namespace + "/" + name }

    /// The host names this route answers: its hosts and, for tagged targets, `<tag>-<host>`.
    public var claimedHosts: [String] {
        var claimed = hosts
        for tag in traffic.compactMap(\.tag) { claimed += hosts.map { "\(tag)-\($0)" } }
        return claimed
    }

    /// Why this route cannot join `others`: a host one of them (another route) already claims.
    /// - Returns: nil when no other route claims any of this route's hosts.
    public func conflict(with others: some Sequence<RouteSpec>) -> String? {
        let mine = claimedHosts
        for other in others where other.key != key {
            if let host = other.claimedHosts.first(where: mine.contains) {
                return "host \(JSON.quote(host)) is already claimed by route \(JSON.quote(other.key))"
            }
        }
        return nil
    }

    package var json: JSON {
        .object(
            [
                ("namespace", .string(namespace)), ("name", .string(name)),
                ("hosts", .array(hosts.map { .string($0) })),
                (
                    "traffic",
                    .array(
                        traffic.map { t in
                            var members: [(String, JSON)] = [
                                ("revisionName", .string(t.revisionName)), ("percent", .number(Double(t.percent))),
                            ]
                            if let tag = t.tag { members.append(("tag", .string(tag))) }
                            return .object(members)
                        })
                ),
            ] + (notReady.map { [("notReady", JSON.string($0))] } ?? []))
    }
}

/// The whole state, as the config file and `GET /v1/state` write it.
public struct ActivatorDocument: Sendable, Equatable {
    public var revisions: [RevisionSpec] = []
    /// "namespace/name" → queue-proxy addresses.
    public var endpoints: [String: [SocketAddress]] = [:]
    public var routes: [RouteSpec] = []

    public init() {}

    /// A validation error naming the field, e.g. `routes[1].traffic[0].percent: expected an integer 0-100, got 150`.
    public typealias Invalid = JSONFieldError

    // Every decoder below reads through `JSONObjectReader`: a member of the wrong JSON type is an error naming
    // its path and the expected type, never taken as absent (null is absent, as in Go's decoder).

    public static func parse(_ text: String) throws(Invalid) -> ActivatorDocument {
        let json: JSON
        do { json = try JSON.parse(text) } catch { throw Invalid("invalid JSON: \(error)") }
        guard json.objectValue != nil else { throw Invalid("expected a JSON object with revisions, endpoints, routes") }
        let reader = try JSONObjectReader(json, at: "")
        var document = ActivatorDocument()
        for (i, item) in (try reader.array("revisions") ?? []).enumerated() {
            let revision = try parseRevision(item, at: "revisions[\(i)]")
            if document.revisions.contains(where: { $0.key == revision.key }) {
                throw Invalid("revisions[\(i)]: revision \(JSON.quote(revision.key)) is listed twice")
            }
            document.revisions.append(revision)
        }
        for (key, value) in try reader.object("endpoints") ?? [] {
            document.endpoints[key] = try parseAddresses(value, at: "endpoints[\(JSON.quote(key))]")
        }
        for (i, item) in (try reader.array("routes") ?? []).enumerated() {
            let route = try parseRoute(item, at: "routes[\(i)]")
            if document.routes.contains(where: { $0.key == route.key }) {
                throw Invalid("routes[\(i)]: route \(JSON.quote(route.key)) is listed twice")
            }
            if let conflict = route.conflict(with: document.routes) {
                throw Invalid("routes[\(i)].hosts: \(conflict)")
            }
            document.routes.append(route)
        }
        return document
    }

    /// Checks a name against a Kubernetes name rule.
    /// - Throws: `<path>: invalid name "<name>": <rule>`.
    static func checkName(_ name: String, at path: String, _ rule: (String) -> String?) throws(Invalid) {
        if let problem = rule(name) { throw Invalid("\(path): invalid name \(JSON.quote(name)): \(problem)") }
    }

    /// The object's namespace and name: from the URL when given (a body's own must then agree), else from the
    /// body. Namespaces are DNS-1123 labels, names DNS-1035 labels (Kubernetes' rules for Knative objects).
    private static func identity(_ reader: JSONObjectReader, namespace: String?, name: String?) throws(Invalid)
        -> (namespace: String, name: String)
    {
        func member(_ key: String, _ fromURL: String?, _ rule: (String) -> String?) throws(Invalid) -> String {
            let own = try reader.string(key)
            if let fromURL {
                try checkName(fromURL, at: "\(reader.path(key)) (from the URL)", rule)
                if let own, own != fromURL {
                    throw Invalid(
                        "\(reader.path(key)): \(JSON.quote(own)) does not match the URL's \(JSON.quote(fromURL))")
                }
                return fromURL
            }
            guard let own else { throw Invalid("\(reader.path(key)): expected a non-empty string") }
            try checkName(own, at: reader.path(key), rule)
            return own
        }
        return (
            try member("namespace", namespace, DNSName.dns1123LabelProblem),
            try member("name", name, DNSName.dns1035LabelProblem)
        )
    }

    public static func parseRevision(_ json: JSON, at path: String, namespace: String? = nil, name: String? = nil)
        throws(Invalid) -> RevisionSpec
    {
        let reader = try JSONObjectReader(json, at: path)
        let id = try identity(reader, namespace: namespace, name: name)
        var revision = RevisionSpec(namespace: id.namespace, name: id.name)
        func int(_ key: String, _ value: inout Int) throws(Invalid) {
            if let v = try reader.int(key, in: 0...Int(Int32.max), expected: "an integer from 0 to 2147483647") {
                value = v
            }
        }
        try int("containerConcurrency", &revision.containerConcurrency)
        try int("timeoutSeconds", &revision.timeoutSeconds)
        try int("responseStartTimeoutSeconds", &revision.responseStartTimeoutSeconds)
        try int("idleTimeoutSeconds", &revision.idleTimeoutSeconds)
        if let value = reader.value("protocol") {
            guard let p = value.stringValue, p == "http1" || p == "h2c" else {
                throw JSONObjectReader.mismatch(reader.path("protocol"), "\"http1\" or \"h2c\"", value)
            }
            revision.protocolName = p
        }
        return revision
    }

    /// `{"addresses": ["ip:port", …]}` or the bare list.
    public static func parseAddresses(_ json: JSON, at path: String) throws(Invalid) -> [SocketAddress] {
        let list: [JSON]
        if case .array(let items) = json {
            list = items
        } else {
            let reader = try JSONObjectReader(json, at: path)
            guard let items = try reader.array("addresses", expected: "a list of \"ip:port\"") else {
                throw Invalid("\(reader.path("addresses")): expected a list of \"ip:port\"")
            }
            list = items
        }
        var result: [SocketAddress] = []
        for (i, item) in list.enumerated() {
            guard let text = item.stringValue, let address = SocketAddress.parse(text) else {
                throw JSONObjectReader.mismatch("\(path).addresses[\(i)]", "\"ip:port\"", item)
            }
            result.append(address)
        }
        return result
    }

    public static func parseRoute(_ json: JSON, at path: String, namespace: String? = nil, name: String? = nil)
        throws(Invalid) -> RouteSpec
    {
        let reader = try JSONObjectReader(json, at: path)
        let id = try identity(reader, namespace: namespace, name: name)
        guard let hostList = try reader.array("hosts", expected: "a list of host names") else {
            throw Invalid("\(reader.path("hosts")): expected a list of host names")
        }
        var hosts: [String] = []
        for (i, item) in hostList.enumerated() {
            guard let text = item.stringValue else {
                throw JSONObjectReader.mismatch("\(reader.path("hosts"))[\(i)]", "a host name", item)
            }
            let host = text.lowercased()
            try checkName(host, at: "\(reader.path("hosts"))[\(i)]", DNSName.dns1123SubdomainProblem)
            if !hosts.contains(host) { hosts.append(host) }
        }
        // A route that is not ready: hosts and a message, no traffic.
        if let notReady = try reader.string("notReady") {
            guard !notReady.isEmpty else { throw Invalid("\(reader.path("notReady")): expected a non-empty message") }
            guard (try reader.array("traffic", expected: "no traffic targets with notReady") ?? []).isEmpty else {
                throw Invalid("\(reader.path("traffic")): expected no traffic targets with notReady")
            }
            return RouteSpec(namespace: id.namespace, name: id.name, hosts: hosts, traffic: [], notReady: notReady)
        }
        guard let trafficList = try reader.array("traffic", expected: "a non-empty list of traffic targets"),
            !trafficList.isEmpty
        else {
            throw Invalid("\(reader.path("traffic")): expected a non-empty list of traffic targets")
        }
        var traffic: [TrafficTarget] = []
        var total = 0
        for (i, item) in trafficList.enumerated() {
            let target = try JSONObjectReader(item, at: "\(reader.path("traffic"))[\(i)]")
            guard let revisionName = try target.string("revisionName") else {
                throw Invalid("\(target.path("revisionName")): expected a revision name")
            }
            try checkName(revisionName, at: target.path("revisionName"), DNSName.dns1035LabelProblem)
            // Knative's traffic targets default an absent percent to 0.
            let percent = try target.int("percent", in: 0...100, expected: "an integer 0-100") ?? 0
            let tag = try target.string("tag")
            if let tag { try checkName(tag, at: target.path("tag"), DNSName.dns1035LabelProblem) }
            total += percent
            traffic.append(TrafficTarget(revisionName: revisionName, percent: percent, tag: tag))
        }
        guard total == 100 else {
            throw Invalid("\(reader.path("traffic")): traffic targets sum to \(total), want 100")
        }
        return RouteSpec(namespace: id.namespace, name: id.name, hosts: hosts, traffic: traffic)
    }

    public var json: JSON {
        .object([
            ("revisions", .array(revisions.map(\.json))),
            (
                "endpoints",
                .object(
                    endpoints.sorted { $0.key < $1.key }.map {
                        ($0.key, .object([("addresses", .array($0.value.map { .string($0.description) }))]))
                    })
            ),
            ("routes", .array(routes.map(\.json))),
        ])
    }
}
