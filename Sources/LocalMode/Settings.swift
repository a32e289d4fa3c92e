// kn-local's settings: flags of `serve`, with the config-autoscaler keys (spec §3.4) accepted as flags.
import Glibc
import KnativeWire
import ProxyCore

public struct LocalSettings: Sendable {
    public var ingressPort: UInt16 = 8080
    public var controlAddress = SocketAddress(ip: "127.0.0.1", port: 8079)!
    public var domain = "example.com"
    public var podPorts: ClosedRange<Int> = 10000...19999
    /// `auto` (namespaces when root and iproute2 allow, else loopback ports), `namespace` or `loopback`.
    public var podNetwork = "auto"
    public var podCIDR = "10.213.0.0/16"
    public var stateDirectory = "/tmp/kn-local"
    public var binDirectory = ProcessControl.ownDirectory()
    public var queueProxyPath: String?
    public var activatorPath: String?
    public var imageMapPath: String?
    public var imageMap: [String: [String]] = [:]
    public var autoscaler = AutoscalerConfig()
    public var drainQuietPeriod = "1s"
    /// At most this many pods per revision, whatever the autoscaler wants (each pod is two processes).
    public var podLimit = 100
    /// Knative's config-deployment `progress-deadline` (600 s): a revision that wants pods and gets none ready
    /// within it is Ready False / ProgressDeadlineExceeded; the KPA gives up activating 30 s later.
    public var progressDeadlineMs: Int64 = 600_000
    public var applyFiles: [String] = []
    public var verbose = false

    public init() {}

    /// A starting pod not ready after this long is reported (an event with its log's tail, `ProbeFailing` in
    /// `get pods`): 5 s, or the progress deadline when that is shorter.
    public var podNotReadyReportMs: Int64 { min(5_000, progressDeadlineMs) }

    public var queueProxy: String { queueProxyPath ?? binDirectory + "/queue-proxy" }
    public var activator: String { activatorPath ?? binDirectory + "/activator" }

    /// Images that run the bundled sample when no image map entry or command says otherwise.
    public static let sampleImages = [
        "registry.cn-hangzhou.aliyuncs.com/knative-sample/helloworld-go:160e4dc8",
        "gcr.io/knative-samples/helloworld-go",
        "ghcr.io/knative/helloworld-go:latest",
        "ghcr.io/knative/helloworld-go",
    ]

    /// The command for an image: the image map first (exact, then without tag/digest), then the samples.
    public func command(forImage image: String) -> [String]? {
        if let c = imageMap[image] { return c }
        let untagged = Self.stripTag(image)
        if let c = imageMap[untagged] { return c }
        if Self.sampleImages.contains(image) || Self.sampleImages.contains(untagged) {
            return [binDirectory + "/helloworld"]
        }
        return nil
    }

    static func stripTag(_ image: String) -> String {
        if let at = image.firstIndex(of: "@") { return String(image[..<at]) }
        if let colon = image.lastIndex(of: ":"), !image[colon...].contains("/") { return String(image[..<colon]) }
        return image
    }

    /// Reads an image map: a YAML or JSON map of image → command (a string split on spaces, or a list).
    public static func loadImageMap(_ path: String) throws -> [String: [String]] {
        let text = try readFile(path)
        let documents: [JSON]
        do {
            documents =
                text.drop(while: { $0 == " " || $0 == "\n" }).first == "{"
                ? [try JSON.parse(text)] : try YAML.parseDocuments(text)
        } catch { throw ManifestError("--image-map \(path): \(error)") }
        var map: [String: [String]] = [:]
        for document in documents {
            guard let members = document.objectValue else {
                throw ManifestError("--image-map \(path): expected a map of image: command")
            }
            for (image, value) in members {
                if let s = value.stringValue {
                    map[image] = s.split(separator: " ").map(String.init)
                } else if let list = value.arrayValue, !list.isEmpty, list.allSatisfy({ $0.stringValue != nil }) {
                    map[image] = list.map { $0.stringValue! }
                } else {
                    throw ManifestError("--image-map \(path): \(image): expected a command string or a list of strings")
                }
            }
        }
        return map
    }

    public static let help = """
        kn-local: run Knative Services on this machine: Service YAML in, pods as local processes, our activator as
        the ingress, the KPA scaling them (to zero and back).

        Usage:
          kn-local serve [-f FILE]... [flags]     run everything in the foreground; print events
          kn-local apply -f FILE                  create or update the Services in FILE (YAML or JSON)
          kn-local get ksvc|revisions|routes|configurations|pods [NAME] [-n NAMESPACE] [-o json]
          kn-local delete ksvc NAME [-n NAMESPACE]

        Client commands talk to a running `serve` at --control (default 127.0.0.1:8079, env KN_LOCAL_CONTROL).

        serve flags:
          -f, --filename FILE        apply FILE at start (repeatable)
          --port N                   ingress port: the activator, all traffic (default 8080)
          --control ADDR             control API for the client commands (default 127.0.0.1:8079)
          --domain D                 route domain: <name>.<namespace>.<domain> (default example.com)
          --pod-network MODE         auto | namespace | loopback (default auto): `namespace` gives every pod its
                                     own network namespace and address (root and iproute2's `ip`), so apps
                                     listen on their containerPort and queue-proxies on Knative's ports;
                                     `loopback` gives pods ports on 127.0.0.1; auto picks namespace when it can
          --pod-cidr CIDR            pod addresses in namespace mode; the bridge takes the first
                                     (default 10.213.0.0/16)
          --pod-ports LO-HI          loopback ports for pods, 4 per pod (default 10000-19999)
          --state-dir DIR            DIR/state.json keeps the services and revisions (saved on every change,
                                     restored at start; pods start anew); pod logs in
                                     DIR/<namespace>/<pod>/{user-container,queue-proxy}.log (default /tmp/kn-local)
          --image-map FILE           YAML/JSON map image → command; the helloworld-go images map to the
                                     bundled `helloworld` without it
          --queue-proxy PATH         queue-proxy binary (default: next to kn-local)
          --activator PATH           activator binary (default: next to kn-local)
          --drain-quiet-period D     QUEUE_DRAIN_QUIET_PERIOD of pods being removed (default 1s; Knative 30s;
                                     below ~1s a request already on its way to a removed pod can get 502)
          --pod-limit N              at most N pods per revision, whatever the autoscaler wants (default 100)
          --progress-deadline D      a revision that wants pods and gets none ready within D is Ready False,
                                     ProgressDeadlineExceeded (default 600s, Knative's config-deployment)
          -v, --verbose              also print activator stats and every pod start and stop

        config-autoscaler keys (Knative's defaults), as --KEY=VALUE:

        """ + AutoscalerConfig.keys.map { "  --\($0.0)=\($0.1)".padding(52) + $0.2 }.joined(separator: "\n") + """


            Environment: KN_LOCAL_CONTROL (client commands). Pods get PORT, K_SERVICE, K_CONFIGURATION, K_REVISION and
            their spec env on top of kn-local's environment; queue-proxies get Knative's env (spec §1.1).

            """

    public init(arguments: [String]) throws {
        var i = 0
        func value(_ flag: String) throws -> String {
            i += 1
            guard i < arguments.count else { throw ManifestError("\(flag) needs a value (see kn-local --help)") }
            return arguments[i]
        }
        while i < arguments.count {
            var arg = arguments[i]
            var inline: String?
            if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
                inline = String(arg[arg.index(after: eq)...])
                arg = String(arg[..<eq])
            }
            func v() throws -> String {
                if let inline { return inline }
                return try value(arg)
            }
            switch arg {
            case "-f", "--filename": applyFiles.append(try v())
            case "--port":
                let text = try v()
                guard let p = UInt16(text), p > 0 else {
                    throw ManifestError("--port \(text): expected a port number 1-65535")
                }
                ingressPort = p
            case "--control":
                let text = try v()
                guard let a = SocketAddress.parse(text) else {
                    throw ManifestError("--control \(text): expected ip:port")
                }
                controlAddress = a
            case "--domain": domain = try v()
            case "--pod-ports":
                let text = try v()
                let parts = text.split(separator: "-").compactMap { Int($0) }
                guard parts.count == 2, parts[0] >= 1024, parts[1] <= 65535, parts[1] - parts[0] >= 8 else {
                    throw ManifestError("--pod-ports \(text): expected LO-HI within 1024-65535, at least 8 ports")
                }
                podPorts = parts[0]...parts[1]
            case "--pod-network":
                let text = try v()
                guard ["auto", "namespace", "loopback"].contains(text) else {
                    throw ManifestError("--pod-network \(text): expected auto, namespace or loopback")
                }
                podNetwork = text
            case "--pod-cidr":
                let text = try v()
                guard PodNetwork.Subnet(text) != nil else {
                    throw ManifestError("--pod-cidr \(text): expected an IPv4 CIDR such as 10.213.0.0/16 (prefix 8-28)")
                }
                podCIDR = text
            case "--state-dir": stateDirectory = try v()
            case "--image-map":
                let path = try v()
                imageMapPath = path
                imageMap = try Self.loadImageMap(path)
            case "--queue-proxy": queueProxyPath = try v()
            case "--activator": activatorPath = try v()
            case "--drain-quiet-period":
                let text = try v()
                guard GoDuration.milliseconds(text) != nil else {
                    throw ManifestError("--drain-quiet-period \(text): expected a duration like 1s")
                }
                drainQuietPeriod = text
            case "--pod-limit":
                let text = try v()
                guard let n = Int(text), n >= 1, n <= 1000 else {
                    throw ManifestError("--pod-limit \(text): expected an integer 1-1000")
                }
                podLimit = n
            case "--progress-deadline":
                let text = try v()
                guard let ms = GoDuration.milliseconds(text), ms >= 1_000 else {
                    throw ManifestError(
                        "--progress-deadline \(text): expected a duration of at least 1s, like 2s or 10m")
                }
                progressDeadlineMs = ms
            case "-v", "--verbose": verbose = true
            default:
                guard arg.hasPrefix("--") else {
                    throw ManifestError("unexpected argument \"\(arg)\" (see kn-local --help)")
                }
                let key = String(arg.dropFirst(2))
                guard AutoscalerConfig.keys.contains(where: { $0.0 == key }) else {
                    throw ManifestError("unknown flag \(arg) (see kn-local --help)")
                }
                try autoscaler.set(key, try v())
            }
            i += 1
        }
        try autoscaler.validate()
        for path in [queueProxy, activator] where access(path, X_OK) != 0 {
            throw ManifestError(
                "\(path) is not an executable; build it (swift build) or pass --queue-proxy/--activator")
        }
    }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}

/// Reads a whole file as UTF-8 ("-" = stdin); the error names the file.
public func readFile(_ path: String) throws -> String {
    do { return try Files.readText(path) } catch {
        throw ManifestError("cannot read \(path): \(SysError.text(error.code))")
    }
}
