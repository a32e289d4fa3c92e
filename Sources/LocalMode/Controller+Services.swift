// Services and configurations (Knative's service and configuration reconcilers): apply and delete manifests,
// and stamp a new Revision from a Service's template when it changes.
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    /// Applies every Service in `text`; returns kubectl-style lines. Throws the validation error text.
    public func apply(_ text: String, namespace: String? = nil) throws -> [String] {
        func denied(_ error: ValidationError) -> ManifestError {
            ManifestError(
                "admission webhook \"validation.webhook.serving.knative.dev\" denied the request: validation failed: \(error)"
            )
        }
        // Every object is decoded (and validated) before any is applied.
        let documents = try Manifest.documents(text)
        var manifests: [ServiceManifest] = []
        do {
            for document in documents {
                manifests.append(
                    try Manifest.decode(
                        document, defaultNamespace: namespace ?? "default",
                        allowZeroInitialScale: settings.autoscaler.allowZeroInitialScale))
            }
        } catch let error as ValidationError {
            throw denied(error)
        }
        var lines: [String] = []
        defer { saveState() }
        for (manifest, document) in zip(manifests, documents) {
            do { lines.append(try apply(manifest, document: document)) } catch let error as ValidationError {
                throw denied(error)
            }
        }
        return lines
    }

    /// Applies one decoded Service; `document` is the object as given (kept for the state file).
    func apply(_ manifest: ServiceManifest, document: JSON) throws -> String {
        let key = manifest.namespace + "/" + manifest.name
        let kind = "service.serving.knative.dev/\(manifest.name)"
        let existingService = services[key]
        if let service = existingService {
            let latest = service.latestCreated.flatMap { revisions[manifest.namespace + "/" + $0] }
            if let latest, latest.template == manifest.template {
                if service.manifest == manifest { return kind + " unchanged" }
                service.manifest = manifest
                service.document = document
                resolveRoute(service)
                return kind + " configured"
            }
        }
        // A named template that already exists: the same revision again (upstream reuses it), never a takeover.
        var reused: RevisionObject?
        if let name = manifest.template.name, let existing = revisions[manifest.namespace + "/" + name] {
            guard existing.serviceName == manifest.name else {
                throw ValidationError([
                    "revision \"\(name)\" already exists and belongs to service \"\(existing.serviceName)\": spec.template.metadata.name"
                ])
            }
            guard existing.template == manifest.template else {
                throw ValidationError([
                    "Saw the following changes without a name change (-old +new): spec.template.metadata.name\nset a new spec.template.metadata.name or remove it"
                ])
            }
            reused = existing
        }
        let service =
            existingService
            ?? ServiceObject(manifest: manifest, document: document, nowMs: now, createdAtUnixMs: unixMs())
        service.manifest = manifest
        service.document = document
        if existingService == nil {
            services[key] = service
            events.emit("service \(key) created: \(service.url(domain: settings.domain))")
        }
        if let reused {
            service.latestCreated = reused.name
            if reused.everReady { service.latestReady = reused.name }
        } else {
            if existingService != nil { service.generation += 1 }
            createRevision(for: service)
        }
        resolveRoute(service)
        return kind + (existingService == nil ? " created" : " configured")
    }

    public func deleteService(namespace: String, name: String) -> Bool {
        guard let service = services.removeValue(forKey: namespace + "/" + name) else { return false }
        _ = try? BlockingClient.request("DELETE", activatorAdmin, "/v1/routes/\(namespace)/\(name)")
        for revisionName in service.revisionNames {
            guard let revision = revisions.removeValue(forKey: namespace + "/" + revisionName) else { continue }
            revision.retryTimer.map { loop.cancel($0) }
            for pod in revision.activePods { terminate(pod, reason: "service deleted") }
            _ = try? BlockingClient.request("DELETE", activatorAdmin, "/v1/revisions/\(namespace)/\(revisionName)")
        }
        updateScrapeBoard()
        events.emit("service \(namespace)/\(name) deleted")
        saveState()
        return true
    }

    func createRevision(for service: ServiceObject) {
        let m = service.manifest
        var name = m.template.name ?? ""
        if name.isEmpty {
            // kmeta.ChildName(config, "-%05d" of the configuration's generation); a taken name moves on.
            var number = service.generation
            repeat {
                let digits = "\(number)"
                name = m.name + "-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits
                number += 1
            } while revisions[m.namespace + "/" + name] != nil
        }
        let (argv, failure) = resolveCommand(m.template.container)
        let spec = ScalingSpec(containerConcurrency: m.template.containerConcurrency, annotations: m.template.scaling)
        let revision = RevisionObject(
            namespace: m.namespace, name: name, serviceName: m.name, generation: service.generation,
            template: m.template,
            templateDocument: service.document["spec"]?["template"] ?? .object([]),
            argv: argv,
            scaler: RevisionAutoscaler(
                config: settings.autoscaler, spec: spec, nowMs: now, progressDeadlineMs: settings.progressDeadlineMs),
            nowMs: now, createdAtUnixMs: unixMs())
        revisions[revision.key] = revision
        service.revisionNames.append(name)
        service.latestCreated = name
        if let failure {
            revision.condition = failure
            service.configCondition = Condition(
                status: "False", reason: "RevisionFailed",
                message: "Revision \"\(name)\" failed with message: \(failure.message).")
            events.emit("revision \(revision.key) created but cannot run: \(failure.message)")
            resolveRoute(service)
            return
        }
        service.configCondition = Condition(status: "Unknown", reason: "", message: "")
        revision.condition = Condition(status: "Unknown", reason: "Deploying", message: "")
        events.emit("revision \(revision.key) created (initial scale \(revision.scaler.initialScale))")
        programRevision(revision)
        if revision.scaler.initialScale == 0 { revisionBecameReady(revision) }
        reconcile(revision)
    }

    /// The user container's command line: its `command`, or its image through the image map; the PATH lookup
    /// of the executable happens here (as an image pull would). - Returns: the argv, or why there is none.
    func resolveCommand(_ container: ContainerSpec) -> ([String]?, Condition?) {
        let pathEnv = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        let base = container.command.isEmpty ? settings.command(forImage: container.image) : container.command
        guard let base, let first = base.first else {
            return (
                nil,
                Condition(
                    status: "False", reason: "ContainerMissing",
                    message:
                        "Unable to fetch image \"\(container.image)\": kn-local runs local commands; give the container a command or map the image with --image-map"
                )
            )
        }
        guard let resolved = ProcessControl.resolve(first, path: pathEnv) else {
            return (
                nil,
                Condition(
                    status: "False", reason: "ContainerMissing",
                    message: "\(first): no such executable (PATH=\(pathEnv))")
            )
        }
        return ([resolved] + base.dropFirst() + container.args, nil)
    }
}
