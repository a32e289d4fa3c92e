// `kn-local get`: the kubectl-style tables (and JSON) of services, configurations, revisions, routes, pods.
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    static func resourceName(_ kind: String) -> String {
        switch kind {
        case "revision", "revisions", "rev", "revs": return "revisions.serving.knative.dev"
        case "route", "routes", "rt": return "routes.serving.knative.dev"
        case "configuration", "configurations", "config", "configs", "cfg": return "configurations.serving.knative.dev"
        case "pod", "pods", "po": return "pods"
        default: return "services.serving.knative.dev"
        }
    }

    func table(kind: String, namespace: String?, name: String?, json: Bool, wide: Bool = false) throws -> String {
        let t = now
        func matches(_ ns: String, _ n: String) -> Bool {
            (namespace == nil || namespace == ns) && (name == nil || name == n)
        }
        let domain = settings.domain
        switch kind {
        case "ksvc", "ksvcs", "service", "services", "kservice":
            let list = services.values.filter { matches($0.manifest.namespace, $0.manifest.name) }.sorted {
                $0.key < $1.key
            }
            if json {
                return JSON.array(
                    list.map { s in
                        JSON.object([
                            ("namespace", .string(s.manifest.namespace)), ("name", .string(s.manifest.name)),
                            ("url", .string(s.url(domain: domain))),
                            ("latestCreatedRevisionName", .string(s.latestCreated ?? "")),
                            ("latestReadyRevisionName", .string(s.latestReady ?? "")),
                            ("ready", .string(s.condition.status)),
                            ("reason", .string(s.condition.reason)),
                            (
                                "traffic",
                                .array(
                                    s.routedTraffic.map {
                                        .object([
                                            ("revisionName", .string($0.revisionName)),
                                            ("percent", .number(Double($0.percent))), ("tag", .string($0.tag ?? "")),
                                        ])
                                    })
                            ),
                        ])
                    }
                ).text + "\n"
            }
            return Table.render(
                ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON"],
                list.map { s in
                    [
                        s.manifest.name, s.url(domain: domain), s.latestCreated ?? "", s.latestReady ?? "",
                        s.condition.status, s.condition.reason,
                    ]
                })
        case "configuration", "configurations", "config", "configs", "cfg":
            let list = services.values.filter { matches($0.manifest.namespace, $0.manifest.name) }.sorted {
                $0.key < $1.key
            }
            return Table.render(
                ["NAME", "LATESTCREATED", "LATESTREADY", "READY", "REASON"],
                list.map { s in
                    [
                        s.manifest.name, s.latestCreated ?? "", s.latestReady ?? "", s.configCondition.status,
                        s.configCondition.reason,
                    ]
                })
        case "route", "routes", "rt":
            let list = services.values.filter { matches($0.manifest.namespace, $0.manifest.name) }.sorted {
                $0.key < $1.key
            }
            return Table.render(
                ["NAME", "URL", "READY", "REASON"],
                list.map { s in
                    [s.manifest.name, s.url(domain: domain), s.routeCondition.status, s.routeCondition.reason]
                })
        case "revision", "revisions", "rev", "revs":
            let list = revisions.values.filter { matches($0.namespace, $0.name) }.sorted {
                ($0.namespace, $0.createdMs, $0.name) < ($1.namespace, $1.createdMs, $1.name)
            }
            if json {
                return JSON.array(
                    list.map { r in
                        JSON.object([
                            ("namespace", .string(r.namespace)), ("name", .string(r.name)),
                            ("ready", .string(r.condition.status)),
                            ("reason", .string(r.condition.reason)),
                            ("message", .string(r.condition.message)),
                            ("actualReplicas", .number(Double(r.readyPods.count))),
                            ("desiredReplicas", .number(Double(r.scaler.lastScale))),
                        ])
                    }
                ).text + "\n"
            }
            return Table.render(
                ["NAME", "CONFIG NAME", "GENERATION", "READY", "REASON", "ACTUAL REPLICAS", "DESIRED REPLICAS"],
                list.map { r in
                    [
                        r.name, r.serviceName, "\(r.generation)", r.condition.status, r.condition.reason,
                        "\(r.readyPods.count)", "\(r.scaler.lastScale)",
                    ]
                })
        case "pod", "pods", "po":
            // A pod that died stays listed while its replacement waits for the back-off (CrashLoopBackOff).
            let all = revisions.values.flatMap { r in
                r.pods
                    + (r.crashedPod.map { dead in
                        r.backoff.isWaiting(atMs: t) && !r.pods.contains { $0 === dead } ? [dead] : []
                    } ?? [])
            }
            let list = all.filter { matches($0.revision.namespace, $0.name) }.sorted {
                ($0.revision.name, $0.spawnedMs, $0.serial) < ($1.revision.name, $1.spawnedMs, $1.serial)
            }
            func restarts(_ p: PodObject) -> Int { p.failure == nil ? 0 : p.revision.backoff.crashes }
            if json {
                return JSON.array(
                    list.map { p in
                        JSON.object([
                            ("namespace", .string(p.revision.namespace)), ("name", .string(p.name)),
                            ("revision", .string(p.revision.name)),
                            ("phase", .string(p.phase.rawValue)), ("ready", .string(p.readyContainers)),
                            ("status", .string(p.status(atMs: t))),
                            ("message", .string(p.failure ?? (p.phase == .starting ? p.notReadyReason : ""))),
                            ("restarts", .number(Double(restarts(p)))),
                            ("userPid", .number(Double(p.userPID))),
                            ("queuePid", .number(Double(p.queuePID))),
                            ("ip", .string(p.ip)), ("queueAddress", .string(p.servingAddress.description)),
                            ("userPort", .number(Double(p.userPort))),
                            ("processStartMs", p.processStartMs.map { .number(($0 * 1000).rounded() / 1000) } ?? .null),
                            ("readyAfterMs", p.readyAfterMs.map { .number(($0 * 1000).rounded() / 1000) } ?? .null),
                            ("logs", .string(p.logDirectory)),
                        ])
                    }
                ).text + "\n"
            }
            return Table.render(
                ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (wide ? ["IP", "QUEUE"] : []),
                list.map { p in
                    [p.name, p.readyContainers, p.status(atMs: t), "\(restarts(p))", Table.age(t - p.spawnedMs)]
                        + (wide ? [p.ip, p.servingAddress.description] : [])
                })
        default:
            throw ManifestError(
                "error: the server doesn't have a resource type \"\(kind)\" (kn-local knows ksvc, configurations, revisions, routes, pods)"
            )
        }
    }
}
