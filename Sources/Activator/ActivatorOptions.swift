// The activator's flags and environment. Every error names the flag and the expected form.
import ActivatorCore
import KnativeWire
import ProxyCore

struct OptionsError: Error, CustomStringConvertible {
    let description: String
}

struct ActivatorOptions {
    var settings = ActivatorSettings()
    var dataPort: UInt16 = 8012
    /// Knative's second data port (Service port 81, for h2c revisions); same handler. 0 = off.
    var h2cPort: UInt16 = 8013
    var metricsPort: UInt16 = 9090
    var adminAddress = SocketAddress(ip: "127.0.0.1", port: 8090)!
    var configPath: String?
    var drainGraceMs: Int64 = 45_000
    var logLevel = LogLevel.info
    var logFormat = LogFormat.standard
    /// zap settings read but not honoured, logged once logging is configured.
    var logWarnings: [String] = []
    /// Kubernetes mode (`--kube-api`): the state comes from the API, the admin API is read-only.
    var kube: KubeSourceSettings?

    static let help = """
        activator: Knative's shared proxy for revisions scaled to zero (or short of capacity).

        Usage: activator [flags]      (every flag can also come from the environment variable shown)

          --port N                 data port, HTTP/1.1 and h2c (default 8012)               ACTIVATOR_PORT
          --h2c-port N             second data port, same handler (Knative's 8013); default 8013
                                   when --port is not given, else off; 0 = off              ACTIVATOR_H2C_PORT
          --metrics-port N         Prometheus text /metrics (default 9090; 0 = off)         ACTIVATOR_METRICS_PORT
          --admin-address IP:PORT  admin API (default 127.0.0.1:8090)                       ACTIVATOR_ADMIN_ADDRESS
          --config FILE            JSON {"revisions": [...], "endpoints": {...}, "routes": [...]};
                                   reloaded on SIGHUP (an invalid file is reported, old state kept)
          --kube-api URL           http://host:port of a plain-HTTP Kubernetes API (a `kubectl proxy`
                                   sidecar): revisions, endpoints and config-logging come from there
                                   (LIST + WATCH), the admin API is read-only; not with --config  KUBE_API
          --system-namespace NS    Knative's namespace (config-logging, the autoscaler); required
                                   with --kube-api                                              SYSTEM_NAMESPACE
          --pod-ip IP              this activator's pod IP, found in each revision's public
                                   Endpoints for subsetting (unset: every pod is used)          POD_IP
          --kube-backoff D         first retry delay after an API error, doubled per error, back to
                                   the first after 2 min without one (800ms)
          --kube-backoff-max D     longest retry delay (default 30s)
          --kube-watch-timeout D   timeoutSeconds of each WATCH, then resumed (default 5m)
          --autoscaler-url URL     ws://host:port/path for stats (WireStatMessages, binary frames); host
                                   may be a name, resolved at every dial; default with --kube-api:
                                   ws://autoscaler.<SYSTEM_NAMESPACE>.svc.<cluster-domain>:8080   AUTOSCALER_URL
          --activator-count N      activators sharing each revision (default 1; admin/config mode,
                                   with --kube-api each revision's public Endpoints say it)
          --activator-index I      this activator's index, 0-based (default 0; likewise)
          --cluster-domain D       for Host routing <rev>.<ns>.svc.<D> (default cluster.local; with
                                   --kube-api, resolv.conf's search svc.<D> if there)          CLUSTER_DOMAIN
          --pod-name NAME          pod_name in stats (default "activator")                      POD_NAME
          --probe-interval D       pod re-probe interval (default 200ms)                        PROBE_FREQUENCY
          --probe-timeout D        pod probe timeout (default 300ms)                            PROBE_TIMEOUT
          --max-queued N           waiting requests per revision before 503 (default 10000)
          --max-queued-bytes N     bytes those may hold (default 67108864)
          --drain-grace D          after SIGTERM, keep serving this long (default 45s)          DRAIN_GRACE
          --log-level L            debug|info|warn|error (default info; overrides the config's level)
          --logging-config JSON    config-logging's zap-logger-config: level, encoding (json|console),
                                   outputPaths (stdout|stderr), encoderConfig keys (message, level, time,
                                   name, caller; empty = left out), timeEncoder (iso8601, rfc3339,
                                   rfc3339nano, epoch, millis, nanos), levelEncoder (lowercase|capital).
                                   "" = JSON lines on stderr (severity, level, ts, logger, msg)  CONFIG_LOGGING

        Admin API: GET /v1/state (with each revision's activator count, index and pods in "subsetting");
        with --kube-api only that (any change is 405). Otherwise also PUT|DELETE /v1/revisions/{ns}/{name}
        (containerConcurrency, timeoutSeconds, responseStartTimeoutSeconds, idleTimeoutSeconds, protocol);
        PUT /v1/revisions/{ns}/{name}/endpoints {"addresses": ["127.0.0.1:9001", ...]}; PUT|DELETE
        /v1/routes/{ns}/{name} {"hosts": [...], "traffic": [{"revisionName", "percent", "tag"}]}.

        Signals: SIGTERM/SIGINT → health answers 500, traffic served for the drain grace, then in-flight
        requests finish and it exits 0. SIGHUP → reload --config (nothing with --kube-api).

        With --kube-api, health answers 500 until revisions, endpoints and config-logging were listed once;
        while the API is unreachable the last state keeps serving and the API is retried with back-off.

        TLS is not served by this build: with /var/lib/knative/certs/tls.{crt,key} present (Knative's
        system-internal-tls) the activator exits 1 at start, saying so.

        """

    init(arguments: [String], environment env: [String: String]) throws(OptionsError) {
        var values: [String: String] = [:]
        let envNames = [
            "--port": "ACTIVATOR_PORT", "--h2c-port": "ACTIVATOR_H2C_PORT", "--metrics-port": "ACTIVATOR_METRICS_PORT",
            "--admin-address": "ACTIVATOR_ADMIN_ADDRESS", "--autoscaler-url": "AUTOSCALER_URL",
            "--cluster-domain": "CLUSTER_DOMAIN", "--pod-name": "POD_NAME", "--probe-interval": "PROBE_FREQUENCY",
            "--probe-timeout": "PROBE_TIMEOUT", "--drain-grace": "DRAIN_GRACE",
            "--logging-config": "CONFIG_LOGGING", "--kube-api": "KUBE_API", "--system-namespace": "SYSTEM_NAMESPACE",
            "--pod-ip": "POD_IP",
        ]
        for (flag, name) in envNames { if let v = env[name] { values[flag] = v } }
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            guard argument.hasPrefix("--") else {
                throw OptionsError(description: "unexpected argument \(argument) (try --help)")
            }
            if let eq = argument.firstIndex(of: "=") {
                values[String(argument[..<eq])] = String(argument[argument.index(after: eq)...])
            } else {
                guard i + 1 < arguments.count else { throw OptionsError(description: "\(argument) needs a value") }
                values[argument] = arguments[i + 1]
                i += 1
            }
            i += 1
        }
        let known: Set<String> = Set(envNames.keys).union([
            "--config", "--activator-count", "--activator-index", "--max-queued", "--max-queued-bytes", "--log-level",
            "--kube-backoff", "--kube-backoff-max", "--kube-watch-timeout",
        ])
        for key in values.keys where !known.contains(key) {
            throw OptionsError(description: "unknown flag \(key) (try --help)")
        }

        func port(_ flag: String, allowZero: Bool = false) throws(OptionsError) -> UInt16? {
            guard let text = values[flag] else { return nil }
            guard let p = UInt16(text), p > 0 || allowZero else {
                throw OptionsError(description: "\(flag)=\(text): expected a port number")
            }
            return p
        }
        func int(_ flag: String, min: Int) throws(OptionsError) -> Int? {
            guard let text = values[flag] else { return nil }
            guard let v = Int(text), v >= min else {
                throw OptionsError(description: "\(flag)=\(text): expected an integer ≥ \(min)")
            }
            return v
        }
        func duration(_ flag: String) throws(OptionsError) -> Int64? {
            guard let text = values[flag] else { return nil }
            guard let ms = GoDuration.milliseconds(text) else {
                throw OptionsError(description: "\(flag)=\(text): expected a duration such as 200ms or 45s")
            }
            return ms
        }
        let explicitPort = try port("--port")
        dataPort = explicitPort ?? dataPort
        // A non-default --port usually means a second activator on one machine (tests, kn-local): it should not
        // also claim 8013 unless asked to.
        h2cPort = try port("--h2c-port", allowZero: true) ?? (explicitPort == nil ? h2cPort : 0)
        metricsPort = try port("--metrics-port", allowZero: true) ?? metricsPort
        if let text = values["--admin-address"] {
            guard let address = SocketAddress.parse(text) else {
                throw OptionsError(description: "--admin-address=\(text): expected ip:port")
            }
            adminAddress = address
        }
        configPath = values["--config"]
        if let url = values["--autoscaler-url"] {
            guard WebSocketClient(url: url) != nil else {
                throw OptionsError(description: "--autoscaler-url=\(url): expected ws://host[:port][/path]")
            }
            settings.autoscalerURL = url
        }
        settings.activatorCount = try int("--activator-count", min: 1) ?? 1
        settings.activatorIndex = try int("--activator-index", min: 0) ?? 0
        guard settings.activatorIndex < settings.activatorCount else {
            throw OptionsError(description: "--activator-index must be below --activator-count")
        }
        settings.clusterDomain = values["--cluster-domain"] ?? settings.clusterDomain
        settings.podName = values["--pod-name"] ?? settings.podName
        settings.probeIntervalMs = try duration("--probe-interval") ?? settings.probeIntervalMs
        settings.probeTimeoutMs = try duration("--probe-timeout") ?? settings.probeTimeoutMs
        settings.maxQueuedPerRevision = try int("--max-queued", min: 0) ?? settings.maxQueuedPerRevision
        settings.maxQueuedBytesPerRevision = try int("--max-queued-bytes", min: 0) ?? settings.maxQueuedBytesPerRevision
        drainGraceMs = try duration("--drain-grace") ?? drainGraceMs
        do {
            if let zap = try ZapConfig.parse(values["--logging-config"] ?? "") {
                (logLevel, logFormat, logWarnings) = (zap.level, zap.format, zap.warnings)
            }
        } catch {
            throw OptionsError(description: "--logging-config (CONFIG_LOGGING): \(error)")
        }
        if let level = values["--log-level"] {
            guard let parsed = LogLevel(name: level) else {
                throw OptionsError(description: "--log-level=\(level): expected debug, info, warn or error")
            }
            logLevel = parsed
        }
        try kubeOptions(values, duration: duration)
    }

    /// `--kube-api` and what goes with it.
    private mutating func kubeOptions(
        _ values: [String: String], duration: (String) throws(OptionsError) -> Int64?
    ) throws(OptionsError) {
        guard let url = values["--kube-api"], !url.isEmpty else {
            for flag in ["--kube-backoff", "--kube-backoff-max", "--kube-watch-timeout"] where values[flag] != nil {
                throw OptionsError(description: "\(flag) needs --kube-api (KUBE_API)")
            }
            return
        }
        guard let api = KubeAPIEndpoint(url: url) else {
            throw OptionsError(
                description: "--kube-api=\(url) (KUBE_API): expected http://host[:port], e.g. http://127.0.0.1:8001")
        }
        if let path = configPath {
            throw OptionsError(
                description: "--config \(path) and --kube-api \(url) exclude each other: the state comes either from a "
                    + "file or from the Kubernetes API")
        }
        guard let namespace = values["--system-namespace"], !namespace.isEmpty else {
            throw OptionsError(
                description:
                    "--kube-api needs --system-namespace (SYSTEM_NAMESPACE): Knative's namespace, e.g. knative-serving")
        }
        if let problem = DNSName.dns1123LabelProblem(namespace) {
            throw OptionsError(description: "--system-namespace=\(namespace) (SYSTEM_NAMESPACE): \(problem)")
        }
        var kube = KubeSourceSettings(api: api, systemNamespace: namespace)
        if let ip = values["--pod-ip"], !ip.isEmpty {
            guard SocketAddress(ip: ip, port: 1) != nil else {
                throw OptionsError(description: "--pod-ip=\(ip) (POD_IP): expected an IP address")
            }
            kube.podIP = ip
        }
        kube.watch.backoffInitialMs = try duration("--kube-backoff") ?? kube.watch.backoffInitialMs
        kube.watch.backoffMaxMs = try duration("--kube-backoff-max") ?? kube.watch.backoffMaxMs
        guard kube.watch.backoffInitialMs > 0, kube.watch.backoffMaxMs >= kube.watch.backoffInitialMs else {
            throw OptionsError(description: "--kube-backoff and --kube-backoff-max: expected 0 < backoff ≤ max")
        }
        if let ms = try duration("--kube-watch-timeout") {
            guard ms >= 1000 else {
                throw OptionsError(
                    description: "--kube-watch-timeout=\(values["--kube-watch-timeout"]!): expected ≥ 1s")
            }
            kube.watch.watchTimeoutSeconds = Int(ms / 1000)
        }
        kube.logLevelIsFixed = values["--log-level"] != nil
        // As upstream, a pod's resolv.conf says the cluster domain (`search … svc.<domain> …`); an explicit
        // --cluster-domain (CLUSTER_DOMAIN) wins here.
        if values["--cluster-domain"] == nil, let text = try? Files.readText("/etc/resolv.conf"),
            let domain = KubeCluster.domain(resolvConf: text)
        {
            settings.clusterDomain = domain
        }
        if settings.autoscalerURL == nil {
            let url = "ws://autoscaler.\(namespace).svc.\(settings.clusterDomain):8080"
            guard WebSocketClient(url: url) != nil else {
                throw OptionsError(
                    description:
                        "--cluster-domain=\(settings.clusterDomain): the autoscaler's default URL \(url) is not "
                        + "valid; expected a DNS domain such as cluster.local")
            }
            settings.autoscalerURL = url
        }
        self.kube = kube
    }
}
