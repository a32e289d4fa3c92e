// Kubernetes' name rules (k8s.io/apimachinery validation): DNS-1035 labels for Knative object names, DNS-1123
// labels for namespaces, DNS-1123 subdomains for host names. Each check returns Kubernetes' message, or nil.
import ProxyCore

public enum DNSName {
    /// A DNS-1035 label (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters): revision, route and service names,
    /// traffic tags.
    /// - Returns: nil when `name` is one, else Kubernetes' message.
    public static func dns1035LabelProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.count > 63 { return "must be no more than 63 characters" }
        let ok = !bytes.isEmpty && isLower(bytes[0]) && bytes.allSatisfy(isLabelByte) && bytes.last != dash
        if ok { return nil }
        return
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    }

    /// A DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters): namespaces.
    /// - Returns: nil when `name` is one, else Kubernetes' message.
    public static func dns1123LabelProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.count > 63 { return "must be no more than 63 characters" }
        let ok = !bytes.isEmpty && bytes.first != dash && bytes.last != dash && bytes.allSatisfy(isLabelByte)
        if ok { return nil }
        return
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
    }

    /// A DNS-1123 subdomain (labels joined by '.', at most 253 characters): host names.
    /// - Returns: nil when `name` is one, else Kubernetes' message.
    public static func dns1123SubdomainProblem(_ name: String) -> String? {
        if name.utf8.count > 253 { return "must be no more than 253 characters" }
        let labels = name.utf8.split(separator: dot, omittingEmptySubsequences: false)
        let ok = labels.allSatisfy { label in
            !label.isEmpty && label.first != dash && label.last != dash && label.allSatisfy(isLabelByte)
        }
        if ok { return nil }
        return
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    }

    private static let dash = UInt8(ascii: "-")
    private static let dot = UInt8(ascii: ".")
    private static func isLower(_ b: UInt8) -> Bool { b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z") }
    private static func isLabelByte(_ b: UInt8) -> Bool {
        isLower(b) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == dash
    }
}
