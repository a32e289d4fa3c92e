// A request handle with no connection behind it: what the breaker and the throttler hold while a request
// waits, for unit tests of their queues.
@testable import ActivatorCore
@testable import KnativeWire
@testable import ProxyCore
@testable import QueueProxyCore

final class FakeRequestHandle: RequestHandle {
    let name: String
    var context = RequestContext()
    var isPending = true
    var deadlineMs: Int64?
    /// How it was resumed, in order (normally one entry).
    var resumed: [String] = []

    init(_ name: String, flags: UInt32 = 0, ticket: UInt64 = 1) {
        self.name = name
        context.flags = flags
        context.ticket = ticket
    }

    func resume(_ disposition: Disposition) {
        guard isPending else { return }
        isPending = false
        switch disposition {
        case .respond: resumed.append("respond")
        case .proxy: resumed.append("proxy")
        case .pending: resumed.append("pending")
        }
    }

    func armDeadline(atMs: Int64) { deadlineMs = atMs }
}
