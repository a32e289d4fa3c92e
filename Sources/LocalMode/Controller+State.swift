// Nothing applied is lost: the services and revisions are saved to --state-dir/state.json after every change
// (StateFile has the format and the atomic write), and `serve` restores them at start. Restored revisions keep
// their names, generations, status and last scale; their pods start anew, as after a node reboot. A file that
// cannot be restored is reported, moved aside, and `serve` starts empty; it is never overwritten.
import Glibc
import KnativeWire
import ProxyCore

extension Controller {
    var statePath: String { settings.stateDirectory + "/" + StateFile.fileName }

    /// The objects as the state file keeps them, services by key, revisions oldest first.
    func snapshot() -> [StoredService] {
        services.values.sorted { $0.key < $1.key }.map { s in
            let own = s.revisionNames.compactMap { revisions[s.manifest.namespace + "/" + $0] }
            return StoredService(
                namespace: s.manifest.namespace, name: s.manifest.name, document: s.document, manifest: s.manifest,
                generation: s.generation, createdAtUnixMs: s.createdAtUnixMs, latestCreated: s.latestCreated,
                latestReady: s.latestReady, configCondition: s.configCondition, routeCondition: s.routeCondition,
                traffic: s.routedTraffic,
                revisions: own.map { r in
                    StoredRevision(
                        name: r.name, generation: r.generation, createdAtUnixMs: r.createdAtUnixMs,
                        templateDocument: r.templateDocument, template: r.template, condition: r.condition,
                        everReady: r.everReady, desiredScale: r.scaler.lastScale)
                })
        }
    }

    /// Hands the state to the writer if anything it holds changed since the last time. Called at the end of
    /// every handler that can change an object (apply, delete, pod ready or dead, scaling decisions, deadlines).
    func saveState() {
        guard persistence.isEnabled else { return }
        let text = StateFile.encode(snapshot())
        guard text != persistence.lastSubmitted else { return }
        persistence.lastSubmitted = text
        stateWriter.submit(text, to: statePath)
    }

    /// At start, before the activator: restores the state file, or reports an unusable one, moves it aside
    /// and starts empty.
    func loadState() {
        switch StateFile.load(statePath) {
        case .none:
            return
        case .unusable(let why):
            var text = "cannot restore state from \(statePath): \(why)"
            do {
                let aside = try StateFile.moveAside(statePath, unixMs: unixMs())
                text += "; moved it to \(aside); starting empty"
            } catch {
                // Never overwrite what could not be restored: no saving in this run.
                persistence.isEnabled = false
                text += "; \(error); starting empty, and NOT saving state in this run (it would overwrite the file)"
            }
            events.emit(text)
            Log.writeStderr("kn-local serve: \(text)\n")
        case .services(let stored):
            restore(stored)
            let count = stored.reduce(0) { $0 + $1.revisions.count }
            events.emit(
                "restored \(Self.count(stored.count, "service", "services")) and "
                    + "\(Self.count(count, "revision", "revisions")) from \(statePath); their pods start anew")
        }
    }

    /// Rebuilds the objects (the controller is empty). Commands are resolved again (PATH, --image-map), as an
    /// image is pulled again; the KPA takes up each revision's last scale.
    func restore(_ stored: [StoredService]) {
        let wallNow = unixMs()
        /// The loop-clock time of a wall-clock creation time (ages, and the order of `get revisions`).
        func loopTime(_ createdAtUnixMs: Int64) -> Int64 { now - max(0, wallNow - createdAtUnixMs) }
        for s in stored {
            let service = ServiceObject(
                manifest: s.manifest, document: s.document, nowMs: loopTime(s.createdAtUnixMs),
                createdAtUnixMs: s.createdAtUnixMs)
            service.generation = s.generation
            service.latestCreated = s.latestCreated
            service.latestReady = s.latestReady
            service.configCondition = s.configCondition
            service.routeCondition = s.routeCondition
            service.routedTraffic = s.traffic
            service.revisionNames = s.revisions.map(\.name)
            services[service.key] = service
            for r in s.revisions {
                let (argv, failure) = resolveCommand(r.template.container)
                let spec = ScalingSpec(
                    containerConcurrency: r.template.containerConcurrency, annotations: r.template.scaling)
                var scaler = RevisionAutoscaler(
                    config: settings.autoscaler, spec: spec, nowMs: now, progressDeadlineMs: settings.progressDeadlineMs
                )
                scaler.resume(atScale: r.desiredScale, nowMs: now)
                let revision = RevisionObject(
                    namespace: s.namespace, name: r.name, serviceName: s.name, generation: r.generation,
                    template: r.template, templateDocument: r.templateDocument, argv: argv, scaler: scaler,
                    nowMs: loopTime(r.createdAtUnixMs), createdAtUnixMs: r.createdAtUnixMs)
                revision.condition = failure ?? r.condition
                revision.everReady = r.everReady
                revision.routable = s.traffic.contains { $0.revisionName == r.name }
                revisions[revision.key] = revision
                if let failure { events.emit("revision \(revision.key) restored but cannot run: \(failure.message)") }
            }
        }
    }
}

/// The state file's bookkeeping on the controller.
struct Persistence {
    /// False only when an unusable state file could not be moved aside.
    var isEnabled = true
    /// The text last handed to the writer: unchanged objects cost no write.
    var lastSubmitted = ""
}
