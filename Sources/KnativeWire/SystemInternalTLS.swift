// Knative's system-internal TLS (spec §1.1, §4): when it is on, Knative mounts a certificate and key at
// /var/lib/knative/certs and expects the queue-proxy and the activator to serve TLS on 8112 and to speak it
// to each other. This build has no TLS library (the design card), so it must refuse to start there, with one
// clear line, rather than run half-working (plain HTTP where the cluster expects TLS).
import Glibc

public enum SystemInternalTLS {
    /// Where Knative mounts the pod's certificate (`tls.crt`) and key (`tls.key`).
    public static let certificateDirectory = "/var/lib/knative/certs"

    /// The line to exit with when the certificate and key are there; nil when they are not.
    public static func refusal(product: String, directory: String = certificateDirectory) -> String? {
        guard access(directory + "/tls.crt", F_OK) == 0, access(directory + "/tls.key", F_OK) == 0 else { return nil }
        return "\(product): system-internal-tls is not supported by this build (no TLS library); found "
            + "\(directory)/tls.crt and tls.key: turn system-internal-tls off in config-network, or use "
            + "Knative's own \(product) image\n"
    }
}
