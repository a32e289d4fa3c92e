// The conformance suite's harness: a kn-local (KnLocalInstance) whose image map points the
// `conformance/<app>` images at our test apps (Tests/conformance/apps/*.py), in either pod network mode, and
// the small helpers the tests share (manifests, requests through the ingress, the runtime app's JSON).
import Foundation
import Glibc
import Testing

/// How a cluster's pods get their network: both modes must keep Knative's runtime contract, except where a
/// test says otherwise (loopback pods share one network, so `PORT` cannot be the containerPort there).
enum PodMode: String, CustomStringConvertible, Sendable {
    case loopback
    case namespace

    var description: String { rawValue }

    /// Loopback always; namespaces where kn-local can make them (root, iproute2, and the permission to make
    /// a network namespace, which some containers lack).
    static let available: [PodMode] = PodNamespaces.available ? [.loopback, .namespace] : [.loopback]
}

/// One kn-local for one conformance test, with the test apps as images.
final class ConformanceCluster {
    let kn: KnLocalInstance
    let mode: PodMode
    private let mapPath: String

    /// A /24 of its own for each namespace-mode cluster: the second octet from the pid (10.100–10.199, away
    /// from the 10.213 the other kn-local tests use), the third from a counter, so that clusters running side
    /// by side (in this process or another one) never share a bridge subnet.
    private static let cidrIndex = Locked(0)

    static func podCIDR() -> String {
        let third = cidrIndex.withLock { i in
            defer { i = (i + 1) % 256 }
            return i
        }
        return "10.\(100 + getpid() % 100).\(third).0/24"
    }

    /// The interpreter for the apps: the test venv's (grpcio) if ./test.sh made it, else the system's.
    static let python: String = {
        if let given = ProcessInfo.processInfo.environment["KN_TEST_PYTHON"] { return given }
        return FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"
    }()

    /// `conformance/<name>` → `python -u Tests/conformance/apps/<name>.py`.
    static let apps = ["runtime", "timeout", "singlethreaded", "readiness", "protocols"]

    /// - Parameters:
    ///   - mode: the pod network.
    ///   - extra: more `kn-local serve` flags.
    init(_ mode: PodMode, _ extra: [String] = []) throws {
        self.mode = mode
        let directory = PackageRoot.url.appendingPathComponent("Tests/conformance/apps")
        var map: [String: [String]] = [:]
        for app in Self.apps {
            map["conformance/\(app)"] = [Self.python, "-u", directory.appendingPathComponent("\(app).py").path]
        }
        mapPath = NSTemporaryDirectory() + "kn-conformance-map-\(getpid())-\(UUID().uuidString).json"
        try JSONSerialization.data(withJSONObject: map).write(to: URL(fileURLWithPath: mapPath))
        let network = mode == .namespace ? ["--pod-network", "namespace", "--pod-cidr", Self.podCIDR()] : []
        do {
            kn = try KnLocalInstance(["--image-map", mapPath] + network + extra)
        } catch {
            try? FileManager.default.removeItem(atPath: mapPath)
            throw error
        }
    }

    /// Stops kn-local (checking that it leaves nothing behind) and removes the image map.
    func stop() {
        kn.stop()
        try? FileManager.default.removeItem(atPath: mapPath)
    }

    /// Applies `yaml`; a refusal fails the test with kn-local's words.
    func apply(_ yaml: String) throws {
        let (status, _, err) = try kn.apply(yaml)
        guard status == 0 else { throw TestError("apply failed: \(err)") }
    }

    /// The service's object from `get ksvc -o json`.
    func service(_ name: String) -> [String: Any]? {
        kn.objects("ksvc").first { $0["name"] as? String == name }
    }

    /// Waits until the service is Ready with `revision` (if given) as its latest ready revision and its host
    /// answers 200 through the ingress. - Throws: when it does not within `seconds`.
    func waitReady(_ name: String, revision: String? = nil, path: String = "/", seconds: Double = 30) async throws {
        let ready = await pollUntil(seconds: seconds) {
            guard let s = service(name), s["ready"] as? String == "True" else { return false }
            if let revision, s["latestReadyRevisionName"] as? String != revision { return false }
            return (try? get(host: host(name), path: path).status) == 200
        }
        guard ready else {
            throw TestError(
                "\(name) not ready (\(mode)): \(service(name) ?? [:])\n\(kn.process.stdout.suffix(3000))")
        }
    }

    func host(_ service: String, tag: String? = nil) -> String {
        (tag.map { "\($0)-" } ?? "") + "\(service).default.example.com"
    }

    /// One GET through the ingress (a new connection unless `socket` is given).
    func get(host: String, path: String = "/", headers: [(String, String)] = [], on socket: TestSocket? = nil)
        throws -> TestResponse
    {
        try ingressGet(port: kn.port, host: host, path: path, headers: headers, on: socket)
    }

    /// The runtime app's report of one request: its env, the request as it arrived, its identity.
    func runtimeInfo(host: String, headers: [(String, String)] = []) throws -> RuntimeInfo {
        let response = try get(host: host, path: "/runtime", headers: headers)
        guard response.status == 200,
            let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        else { throw TestError("runtime info: \(response.status) \(response.bodyText)") }
        return RuntimeInfo(object)
    }
}

/// One GET to the ingress on `port` (a new connection unless `socket` is given); callable from any thread.
func ingressGet(
    port: UInt16, host: String, path: String = "/", headers: [(String, String)] = [], on socket: TestSocket? = nil
) throws -> TestResponse {
    let s = try socket ?? TestSocket.connect(port: port)
    var head = "GET \(path) HTTP/1.1\r\nHost: \(host)\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    return try s.exchange(head + "\r\n")
}

/// What `Tests/conformance/apps/runtime.py` answers.
struct RuntimeInfo {
    let env: [String: String]
    let method: String
    let path: String
    let protocolVersion: String
    let host: String
    /// Header fields in arrival order, names as received.
    let headers: [(String, String)]
    let uid: Int
    let hostname: String

    init(_ object: [String: Any]) {
        env = object["env"] as? [String: String] ?? [:]
        let request = object["request"] as? [String: Any] ?? [:]
        method = request["method"] as? String ?? ""
        path = request["path"] as? String ?? ""
        protocolVersion = request["protocol"] as? String ?? ""
        host = request["host"] as? String ?? ""
        headers = (request["headers"] as? [[String]] ?? []).compactMap { $0.count == 2 ? ($0[0], $0[1]) : nil }
        uid = (object["user"] as? [String: Any])?["uid"] as? Int ?? -1
        hostname = object["hostname"] as? String ?? ""
    }

    /// All values of `name` (case-insensitive), in order.
    func values(_ name: String) -> [String] {
        headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
    }
}

/// A Knative Service manifest for one of the test apps.
struct ServiceSpec {
    var name: String
    var app: String
    var containerPort: Int? = nil
    var portName: String? = nil
    var containerConcurrency: Int? = nil
    var timeoutSeconds: Int? = nil
    var env: [(String, String)] = []
    /// YAML of the container's readinessProbe body, indented for its place (10 spaces).
    var readinessProbe: String? = nil
    var annotations: [String: String] = [:]
    /// YAML of `spec.traffic` (the whole block, 2-space indented under spec).
    var traffic: String = ""

    var yaml: String {
        var text = """
            apiVersion: serving.knative.dev/v1
            kind: Service
            metadata:
              name: \(name)
            spec:
              template:

            """
        if !annotations.isEmpty {
            text += "    metadata:\n      annotations:\n"
            for (k, v) in annotations.sorted(by: { $0.key < $1.key }) { text += "        \(k): \"\(v)\"\n" }
        }
        text += "    spec:\n"
        if let containerConcurrency { text += "      containerConcurrency: \(containerConcurrency)\n" }
        if let timeoutSeconds { text += "      timeoutSeconds: \(timeoutSeconds)\n" }
        text += "      containers:\n        - image: conformance/\(app)\n"
        if !env.isEmpty {
            text += "          env:\n"
            for (k, v) in env { text += "            - name: \(k)\n              value: \"\(v)\"\n" }
        }
        if containerPort != nil || portName != nil {
            text += "          ports:\n            - "
            var fields: [String] = []
            if let portName { fields.append("name: \(portName)") }
            if let containerPort { fields.append("containerPort: \(containerPort)") }
            text += fields.joined(separator: "\n              ") + "\n"
        }
        if let readinessProbe { text += "          readinessProbe:\n" + readinessProbe }
        return text + traffic
    }
}
