import Glibc
import KnativeWire
// Request logging (spec §1.13) with Knative's default template, written as one JSON line per request to
// stdout. Custom Go templates are not interpreted: they are reported at start and logging stays off.
import ProxyCore

public enum RequestLogTemplate {
    /// config-observability's default `logging.request-log-template` (current and the older X-B3 variant).
    public static let known: [String] = [
        #"{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}"#,
        #"{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{index .Request.Header "X-B3-Traceid"}}"}"#,
    ]
}

/// What the log line needs from the request, captured at its start (only when logging is on).
public final class RequestLogEntry {
    let method: String
    let url: String
    let size: Int
    let userAgent: String
    let remote: String
    let referer: String
    let proto: String
    let traceID: String
    var routeTag: String?

    init(_ request: RequestView) {
        method = request.string(request.head.method)
        url = request.string(request.head.target)
        size = request.head.contentLength ?? 0
        userAgent = request.value(of: "user-agent").map(request.string) ?? ""
        remote = request.peer.description
        referer = request.value(of: "referer").map(request.string) ?? ""
        proto = request.head.majorVersion == 2 ? "HTTP/2.0" : request.head.minorVersion == 0 ? "HTTP/1.0" : "HTTP/1.1"
        if let parent = request.value(of: "traceparent").map(request.string) {
            let parts = parent.split(separator: "-", omittingEmptySubsequences: false)
            traceID = parts.count > 1 ? String(parts[1]) : ""
        } else {
            traceID = request.value(of: "x-b3-traceid").map(request.string) ?? ""
        }
    }

    /// The default template's output.
    func line(status: Int, size responseSize: Int, latencySeconds: Double, podIP: String) -> String {
        let code = status == 0 ? 200 : status  // Go reports 200 when no status was ever written
        return "{\"httpRequest\": {\"requestMethod\": \"\(method)\", \"requestUrl\": \"\(Self.js(url))\", "
            + "\"requestSize\": \"\(size)\", \"status\": \(code), \"responseSize\": \"\(responseSize)\", "
            + "\"userAgent\": \"\(Self.js(userAgent))\", \"remoteIp\": \"\(Self.js(remote))\", "
            + "\"serverIp\": \"\(podIP)\", \"referer\": \"\(Self.js(referer))\", \"latency\": \"\(latencySeconds)s\", "
            + "\"protocol\": \"\(proto)\"}, \"traceId\": \"\(traceID)\"}\n"
    }

    /// Go's text/template `js` escaping.
    static func js(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "'": out += "\\'"
            case "\"": out += "\\\""
            case "<": out += "\\u003C"
            case ">": out += "\\u003E"
            case "&": out += "\\u0026"
            case "=": out += "\\u003D"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16, uppercase: true)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

}
