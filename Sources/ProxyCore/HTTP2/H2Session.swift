// HTTP/2 (h2c) framing over libnghttp2, as a codec: bytes in (`receive`), events out (the delegate), bytes
// out (`writeOutput`). No sockets here: the connection that owns a session moves the bytes, as
// `HTTP1ServerConnection` does with `HTTP1Parser`. Both roles (server: downstream h2c; client: upstream h2c).
// This is the only file that touches libnghttp2 (1.52 API: mem_recv/mem_send, nghttp2_data_provider).
//
// Flow control is manual (NGHTTP2_OPT_NO_AUTO_WINDOW_UPDATE) and per stream: a stream's DATA is acknowledged
// with `consume(stream:count:)` only once the bytes have been passed on, so a slow reader on the far side
// stops that stream's sender instead of growing our buffers. The connection window is acknowledged on arrival
// (one stalled stream must not stop the others). Outgoing bodies are queued per stream and pulled by nghttp2
// within the peer's windows; an empty queue defers the stream until `send` adds more (`h2DataWanted` says so).
// A client session made with `initialWindowSize: 0` grants each stream's window itself (`setWindow`): what a
// stream may make us hold is then decided per stream, by whoever will pass its bytes on.
// Exclusivity: stored properties are `@exclusivity(unchecked)`, as in the loop's other per-connection classes:
// confined to one loop thread, touched only by short, non-overlapping accesses.
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

/// A received header block: a view into the session's block buffer, valid only during the delegate call
/// (HTTP/2 sends a block's frames back to back, so the session needs one buffer, reused, and no per-field arrays).
public struct H2HeaderBlock {
    let bytes: UnsafeRawBufferPointer
    let ranges: UnsafeBufferPointer<H2HeaderList.Entry>
    /// The block was larger than the session's `maxHeaderListSize`: fields beyond it were dropped.
    public var isTruncated = false

    public var count: Int { ranges.count }
    public func name(_ i: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[ranges[i].name]) }
    public func value(_ i: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[ranges[i].value]) }

    /// The value of the first field called `name` (lower-case, as on the wire).
    public func value(of name: StaticString) -> UnsafeRawBufferPointer? {
        let wanted = UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
        for i in 0..<count where self.name(i).elementsEqual(wanted) { return value(i) }
        return nil
    }

    /// The fields as owned values (allocates: for tests, probes and trailers that outlive the call).
    public var fields: [H2Field] { (0..<count).map { H2Field(name: Array(name($0)), value: Array(value($0))) } }
}

/// Header fields to submit, as ranges into one byte array: reusable (`removeAll`) so that building a block
/// allocates nothing once warm.
public struct H2HeaderList {
    struct Entry {
        var name: Range<Int>
        var value: Range<Int>
    }

    var bytes: [UInt8] = []
    var entries: [Entry] = []

    public init() {}

    public var count: Int { entries.count }

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        entries.removeAll(keepingCapacity: true)
    }

    public mutating func append(
        name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, lowercasingName: Bool = false
    ) {
        let nameStart = bytes.count
        bytes.append(contentsOf: name.bindMemory(to: UInt8.self))  // typed: one memcpy, not a byte loop
        if lowercasingName {
            for i in nameStart..<bytes.count where bytes[i] &- 65 < 26 { bytes[i] |= 0x20 }
        }
        let valueStart = bytes.count
        bytes.append(contentsOf: value.bindMemory(to: UInt8.self))
        entries.append(Entry(name: nameStart..<valueStart, value: valueStart..<bytes.count))
    }

    public mutating func append(_ name: StaticString, _ value: UnsafeRawBufferPointer) {
        append(name: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), value: value)
    }

    /// Appends a field and moves it to position `index` (pseudo-headers must come first).
    public mutating func insert(_ name: StaticString, _ value: UnsafeRawBufferPointer, at index: Int) {
        append(name, value)
        let entry = entries.removeLast()
        entries.insert(entry, at: index)
    }
}

/// An RFC 9113 §7 error code (RST_STREAM, GOAWAY). Named constants for the ones we send or act on; `name` is
/// Go's spelling, for error texts.
public struct H2ErrorCode: RawRepresentable, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let noError = H2ErrorCode(rawValue: 0x0)
    public static let protocolError = H2ErrorCode(rawValue: 0x1)
    public static let internalError = H2ErrorCode(rawValue: 0x2)
    public static let flowControlError = H2ErrorCode(rawValue: 0x3)
    public static let refusedStream = H2ErrorCode(rawValue: 0x7)
    public static let cancel = H2ErrorCode(rawValue: 0x8)
    public static let compressionError = H2ErrorCode(rawValue: 0x9)
    public static let enhanceYourCalm = H2ErrorCode(rawValue: 0xb)

    private static let names = [
        "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
        "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
    ]

    public var name: String {
        rawValue < Self.names.count ? Self.names[Int(rawValue)] : "unknown error code 0x\(String(rawValue, radix: 16))"
    }

    public var description: String { name }
}

public struct H2Error: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public var description: String { String(cString: nghttp2_strerror(code)) }
}

/// What a session reports. All calls happen inside `receive` (or `writeOutput` for stream closes).
public protocol H2SessionDelegate: AnyObject {
    /// A whole header block: request or response headers, or trailers (`isTrailers`, always ending the stream).
    func h2Headers(_ session: H2Session, stream: Int32, block: H2HeaderBlock, isTrailers: Bool, endStream: Bool)
    /// Body bytes, valid during the call. Call `consume(stream:count:)` once they are passed on.
    func h2Data(_ session: H2Session, stream: Int32, bytes: UnsafeRawBufferPointer)
    /// The peer's END_STREAM after DATA (the body is complete).
    func h2EndStream(_ session: H2Session, stream: Int32)
    /// The stream is gone (errorCode 0 = NO_ERROR; otherwise the RST_STREAM/GOAWAY code).
    func h2StreamClosed(_ session: H2Session, stream: Int32, errorCode: H2ErrorCode)
    /// `count` body bytes queued with `send` were framed for the wire: room for more (end-to-end flow control).
    func h2DataSent(_ session: H2Session, stream: Int32, count: Int)
    /// The peer's windows let `stream` send and its queue is empty (it waits for `send`).
    func h2DataWanted(_ session: H2Session, stream: Int32)
}

extension H2SessionDelegate {
    public func h2DataSent(_ session: H2Session, stream: Int32, count: Int) {}
    public func h2DataWanted(_ session: H2Session, stream: Int32) {}
}

public final class H2Session {
    public enum Role { case server, client }

    /// What the session keeps per open stream (one record, one lookup): the outgoing body being pulled by
    /// nghttp2, received bytes not yet acknowledged, whether the final head arrived.
    private final class StreamState {
        /// `send` may queue a body (the stream was opened or answered with one to follow).
        @exclusivity(unchecked) var sending = false
        @exclusivity(unchecked) var pending: [UInt8] = []
        @exclusivity(unchecked) var offset = 0
        @exclusivity(unchecked) var ended = false
        @exclusivity(unchecked) var trailers: [H2Field]?
        @exclusivity(unchecked) var deferred = false
        /// Received body bytes not yet acknowledged with `consume`: given back to the connection window when the
        /// stream closes, or the connection would lose them for good.
        @exclusivity(unchecked) var unconsumed = 0
        /// The final head arrived (a request, or a non-1xx response): a later header block is trailers.
        @exclusivity(unchecked) var finalHeadSeen = false
        /// RST_STREAM(NO_ERROR) goes out once our END_STREAM has been sent (`resetWhenResponseEnds`).
        @exclusivity(unchecked) var resetOnEnd = false
        /// The receive window granted with `setWindow` (-1: the session's initial window, left alone).
        @exclusivity(unchecked) var window: Int32 = -1
    }

    public let role: Role
    /// Not retained, and not weak either (a weak load per callback costs measurably): the delegate owns the
    /// session (a connection, a probe attempt) and outlives it, or clears this before it goes.
    @exclusivity(unchecked) public unowned(unsafe) var delegate: H2SessionDelegate?
    @exclusivity(unchecked) private var session: OpaquePointer?
    /// The header block being received (one at a time: a block's frames are contiguous on the wire).
    @exclusivity(unchecked) private var incoming = H2HeaderList()
    /// The block being received went over `maxHeaderListSize`: later fields are dropped, the block is flagged.
    @exclusivity(unchecked) private var incomingTooLarge = false
    /// Most header bytes (names + values) kept of one received block: HPACK lets a few bytes on the wire stand
    /// for kilobytes, so the limit applies to what is decoded, as it arrives.
    public let maxHeaderListSize: Int
    /// Our SETTINGS_INITIAL_WINDOW_SIZE (nghttp2 applies it to its own accounting once the peer acknowledges it).
    private let initialWindowSize: UInt32
    /// The error code of the last GOAWAY received (nil: none).
    @exclusivity(unchecked) public private(set) var lastGoAwayCode: H2ErrorCode?
    /// Open streams (either side).
    @exclusivity(unchecked) private var streams: [Int32: StreamState] = [:]
    /// Most received body bytes, over all streams, held unconsumed before the connection window stops being
    /// acknowledged on arrival (`Int.max`: never stops).
    private let connectionHoldLimit: Int
    /// Received body bytes of open streams not yet `consume`d.
    @exclusivity(unchecked) private var held = 0
    /// Connection-window bytes not acknowledged yet because `held` was over `connectionHoldLimit`.
    @exclusivity(unchecked) private var connectionOwed = 0

    /// - Parameters:
    ///   - maxConcurrentStreams: advertised in our SETTINGS (the server's limit on client streams).
    ///   - initialWindowSize: our stream window: what the peer may send on a stream before we acknowledge it.
    ///   - maxHeaderListSize: the decoded size of a received header block we keep (advertised by servers).
    ///   - maxSendHeaderBlock: the largest header block we send (nghttp2's default 64 KiB; tests send more).
    ///   - connectionHoldLimit: received body bytes held (not yet consumed) over all streams beyond which the
    ///     connection window is no longer acknowledged on arrival, so that a peer opening many streams that
    ///     nobody reads can make us hold at most this plus one connection window (Go's server: 1 MiB per
    ///     connection, `MaxUploadBufferPerConnection`). Below it, one stalled stream cannot stop the others.
    ///     Not used by the proxy yet: counted over every stream, it lets streams that wait in a queue (the
    ///     activator's, the breaker's) hold the window that the stream being proxied needs to finish its upload,
    ///     a deadlock until the timeouts. Waiting streams must be left out of the count first.
    public init(
        role: Role, delegate: H2SessionDelegate?, maxConcurrentStreams: UInt32 = 1000,
        initialWindowSize: UInt32 = 65_535, maxHeaderListSize: Int = 64 * 1024,
        maxSendHeaderBlock: Int = 64 * 1024, connectionHoldLimit: Int = .max
    ) throws(H2Error) {
        self.role = role
        self.connectionHoldLimit = connectionHoldLimit
        self.delegate = delegate
        self.maxHeaderListSize = maxHeaderListSize
        self.initialWindowSize = initialWindowSize
        var callbacks: OpaquePointer?
        try Self.check(nghttp2_session_callbacks_new(&callbacks))
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            let session = H2Session.from(user)
            if session.incoming.bytes.capacity > 16 * 1024 { session.incoming = H2HeaderList() }  // after a big one
            session.incoming.removeAll()
            session.incomingTooLarge = false
            let id = frame.pointee.hd.stream_id
            if session.streams[id] == nil { session.streams[id] = StreamState() }
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) {
            _, frame, name, nameLength, value, valueLength, _, user in
            guard frame != nil, let user, let name, let value else { return 0 }
            let session = H2Session.from(user)
            // Counted as SETTINGS_MAX_HEADER_LIST_SIZE is (RFC 9113 §6.5.2): 32 bytes per field on top.
            let size = session.incoming.bytes.count + 32 * (session.incoming.count + 1) + nameLength + valueLength
            guard size <= session.maxHeaderListSize else {
                session.incomingTooLarge = true
                return 0
            }
            session.incoming.append(
                name: UnsafeRawBufferPointer(start: name, count: nameLength),
                value: UnsafeRawBufferPointer(start: value, count: valueLength))
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
            guard let delegate = session.delegate, let state = session.streams[stream] else {
                // Nobody will take them: give them back now.
                _ = nghttp2_session_consume_connection(session.session, length)
                _ = nghttp2_session_consume_stream(session.session, stream, length)
                return 0
            }
            // The connection window is given back at once while little is held: holding it would let one slow
            // stream stop every stream of the connection (an upstream connection is shared). Backpressure is per
            // stream, up to `connectionHoldLimit` for them all.
            session.held += length
            if session.held <= session.connectionHoldLimit {
                _ = nghttp2_session_consume_connection(session.session, length)
            } else {
                session.connectionOwed += length
            }
            state.unconsumed += length
            delegate.h2Data(session, stream: stream, bytes: UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            H2Session.from(user).frameSent(frame)
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, stream, code, user in
            guard let user else { return 0 }
            let session = H2Session.from(user)
            if let state = session.streams.removeValue(forKey: stream), state.unconsumed > 0 {
                session.released(state.unconsumed)  // nghttp2 forgets the stream window; ours is held no more
            }
            session.delegate?.h2StreamClosed(session, stream: stream, errorCode: H2ErrorCode(rawValue: code))
            return 0
        }
        var option: OpaquePointer?
        try Self.check(nghttp2_option_new(&option))
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_max_send_header_block_length(option, maxSendHeaderBlock)
        let user = Unmanaged.passUnretained(self).toOpaque()
        switch role {
        case .server: try Self.check(nghttp2_session_server_new2(&session, callbacks, user, option))
        case .client: try Self.check(nghttp2_session_client_new2(&session, callbacks, user, option))
        }
        var settings = [
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: maxConcurrentStreams),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: initialWindowSize),
        ]
        if role == .server {
            settings.append(
                nghttp2_settings_entry(
                    settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(maxHeaderListSize)
                ))
        }
        if role == .client {
            // A proxy has no use for server push; refusing it keeps even stream ids out of the delegate.
            settings.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0))
        }
        try Self.check(nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count))
        // The connection window only paces the peer (it is acknowledged on arrival): 1 MiB, Go's server's figure.
        try Self.check(nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 1 << 20))
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
            // A block after the final head is trailers; a 1xx head is not final (the next block is the response).
            let state = streams[stream]
            let isTrailers = frame.pointee.headers.cat == NGHTTP2_HCAT_HEADERS && state?.finalHeadSeen == true
            incoming.bytes.withUnsafeBytes { bytes in
                incoming.entries.withUnsafeBufferPointer { ranges in
                    let block = H2HeaderBlock(bytes: bytes, ranges: ranges, isTruncated: incomingTooLarge)
                    if !isTrailers && (role == .server || block.value(of: ":status")?.first != UInt8(ascii: "1")) {
                        state?.finalHeadSeen = true
                    }
                    delegate?.h2Headers(
                        self, stream: stream, block: block, isTrailers: isTrailers, endStream: endStream)
                }
            }
        case UInt8(NGHTTP2_DATA.rawValue):
            if endStream { delegate?.h2EndStream(self, stream: stream) }
        case UInt8(NGHTTP2_SETTINGS.rawValue) where frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0:
            // Our initial window now counts in nghttp2's books: the windows granted before can go out.
            for (id, state) in streams where state.window > 0 { applyWindow(id, state) }
        case UInt8(NGHTTP2_GOAWAY.rawValue):
            let g = frame.pointee.goaway
            lastGoAwayCode = H2ErrorCode(rawValue: g.error_code)
            if g.error_code != 0 {
                let text = String(
                    decoding: UnsafeBufferPointer(start: g.opaque_data, count: g.opaque_data_len), as: UTF8.self)
                Log.debug("h2 GOAWAY received: \(H2ErrorCode(rawValue: g.error_code).name) \(text)")
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
        return streams.count < Int(limit)
    }

    /// Server: takes over an HTTP/1.1 `Upgrade: h2c` request as stream 1 (half-closed: the request had no body).
    /// `settings` is the decoded `HTTP2-Settings` value.
    public func upgrade(settings: [UInt8], headRequest: Bool) throws(H2Error) {
        try settings.withUnsafeBufferPointer { raw throws(H2Error) in
            try Self.check(nghttp2_session_upgrade2(session, raw.baseAddress, raw.count, headRequest ? 1 : 0, nil))
        }
        let state = StreamState()
        state.finalHeadSeen = true
        streams[1] = state
    }

    /// Whether nghttp2 still wants to read (false after GOAWAY both ways, or a fatal error).
    public var wantsRead: Bool { nghttp2_session_want_read(session) != 0 }
    /// Whether frames are waiting for `writeOutput`.
    public var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    // MARK: - Streams

    // The public submit calls differ only in where the header fields come from (owned fields, a reused list,
    // a received block); each turns them into nghttp2_nv and calls one implementation.

    /// Client: opens a stream with `fields` (pseudo-headers first). - Returns: the stream id.
    public func submitRequest(_ fields: [H2Field], endStream: Bool) throws(H2Error) -> Int32 {
        try withNV(fields) { nv throws(H2Error) in try submitRequest(nv, endStream: endStream) }
    }

    /// Client: opens a stream with the fields of `list` (pseudo-headers first). - Returns: the stream id.
    public func submitRequest(_ list: H2HeaderList, endStream: Bool) throws(H2Error) -> Int32 {
        try withNV(list) { nv throws(H2Error) in try submitRequest(nv, endStream: endStream) }
    }

    private func submitRequest(_ nv: UnsafeMutableBufferPointer<nghttp2_nv>, endStream: Bool) throws(H2Error) -> Int32 {
        var provider = dataProvider()
        let id =
            endStream
            ? nghttp2_submit_request(session, nil, nv.baseAddress, nv.count, nil, nil)
            : nghttp2_submit_request(session, nil, nv.baseAddress, nv.count, &provider, nil)
        try Self.check(id)
        let state = StreamState()
        state.sending = !endStream
        streams[id] = state
        return id
    }

    /// Server: answers `stream` with `fields` (":status" first); a body follows through `send` unless `endStream`.
    public func submitResponse(stream: Int32, _ fields: [H2Field], endStream: Bool) throws(H2Error) {
        try withNV(fields) { nv throws(H2Error) in try submitResponse(stream, nv, endStream: endStream) }
    }

    /// Server: answers `stream` with a received block (a proxied response head), without copying it.
    public func submitResponse(stream: Int32, _ block: H2HeaderBlock, endStream: Bool) throws(H2Error) {
        try withNV(block) { nv throws(H2Error) in try submitResponse(stream, nv, endStream: endStream) }
    }

    private func submitResponse(_ stream: Int32, _ nv: UnsafeMutableBufferPointer<nghttp2_nv>, endStream: Bool)
        throws(H2Error)
    {
        // A stream the client already reset is gone: queueing a body for it would leak the queue.
        guard nghttp2_session_find_stream(session, stream) != nil else { return }
        if !endStream { startSending(stream) }
        var provider = dataProvider()
        try Self.check(
            endStream
                ? nghttp2_submit_response(session, stream, nv.baseAddress, nv.count, nil)
                : nghttp2_submit_response(session, stream, nv.baseAddress, nv.count, &provider))
    }

    /// Server: a non-final (1xx) header block.
    public func submitInformational(stream: Int32, _ fields: [H2Field]) throws(H2Error) {
        try withNV(fields) { nv throws(H2Error) in try submitInformational(stream, nv) }
    }

    /// Server: a non-final (1xx) header block passed on as received.
    public func submitInformational(stream: Int32, _ block: H2HeaderBlock) throws(H2Error) {
        try withNV(block) { nv throws(H2Error) in try submitInformational(stream, nv) }
    }

    private func submitInformational(_ stream: Int32, _ nv: UnsafeMutableBufferPointer<nghttp2_nv>) throws(H2Error) {
        try Self.check(
            nghttp2_submit_headers(
                session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, nil, nv.baseAddress, nv.count, nil))
    }

    /// Queues body bytes for `stream`; `end` finishes the body (then trailers, when given, end the stream).
    public func send(stream: Int32, _ bytes: UnsafeRawBufferPointer, end: Bool = false, trailers: [H2Field]? = nil) {
        guard let out = streams[stream], out.sending else { return }
        if out.offset > 0
            && (out.offset == out.pending.count || (out.offset > 65_536 && out.offset * 2 > out.pending.count))
        {
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
        guard let out = streams[stream], out.sending else { return 0 }
        return out.pending.count - out.offset
    }

    /// Acknowledges `count` received body bytes of `stream` as passed on: opens the windows again.
    public func consume(stream: Int32, count: Int) {
        guard count > 0 else { return }
        guard let state = streams[stream] else { return }  // closed: its window is gone with it
        let n = min(count, state.unconsumed)  // never acknowledge more than arrived
        guard n > 0 else { return }
        state.unconsumed -= n
        _ = nghttp2_session_consume_stream(session, stream, n)
        released(n)
    }

    /// `count` held bytes were passed on or dropped: once under the limit, the owed connection window goes out.
    @inline(__always) private func released(_ count: Int) {
        held -= count
        if connectionOwed > 0 && held <= connectionHoldLimit {
            _ = nghttp2_session_consume_connection(session, connectionOwed)
            connectionOwed = 0
        }
    }

    /// Sets what the peer may send on `stream` before we `consume` it (only ever raised). For sessions made with
    /// `initialWindowSize: 0`: the window goes out (WINDOW_UPDATE) once the stream is open on the wire and the
    /// peer has acknowledged our settings (before that nghttp2 still counts the default window).
    public func setWindow(stream: Int32, _ size: Int) {
        guard let state = streams[stream], Int32(clamping: size) > state.window else { return }
        state.window = Int32(clamping: size)
        applyWindow(stream, state)
    }

    private func applyWindow(_ stream: Int32, _ state: StreamState) {
        guard nghttp2_session_get_local_settings(session, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE) == initialWindowSize
        else { return }  // the SETTINGS ACK applies it
        // A stream not opened yet (its HEADERS still queued) is not found: a no-op, redone when HEADERS go.
        _ = nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, state.window)
    }

    /// What the peer lets us send on the connection now (all streams together).
    public var connectionSendWindow: Int { Int(nghttp2_session_get_remote_window_size(session)) }

    /// What the peer lets us send on `stream` now (its stream window; the connection window may be smaller).
    public func sendWindow(stream: Int32) -> Int {
        Int(nghttp2_session_get_stream_remote_window_size(session, stream))
    }

    /// RST_STREAM with `code` (0x8 CANCEL, 0x2 INTERNAL_ERROR, …).
    public func reset(stream: Int32, code: H2ErrorCode) {
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream, code.rawValue)
    }

    /// Server: once the response's last frame is queued, reset `stream` with NO_ERROR, which tells the client to
    /// stop sending a request body nobody will read (RFC 9113 §8.1; Go's server does the same). Without it the
    /// stream would stay half-open for as long as the client kept uploading.
    /// (A RST_STREAM submitted earlier would not wait: nghttp2 marks the stream closing at once and drops the
    /// response frames still queued. So it is submitted from the frame-sent callback.)
    public func resetWhenResponseEnds(stream: Int32) {
        guard let state = streams[stream] else { return }
        if nghttp2_session_get_stream_local_close(session, stream) == 1 {
            resetIfStillReceiving(stream)  // the END_STREAM already went
        } else {
            state.resetOnEnd = true
        }
    }

    private func resetIfStillReceiving(_ stream: Int32) {
        if nghttp2_session_get_stream_remote_close(session, stream) == 0 { reset(stream: stream, code: .noError) }
    }

    /// A frame went out: a request's HEADERS opened the stream, so its granted window can go; the END_STREAM
    /// of a stream marked `resetOnEnd` is followed by the reset.
    private func frameSent(_ frame: UnsafePointer<nghttp2_frame>) {
        let type = frame.pointee.hd.type
        if role == .client && type == UInt8(NGHTTP2_HEADERS.rawValue), let state = streams[frame.pointee.hd.stream_id],
            state.window > 0
        {
            applyWindow(frame.pointee.hd.stream_id, state)
        }
        guard frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0 else { return }
        guard type == UInt8(NGHTTP2_DATA.rawValue) || type == UInt8(NGHTTP2_HEADERS.rawValue) else { return }
        let stream = frame.pointee.hd.stream_id
        guard let state = streams[stream], state.resetOnEnd else { return }
        state.resetOnEnd = false
        resetIfStillReceiving(stream)
    }

    /// Graceful shutdown (drain): GOAWAY with the last stream id we accepted; open streams may finish.
    public func goAway() {
        _ = nghttp2_submit_goaway(
            session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nghttp2_session_get_last_proc_stream_id(session),
            UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
    }

    /// Marks `stream` as having a body to follow (`send` queues it).
    private func startSending(_ stream: Int32) {
        let state = streams[stream] ?? StreamState()
        streams[stream] = state
        state.sending = true
    }

    /// Streams currently open (either side).
    public var openStreamCount: Int { streams.count }

    private func dataProvider() -> nghttp2_data_provider {
        var provider = nghttp2_data_provider()
        provider.read_callback = { _, stream, buffer, length, flags, _, user in
            guard let user, let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            return H2Session.from(user).pull(stream: stream, into: buffer, length: length, flags: flags)
        }
        return provider
    }

    /// nghttp2 asks for up to `length` body bytes of `stream`.
    private func pull(
        stream: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>
    ) -> Int {
        // Temporal: only this stream is reset, not the whole session.
        guard let out = streams[stream], out.sending else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
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
                    withNV(trailers, { nv in nghttp2_submit_trailer(session, stream, nv.baseAddress, nv.count) }) == 0
                {
                    // END_STREAM goes with the trailers; had they failed, the DATA frame ends the stream instead.
                    flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue)
                }
            } else if n == 0 {
                out.deferred = true
                delegate?.h2DataWanted(self, stream: stream)
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
            out.pending.removeAll(keepingCapacity: true)
            out.offset = 0
        }
        return n
    }

    /// `list` as nghttp2_nv for the duration of `body`, pointing into the list's bytes (nothing copied here;
    /// nghttp2 copies during the submit call).
    private func withNV<R, E: Error>(
        _ list: H2HeaderList, _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) throws(E) -> R
    ) throws(E) -> R {
        try list.bytes.withUnsafeBufferPointer { raw throws(E) -> R in
            try list.entries.withUnsafeBufferPointer { entries throws(E) -> R in
                try withNV(bytes: UnsafeRawBufferPointer(raw), entries: entries, body)
            }
        }
    }

    private func withNV<R, E: Error>(
        _ block: H2HeaderBlock, _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) throws(E) -> R
    ) throws(E) -> R {
        try withNV(bytes: block.bytes, entries: block.ranges, body)
    }

    private func withNV<R, E: Error>(
        bytes: UnsafeRawBufferPointer, entries: UnsafeBufferPointer<H2HeaderList.Entry>,
        _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) throws(E) -> R
    ) throws(E) -> R {
        let base = UnsafeMutablePointer(mutating: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        return try withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(entries.count, 1)) {
            nv throws(E) -> R in
            for (i, entry) in entries.enumerated() {
                nv[i] = nghttp2_nv(
                    name: base! + entry.name.lowerBound, value: base! + entry.value.lowerBound,
                    namelen: entry.name.count, valuelen: entry.value.count,
                    flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return try body(UnsafeMutableBufferPointer(rebasing: nv[0..<entries.count]))
        }
    }

    /// `fields` as nghttp2_nv for the duration of `body` (nghttp2 copies them during the submit call).
    private func withNV<R, E: Error>(
        _ fields: [H2Field], _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) throws(E) -> R
    ) throws(E) -> R {
        // One contiguous copy of every name and value, pointed into by the nv array.
        var storage: [UInt8] = []
        storage.reserveCapacity(fields.reduce(0) { $0 + $1.name.count + $1.value.count })
        for f in fields {
            storage += f.name
            storage += f.value
        }
        var nvs = [nghttp2_nv](repeating: nghttp2_nv(), count: fields.count)
        return try storage.withUnsafeMutableBufferPointer { raw throws(E) -> R in
            var offset = 0
            for (i, f) in fields.enumerated() {
                let base = raw.baseAddress!
                nvs[i] = nghttp2_nv(
                    name: base + offset, value: base + offset + f.name.count, namelen: f.name.count,
                    valuelen: f.value.count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                offset += f.name.count + f.value.count
            }
            return try nvs.withUnsafeMutableBufferPointer { nv throws(E) -> R in try body(nv) }
        }
    }
}
