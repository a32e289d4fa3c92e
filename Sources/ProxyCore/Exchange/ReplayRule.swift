// When a request may go upstream again after its upstream failed before answering: once for every exchange
// kind (HTTP/1 connections, h2c streams).
//
// Two kinds of failure differ:
// - *Not processed*: the connect failed, or an HTTP/2 upstream refused the stream (REFUSED_STREAM, RFC 9113
//   §8.7). Nothing reached the app, so the request may go anywhere, as long as its bytes are still held
//   whole. A failed connect asks the responder (the activator picks another pod); a refused stream is retried
//   once on the same pool (a connection that still takes streams).
// - *Maybe processed*: a reused keep-alive connection died before any response byte (the app may have closed
//   it while our request was on the way, or may have read it). Sent again once, on a fresh connection, only
//   when that is safe (`isReplayable`): Go's transport rule, plus bodiless PUT/DELETE.
// A fresh connection that dies, or anything after a response byte, is never retried: 502 (or a cut).

enum ReplayRule {
    /// Why the upstream failed before answering.
    enum Failure: Equatable {
        case connectFailed
        case refusedStream
        /// EOF, reset or I/O error before a response byte; `reusedConnection`: it had served a request before.
        case diedBeforeResponse(reusedConnection: Bool)
        /// Anything else (a malformed response, another reset code).
        case other
    }

    /// What to do about a failure.
    enum Decision: Equatable {
        /// Ask the responder for another upstream (`connectFailed` / `alternativePool`).
        case askResponder
        /// Send it again on the same pool, once.
        case samePool
        /// Answer 502 (or cut a started response).
        case none
    }

    /// - Parameters:
    ///   - responseBytesSeen: the upstream sent any response byte (a 1xx included: the app saw the request).
    ///   - heldWhole: the request's bytes are all still held, so they can be sent again.
    ///   - safe: `isReplayable` for the request.
    ///   - retried: this exchange already retried once.
    @inline(__always)
    static func decide(
        _ failure: Failure, responseBytesSeen: Bool, heldWhole: Bool, safe: Bool, retried: Bool
    ) -> Decision {
        guard !responseBytesSeen && heldWhole else { return .none }
        switch failure {
        case .connectFailed: return .askResponder
        case .refusedStream: return retried ? .none : .samePool
        case .diedBeforeResponse(reusedConnection: true): return safe && !retried ? .samePool : .none
        case .diedBeforeResponse, .other: return .none
        }
    }

    /// Whether a request may be sent again after a reused connection died before answering. Go's transport
    /// replays bodiless GET, HEAD, OPTIONS and TRACE, and any request with `Idempotency-Key` or
    /// `X-Idempotency-Key`; we add bodiless PUT and DELETE (idempotent by RFC 9110 §9.2.2). A keyed request
    /// with a body is replayed too: its bytes are held whole, which Go cannot rewind, and the key is the
    /// client's word that a repeat is harmless. Anything else (a POST) is never sent twice.
    static func isReplayable(_ head: HTTPHead, _ bytes: UnsafeRawBufferPointer) -> Bool {
        if head.requestFraming == .none {
            switch head.methodKind {
            case .get, .head, .options, .put, .delete: return true
            case .other where HTTP1Parser.equalsExact(bytes, head.method, "TRACE"): return true
            default: break
            }
        }
        for field in head.fields where field.kind == .other {
            switch field.name.count {
            case 15 where HTTP1Parser.equalsLower(bytes, field.name, "idempotency-key"): return true
            case 17 where HTTP1Parser.equalsLower(bytes, field.name, "x-idempotency-key"): return true
            default: continue
            }
        }
        return false
    }
}
