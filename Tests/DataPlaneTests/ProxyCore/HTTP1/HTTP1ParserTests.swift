import Testing

@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

/// Feeds `text` to the parser split at `split` (two pieces), or byte by byte when `split` is nil,
/// the way a socket may deliver it; returns the parsed head or the error.
private func parse(_ text: String, split: Int?, request: Bool = true) -> Result<
    (HTTPHead, [UInt8], Int), HTTPParseError
> {
    let bytes = Array(text.utf8)
    var parser = HTTP1Parser()
    var head = HTTPHead()
    var delivered = 0
    let steps: [Int] = split.map { [$0, bytes.count] } ?? Array(1...max(bytes.count, 1))
    for end in steps where end >= delivered {
        delivered = min(end, bytes.count)
        do {
            let found = try bytes.withUnsafeBytes { raw in
                try parser.findHeadEnd(UnsafeRawBufferPointer(rebasing: raw[0..<delivered]))
            }
            if let length = found {
                try bytes.withUnsafeBytes { raw in
                    let slice = UnsafeRawBufferPointer(rebasing: raw[0..<length])
                    if request {
                        try parser.parseRequest(slice, into: &head)
                    } else {
                        try parser.parseResponse(slice, into: &head)
                    }
                    HTTP1Parser.markConnectionListed(slice, &head)
                }
                return .success((head, bytes, length))
            }
        } catch let error as HTTPParseError {
            return .failure(error)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
    return .failure(.badStartLine)  // never completed: reported as a distinct outcome below
}

private func text(_ bytes: [UInt8], _ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }

/// Every split point plus byte by byte.
private func splits(_ text: String) -> [Int?] { [nil] + (0...text.utf8.count).map { $0 } }

struct HTTP1ParserTests {
    static let good = "GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Multi:  a b \r\nContent-Length: 5\r\n\r\n"

    @Test func parsesARequestAtEverySplitPoint() throws {
        for split in splits(Self.good) {
            let (head, bytes, length) = try parse(Self.good, split: split).get()
            #expect(length == Self.good.utf8.count)
            #expect(text(bytes, head.method) == "GET")
            #expect(head.methodKind == .get)
            #expect(text(bytes, head.target) == "/path?q=1")
            #expect(head.minorVersion == 1)
            #expect(head.fields.count == 3)
            #expect(text(bytes, head.fields[1].value) == "a b")
            #expect(head.contentLength == 5)
            #expect(head.requestFraming == .length(5))
            #expect(head.keepAlive)
        }
    }

    @Test func parsesAResponseAtEverySplitPoint() throws {
        let response = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        for split in splits(response) {
            let (head, bytes, _) = try parse(response, split: split, request: false).get()
            #expect(head.status == 404)
            #expect(text(bytes, head.reason) == "Not Found")
            #expect(head.isChunked)
            #expect(head.contentLength == nil)  // Transfer-Encoding wins in a response
            #expect(head.fields[1].kind == .connectionListed)  // and the length is dropped when forwarding
            #expect(head.responseFraming(requestMethod: .get) == .chunked)
            #expect(head.responseFraming(requestMethod: .head) == .none)
        }
    }

    @Test(arguments: [
        ("HTTP/1.1 204 No Content\r\n\r\n", BodyFraming.none),
        ("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", BodyFraming.none),
        ("HTTP/1.1 100 Continue\r\n\r\n", BodyFraming.none),
        ("HTTP/1.1 200 OK\r\n\r\n", BodyFraming.untilClose),
        ("HTTP/1.0 200\r\nContent-Length: 0\r\n\r\n", BodyFraming.none),
        ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", BodyFraming.length(12)),
    ])
    func responseFraming(_ response: String, _ framing: BodyFraming) throws {
        let (head, _, _) = try parse(response, split: nil, request: false).get()
        #expect(head.responseFraming(requestMethod: .get) == framing)
    }

    @Test func connectionHeaderTokens() throws {
        let request = "GET / HTTP/1.1\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nUpgrade: websocket\r\n\r\n"
        let (head, _, _) = try parse(request, split: nil).get()
        #expect(head.connectionClose)
        #expect(!head.keepAlive)
        #expect(head.fields[1].kind == .connectionListed)
        #expect(head.fields[1].isHopByHop)
        #expect(!head.isUpgrade)  // Upgrade without "Connection: upgrade" is not an upgrade
        let upgrade = "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        #expect(try parse(upgrade, split: nil).get().0.isUpgrade)
    }

    @Test func http10() throws {
        let (head, _, _) = try parse("GET / HTTP/1.0\r\n\r\n", split: nil).get()
        #expect(head.minorVersion == 0)
        #expect(!head.keepAlive)
        let (keep, _, _) = try parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", split: nil).get()
        #expect(keep.keepAlive)
    }

    @Test func bareLineFeedsAndLeadingEmptyLines() throws {
        let (head, bytes, _) = try parse("\r\nPOST /x HTTP/1.1\nContent-Length: 2\n\n", split: nil).get()
        #expect(text(bytes, head.method) == "POST")
        #expect(head.contentLength == 2)
    }

    @Test func expectContinue() throws {
        let (head, _, _) = try parse("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", split: nil)
            .get()
        #expect(head.expectsContinue)
    }

    @Test(arguments: [
        // Smuggling defences, RFC 9112 §6.3
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            HTTPParseError.contentLengthWithTransferEncoding
        ),
        ("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", .badContentLength),
        ("POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n", .badContentLength),
        ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", .badContentLength),
        ("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", .badContentLength),
        ("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", .badContentLength),
        ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", .badContentLength),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", .badTransferEncoding),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .badTransferEncoding),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .badTransferEncoding),
        ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", .obsFold),
        ("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", .bareCR),
        ("GET / HTTP/1.1\rHost: a\r\n\r\n", .bareCR),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", .badFieldName),
        ("GET / HTTP/1.1\r\n: a\r\n\r\n", .badFieldName),
        ("GET / HTTP/1.1\r\nBad\u{1}Name: a\r\n\r\n", .badFieldName),
        ("GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n", .badFieldValue),
        ("GET  / HTTP/1.1\r\n\r\n", .badStartLine),
        ("GET /\u{1} HTTP/1.1\r\n\r\n", .badStartLine),
        ("GET / HTTP/2.0\r\n\r\n", .badVersion),
        ("GET / HTTP/1.1 \r\n\r\n", .badStartLine),
        ("G(T / HTTP/1.1\r\n\r\n", .badStartLine),
    ])
    func rejectsMalformedRequests(_ request: String, _ expected: HTTPParseError) {
        for split in [nil, 1, request.utf8.count / 2] {
            switch parse(request, split: split) {
            case .success: Issue.record("accepted: \(request.debugDescription)")
            case .failure(let error): #expect(error == expected, "\(request.debugDescription)")
            }
        }
        #expect(expected.status == 400)
    }

    @Test func sizeLimitsAre431() {
        let huge = "GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 70_000) + "\r\n\r\n"
        #expect(throws: HTTPParseError.headTooLarge) { try parse(huge, split: 100).get() }
        #expect(HTTPParseError.headTooLarge.status == 431)
        var many = "GET / HTTP/1.1\r\n"
        for i in 0..<300 { many += "X-\(i): v\r\n" }
        many += "\r\n"
        #expect(throws: HTTPParseError.tooManyFields) { try parse(many, split: nil).get() }
        #expect(HTTPParseError.tooManyFields.status == 431)
    }

    @Test func tokenBitmapMatchesRFC9110() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for c in 0...255 { #expect(ByteClass.isToken(UInt8(c)) == tchar.contains(UInt8(c)), "byte \(c)") }
    }

    @Test func incompleteHeadIsNotAnError() {
        var parser = HTTP1Parser()
        let partial = Array("GET / HTTP/1.1\r\nHost: a\r\n".utf8)
        let found = try? partial.withUnsafeBytes { try parser.findHeadEnd($0) }
        #expect(found == .some(nil))
    }
}

struct ChunkedDecoderTests {
    /// Decodes `body` delivered in two pieces split at `split`, or byte by byte.
    private func decode(_ body: String, split: Int?) throws -> (payload: String, consumed: Int, done: Bool) {
        let bytes = Array(body.utf8)
        var decoder = ChunkedDecoder()
        var payload: [UInt8] = []
        var offset = 0
        let pieces: [Int] = split.map { [$0, bytes.count] } ?? Array(1...bytes.count)
        for end in pieces where end > offset && !decoder.isDone {
            let n = try bytes.withUnsafeBytes { raw in
                let slice = UnsafeRawBufferPointer(rebasing: raw[offset..<end])
                return try decoder.consume(slice) { range in payload += slice[range] }
            }
            offset += n
        }
        return (String(decoding: payload, as: UTF8.self), offset, decoder.isDone)
    }

    @Test func decodesAtEverySplitPoint() throws {
        let body = "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer-A: 1\r\n\r\nEXTRA"
        let bodyLength = body.utf8.count - 5
        for split in [nil] + (0...body.utf8.count).map({ $0 }) {
            let result = try decode(body, split: split)
            #expect(result.payload == "helloabcdefghijklmnopqrstuvwxyz")
            #expect(result.done)
            #expect(result.consumed == bodyLength)  // stops exactly at the end of the body
        }
    }

    @Test(arguments: [
        "g\r\n", "5\nhello\r\n0\r\n\r\n", "5\r\nhelloX\r\n", "\r\n", "1234567890abcdef0\r\n", "5\r\nhello\r\n0\r\n\n",
        "5\r\nhello\r\n0\r\n folded\r\n\r\n", "5;a\u{1}b\r\n",
    ])
    func rejectsBadChunks(_ body: String) {
        #expect(throws: HTTPParseError.badChunk) { try decode(body, split: nil) }
    }
}

/// The client-side reader shared by the probes, the websocket handshake and kn-local's blocking client.
struct ResponseHeadTests {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func incompleteHeadIsNilAndMalformedThrows() throws {
        #expect(try ResponseHead.parse(bytes("HTTP/1.1 200 OK\r\nContent-Le")) == nil)
        #expect(throws: HTTPParseError.self) { try ResponseHead.parse(self.bytes("HTTX/1.1 200 OK\r\n\r\n")) }
        #expect(throws: HTTPParseError.self) { try ResponseHead.parse(self.bytes("HTTP/1.1 2x0 OK\r\n\r\n")) }
    }

    @Test func bodiesByTheirFraming() throws {
        let sized = bytes("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nqueue")
        let head = try #require(try ResponseHead.parse(sized))
        #expect(head.status == 200 && head.value("x-a") == "b" && head.body(in: sized) == bytes("queue"))
        #expect(head.body(in: Array(sized.dropLast())) == nil)  // fewer bytes than declared
        let chunked = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        #expect(try ResponseHead.parse(chunked)?.body(in: chunked) == bytes("abcde"))
        let cut = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        #expect(try ResponseHead.parse(cut)?.body(in: cut) == nil)
        let untilClose = bytes("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        #expect(try ResponseHead.parse(untilClose)?.status == 101)
        let closeDelimited = bytes("HTTP/1.0 200 OK\r\n\r\nrest")
        #expect(try ResponseHead.parse(closeDelimited)?.body(in: closeDelimited) == bytes("rest"))
    }
}
