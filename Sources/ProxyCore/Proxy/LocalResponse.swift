// Responses the proxy writes itself (errors, probes, local handlers), in Go's http.Error shape.
import Glibc

/// A complete response generated locally. Bodies are byte arrays built once and shared, so answering
/// with a prepared response allocates nothing.
public struct LocalResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    /// `Content-Type` value; nil writes none.
    public var contentType: String?
    /// Go's `http.Error` adds `X-Content-Type-Options: nosniff`.
    public var noSniff: Bool
    public var extraHeaders: [(String, String)]

    public init(
        status: Int, body: [UInt8] = [], contentType: String? = nil, noSniff: Bool = false,
        extraHeaders: [(String, String)] = []
    ) {
        self.status = status
        self.body = body
        self.contentType = contentType
        self.noSniff = noSniff
        self.extraHeaders = extraHeaders
    }

    /// Go's `http.Error(w, text, status)`: text plus a newline, text/plain, nosniff.
    public static func error(_ status: Int, _ text: String) -> LocalResponse {
        LocalResponse(
            status: status, body: Array((text + "\n").utf8), contentType: "text/plain; charset=utf-8", noSniff: true)
    }

    /// A plain text body written as is (Go's `w.Write` with a sniffed text type).
    public static func text(_ status: Int, _ text: String) -> LocalResponse {
        LocalResponse(
            status: status, body: Array(text.utf8), contentType: text.isEmpty ? nil : "text/plain; charset=utf-8")
    }

    /// Serialises the response into `buffer`.
    /// - Parameters:
    ///   - headOnly: a HEAD request: headers (with the length) but no body.
    ///   - close: announce and perform `Connection: close`.
    func write(into buffer: ByteBuffer, headOnly: Bool, close: Bool) {
        buffer.append("HTTP/1.1 ")
        buffer.append(decimal: status)
        buffer.append(byte: 0x20)
        buffer.append(LocalResponse.reasonPhrase(status))
        buffer.append("\r\n")
        if let contentType {
            buffer.append("Content-Type: ")
            buffer.append(string: contentType)
            buffer.append("\r\n")
        }
        if noSniff { buffer.append("X-Content-Type-Options: nosniff\r\n") }
        for (name, value) in extraHeaders {
            buffer.append(string: name)
            buffer.append(": ")
            buffer.append(string: value)
            buffer.append("\r\n")
        }
        buffer.append("Date: ")
        HTTPDate.append(to: buffer)
        buffer.append("\r\nContent-Length: ")
        buffer.append(decimal: body.count)
        buffer.append(close ? "\r\nConnection: close\r\n\r\n" : "\r\n\r\n")
        if !headOnly { body.withUnsafeBytes { buffer.append($0) } }
    }

    public static func reasonPhrase(_ status: Int) -> StaticString {
        switch status {
        case 100: return "Continue"
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 413: return "Request Entity Too Large"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Status"
        }
    }
}

/// The `Date` header value (RFC 9110 IMF-fixdate), formatted at most once per second per thread.
enum HTTPDate {
    private final class Cache {
        var second: time_t = -1
        var text: [UInt8] = Array(repeating: 0, count: 29)
    }
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    static func append(to buffer: ByteBuffer) {
        let cache: Cache
        if let raw = pthread_getspecific(key) {
            // stored retained below; lives with the thread
            cache = Unmanaged<Cache>.fromOpaque(raw).takeUnretainedValue()
        } else {
            cache = Cache()
            pthread_setspecific(key, Unmanaged.passRetained(cache).toOpaque())
        }
        let now = time(nil)
        if now != cache.second {
            cache.second = now
            var t = now
            var parts = tm()
            gmtime_r(&t, &parts)
            format(parts, into: &cache.text)
        }
        cache.text.withUnsafeBytes { buffer.append($0) }
    }

    private static func format(_ t: tm, into out: inout [UInt8]) {
        let days: [StaticString] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months: [StaticString] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        var i = 0
        func put(_ s: StaticString) {
            for k in 0..<s.utf8CodeUnitCount {
                out[i] = s.utf8Start[k]
                i += 1
            }
        }
        func two(_ v: Int32) {
            out[i] = UInt8(48 + v / 10)
            out[i + 1] = UInt8(48 + v % 10)
            i += 2
        }
        put(days[Int(t.tm_wday)])
        put(", ")
        two(t.tm_mday)
        put(" ")
        put(months[Int(t.tm_mon)])
        put(" ")
        let year = t.tm_year + 1900
        two(year / 100)
        two(year % 100)
        put(" ")
        two(t.tm_hour)
        put(":")
        two(t.tm_min)
        put(":")
        two(t.tm_sec)
        put(" GMT")
    }
}
