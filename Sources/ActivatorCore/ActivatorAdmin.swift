// The activator's admin API (our stand-in for the Kubernetes API): revisions, endpoints and routes,
// changed live. Bound to 127.0.0.1 by default. Bodies are JSON objects (an empty body is an error, never "all
// defaults"); an invalid one is 400 naming the field; a host another route already claims is 409. Driven by the
// Kubernetes API (`--kube-api`), it is read-only: only GET /v1/state; a change is 405 saying where the state
// comes from.
import KnativeWire
import ProxyCore

public final class ActivatorAdmin: HTTPResponder {
    private unowned(unsafe) let activator: Activator  // both live for the process, on one loop

    /// Why changes are refused (Kubernetes mode), or nil when the admin API may change the state.
    private let readOnlyReason: String?

    public init(activator: Activator, readOnlyReason: String? = nil) {
        self.activator = activator
        self.readOnlyReason = readOnlyReason
    }

    public var collectsBodies: Bool { true }

    public func dispose(_ request: RequestView) -> Disposition {
        let method = request.string(request.head.method)
        let target = request.string(request.head.target)
        let path = target.prefix { $0 != "?" }.split(separator: "/").map(String.init)
        let body = String(decoding: request.body, as: UTF8.self)
        if let readOnlyReason, method != "GET", path.first == "v1" {
            return .respond(
                LocalResponse(
                    status: 405, body: Array((readOnlyReason + "\n").utf8), contentType: "text/plain; charset=utf-8",
                    noSniff: true, extraHeaders: [("Allow", "GET")]))
        }
        do {
            switch (method, path.count, path.first, path.count > 1 ? path[1] : "") {
            case ("GET", 2, "v1", "state"):
                return json(activator.stateJSON)
            case ("PUT", 4, "v1", "revisions"):
                let revision = try ActivatorDocument.parseRevision(
                    try parse(body), at: "revision", namespace: path[2], name: path[3])
                activator.putRevision(revision)
                return json(revision.json)
            case ("DELETE", 4, "v1", "revisions"):
                activator.deleteRevision(key: path[2] + "/" + path[3])
                return .respond(LocalResponse(status: 200))
            case ("PUT", 5, "v1", "revisions") where path[4] == "endpoints":
                let addresses = try ActivatorDocument.parseAddresses(try parse(body), at: "endpoints")
                activator.setEndpoints(key: path[2] + "/" + path[3], addresses)
                return json(.object([("addresses", .array(addresses.map { .string($0.description) }))]))
            case ("PUT", 4, "v1", "routes"):
                let route = try ActivatorDocument.parseRoute(
                    try parse(body), at: "route", namespace: path[2], name: path[3])
                if let conflict = route.conflict(with: activator.routes.values) {
                    return .respond(.error(409, "route \(JSON.quote(route.key)): \(conflict)"))
                }
                activator.putRoute(route)
                return json(route.json)
            case ("DELETE", 4, "v1", "routes"):
                activator.deleteRoute(key: path[2] + "/" + path[3])
                return .respond(LocalResponse(status: 200))
            default:
                return .respond(.error(404, "404 page not found"))
            }
        } catch {
            return .respond(.error(400, error.description))
        }
    }

    /// The request body as JSON. - Throws: for an empty body (a PUT replaces the object; nothing is no object).
    private func parse(_ body: String) throws(ActivatorDocument.Invalid) -> JSON {
        guard body.contains(where: { !$0.isWhitespace }) else {
            throw ActivatorDocument.Invalid("empty body: expected a JSON object")
        }
        do { return try JSON.parse(body) } catch {
            throw ActivatorDocument.Invalid("invalid JSON: \(error)")
        }
    }

    private func json(_ value: JSON) -> Disposition {
        .respond(LocalResponse(status: 200, body: Array((value.text + "\n").utf8), contentType: "application/json"))
    }
}
