// kn-local's commands: `serve` (the control plane in the foreground) and the kubectl-like clients that talk to
// it over the control API.
import CLinuxShims
import Glibc
import KnativeWire
import ProxyCore
import Synchronization

public enum KnLocal {
    /// Runs a command line; returns the process exit status.
    public static func main(_ arguments: [String]) -> Int32 {
        guard let command = arguments.first, command != "--help", command != "-h", command != "help" else {
            Log.writeStderr(LocalSettings.help)
            return arguments.isEmpty ? 2 : 0
        }
        let rest = Array(arguments.dropFirst())
        if rest.contains("--help") || rest.contains("-h") {
            Log.writeStderr(LocalSettings.help)
            return 0
        }
        switch command {
        case "serve": return serve(rest)
        case "apply", "get", "delete": return client(command, rest)
        default:
            Log.writeStderr(
                "kn-local: unknown command \"\(command)\"; use serve, apply, get or delete (kn-local --help)\n")
            return 2
        }
    }

    // MARK: - serve

    static func serve(_ arguments: [String]) -> Int32 {
        let settings: LocalSettings
        do { settings = try LocalSettings(arguments: arguments) } catch {
            Log.writeStderr("kn-local serve: \(error)\n")
            return 2
        }
        if !PortAllocator.isFree(settings.ingressPort) {
            Log.writeStderr(
                "kn-local serve: port \(settings.ingressPort) is in use; stop what uses it or pass --port\n")
            return 1
        }
        Log.configure(level: settings.verbose ? .info : .warn, logger: "kn-local")
        ResourceLimits.raiseDescriptorLimit()
        Signals.block([SIGTERM, SIGINT, SIGCHLD])
        ProcessControl.becomeSubreaper()
        let events = EventLog(verbose: settings.verbose)
        let board = ScrapeBoard()
        let stateWriter = StateWriter(events: events)
        let inbox = InboxSlot()
        let statServer: StatServer
        do {
            statServer = try StatServer(port: 0) { messages in
                inbox.post { loop in Controller.on(loop)?.recordActivatorStats(messages) }
            }
        } catch {
            Log.writeStderr("kn-local serve: \(error)\n")
            return 1
        }
        let statPort = statServer.port
        let group: LoopGroup
        do {
            group = try LoopGroup(count: 1) { loop in
                // Children are forked from this thread, which lives until the end (PR_SET_PDEATHSIG is per thread).
                let controller = Controller(
                    loop: loop, settings: settings, statPort: statPort, scrapeBoard: board, stateWriter: stateWriter,
                    events: events)
                loop.locals[ObjectIdentifier(Controller.self)] = controller
                let api = ControlAPI(controller: controller)
                loop.locals[ObjectIdentifier(ControlAPI.self)] = api
                do {
                    try HTTPServer.listen(
                        on: settings.controlAddress, loop: loop, config: ServerConfig(), responder: api)
                } catch {
                    throw ManifestError("cannot listen on --control \(settings.controlAddress): \(error)")
                }
                controller.onFinished = { [unowned loop] in loop.stop() }
                try controller.start()
            }
        } catch {
            Log.writeStderr("kn-local serve: \(error)\n")
            _ = ProcessControl.reap()
            stateWriter.flush()
            return 1
        }
        inbox.set(group)
        Scraper.start(board: board, inbox: inbox)
        events.emit(
            "kn-local serving: ingress http://127.0.0.1:\(settings.ingressPort), control \(settings.controlAddress), pod logs under \(settings.stateDirectory)"
        )
        var status: Int32 = 0
        for file in settings.applyFiles {
            let (code, text) = clientApply(file: file, namespace: nil, control: settings.controlAddress)
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) { events.emit(String(line)) }
            if code != 0 { status = 1 }
        }
        if status != 0 {
            events.emit("stopping: a file given with -f did not apply")
            group.broadcast { Controller.on($0)?.shutdown() }
        } else if let first = settings.applyFiles.first, let name = firstServiceName(first) {
            events.emit(
                "try: curl -H \"Host: \(name.0).\(name.1).\(settings.domain)\" http://127.0.0.1:\(settings.ingressPort)"
            )
        }
        let signalFD: Int32
        do { signalFD = try Signals.makeDescriptor([SIGTERM, SIGINT, SIGCHLD]) } catch {
            group.broadcast { Controller.on($0)?.killEverything() }
            return 1
        }
        let finished = Atomic<Bool>(false)
        let waiter = Threads.self
        waiter.detach {
            group.join()
            finished.store(true, ordering: .sequentiallyConsistent)
            _ = kill(getpid(), SIGCHLD)  // wakes the signal loop below
        }
        var stopping = status != 0
        while !finished.load(ordering: .sequentiallyConsistent) {
            let signal = Signals.next(signalFD)
            switch signal {
            case SIGCHLD:
                group.broadcast { Controller.on($0)?.reapChildren() }
            case SIGTERM, SIGINT:
                if stopping {
                    events.emit("second signal: killing every child now")
                    group.broadcast { Controller.on($0)?.killEverything() }
                } else {
                    stopping = true
                    group.broadcast { Controller.on($0)?.shutdown() }
                }
            default:
                break
            }
        }
        _ = ProcessControl.reap()
        stateWriter.flush()  // the last change reaches the file before we exit
        return status
    }

    private static func firstServiceName(_ file: String) -> (String, String)? {
        guard let text = try? readFile(file), let manifests = try? Manifest.parse(text, allowZeroInitialScale: true),
            let first = manifests.first
        else { return nil }
        return (first.name, first.namespace)
    }

    // MARK: - Client commands

    static func client(_ command: String, _ arguments: [String]) -> Int32 {
        var control = SocketAddress.parse(getenv("KN_LOCAL_CONTROL").map { String(cString: $0) } ?? "127.0.0.1:8079")
        var files: [String] = []
        var namespace: String?
        var output: String?
        var positional: [String] = []
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            func value() -> String? {
                if let eq = arg.firstIndex(of: "="), arg.hasPrefix("--") { return String(arg[arg.index(after: eq)...]) }
                i += 1
                return i < arguments.count ? arguments[i] : nil
            }
            let flag = arg.hasPrefix("--") ? String(arg.prefix { $0 != "=" }) : arg
            switch flag {
            case "-f", "--filename":
                guard let v = value() else { return usage("\(flag) needs a file name") }
                files.append(v)
            case "-n", "--namespace":
                guard let v = value() else { return usage("\(flag) needs a namespace") }
                namespace = v
            case "-o", "--output":
                guard let v = value(), v == "json" || v == "wide" else { return usage("-o supports json") }
                output = v
            case "--control":
                guard let v = value(), let a = SocketAddress.parse(v) else { return usage("--control needs ip:port") }
                control = a
            default:
                if arg.hasPrefix("-") { return usage("unknown flag \(arg)") }
                positional.append(arg)
            }
            i += 1
        }
        guard let control else { return usage("KN_LOCAL_CONTROL must be ip:port") }
        switch command {
        case "apply":
            guard !files.isEmpty else { return usage("apply needs -f FILE (YAML or JSON; - for stdin)") }
            var status: Int32 = 0
            for file in files {
                let (code, text) = clientApply(file: file, namespace: namespace, control: control)
                if code == 0 {
                    print(text, terminator: "")
                } else {
                    Log.writeStderr(text)
                    status = 1
                }
            }
            return status
        case "get":
            guard let kind = positional.first else {
                return usage("get needs a kind: ksvc, revisions, routes, configurations or pods")
            }
            var target = "/v1/get?kind=\(escaped(kind))&namespace=\(escaped(namespace ?? "default"))"
            if positional.count > 1 { target += "&name=\(escaped(positional[1]))" }
            if let output { target += "&output=\(output)" }
            return call("GET", target, [], control)
        case "delete":
            guard positional.count == 2, ["ksvc", "ksvcs", "service", "services", "kservice"].contains(positional[0])
            else {
                return usage("delete needs: ksvc NAME")
            }
            return call(
                "DELETE", "/v1/services/\(escaped(namespace ?? "default"))/\(escaped(positional[1]))", [], control)
        default:
            return 2
        }
    }

    static func clientApply(file: String, namespace: String?, control: SocketAddress) -> (Int32, String) {
        let text: String
        do { text = try readFile(file) } catch {
            return (1, "error: the path \"\(file)\" does not exist or cannot be read: \(error)\n")
        }
        var target = "/v1/apply"
        if let namespace { target += "?namespace=\(escaped(namespace))" }
        do {
            let response = try BlockingClient.request(
                "POST", control, target, headers: [("Content-Type", "application/yaml")],
                body: Array(text.utf8), timeoutMs: 30_000)
            let body = String(decoding: response.body, as: UTF8.self)
            switch response.status {
            case 200: return (0, body)
            case 400: return (1, "Error from server (BadRequest): error when creating \"\(file)\": \(body)")
            default: return (1, "error: error parsing \(file): \(body)")
            }
        } catch {
            return (1, notRunning(control, error))
        }
    }

    private static func call(_ method: String, _ target: String, _ body: [UInt8], _ control: SocketAddress) -> Int32 {
        do {
            let response = try BlockingClient.request(method, control, target, body: body, timeoutMs: 30_000)
            let text = String(decoding: response.body, as: UTF8.self)
            if response.status == 200 {
                print(text, terminator: "")
                return 0
            }
            Log.writeStderr(text)
            return 1
        } catch {
            Log.writeStderr(notRunning(control, error))
            return 1
        }
    }

    private static func notRunning(_ control: SocketAddress, _ error: Error) -> String {
        "error: cannot reach kn-local at \(control) (\(error)); start it with `kn-local serve` or set KN_LOCAL_CONTROL\n"
    }

    /// Percent-encodes everything but unreserved characters (RFC 3986).
    static func escaped(_ text: String) -> String {
        var out = ""
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = String(b, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }

    private static func usage(_ text: String) -> Int32 {
        Log.writeStderr("kn-local: \(text) (kn-local --help)\n")
        return 2
    }
}

/// The loop's inbox once the group exists; posts before that are dropped (nothing is running yet then).
final class InboxSlot: Sendable {
    private let group = Mutex<LoopGroup?>(nil)
    func set(_ g: LoopGroup) { group.withLock { $0 = g } }
    func post(_ job: @escaping @Sendable (EventLoop) -> Void) {
        group.withLock { $0 }?.broadcast(job)
    }
}
