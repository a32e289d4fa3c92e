// kn-local's persisted objects (our stand-in for etcd): the Services as applied and the Revisions they made, with
// the status `get` shows, in one JSON file under --state-dir. Encoding, decoding (every field checked, errors name
// their path) and the file operations: atomic replace, and moving a file that cannot be restored aside. No pods:
// they are processes, started anew on restore as after a node reboot.
import Glibc
import KnativeWire
import ProxyCore

/// One revision as stored: its identity, the template it was stamped from, and its status.
struct StoredRevision: Equatable {
    var name: String
    var generation: Int
    var createdAtUnixMs: Int64
    /// `spec.template` as applied (JSON); `template` is its decoding.
    var templateDocument: JSON
    var template: RevisionTemplate
    var condition: Condition
    var everReady: Bool
    /// The KPA's last decision: restored, as a Deployment keeps its replicas over a node reboot.
    var desiredScale: Int
}

/// One service as stored: the Service as applied, its configuration's and route's status, its revisions.
struct StoredService: Equatable {
    var namespace: String
    var name: String
    /// The Service object as applied (JSON); `manifest` is its decoding.
    var document: JSON
    var manifest: ServiceManifest
    var generation: Int
    var createdAtUnixMs: Int64
    var latestCreated: String?
    var latestReady: String?
    var configCondition: Condition
    var routeCondition: Condition
    var traffic: [TrafficTarget]
    /// Oldest first.
    var revisions: [StoredRevision]
}

/// Why a state file cannot be restored (or written); the text names the field or the call.
struct StateFileError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// The state file's format (`apiVersion: kn-local/v1`, `kind: State`) and its file operations.
enum StateFile {
    static let apiVersion = "kn-local/v1"
    static let fileName = "state.json"

    // MARK: - Encoding

    /// The file's text: compact JSON and a newline.
    static func encode(_ services: [StoredService]) -> String {
        JSON.object([
            ("apiVersion", .string(apiVersion)), ("kind", .string("State")),
            ("services", .array(services.map(encode))),
        ]).text + "\n"
    }

    private static func encode(_ s: StoredService) -> JSON {
        var members: [(String, JSON)] = [
            ("namespace", .string(s.namespace)), ("name", .string(s.name)),
            ("generation", .number(Double(s.generation))), ("createdAt", .number(Double(s.createdAtUnixMs))),
            ("manifest", finite(s.document)),
        ]
        if let latest = s.latestCreated { members.append(("latestCreatedRevisionName", .string(latest))) }
        if let latest = s.latestReady { members.append(("latestReadyRevisionName", .string(latest))) }
        members += [
            ("configurationReady", encode(s.configCondition)), ("routeReady", encode(s.routeCondition)),
            (
                "traffic",
                .array(
                    s.traffic.map { t in
                        var target: [(String, JSON)] = [
                            ("revisionName", .string(t.revisionName)), ("percent", .number(Double(t.percent))),
                        ]
                        if let tag = t.tag { target.append(("tag", .string(tag))) }
                        return .object(target)
                    })
            ),
            (
                "revisions",
                .array(
                    s.revisions.map { r in
                        .object([
                            ("name", .string(r.name)), ("generation", .number(Double(r.generation))),
                            ("createdAt", .number(Double(r.createdAtUnixMs))), ("template", finite(r.templateDocument)),
                            ("ready", encode(r.condition)), ("everReady", .bool(r.everReady)),
                            ("desiredScale", .number(Double(r.desiredScale))),
                        ])
                    })
            ),
        ]
        return .object(members)
    }

    private static func encode(_ c: Condition) -> JSON {
        .object([("status", .string(c.status)), ("reason", .string(c.reason)), ("message", .string(c.message))])
    }

    /// The value with non-finite numbers as null: JSON cannot write them (YAML's `1e999` reads as infinity), and
    /// no field kn-local reads accepts one, so they can only sit in fields it ignores.
    static func finite(_ value: JSON) -> JSON {
        switch value {
        case .number(let n) where !n.isFinite: return .null
        case .array(let items): return .array(items.map(finite))
        case .object(let members): return .object(members.map { ($0.0, finite($0.1)) })
        default: return value
        }
    }

    // MARK: - Decoding

    /// Decodes and checks a whole file: every field, every manifest (Knative's validation, as at apply), and
    /// that names are unique and references resolve. All or nothing: one bad field fails the file.
    /// - Throws: `StateFileError` naming the field, e.g. `services[0].revisions[1].generation: expected …`.
    static func decode(_ text: String) throws(StateFileError) -> [StoredService] {
        let json: JSON
        do { json = try JSON.parse(text) } catch { throw StateFileError("not JSON: \(error)") }
        do {
            let root = try JSONObjectReader(json, at: "")
            let version = try required(root.string("apiVersion"), root, "apiVersion")
            guard version == apiVersion, try root.string("kind") == "State" else {
                throw StateFileError("apiVersion \(version): expected \(apiVersion) with kind State")
            }
            let items = try required(root.array("services"), root, "services")
            var services: [StoredService] = []
            for (i, item) in items.enumerated() { services.append(try service(item, at: "services[\(i)]")) }
            try check(services)
            return services
        } catch let error as StateFileError {
            throw error
        } catch {
            throw StateFileError("\(error)")
        }
    }

    private static func service(_ json: JSON, at path: String) throws -> StoredService {
        let r = try JSONObjectReader(json, at: path)
        let namespace = try required(r.string("namespace"), r, "namespace")
        let name = try required(r.string("name"), r, "name")
        let document = try required(r.value("manifest"), r, "manifest")
        let manifest: ServiceManifest
        do {
            manifest = try Manifest.decode(document, defaultNamespace: namespace, allowZeroInitialScale: true)
        } catch { throw StateFileError("\(r.path("manifest")): \(error)") }
        guard manifest.namespace == namespace, manifest.name == name else {
            throw StateFileError(
                "\(r.path("manifest")): names \(manifest.namespace)/\(manifest.name), not \(namespace)/\(name)")
        }
        var traffic: [TrafficTarget] = []
        for (i, item) in (try r.array("traffic") ?? []).enumerated() {
            let t = try JSONObjectReader(item, at: "\(r.path("traffic"))[\(i)]")
            traffic.append(
                TrafficTarget(
                    revisionName: try required(t.string("revisionName"), t, "revisionName"),
                    percent: try required(t.int("percent", in: 0...100, expected: "an integer 0-100"), t, "percent"),
                    tag: try t.string("tag")))
        }
        var revisions: [StoredRevision] = []
        for (i, item) in (try r.array("revisions") ?? []).enumerated() {
            revisions.append(try revision(item, at: "\(r.path("revisions"))[\(i)]", of: manifest))
        }
        return StoredService(
            namespace: namespace, name: name, document: document, manifest: manifest,
            generation: try required(
                r.int("generation", in: 1...Int(Int32.max), expected: "a generation ≥ 1"), r, "generation"),
            createdAtUnixMs: try time(r, "createdAt"), latestCreated: try r.string("latestCreatedRevisionName"),
            latestReady: try r.string("latestReadyRevisionName"),
            configCondition: try condition(r, "configurationReady"), routeCondition: try condition(r, "routeReady"),
            traffic: traffic, revisions: revisions)
    }

    private static func revision(_ json: JSON, at path: String, of service: ServiceManifest) throws -> StoredRevision {
        let r = try JSONObjectReader(json, at: path)
        let templateDocument = try required(r.value("template"), r, "template")
        // The template decodes as part of a Service, as it was applied (defaults and validation included).
        let wrapper = JSON.object([
            ("apiVersion", .string("serving.knative.dev/v1")), ("kind", .string("Service")),
            ("metadata", .object([("name", .string(service.name)), ("namespace", .string(service.namespace))])),
            ("spec", .object([("template", templateDocument)])),
        ])
        let template: RevisionTemplate
        do {
            template = try Manifest.decode(wrapper, defaultNamespace: service.namespace, allowZeroInitialScale: true)
                .template
        } catch { throw StateFileError("\(r.path("template")): \(error)") }
        let everReady = r.value("everReady")
        guard everReady == nil || everReady?.boolValue != nil else {
            throw JSONObjectReader.mismatch(r.path("everReady"), "a boolean", everReady!)
        }
        return StoredRevision(
            name: try required(r.string("name"), r, "name"),
            generation: try required(
                r.int("generation", in: 1...Int(Int32.max), expected: "a generation ≥ 1"), r, "generation"),
            createdAtUnixMs: try time(r, "createdAt"), templateDocument: templateDocument, template: template,
            condition: try condition(r, "ready"), everReady: everReady?.boolValue ?? false,
            desiredScale: try r.int("desiredScale", in: 0...1_000_000, expected: "a pod count ≥ 0") ?? 0)
    }

    private static func condition(_ r: JSONObjectReader, _ key: String) throws -> Condition {
        guard let members = try r.object(key) else { return .unknown }
        let c = try JSONObjectReader(.object(members), at: r.path(key))
        let status = try c.string("status") ?? "Unknown"
        guard ["True", "False", "Unknown"].contains(status) else {
            throw JSONObjectReader.mismatch(c.path("status"), "True, False or Unknown", .string(status))
        }
        return Condition(status: status, reason: try c.string("reason") ?? "", message: try c.string("message") ?? "")
    }

    private static func time(_ r: JSONObjectReader, _ key: String) throws -> Int64 {
        Int64(try required(r.int(key, in: 0...(1 << 50), expected: "Unix milliseconds"), r, key))
    }

    private static func required<T>(_ value: T?, _ r: JSONObjectReader, _ key: String) throws(StateFileError) -> T {
        guard let value else { throw StateFileError("\(r.path(key)): missing") }
        return value
    }

    /// Names are unique, and every name a service refers to is one of the stored revisions.
    private static func check(_ services: [StoredService]) throws(StateFileError) {
        var serviceKeys = Set<String>()
        var revisionKeys = Set<String>()
        for (i, s) in services.enumerated() {
            guard serviceKeys.insert(s.namespace + "/" + s.name).inserted else {
                throw StateFileError("services[\(i)]: \(s.namespace)/\(s.name) appears twice")
            }
            for (j, r) in s.revisions.enumerated() {
                guard revisionKeys.insert(s.namespace + "/" + r.name).inserted else {
                    throw StateFileError(
                        "services[\(i)].revisions[\(j)]: revision \(s.namespace)/\(r.name) appears twice")
                }
            }
        }
        for (i, s) in services.enumerated() {
            let own = Set(s.revisions.map(\.name))
            for (key, name) in [
                ("latestCreatedRevisionName", s.latestCreated), ("latestReadyRevisionName", s.latestReady),
            ]
            where name.map({ !own.contains($0) }) ?? false {
                throw StateFileError("services[\(i)].\(key): \(name!) is not one of its revisions")
            }
            for (j, t) in s.traffic.enumerated() where !revisionKeys.contains(s.namespace + "/" + t.revisionName) {
                throw StateFileError("services[\(i)].traffic[\(j)]: revision \(t.revisionName) is not stored")
            }
        }
    }

    // MARK: - Files

    /// What `load` found.
    enum Loaded {
        /// No state file: a first start.
        case none
        case services([StoredService])
        /// Unreadable or not restorable; the text says why.
        case unusable(String)
    }

    static func load(_ path: String) -> Loaded {
        let text: String
        do { text = try Files.readText(path) } catch {
            if error.code == ENOENT { return .none }
            return .unusable("cannot read it: \(SysError.text(error.code))")
        }
        do { return .services(try decode(text)) } catch { return .unusable(error.description) }
    }

    /// Replaces `path` atomically: the text goes to `path.tmp`, is synced, then renamed over `path`, so a crash at
    /// any moment leaves the old file or the new one, never a part. (The directory is not synced: after a power
    /// loss the previous state may come back, which is still a whole state.)
    /// - Throws: `StateFileError` naming the call and the errno text.
    static func write(_ text: String, to path: String) throws(StateFileError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StateFileError("cannot create \(temporary): \(SysError.text(errno))") }
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let code = errno
                close(fd)
                unlink(temporary)
                throw StateFileError("cannot write \(temporary): \(SysError.text(code))")
            }
            offset += n
        }
        if fsync(fd) != 0 {
            let code = errno
            close(fd)
            unlink(temporary)
            throw StateFileError("cannot sync \(temporary): \(SysError.text(code))")
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw StateFileError("cannot rename \(temporary) to \(path): \(SysError.text(code))")
        }
    }

    /// Moves an unusable state file aside as `<path>.corrupt-<UTC time>` (kept for the user to look at).
    /// - Returns: the new path.
    /// - Throws: `StateFileError` when it cannot be renamed.
    static func moveAside(_ path: String, unixMs: Int64) throws(StateFileError) -> String {
        var seconds = time_t(unixMs / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let stamp =
            "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
        var target = path + ".corrupt-" + stamp
        var n = 1
        while access(target, F_OK) == 0 {
            target = path + ".corrupt-" + stamp + "-\(n)"
            n += 1
        }
        guard rename(path, target) == 0 else {
            throw StateFileError("cannot move it to \(target): \(SysError.text(errno))")
        }
        return target
    }
}

/// Wall-clock milliseconds since 1970 (creation times that survive a restart; the loop's clock does not).
func unixMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec / 1_000_000)
}
