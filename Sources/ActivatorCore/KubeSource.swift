// The activator driven by the Kubernetes API (`--kube-api`), as upstream's informers drive it: Revisions →
// revision specs; private Endpoints → each revision's pods; public Endpoints → this activator's count and
// index per revision (subsetting); ConfigMap config-logging → the log level and format, live. Each collection
// is a `KubeReflector` (LIST + WATCH) on the activator's loop. While the API is unreachable the activator keeps
// the last state it was given. Watch events are few: String and JSON work here is off the data path.
import KnativeWire
import ProxyCore

/// How to reach the API and what to read there.
public struct KubeSourceSettings: Sendable {
    public var api: KubeAPIEndpoint
    /// Knative's namespace (`SYSTEM_NAMESPACE`): where config-logging lives.
    public var systemNamespace: String
    /// This activator's pod IP (`POD_IP`), looked up in each revision's public Endpoints; nil: subsetting off.
    public var podIP: String?
    public var watch = KubeWatchSettings()
    /// The log level was given on the command line (`--log-level`): config-logging does not change it.
    public var logLevelIsFixed = false
    /// The ConfigMap holding the logging config (upstream's `CONFIG_LOGGING_NAME`).
    public var loggingConfigMap = "config-logging"

    public init(api: KubeAPIEndpoint, systemNamespace: String) {
        self.api = api
        self.systemNamespace = systemNamespace
    }
}

/// The reflectors and what they feed into the activator.
public final class KubeSource {
    public let settings: KubeSourceSettings
    private unowned(unsafe) let activator: Activator  // both live for the process on one loop
    private var reflectors: [KubeReflector] = []
    /// Private Endpoints object "ns/name" → the revision key it gives pods to.
    private var privateEndpoints: [String: String] = [:]
    /// The revisions the API listed, by key (to drop the ones a relist no longer has).
    private var revisionKeys: Set<String> = []
    private var isSynced = false
    static let waitingText = "waiting for the first lists from the Kubernetes API"

    public init(settings: KubeSourceSettings, activator: Activator, loop: EventLoop) {
        self.settings = settings
        self.activator = activator
        func reflector(_ path: String, _ selector: String, _ what: String) -> KubeReflector {
            let r = KubeReflector(
                api: settings.api, path: path, selector: selector, what: what, settings: settings.watch, loop: loop)
            reflectors.append(r)
            return r
        }
        let revisions = reflector("/apis/serving.knative.dev/v1/revisions", "", "revisions")
        revisions.onReplace = { [unowned self] items in self.replaceRevisions(items) }
        revisions.onEvent = { [unowned self] kind, object in self.revisionEvent(kind, object) }

        let privateSelector = "labelSelector=" + KubeReflector.encode("\(KnativeLabels.serviceType)=Private")
        let pods = reflector("/api/v1/endpoints", privateSelector, "private endpoints")
        pods.onReplace = { [unowned self] items in self.replacePrivate(items) }
        pods.onEvent = { [unowned self] kind, object in self.privateEvent(kind, object) }

        if settings.podIP != nil {
            let publicSelector = "labelSelector=" + KubeReflector.encode("\(KnativeLabels.serviceType)=Public")
            let activators = reflector("/api/v1/endpoints", publicSelector, "public endpoints")
            activators.onReplace = { [unowned self] items in
                // A revision whose public Endpoints are gone from the list is forgotten, as on DELETED.
                let listed = Set(items.compactMap { self.publicEvent(.added, $0) })
                for key in self.activator.subsets.keys where !listed.contains(key) {
                    self.activator.forgetSubset(key: key)
                }
                self.checkSynced()
            }
            activators.onEvent = { [unowned self] kind, object in _ = self.publicEvent(kind, object) }
        }

        let configSelector = "fieldSelector=" + KubeReflector.encode("metadata.name=\(settings.loggingConfigMap)")
        let logging = reflector(
            "/api/v1/namespaces/\(settings.systemNamespace)/configmaps", configSelector, settings.loggingConfigMap)
        logging.onReplace = { [unowned self] items in
            if let item = items.first { self.loggingConfig(item) }
            self.checkSynced()
        }
        logging.onEvent = { [unowned self] kind, object in if kind != .deleted { self.loggingConfig(object) } }
    }

    /// Starts every LIST + WATCH. The kubelet's probe fails until each collection was listed once.
    public func start() {
        activator.notReadyReason = Self.waitingText
        if settings.podIP == nil {
            Log.warn("POD_IP is not set: subsetting is off, every activator uses all pods of a revision")
        }
        for reflector in reflectors { reflector.start() }
    }

    public func stop() {
        for reflector in reflectors { reflector.stop() }
    }

    /// Every collection has been listed at least once.
    private func checkSynced() {
        guard !isSynced, reflectors.allSatisfy({ $0.listCount > 0 }) else { return }
        isSynced = true
        activator.notReadyReason = nil
        Log.info("kube: synced revisions and endpoints from \(settings.api.hostHeader)")
    }

    // MARK: - Revisions

    private func replaceRevisions(_ items: [JSON]) {
        var seen: Set<String> = []
        for item in items {
            if let key = putRevision(item) { seen.insert(key) }
        }
        for key in revisionKeys.subtracting(seen) { activator.deleteRevision(key: key) }
        revisionKeys = seen
        checkSynced()
    }

    private func revisionEvent(_ kind: KubeWatchEvent.Kind, _ object: JSON) {
        if kind == .deleted {
            let meta = (try? JSONObjectReader(object, at: "revision")).flatMap { try? KubeMeta(of: $0) }
            guard let key = meta?.key else { return }
            revisionKeys.remove(key)
            activator.deleteRevision(key: key)
        } else if let key = putRevision(object) {
            revisionKeys.insert(key)
        }
    }

    /// - Returns: the revision's key, or nil when it cannot be decoded (logged; the old spec, if any, stays).
    private func putRevision(_ object: JSON) -> String? {
        do {
            let spec = try KubeRevision.spec(object)
            activator.putRevision(spec)
            return spec.key
        } catch {
            Log.warn("kube: ignoring a revision: \(error)")
            let meta = (try? JSONObjectReader(object, at: "revision")).flatMap { try? KubeMeta(of: $0) }
            return meta.map(\.key).flatMap { revisionKeys.contains($0) ? $0 : nil }
        }
    }

    // MARK: - Private Endpoints: the revision's pods

    private func replacePrivate(_ items: [JSON]) {
        let before = privateEndpoints
        privateEndpoints = [:]
        for item in items { privateEvent(.added, item) }
        let kept = Set(privateEndpoints.values)
        for key in Set(before.values).subtracting(kept) { activator.removeEndpoints(key: key) }
        checkSynced()
    }

    private func privateEvent(_ kind: KubeWatchEvent.Kind, _ object: JSON) {
        let endpoints: KubeEndpoints
        do { endpoints = try KubeEndpoints.parse(object) } catch {
            Log.warn("kube: ignoring private endpoints: \(error)")
            return
        }
        let objectKey = endpoints.meta.key
        guard let key = endpoints.revisionKey ?? privateEndpoints[objectKey] else {
            Log.rateLimited("kube: private endpoints \(objectKey) have no \(KnativeLabels.revision) label: ignored")
            return
        }
        if kind == .deleted {
            privateEndpoints.removeValue(forKey: objectKey)
            activator.removeEndpoints(key: key)
            return
        }
        privateEndpoints[objectKey] = key
        // Ready and not-ready addresses alike: every pod is probed before it gets traffic (as upstream's
        // activator, which so reaches a pod ahead of the kubelet's readiness).
        activator.setEndpoints(key: key, endpoints.ready + endpoints.notReady)
    }

    // MARK: - Public Endpoints: this activator's share

    /// - Returns: the revision the Endpoints belong to, if they could be read.
    private func publicEvent(_ kind: KubeWatchEvent.Kind, _ object: JSON) -> String? {
        guard let podIP = settings.podIP else { return nil }
        let endpoints: KubeEndpoints
        do { endpoints = try KubeEndpoints.parse(object) } catch {
            Log.warn("kube: ignoring public endpoints: \(error)")
            return nil
        }
        guard let key = endpoints.revisionKey else { return nil }
        // Deleted with its revision: the share is forgotten (a revision made again with the name starts over).
        if kind == .deleted {
            activator.forgetSubset(key: key)
            return key
        }
        // Upstream (throttler.go, handlePubEpsUpdate): an update without this activator's IP is ignored, the
        // revision keeps its last count and index (before the first: all pods).
        if let share = ActivatorSubset.infer(ips: endpoints.readyIPs, selfIP: podIP) {
            activator.setSubset(key: key, count: share.count, index: share.index)
        }
        return key
    }

    // MARK: - config-logging

    private func loggingConfig(_ object: JSON) {
        let data: [String: String]
        do { data = try KubeConfigMap.data(object) } catch {
            Log.warn("kube: ignoring \(settings.loggingConfigMap): \(error)")
            return
        }
        var (level, format) = Log.current
        do {
            if let zap = try ZapConfig.parse(data["zap-logger-config"] ?? "") {
                format = zap.format
                level = zap.level
                for warning in zap.warnings { Log.warn("\(settings.loggingConfigMap): \(warning)") }
            }
        } catch {
            Log.warn("kube: \(settings.loggingConfigMap): zap-logger-config: \(error); keeping the current logging")
            return
        }
        if let name = data["loglevel.activator"], !name.isEmpty {
            guard let parsed = LogLevel(name: name) else {
                Log.warn(
                    "kube: \(settings.loggingConfigMap): loglevel.activator: expected debug, info, warn or error, "
                        + "got \(JSON.quote(name)); keeping the current logging")
                return
            }
            level = parsed
        }
        if settings.logLevelIsFixed { level = Log.current.level }
        guard (level, format) != Log.current else { return }
        Log.reconfigure(level: level, format: format)
        Log.info("logging from \(settings.loggingConfigMap): level \(level.name)")
    }
}
