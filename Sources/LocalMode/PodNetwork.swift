// Pods with their own network, as on Kubernetes (issue 13 §1): each pod gets a network namespace, a veth pair
// into a bridge this kn-local owns, and an address from `--pod-cidr`. The app then listens on its
// `containerPort` with `PORT` set to it and the queue-proxy on Knative's fixed ports, exactly the env
// Knative's controller writes, so several pods of one revision never collide and Knative's own Go
// queue-proxy works as `--queue-proxy`.
//
// The namespaces and links are made with iproute2's `ip` (two short runs per pod, in `-batch` mode), not with
// netlink of our own: kn-local is the control plane for one machine, where a few milliseconds per pod start
// are worth less than a second netlink implementation to maintain (the cold-start figures in
// benchmarks/RESULTS.md say what it costs). Every name carries this instance's prefix, derived from its state
// directory, so two kn-locals on one machine (the tests run several) never touch each other's pods; leftovers
// of a kn-local that crashed are removed at the next start with the same state directory.
import Glibc
import KnativeWire
import ProxyCore

final class PodNetwork {
    /// An IPv4 subnet: the bridge takes the first host address, pods the ones after it.
    struct Subnet: CustomStringConvertible {
        let base: UInt32
        let prefixLength: Int

        /// `10.213.0.0/16`; nil unless a valid IPv4 CIDR with room for a bridge and pods (prefix 8-28).
        init?(_ text: String) {
            let parts = text.split(separator: "/")
            guard parts.count == 2, let length = Int(parts[1]), (8...28).contains(length) else { return nil }
            let octets = parts[0].split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt32($0) }
            guard octets.count == 4, octets.allSatisfy({ $0 < 256 }) else { return nil }
            let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << UInt32(32 - length)
            base = (octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]) & mask
            prefixLength = length
        }

        /// Host addresses for pods (the first one is the bridge's; the last is broadcast).
        var podCapacity: Int { (1 << (32 - prefixLength)) - 3 }

        func address(_ host: Int) -> String {
            let value = base + UInt32(host)
            return "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
        }

        /// The pod side's MAC, derived from its address: an address used again (by a later pod) keeps its MAC, so
        /// the host's neighbour cache is never stale (it was: a reused address took ~500 ms to answer).
        func mac(_ host: Int) -> String {
            let value = base + UInt32(host)
            let bytes = [0x02, 0x6B, value >> 24, value >> 16 & 0xFF, value >> 8 & 0xFF, value & 0xFF]
            return bytes.map { byte in
                let hex = String(byte, radix: 16)
                return hex.count == 1 ? "0" + hex : hex
            }.joined(separator: ":")
        }

        var gateway: String { address(1) }
        var description: String { "\(address(0))/\(prefixLength)" }
    }

    /// One pod's place in the network.
    struct Attachment {
        let ip: String
        /// The namespace's file, which spawned processes join.
        let namespacePath: String
        let namespaceName: String
        /// The host side of the veth pair (on the bridge).
        let link: String
        let host: Int
    }

    let subnet: Subnet
    /// `knl` + 5 hex digits: the bridge's name and the prefix of every namespace and host-side link (interface
    /// names have 15 bytes: `knlXXXXXh` + a 6-digit pod number fits).
    let prefix: String
    private let logPath: String
    /// Addresses given back, reused oldest first, and only once no address was ever used is left.
    private var freeHosts: [Int] = []
    /// Namespaces made ahead, so that a pod start (a cold start's critical path) does not wait for `ip`: two
    /// runs of it cost ~9 ms, against ~5 ms for the whole cold start in loopback mode.
    private var spares: [Attachment] = []
    static let spareCount = 1
    private var nextHost = 2
    private var nextLink = 0

    /// The mode `--pod-network` asked for, or nil for loopback ports (with the reason).
    static func make(settings: LocalSettings) -> (PodNetwork?, String) {
        switch settings.podNetwork {
        case "loopback":
            return (nil, "pods share the loopback, each with its own ports (--pod-network loopback)")
        case "namespace", "auto":
            let required = settings.podNetwork == "namespace"
            guard geteuid() == 0 else {
                return (nil, "pods share the loopback, each with its own ports: network namespaces need root")
            }
            let path = "/usr/sbin:/usr/bin:/sbin:/bin:" + (getenv("PATH").map { String(cString: $0) } ?? "")
            guard let ip = ProcessControl.resolve("ip", path: path) else {
                let why = "pods share the loopback, each with its own ports: iproute2's `ip` is not installed"
                return (nil, required ? "error: " + why : why)
            }
            let subnet = Subnet(settings.podCIDR)!  // checked when the flag was parsed
            do {
                try makeDirectory(settings.stateDirectory)
            } catch {
                return (nil, "error: \(error)")
            }
            // The canonical path: `/tmp/x` and `/tmp/x/` are one kn-local's directory, with one prefix.
            let directory =
                realpath(settings.stateDirectory, nil).map { pointer in
                    defer { free(pointer) }
                    return String(cString: pointer)
                } ?? settings.stateDirectory
            let network = PodNetwork(subnet: subnet, stateDirectory: directory, ip: ip)
            do {
                try network.setUp()
                network.refill()
            } catch {
                network.tearDown()
                let why = "pods share the loopback, each with its own ports: network namespaces failed (\(error))"
                return (nil, required ? "error: " + why : why)
            }
            return (
                network,
                "pods have their own network namespaces: \(subnet), bridge \(network.prefix) at \(subnet.gateway)"
            )
        default:
            preconditionFailure("--pod-network is checked when the flag is parsed")
        }
    }

    private let ipPath: String

    private init(subnet: Subnet, stateDirectory: String, ip: String) {
        self.subnet = subnet
        ipPath = ip
        // FNV-1a of the state directory: stable across restarts, different for two kn-locals (20 bits: a
        // collision, which would let one kn-local's start-up clean-up take the other's pods, is 1 in a million).
        var hash: UInt32 = 2_166_136_261
        for byte in stateDirectory.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let hex = String(hash & 0xF_FFFF, radix: 16)
        prefix = "knl" + String(repeating: "0", count: 5 - hex.count) + hex
        logPath = stateDirectory + "/pod-network.log"
    }

    /// Removes what an earlier run with this prefix left, then makes the bridge; refuses a subnet that another
    /// interface (another kn-local's bridge, a real network) already routes: its pods would be unreachable.
    private func setUp() throws {
        removeLeftovers()
        let routes =
            try output(["route", "show", "root", "\(subnet)"]) + output(["route", "show", "match", "\(subnet)"])
        if let taken = routes.split(separator: "\n").first(where: { !$0.hasPrefix("default") }) {
            throw ManifestError(
                "--pod-cidr \(subnet) overlaps a route already on this machine (\(taken)); pick another")
        }
        try batch(
            [
                "link add \(prefix) type bridge",
                "addr add \(subnet.gateway)/\(subnet.prefixLength) dev \(prefix)",
                "link set \(prefix) up",
            ], what: "bridge \(prefix)")
    }

    /// A namespace for a pod: a spare made ahead, or a new one.
    func attach() throws -> Attachment {
        if let spare = spares.popLast() { return spare }
        return try make()
    }

    /// Makes spare namespaces up to `spareCount` (at start, and a moment after a pod took one).
    func refill() {
        while spares.count < Self.spareCount, let spare = try? make() { spares.append(spare) }
    }

    /// A namespace with its veth pair and address, ready for the pod's processes.
    private func make() throws -> Attachment {
        guard let host = takeNewHost() ?? (freeHosts.isEmpty ? nil : freeHosts.removeFirst()) else {
            throw ManifestError("no free pod address left in --pod-cidr \(subnet)")
        }
        nextLink += 1
        let name = "\(prefix)-\(nextLink)"
        let link = "\(prefix)h\(nextLink)"
        let ip = subnet.address(host)
        do {
            try batch(
                [
                    "netns add \(name)",
                    "link add \(link) type veth peer name eth0 address \(subnet.mac(host)) netns \(name)",
                    "link set \(link) master \(prefix) up",
                ], what: "pod network \(name)")
            try batch(
                [
                    "link set lo up",
                    "addr add \(ip)/\(subnet.prefixLength) dev eth0",
                    "link set eth0 up",
                    "route add default via \(subnet.gateway)",
                ], namespace: name, what: "pod network \(name)")
        } catch {
            try? batch(["link del \(link)", "netns del \(name)"], force: true, what: "pod network \(name)")
            freeHosts.append(host)
            throw error
        }
        return Attachment(ip: ip, namespacePath: "/run/netns/\(name)", namespaceName: name, link: link, host: host)
    }

    /// The pod is gone: its veth pair goes at once (deleting the namespace alone leaves it on the bridge for as
    /// long as anything still holds the namespace, and the kernel frees namespaces later anyway), then the
    /// namespace.
    func detach(_ attachment: Attachment) {
        try? batch(
            ["link del \(attachment.link)", "netns del \(attachment.namespaceName)"], force: true,
            what: "pod network \(attachment.namespaceName)")
        freeHosts.append(attachment.host)
    }

    /// Removes the bridge and every namespace of this prefix (kn-local's shutdown).
    func tearDown() {
        removeLeftovers()
    }

    private func takeNewHost() -> Int? {
        guard nextHost - 1 <= subnet.podCapacity else { return nil }
        defer { nextHost += 1 }
        return nextHost
    }

    private func removeLeftovers() {
        let links = Self.entries("/sys/class/net").filter { $0.hasPrefix(prefix + "h") }
        let namespaces = Self.entries("/run/netns").filter { $0.hasPrefix(prefix + "-") }
        let commands = links.map { "link del \($0)" } + namespaces.map { "netns del \($0)" } + ["link del \(prefix)"]
        try? batch(commands, force: true, what: "leftovers of \(prefix)")
    }

    private static func entries(_ directory: String) -> [String] {
        var names: [String] = []
        guard let dir = opendir(directory) else { return names }
        while let entry = readdir(dir) {
            names.append(
                withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
        }
        closedir(dir)
        return names
    }

    /// What `ip ARGS` prints.
    private func output(_ arguments: [String]) throws -> String {
        let file = logPath + ".out"
        unlink(file)
        let exit = try ProcessControl.run([ipPath] + arguments, logPath: file)
        guard exit.code == 0 else { throw ManifestError("`ip \(arguments.joined(separator: " "))` failed (\(exit))") }
        return (try? readFile(file)) ?? ""
    }

    /// Runs `commands` in one `ip -batch` (in `namespace` when given; `force`: on past failing lines).
    private func batch(_ commands: [String], namespace: String? = nil, force: Bool = false, what: String) throws {
        let file = logPath + ".batch"
        let text = commands.joined(separator: "\n") + "\n"
        guard let handle = fopen(file, "w") else { throw ManifestError("cannot write \(file)") }
        fputs(text, handle)
        fclose(handle)
        var argv = [ipPath]
        if force { argv.append("-force") }
        if let namespace { argv += ["-n", namespace] }
        argv += ["-batch", file]
        let exit = try ProcessControl.run(argv, logPath: logPath)
        guard exit.code == 0 else {
            throw ManifestError(
                "\(what): `ip \(argv.dropFirst().joined(separator: " "))` failed (\(exit)); see \(logPath)")
        }
    }
}
