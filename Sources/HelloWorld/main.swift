// helloworld: the Swift twin of Knative's helloworld-go sample. Answers every request with "Hello $TARGET!".
import Glibc
import ProxyCore

if CommandLine.arguments.contains("--help") || CommandLine.arguments.contains("-h") {
    Log.writeStderr(
        """
        helloworld: answers every request with "Hello $TARGET!" (Knative's helloworld-go sample).

        Environment:
          PORT     port to listen on (default 8080)
          TARGET   who to greet (default World)

        """)
    exit(0)
}

let env = Environment.current()
let portText = env["PORT"] ?? "8080"
guard let port = UInt16(portText), port > 0 else {
    Log.writeStderr("helloworld: PORT=\"\(portText)\": expected a port number 1-65535\n")
    exit(1)
}
let target = env["TARGET"] ?? "World"

/// Answers with the one prepared response: no allocation per request.
final class HelloResponder: HTTPResponder {
    let response: LocalResponse
    init(target: String) { response = .text(200, "Hello \(target)!\n") }
    func dispose(_ request: RequestView) -> Disposition { .respond(response) }
}

Signals.block([SIGTERM, SIGINT])
let group: LoopGroup
do {
    group = try LoopGroup(count: 1) { loop in
        let responder = HelloResponder(target: target)
        loop.locals[ObjectIdentifier(HelloResponder.self)] = responder
        var config = ServerConfig()
        config.acceptsH2c = true  // HTTP/1.1 and h2c on one port, like a Go server wrapped in h2c.NewHandler
        try HTTPServer.listen(
            on: SocketAddress(ip: "0.0.0.0", port: port)!, loop: loop, config: config, responder: responder)
    }
} catch {
    Log.writeStderr("helloworld: cannot listen on port \(port): \(error)\n")
    exit(1)
}
Log.writeStderr("helloworld: listening on port \(port)\n")
let signalFD = try Signals.makeDescriptor([SIGTERM, SIGINT])
_ = Signals.next(signalFD)
group.beginDrain()
group.join()
exit(0)
