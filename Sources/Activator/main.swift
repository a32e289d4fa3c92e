// activator: Knative's shared proxy for scaled-to-zero revisions. Thin: flags, config file, listeners, signals.
import ActivatorCore
import Glibc
import KnativeWire
import ProxyCore
import Synchronization

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--help") || arguments.contains("-h") {
    Log.writeStderr(ActivatorOptions.help)
    exit(0)
}
let options: ActivatorOptions
do {
    options = try ActivatorOptions(arguments: arguments, environment: Environment.current())
} catch {
    Log.writeStderr("activator: \(error)\n")
    exit(2)
}
if let refusal = SystemInternalTLS.refusal(product: "activator") {
    Log.writeStderr(refusal)
    exit(1)
}
Log.configure(
    level: options.logLevel, logger: "activator", fields: [("knative.dev/pod", options.settings.podName)],
    format: options.logFormat)
for warning in options.logWarnings { Log.warn("--logging-config: \(warning)") }

/// Reads and validates the config file (main thread: never on the loop).
func loadDocument(_ path: String) -> Result<ActivatorDocument, ActivatorDocument.Invalid> {
    let text: String
    do { text = try Files.readText(path) } catch {
        return .failure(ActivatorDocument.Invalid("cannot open \(path): \(SysError.text(error.code))"))
    }
    do { return .success(try ActivatorDocument.parse(text)) } catch { return .failure(error) }
}

var initial = ActivatorDocument()
if let path = options.configPath {
    switch loadDocument(path) {
    case .success(let document): initial = document
    case .failure(let error):
        Log.writeStderr("activator: --config \(path): \(error)\n")
        exit(1)
    }
}

struct ListenError: Error, CustomStringConvertible {
    let what: String
    let error: SysError
    var description: String { "cannot listen on \(what): \(error)" }
}

ResourceLimits.raiseDescriptorLimit()
Signals.block([SIGTERM, SIGINT, SIGHUP])
let settings = options.settings
let document = initial
// One loop: per-pod slots and FIFO order are exact only with one owner (README, "Differences").
let group: LoopGroup
do {
    group = try LoopGroup(count: 1) { loop in
        let activator = Activator(settings: settings, loop: loop)
        activator.apply(document)
        var readOnly: String?
        if let kube = options.kube {
            let source = KubeSource(settings: kube, activator: activator, loop: loop)
            loop.locals[ObjectIdentifier(KubeSource.self)] = source
            source.start()
            readOnly =
                "the activator's state comes from the Kubernetes API (--kube-api \(kube.api.hostHeader)): "
                + "the admin API is read-only (GET /v1/state)"
        }
        let admin = ActivatorAdmin(activator: activator, readOnlyReason: readOnly)
        let metrics = MetricsEndpoint.prometheus { [unowned activator] in activator.metricsText() }
        loop.locals[ObjectIdentifier(Activator.self)] = activator
        loop.locals[ObjectIdentifier(ActivatorAdmin.self)] = admin
        loop.locals[ObjectIdentifier(MetricsEndpoint.self)] = metrics
        var dataConfig = ServerConfig()
        dataConfig.acceptsH2c = true
        func listen(_ address: SocketAddress, _ what: String, _ responder: HTTPResponder) throws(ListenError) {
            let config = responder === activator ? dataConfig : ServerConfig()
            do { try HTTPServer.listen(on: address, loop: loop, config: config, responder: responder) } catch {
                throw ListenError(what: what, error: error)
            }
        }
        try listen(SocketAddress(ip: "0.0.0.0", port: options.dataPort)!, "port \(options.dataPort)", activator)
        if options.h2cPort != 0 {
            try listen(SocketAddress(ip: "0.0.0.0", port: options.h2cPort)!, "port \(options.h2cPort)", activator)
        }
        try listen(options.adminAddress, "admin \(options.adminAddress)", admin)
        if options.metricsPort != 0 {
            try listen(SocketAddress(ip: "0.0.0.0", port: options.metricsPort)!, "port \(options.metricsPort)", metrics)
        }
    }
} catch {
    Log.writeStderr("activator: \(error)\n")
    exit(1)
}
Log.info(
    "activator serving on :\(options.dataPort), admin on \(options.adminAddress)"
        + (options.kube.map { ", state from the Kubernetes API at \($0.api.hostHeader) (read-only admin)" } ?? ""))

let signalFD: Int32
do { signalFD = try Signals.makeDescriptor([SIGTERM, SIGINT, SIGHUP]) } catch {
    Log.writeStderr("activator: \(error)\n")
    exit(1)
}
while true {
    let signal = Signals.next(signalFD)
    if signal == SIGHUP {
        guard let path = options.configPath else { continue }
        switch loadDocument(path) {
        case .success(let document):
            group.broadcast { loop in (loop.locals[ObjectIdentifier(Activator.self)] as? Activator)?.apply(document) }
            Log.info("reloaded \(path)")
        case .failure(let error):
            Log.error("reload of \(path) failed, keeping the current state: \(error)")
        }
        continue
    }
    break
}
Log.info("received SIGTERM, draining for \(options.drainGraceMs) ms")
group.broadcast { loop in (loop.locals[ObjectIdentifier(Activator.self)] as? Activator)?.beginShutdown() }
var remaining = options.drainGraceMs
while remaining > 0 {
    let step = min(remaining, 1000)
    usleep(UInt32(step) * 1000)
    remaining -= step
}
group.beginDrain()
group.join()
Log.info("drained, exiting")
exit(0)
