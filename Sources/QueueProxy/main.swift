// queue-proxy: Knative's revision sidecar. This file only reads the environment, wires the listeners onto the
// loops and handles signals; the work happens in ProxyCore.
import Glibc
import KnativeWire
import ProxyCore
import QueueProxyCore

let arguments = CommandLine.arguments.dropFirst()
if arguments.contains("--help") || arguments.contains("-h") {
    Log.writeStderr(QueueProxyConfig.help)
    exit(0)
}
if let unknown = arguments.first {
    Log.writeStderr("queue-proxy: unknown argument \(unknown) (try --help)\n")
    exit(2)
}

let config: QueueProxyConfig
do {
    config = try QueueProxyConfig(environment: Environment.current())
} catch {
    Log.writeStderr("queue-proxy: \(error)\n")
    exit(1)
}
if let refusal = SystemInternalTLS.refusal(product: "queue-proxy") {
    Log.writeStderr(refusal)
    exit(1)
}
Log.configure(
    level: config.logLevel, logger: "queueproxy",
    fields: [
        ("knative.dev/key", "\(config.settings.namespace)/\(config.settings.revision)"),
        ("knative.dev/pod", config.settings.podName),
    ], format: config.logFormat)
for warning in config.logWarnings { Log.warn("SERVING_LOGGING_CONFIG: \(warning)") }

/// A listen failure, with the port it was for.
struct ListenError: Error, CustomStringConvertible {
    let port: UInt16
    let error: SysError
    var description: String { "cannot listen on port \(port): \(error)" }
}

/// `shared`: every loop listens on this port (the serving port with QUEUE_EVENT_LOOPS>1), so SO_REUSEPORT.
/// `serving`: the data port, which also speaks h2c (spec §1.2).
func listen(_ port: UInt16, _ loop: EventLoop, _ responder: HTTPResponder, shared: Bool = false, serving: Bool = false)
    throws(ListenError)
{
    var config = ServerConfig()
    config.acceptsH2c = serving
    do {
        try HTTPServer.listen(
            on: SocketAddress(ip: "0.0.0.0", port: port)!, loop: loop, config: config, responder: responder,
            sharedAcrossLoops: shared)
    } catch {
        throw ListenError(port: port, error: error)
    }
}

ResourceLimits.raiseDescriptorLimit()
Signals.block([SIGTERM, SIGINT])
let settings = config.settings
let shared = QueueProxyShared(settings: settings, drainQuietMs: config.drainQuietMs, nowMs: monotonicMs())
// Knative's keep-alive pool: max idle = cc (1000 when cc = 0), 90 s idle timeout.
let upstream = UpstreamConfig(
    address: config.userAddress, maxIdle: settings.containerConcurrency == 0 ? 1000 : settings.containerConcurrency,
    speaksH2c: config.userSpeaksH2c)
let group: LoopGroup
do {
    group = try LoopGroup(count: config.loops) { loop in
        let handler = QueueProxyHandler(
            settings: settings, shared: shared, pool: UpstreamPool(config: upstream, loop: loop), loop: loop)
        loop.locals[ObjectIdentifier(QueueProxyHandler.self)] = handler
        try listen(config.servingPort, loop, handler, shared: config.loops > 1, serving: true)
        guard loop.index == 0 else { return }
        let admin = QueueProxyAdminHandler(drainer: shared.drainer, loop: loop)
        let metrics = MetricsEndpoint.autoscalerStats(shared)
        loop.locals[ObjectIdentifier(QueueProxyAdminHandler.self)] = admin
        loop.locals[ObjectIdentifier(MetricsEndpoint.self)] = metrics
        try listen(config.adminPort, loop, admin)
        try listen(config.metricsPort, loop, metrics)
        if config.userMetricsPort != 0 {
            let prometheus = MetricsEndpoint.prometheus { shared.metrics.render() }
            loop.locals[ObjectIdentifier(prometheus)] = prometheus  // kept alive for the loop, like the others
            try listen(config.userMetricsPort, loop, prometheus)
        }
        // The stats window closes every second (spec §1.9).
        loop.locals[ObjectIdentifier(StatsTicker.self)] = StatsTicker(
            loop: loop, shared: shared, podName: settings.podName)
    }
} catch {
    Log.writeStderr("queue-proxy: \(error)\n")
    exit(1)
}
if let refusal = SystemInternalTLS.refusal(product: "queue-proxy") {
    Log.writeStderr(refusal)
    exit(1)
}
Log.info("queue-proxy serving on :\(config.servingPort), forwarding to \(config.userAddress)")

let signalFD: Int32
do {
    signalFD = try Signals.makeDescriptor([SIGTERM, SIGINT])
} catch {
    Log.writeStderr("queue-proxy: \(error)\n")
    exit(1)
}
if let refusal = SystemInternalTLS.refusal(product: "queue-proxy") {
    Log.writeStderr(refusal)
    exit(1)
}
let received = Signals.next(signalFD)
Log.info("received signal \(received), draining")
// Probes now answer 503; traffic is served until a quiet period passes without a request (spec §1.15).
shared.drainer.markSigterm(nowMs: monotonicMs())
while let drainedAt = shared.drainer.drainedAtMs {
    let remaining = drainedAt - monotonicMs()
    if remaining <= 0 { break }
    usleep(UInt32(min(remaining, 1000)) * 1000)
}
group.beginDrain()
group.join()
Log.info("drained, exiting")
exit(0)
