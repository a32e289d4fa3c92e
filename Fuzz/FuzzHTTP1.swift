// libFuzzer target for the HTTP/1 codec: head finder, request and response parsers, chunked decoder.
// Built from the codec's own source files (they depend on nothing else), see Fuzz/run.sh.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP1(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard size > 0 else { return 0 }
    // The first byte picks a split point so that incremental scanning is exercised too.
    let split = Int(bytes[0]) % size
    let input = UnsafeRawBufferPointer(rebasing: bytes[1...])
    var parser = HTTP1Parser(maxHeadLength: 4096, maxFields: 64)
    var head = HTTPHead()
    do {
        let first = try parser.findHeadEnd(UnsafeRawBufferPointer(rebasing: input[0..<min(split, input.count)]))
        let length = try first ?? parser.findHeadEnd(input)
        if let length {
            precondition(length <= input.count)
            let slice = UnsafeRawBufferPointer(rebasing: input[0..<length])
            if (try? parser.parseRequest(slice, into: &head)) != nil {
                check(head, length)
                HTTP1Parser.markConnectionListed(slice, &head)
            }
            if (try? parser.parseResponse(slice, into: &head)) != nil { check(head, length) }
        }
    } catch {}
    var decoder = ChunkedDecoder()
    var offset = 0
    while offset < input.count && !decoder.isDone {
        let end = min(input.count, offset + max(1, split))
        let piece = UnsafeRawBufferPointer(rebasing: input[offset..<end])
        guard let n = try? decoder.consume(piece, onData: { range in
            precondition(range.lowerBound >= 0 && range.upperBound <= piece.count)
        }) else { break }
        precondition(n <= piece.count)
        offset += n
        if n < piece.count { precondition(decoder.isDone) }
    }
    return 0
}

private func check(_ head: HTTPHead, _ length: Int) {
    for field in head.fields {
        precondition(field.name.upperBound <= length && field.value.upperBound <= length)
        precondition(!field.name.isEmpty)
    }
    precondition(head.target.upperBound <= length && head.method.upperBound <= length)
    if let n = head.contentLength { precondition(n >= 0) }
}
