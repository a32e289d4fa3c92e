// swift-tools-version: 6.2
// The data plane, in layers the compiler enforces (nothing may import a layer above it):
//   ProxyCore       the engine: system calls, event loop, buffers, HTTP/1.1 and HTTP/2 codecs, the proxy. No Knative.
//   KnativeWire     Knative's wire formats both products and kn-local speak: Stat, the activator's state model,
//                   readiness-probe JSON, Go durations, DNS-1035 names.
//   QueueProxyCore  the queue-proxy's logic (breaker, probes, stats, drain, request log) on the engine.
//   ActivatorCore   the activator's logic (routing, throttler, buffering at zero, admin API) on the engine.
//   LocalMode       kn-local's control plane.
// Executables stay thin: flags/env parsing and wiring. Product logic lives in libraries so that tests and
// kn-local link it in process (an executable target cannot be a library's dependency).
// No package dependencies by design; native code: our own C shim (CLinuxShims) and libnghttp2 (CNghttp2).
import PackageDescription

let package = Package(
    name: "knative-dataplane",
    products: [
        .executable(name: "queue-proxy", targets: ["QueueProxy"]),
        .executable(name: "helloworld", targets: ["HelloWorld"]),
        .executable(name: "activator", targets: ["Activator"]),
        .executable(name: "kn-local", targets: ["KnLocal"]),
    ],
    targets: [
        .target(name: "CLinuxShims", cSettings: [.define("_GNU_SOURCE")]),
        // HTTP/2 framing, flow control and HPACK come from libnghttp2 (the design card's one native library).
        .systemLibrary(name: "CNghttp2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        .target(name: "ProxyCore", dependencies: ["CLinuxShims", "CNghttp2"]),
        .target(name: "KnativeWire", dependencies: ["ProxyCore"]),
        .target(name: "QueueProxyCore", dependencies: ["ProxyCore", "KnativeWire", "CNghttp2"]),
        .target(name: "ActivatorCore", dependencies: ["ProxyCore", "KnativeWire"]),
        .executableTarget(name: "QueueProxy", dependencies: ["QueueProxyCore"]),
        .executableTarget(name: "HelloWorld", dependencies: ["ProxyCore"]),
        .executableTarget(name: "Activator", dependencies: ["ActivatorCore"]),
        // kn-local: the control plane for one machine (manifests, objects, pods as processes, the KPA).
        .target(name: "LocalMode", dependencies: ["ProxyCore", "KnativeWire", "CLinuxShims"]),
        .executableTarget(name: "KnLocal", dependencies: ["LocalMode"]),
        // The executables are dependencies so that `swift test` builds them: tests run the real binaries.
        .testTarget(
            name: "DataPlaneTests",
            dependencies: [
                "ProxyCore", "KnativeWire", "QueueProxyCore", "ActivatorCore", "LocalMode", "QueueProxy", "HelloWorld",
                "Activator", "KnLocal",
            ]),
    ]
)
