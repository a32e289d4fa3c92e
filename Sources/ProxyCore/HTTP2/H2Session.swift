// HTTP/2 (h2c) framing over libnghttp2, as a codec: bytes in (`receive`), events out (the delegate), bytes
// out (`writeOutput`). No sockets here: the connection that owns a session moves the bytes, as
// `HTTP1ServerConnection` does with `HTTP1Parser`. Both roles (server: downstream h2c; client: upstream h2c).
// This is the only file that touches libnghttp2 (1.52 API: mem_recv/mem_send, nghttp2_data_provider).
//
// Flow control is manual (NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE): received DATA is acknowledged with
// `consume(stream:count:)` only once the bytes have been passed on, so a slow reader on the far side stops
// the sender instead of growing our buffers. Outgoing bodies are queued per stream and pulled by nghttp2
// within the peer's windows; an empty queue defers the stream until `send` adds more.
import CNghttp2

/// One header field as bytes (names are lower-case on the wire in HTTP/2).
public struct H2Field: Equatable, Sendable {
    public var name: [UInt8]
    public var value: [UInt8]

    public init(_ name: String, _ value: String) {
        self.name = Array(name.utf8)
        self.value = Array(value.utf8)
    }

    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

/// RFC 9113 §7 error codes by name (Go's spelling, for error texts).
enum H2ErrorCode {
    static func name(_ code: UInt32) -> String {
        let names = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
                     "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
                     "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
        return code < names.count ? names[Int(code)] : "unknown error code 0x\(String(code, radix: 16))"
    }
}

public struct H2Error: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public var description: String { String(cString: nghttp2_strerror(code)) }
}

/// What a session reports. All calls happen inside `receive` (or `writeOutput` for stream closes).
public protocol H2SessionDelegate: AnyObject {
    /// A whole header block: request or response headers, or trailers (`isTrailers`, always ending the stream).
    func h2Headers(_ session: H2Session, stream: Int32, fields: [H2Field], isTrailers: Bool, endStream: Bool)
    /// Body bytes, valid during the call. Call `consume(stream:count:)` once they are passed on.
    func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer)
    /// The peer's END_STREAM after DATA (the body is complete).
    func h2EndStream(_ session: H2Session, stream: Int32)
    /// The stream is gone (errorCode 0 = NO_ERROR; otherwise the RST_STREAM/GOAWAY code).
    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: UInt32)
    /// `count` body bytes queued with `send` were framed for the wire: room for more (end-to-end flow control).
    func h2DataSent(_ session: H2Session, stream: Int32, count: Int)
}

extension H2SessionDelegate {
    public func h2DataSent(_ session: H2Session, stream: Int32, count: Int) {}
}

public final class H2Session {
    public enum Role { case server, client }

    /// An outgoing body being pulled by nghttp2.
    private final class Outgoing {
        var pending: [UInt8] = []
        var offset = 0
        var ended = false
        var trailers: [H2Field]?
        var deferred = false
    }

    public let role: Role
    public weak var delegate: H2SessionDelegate?
    private var session: OpaquePointer?
    /// Header fields of blocks being received, by stream.
    private var incoming: [Int32: [H2Field]] = [:]
    private var outgoing: [Int32: Outgoing] = [:]
    private var openStreams = Set<Int32>()
    /// Received body bytes not yet acknowledged with `consume`, by stream: given back to the connection window
    /// when the stream closes, or the connection would lose them for good.
    private var unconsumed: [Int32: Int] = [:]
    /// Streams whose final head arrived (a request, or a non-1xx response): a later header block is trailers.
    private var finalHeadSeen = Set<Int32>()

    /// - Parameter maxConcurrentStreams: advertised in our SETTINGS (the server's limit on client streams).
    public init(role: Role, delegate: H2SessionDelegate?, maxConcurrentStreams: UInt32 = 1000,
                initialWindowSize: UInt32 = 65_535) throws(H2Error) {
        self.role = role
        self.delegate = delegate
        var callbacks: OpaquePointer?
        try Self.check(nghttp2_session_callbacks_new(&callbacks))
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            let session = H2Session.from(user)
            session.incoming[frame.pointee.hd.stream_id] = []
            session.openStreams.insert(frame.pointee.hd.stream_id)
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, user in
            guard let frame, let user, let name, let value else { return 0 }
            let field = H2Field(name: Array(UnsafeBufferPointer(start: name, count: nameLength)),
                                value: Array(UnsafeBufferPointer(start: value, count: valueLength)))
            H2Session.from(user).incoming[frame.pointee.hd.stream_id, default: []].append(field)
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            H2Session.from(user).frameReceived(frame)
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, stream, data, length, user in
            guard let user, let data else { return 0 }
            let session = H2Session.from(user)
            guard let delegate = session.delegate else {
                _ = nghttp2_session_consume(session.session, stream, length)  // nobody will: give it back now
                return 0
            }
            session.unconsumed[stream, default: 0] += length
            delegate.h2Data(session, stream: stream, bytes: UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, stream, code, user in
            guard let user else { return 0 }
            let session = H2Session.from(user)
            session.incoming.removeValue(forKey: stream)
            session.outgoing.removeValue(forKey: stream)
            session.openStreams.remove(stream)
            session.finalHeadSeen.remove(stream)
            if let left = session.unconsumed.removeValue(forKey: stream), left > 0 {
                _ = nghttp2_session_consume_connection(session.session, left)
            }
            session.delegate?.h2StreamClosed(session, stream: stream, errorCode: code)
            return 0
        }
        var option: OpaquePointer?
        try Self.check(nghttp2_option_new(&option))
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_auto_window_update(option, 1)
        let user = Unmanaged.passUnretained(self).toOpaque()
        switch role {
        case .server: try Self.check(nghttp2_session_server_new2(&session, callbacks, user, option))
        case .client: try Self.check(nghttp2_session_client_new2(&session, callbacks, user, option))
        }
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: initialWindowSize),
        ]
        if role == .client {
            // A proxy has no use for server push; refusing it keeps even stream ids out of the delegate.
            settings.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        try Self.check(nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count))
    }

    deinit { nghttp2_session_del(session) }

    static let statusName = Array(":status".utf8)

    private static func from(_ user: UnsafeMutableRawPointer) -> H2Session {
        Unmanaged<H2Session>.fromOpaque(user).takeUnretainedValue()
    }

    private static func check(_ rc: Int32) throws(H2Error) {
        if rc < 0 { throw H2Error(code: rc) }
    }

    private func frameReceived(_ frame: UnsafePointer<nghttp2_frame>) {
        let stream = frame.pointee.hd.stream_id
        let endStream = frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch frame.pointee.hd.type {
        case UInt8(NGHTTP2_HEADERS.rawValue):
            let fields = incoming.removeValue(forKey: stream) ?? []
            // A block after the final head is trailers; a 1xx head is not final (the next block is the response).
            let isTrailers = frame.pointee.headers.cat == NGHTTP2_HCAT_HEADERS && finalHeadSeen.contains(stream)
            if !isTrailers {
                let status = fields.first { $0.name == H2Session.statusName }
                if role == .server || status?.value.first != UInt8(ascii: "1") { finalHeadSeen.insert(stream) }
            }
            delegate?.h2Headers(self, stream: stream, fields: fields, isTrailers: isTrailers, endStream: endStream)
        case UInt8(NGHTTP2_DATA.rawValue):
            if endStream { delegate?.h2EndStream(self, stream: stream) }
        case UInt8(NGHTTP2_GOAWAY.rawValue):
            let g = frame.pointee.goaway
            if g.error_code != 0 {
                let text = String(decoding: UnsafeBufferPointer(start: g.opaque_data, count: g.opaque_data_len), as: UTF8.self)
                Log.debug("h2 GOAWAY received: \(H2ErrorCode.name(g.error_code)) \(text)")
            }
        default:
            break
        }
    }

    // MARK: - Bytes

    /// Feeds received bytes. - Returns: how many were consumed (all, unless an error is thrown).
    /// - Throws: on a protocol violation; the session then has a GOAWAY to write and should be closed after.
    @discardableResult
    public func receive(_ bytes: UnsafeRawBufferPointer) throws(H2Error) -> Int {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        let n = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if n < 0 { throw H2Error(code: Int32(n)) }
        return n
    }

    /// Hands the frames ready to go to `sink` (possibly in several pieces), stopping once `limit` bytes were
    /// handed over (the last piece may pass it: nghttp2 serialises a frame at a time).
    /// - Returns: the byte count written.
    @discardableResult
    public func writeOutput(limit: Int = .max, _ sink: (UnsafeRawBufferPointer) -> Void) throws(H2Error) -> Int {
        var total = 0
        while total < limit {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 { throw H2Error(code: Int32(n)) }
            guard n > 0, let data else { return total }
            sink(UnsafeRawBufferPointer(start: data, count: n))
            total += n
        }
        return total
    }

    /// Client: whether a new stream may be opened now (no GOAWAY received, under the peer's stream limit).
    public var canOpenStream: Bool {
        guard nghttp2_session_check_request_allowed(session) != 0 else { return false }
        let limit = nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
        return openStreams.count < Int(limit)
    }

    /// Server: takes over an HTTP/1.1 `Upgrade: h2c` request as stream 1 (half-closed: the request had no body).
    /// `settings` is the decoded `HTTP2-Settings` value.
    public func upgrade(settings: [UInt8], headRequest: Bool) throws(H2Error) {
        try settings.withUnsafeBufferPointer { raw throws(H2Error) in
            try Self.check(nghttp2_session_upgrade2(session, raw.baseAddress, raw.count, headRequest ? 1 : 0, nil))
        }
        openStreams.insert(1)
        finalHeadSeen.insert(1)
    }

    /// Whether nghttp2 still wants to read (false after GOAWAY both ways, or a fatal error).
    public var wantsRead: Bool { nghttp2_session_want_read(session) != 0 }
    /// Whether frames are waiting for `writeOutput`.
    public var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    // MARK: - Streams

    /// Client: opens a stream with `fields` (pseudo-headers first). - Returns: the stream id.
    public func submitRequest(_ fields: [H2Field], endStream: Bool) throws(H2Error) -> Int32 {
        let id = try withNV(fields) { nv throws(H2Error) -> Int32 in
            if endStream {
                let id = nghttp2_submit_request(session, nil, nv.baseAddress, nv.count, nil, nil)
                try Self.check(id)
                return id
            }
            var provider = dataProvider()
            let id = nghttp2_submit_request(session, nil, nv.baseAddress, nv.count, &provider, nil)
            try Self.check(id)
            return id
        }
        if !endStream { outgoing[id] = Outgoing() }
        openStreams.insert(id)
        return id
    }

    /// Server: answers `stream` with `fields` (":status" first); a body follows through `send` unless `endStream`.
    public func submitResponse(stream: Int32, _ fields: [H2Field], endStream: Bool) throws(H2Error) {
        // A stream the client already reset is gone: queueing a body for it would leak the queue.
        guard nghttp2_session_find_stream(session, stream) != nil else { return }
        if !endStream { outgoing[stream] = Outgoing() }
        try withNV(fields) { nv throws(H2Error) in
            if endStream {
                try Self.check(nghttp2_submit_response(session, stream, nv.baseAddress, nv.count, nil))
            } else {
                var provider = dataProvider()
                try Self.check(nghttp2_submit_response(session, stream, nv.baseAddress, nv.count, &provider))
            }
        }
    }

    /// Server: a non-final (1xx) header block.
    public func submitInformational(stream: Int32, _ fields: [H2Field]) throws(H2Error) {
        try withNV(fields) { nv throws(H2Error) in
            try Self.check(nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, nil, nv.baseAddress, nv.count, nil))
        }
    }

    /// Queues body bytes for `stream`; `end` finishes the body (then trailers, when given, end the stream).
    public func send(stream: Int32, _ bytes: UnsafeRawBufferPointer, end: Bool = false, trailers: [H2Field]? = nil) {
        guard let out = outgoing[stream] else { return }
        if out.offset > 0 && (out.offset == out.pending.count || (out.offset > 65_536 && out.offset * 2 > out.pending.count)) {
            out.pending.removeFirst(out.offset)  // the framed prefix goes: a long stream's queue stays bounded
            out.offset = 0
        }
        out.pending.append(contentsOf: bytes)
        if end {
            out.ended = true
            out.trailers = trailers
        }
        if out.deferred {
            out.deferred = false
            _ = nghttp2_session_resume_data(session, stream)
        }
    }

    /// Bytes queued for `stream` and not yet framed (backpressure for whoever fills it).
    public func queuedBytes(stream: Int32) -> Int {
        guard let out = outgoing[stream] else { return 0 }
        return out.pending.count - out.offset
    }

    /// Acknowledges `count` received body bytes of `stream` as passed on: opens the windows again.
    public func consume(stream: Int32, count: Int) {
        guard count > 0 else { return }
        if let left = unconsumed[stream] { unconsumed[stream] = max(0, left - count) }
        _ = nghttp2_session_consume(session, stream, count)
    }

    /// RST_STREAM with `code` (0x8 CANCEL, 0x2 INTERNAL_ERROR, …).
    public func reset(stream: Int32, code: UInt32) {
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, code)
    }

    /// Graceful shutdown (drain): GOAWAY with the last stream id we accepted; open streams may finish.
    public func goAway() {
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nghttp2_session_get_last_proc_stream_id(session),
                                  UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
    }

    /// Streams currently open (either side).
    public var openStreamCount: Int { openStreams.count }

    private func dataProvider() -> nghttp2_data_provider {
        var provider = nghttp2_data_provider()
        provider.read_callback = { _, stream, buffer, length, flags, _, user in
            guard let user, let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            return H2Session.from(user).pull(stream: stream, into: buffer, length: length, flags: flags)
        }
        return provider
    }

    /// nghttp2 asks for up to `length` body bytes of `stream`.
    private func pull(stream: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        // Temporal: only this stream is reset, not the whole session.
        guard let out = outgoing[stream] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        let n = min(length, out.pending.count - out.offset)
        if n > 0 {
            out.pending.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress! + out.offset, byteCount: n)
            }
            out.offset += n
            delegate?.h2DataSent(self, stream: stream, count: n)
        }
        if out.offset == out.pending.count {
            if out.ended {
                flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue)
                if let trailers = out.trailers,
                    withNV(trailers, { nv in nghttp2_submit_trailer(session, stream, nv.baseAddress, nv.count) }) == 0 {
                    // END_STREAM goes with the trailers; had they failed, the DATA frame ends the stream instead.
                    flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue)
                }
            } else if n == 0 {
                out.deferred = true
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
            out.pending.removeAll(keepingCapacity: true)
            out.offset = 0
        }
        return n
    }

    /// `fields` as nghttp2_nv for the duration of `body` (nghttp2 copies them during the submit call).
    private func withNV<R, E: Error>(_ fields: [H2Field], _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) throws(E) -> R) throws(E) -> R {
        // One contiguous copy of every name and value, pointed into by the nv array.
        var storage: [UInt8] = []
        storage.reserveCapacity(fields.reduce(0) { $0 + $1.name.count + $1.value.count })
        for f in fields { storage += f.name; storage += f.value }
        var nvs = [nghttp2_nv](repeating: nghttp2_nv(), count: fields.count)
        return try storage.withUnsafeMutableBufferPointer { raw throws(E) -> R in
            var offset = 0
            for (i, f) in fields.enumerated() {
                let base = raw.baseAddress!
                nvs[i] = nghttp2_nv(name: base + offset, value: base + offset + f.name.count, namelen: f.name.count,
                                    valuelen: f.value.count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                offset += f.name.count + f.value.count
            }
            return try nvs.withUnsafeMutableBufferPointer { nv throws(E) -> R in try body(nv) }
        }
    }
}
