// The environments of a pod's containers: the app's (`PORT`, `K_*`) and the queue-proxy's (Knative's
// controller's env, queue.go upstream).
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    func baseEnvironment() -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    func merged(_ base: [String], _ extra: [(String, String)]) -> [String] {
        let names = Set(extra.map(\.0))
        return base.filter { entry in !names.contains(String(entry.prefix { $0 != "=" })) }
            + extra.map { "\($0.0)=\($0.1)" }
    }

    /// The app's env. `PORT` is the containerPort in namespace mode (Knative's MUST), the pod's own loopback
    /// port otherwise.
    func userEnvironment(_ pod: PodObject) -> [String] {
        let r = pod.revision
        var extra: [(String, String)] = r.template.container.env.map { ($0.name, $0.value) }
        extra += [
            ("PORT", "\(pod.userPort)"), ("K_REVISION", r.name), ("K_CONFIGURATION", r.serviceName),
            ("K_SERVICE", r.serviceName),
        ]
        return merged(baseEnvironment(), extra)
    }

    /// The queue-proxy's env: exactly what Knative's controller writes (queue.go) in namespace mode, where the
    /// ports are Knative's; in loopback mode our extensions give each pod its own admin and metrics ports.
    func queueEnvironment(_ pod: PodObject) -> [String] {
        let r = pod.revision
        let t = r.template
        let fullDuplex = t.annotations["features.knative.dev/http-full-duplex"]?.lowercased() == "enabled"
        var extra: [(String, String)] = [
            ("SERVING_NAMESPACE", r.namespace), ("SERVING_SERVICE", r.serviceName),
            ("SERVING_CONFIGURATION", r.serviceName),
            ("SERVING_REVISION", r.name), ("SERVING_POD", pod.name), ("SERVING_POD_IP", pod.ip),
            ("CONTAINER_CONCURRENCY", "\(t.containerConcurrency)"),
            ("REVISION_TIMEOUT_SECONDS", "\(t.timeoutSeconds)"),
            ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "\(t.responseStartTimeoutSeconds ?? 0)"),
            ("REVISION_IDLE_TIMEOUT_SECONDS", "\(t.idleTimeoutSeconds ?? 0)"),
            (
                "SERVING_READINESS_PROBE",
                ReadinessProbeEncoding.encode(
                    t.container.readinessProbe, userPort: pod.userPort, declaredPort: t.container.port)
            ),
            ("ENABLE_HTTP_FULL_DUPLEX", fullDuplex ? "true" : "false"),
            ("ENABLE_HTTP2_AUTO_DETECTION", "false"), ("ENABLE_MULTI_CONTAINER_PROBES", "false"),
            ("QUEUE_SERVING_PORT", "\(pod.servingPort)"), ("QUEUE_SERVING_TLS_PORT", "8112"),
            ("USER_PORT", "\(pod.userPort)"),
            ("SERVING_LOGGING_CONFIG", ""), ("SERVING_LOGGING_LEVEL", ""),
            ("SYSTEM_NAMESPACE", "knative-serving"), ("METRICS_DOMAIN", "knative.dev/internal/serving"),
            // Ours (Knative's queue-proxy ignores it): kn-local's drains are short.
            ("QUEUE_DRAIN_QUIET_PERIOD", settings.drainQuietPeriod),
        ]
        if pod.network == nil {
            extra += [
                // Knative marks h2c revisions by serving them on 8013; these pods have their own ports, so say it.
                ("QUEUE_USER_PROTOCOL", t.container.portName == "h2c" ? "h2c" : "http1"),
                // Every pod shares the loopback, so its admin and metrics ports are its own.
                ("QUEUE_ADMIN_PORT", "\(pod.adminPort)"), ("QUEUE_METRICS_PORT", "\(pod.metricsPort)"),
                ("QUEUE_USER_METRICS_PORT", "0"),
            ]
        }
        return merged(baseEnvironment(), extra)
    }

    /// Kubernetes' `$(VAR)` expansion in command and args: defined variables are replaced, `$$` is a literal
    /// `$`, anything else stays as written.
    static func expand(_ text: String, _ environment: [String]) -> String {
        guard text.contains("$") else { return text }
        var values: [Substring: Substring] = [:]
        for entry in environment {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            values[entry[..<eq]] = entry[entry.index(after: eq)...]
        }
        var out = ""
        var rest = Substring(text)
        while let dollar = rest.firstIndex(of: "$") {
            out += rest[..<dollar]
            let after = rest[rest.index(after: dollar)...]
            if after.first == "$" {
                out += "$"
                rest = after.dropFirst()
            } else if after.first == "(", let close = after.firstIndex(of: ")"),
                let value = values[after[after.index(after: after.startIndex)..<close]]
            {
                out += value
                rest = after[after.index(after: close)...]
            } else {
                out += "$"
                rest = after
            }
        }
        return out + rest
    }

    func randomSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        var text = ""
        for _ in 0..<5 { text.append(alphabet[Int.random(in: 0..<alphabet.count)]) }
        return text
    }
}
