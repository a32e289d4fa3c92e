// swift-tools-version: 6.2
// The data plane: ProxyCore (event loop, HTTP/1.1 codec, proxy engine) and the thin executables on it.
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
        .executableTarget(name: "QueueProxy", dependencies: ["ProxyCore"]),
        .executableTarget(name: "HelloWorld", dependencies: ["ProxyCore"]),
        .executableTarget(name: "Activator", dependencies: ["ProxyCore"]),
        // kn-local: the control plane for one machine (manifests, objects, pods as processes, the KPA).
        .target(name: "LocalMode", dependencies: ["ProxyCore", "CLinuxShims"]),
        .executableTarget(name: "KnLocal", dependencies: ["LocalMode"]),
        // The executables are dependencies so that `swift test` builds them: tests run the real binaries.
        .testTarget(
            name: "ProxyCoreTests",
            dependencies: ["ProxyCore", "LocalMode", "QueueProxy", "HelloWorld", "Activator", "KnLocal"]),
    ]
)
