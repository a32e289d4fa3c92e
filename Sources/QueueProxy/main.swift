// queue-proxy: Knative's revision sidecar. This file only parses the environment, starts the loops and
// waits for signals; the work happens in ProxyCore.
import Glibc
import ProxyCore

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
Log.configure(
    level: config.logLevel, logger: "queueproxy",
    fields: [("knative.dev/key", "\(config.namespace)/\(config.revision)"), ("knative.dev/pod", config.pod)])

Signals.block([SIGTERM, SIGINT])
let upstream = UpstreamConfig(address: config.userAddress, maxIdle: config.maxIdleUpstream)
let serverConfig = ServerConfig()
let group: LoopGroup
do {
    let listenAddress = config.servingAddress
    group = try LoopGroup(count: config.loops) { loop in
        let responder = ForwardingResponder(pool: UpstreamPool(config: upstream, loop: loop))
        loop.locals[ObjectIdentifier(ForwardingResponder.self)] = responder
        try HTTPServer.listen(on: listenAddress, loop: loop, config: serverConfig, responder: responder)
    }
} catch {
    Log.writeStderr("queue-proxy: cannot listen on port \(config.servingPort): \(error)\n")
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
let received = Signals.next(signalFD)
Log.info("received signal \(received), draining")
group.beginDrain()
group.join()
Log.info("drained, exiting")
exit(0)
