// Routes (Knative's route reconciler): resolve a Service's traffic to revisions and program the activator,
// which acts as the ingress, through its admin API.
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    /// Resolves the service's traffic to revision names and programs the activator when all resolve.
    func resolveRoute(_ service: ServiceObject) {
        let m = service.manifest
        var targets: [TrafficTarget] = []
        for entry in m.traffic {
            let name: String?
            if let r = entry.revisionName {
                name = revisions[m.namespace + "/" + r] == nil ? nil : r
            } else {
                name = service.latestReady
            }
            guard let name else {
                if let r = entry.revisionName {
                    service.routeCondition = Condition(
                        status: "False", reason: "RevisionMissing",
                        message: "Revision \"\(r)\" referenced in traffic not found.")
                } else if service.configCondition.status == "False" {
                    service.routeCondition = Condition(
                        status: "False", reason: "RevisionMissing",
                        message: "Configuration \"\(m.name)\" does not have any ready Revision.")
                } else {
                    service.routeCondition = Condition(
                        status: "Unknown", reason: "RevisionMissing",
                        message: "Configuration \"\(m.name)\" is waiting for a Revision to become ready.")
                }
                // A route that served before keeps its traffic (Knative leaves the ingress as it was); one that
                // never served answers its hosts with why (programRoute).
                if service.routedTraffic.isEmpty { programRoute(service) }
                return
            }
            targets.append(TrafficTarget(revisionName: name, percent: entry.percent ?? 0, tag: entry.tag))
        }
        // Several entries for one revision without tags merge, as Knative's route does.
        service.routedTraffic = targets
        service.routeCondition = .ready
        for revision in revisions.values where revision.namespace == m.namespace && revision.serviceName == m.name {
            revision.routable = targets.contains { $0.revisionName == revision.name }
        }
        programRoute(service)
    }

    /// Programs the service's route: its resolved traffic, or — while it has none — a not-ready route whose
    /// requests get 404 naming the revision and why (Knative's gateway answers 404 for a Route that is not ready,
    /// because it has no ingress rule yet; we keep the status and say why instead of an empty body).
    func programRoute(_ service: ServiceObject) {
        let m = service.manifest
        let hosts = [
            service.host(domain: settings.domain), "\(m.name).\(m.namespace)", "\(m.name).\(m.namespace).svc",
            "\(m.name).\(m.namespace).svc.cluster.local",
        ]
        var members: [(String, JSON)] = [("hosts", .array(hosts.map { .string($0) }))]
        if service.routedTraffic.isEmpty {
            members.append(("notReady", .string(notReadyMessage(service))))
        } else {
            let traffic: [JSON] = service.routedTraffic.map { t in
                var members: [(String, JSON)] = [
                    ("revisionName", .string(t.revisionName)), ("percent", .number(Double(t.percent))),
                ]
                if let tag = t.tag { members.append(("tag", .string(tag))) }
                return .object(members)
            }
            members.append(("traffic", .array(traffic)))
        }
        admin("PUT", "/v1/routes/\(m.namespace)/\(m.name)", .object(members))
    }

    /// Why a service that never served has no traffic, naming the revision:
    /// `service "default/hello" is not ready: revision "hello-00001" is not ready yet (Deploying)`.
    func notReadyMessage(_ service: ServiceObject) -> String {
        let prefix = "service \"\(service.key)\" is not ready: "
        let m = service.manifest
        // A traffic entry naming a revision that does not exist: the route's own message names it.
        let namesMissing = m.traffic.contains { entry in
            entry.revisionName.map { revisions[m.namespace + "/" + $0] == nil } ?? false
        }
        guard !namesMissing, let name = service.latestCreated, let revision = revisions[m.namespace + "/" + name] else {
            return prefix + service.routeCondition.message
        }
        let c = revision.condition
        if c.status == "False" {
            return prefix + "revision \"\(name)\" failed: \(c.reason)" + (c.message.isEmpty ? "" : ": \(c.message)")
        }
        return prefix + "revision \"\(name)\" is not ready yet" + (c.reason.isEmpty ? "" : " (\(c.reason))")
    }

    func programRevision(_ revision: RevisionObject) {
        guard revision.argv != nil else { return }
        let t = revision.template
        let body = JSON.object([
            ("containerConcurrency", .number(Double(t.containerConcurrency))),
            ("timeoutSeconds", .number(Double(t.timeoutSeconds))),
            ("responseStartTimeoutSeconds", .number(Double(t.responseStartTimeoutSeconds ?? 0))),
            ("idleTimeoutSeconds", .number(Double(t.idleTimeoutSeconds ?? 0))),
            ("protocol", .string(t.container.portName)),
        ])
        admin("PUT", "/v1/revisions/\(revision.namespace)/\(revision.name)", body)
        programEndpoints(revision)
    }

    func programEndpoints(_ revision: RevisionObject) {
        let addresses = revision.readyPods.map { JSON.string($0.servingAddress.description) }
        admin(
            "PUT", "/v1/revisions/\(revision.namespace)/\(revision.name)/endpoints",
            .object([("addresses", .array(addresses))]))
    }

    func admin(_ method: String, _ path: String, _ body: JSON) {
        guard activatorPID != 0, !isShuttingDown else { return }
        do {
            let response = try BlockingClient.request(
                method, activatorAdmin, path, headers: [("Content-Type", "application/json")],
                body: Array(body.text.utf8), timeoutMs: 2000)
            if response.status != 200 {
                events.emit("activator refused \(method) \(path): \(String(decoding: response.body, as: UTF8.self))")
            }
        } catch {
            events.emit("activator admin \(method) \(path) failed: \(error)")
        }
    }
}
