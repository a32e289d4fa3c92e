// N event loops, one pthread each (STYLE.md §5). Per-loop state is built on the loop's own thread by a
// Sendable setup closure; afterwards the group talks to loops only through their inboxes.
import CLinuxShims
import Glibc
import Synchronization

/// A set of loops on their own threads.
public final class LoopGroup: Sendable {
    private let inboxes: Mutex<[LoopInbox]>
    private let threads: Mutex<[pthread_t]>
    public let count: Int

    /// Starts `count` loops; `setup` runs first on each loop's thread (open listeners, create pools).
    /// Returns once every loop has finished its setup; a setup failure is rethrown here.
    public init(count: Int, setup: @escaping @Sendable (EventLoop) throws -> Void) throws {
        precondition(count > 0)
        self.count = count
        let ready = ReadyLatch(count: count)
        var tids: [pthread_t] = []
        for index in 0..<count {
            let box = ThreadBox {
                let loop: EventLoop
                do {
                    loop = try EventLoop(index: index)
                    try setup(loop)
                } catch {
                    ready.arrive(inbox: nil, error: "\(error)")
                    return
                }
                ready.arrive(inbox: loop.inbox, error: nil)
                loop.run()
            }
            tids.append(Threads.start(box))
        }
        threads = Mutex(tids)
        let (boxes, errors) = ready.wait()
        inboxes = Mutex(boxes)
        if let first = errors.first {
            for inbox in boxes { inbox.post { $0.stop() } }
            join()
            throw LoopGroupError.setupFailed(first)
        }
    }

    /// Posts `job` to every loop.
    public func broadcast(_ job: @escaping @Sendable (EventLoop) -> Void) {
        for inbox in inboxes.withLock({ $0 }) { inbox.post(job) }
    }

    /// Asks every loop to drain (finish in-flight work, then end).
    public func beginDrain() { broadcast { $0.beginDrain() } }

    /// Stops every loop at once.
    public func stop() { broadcast { $0.stop() } }

    /// Waits for every loop thread to end.
    public func join() {
        let tids = threads.withLock { current in
            let taken = current
            current.removeAll()
            return taken
        }
        for tid in tids { pthread_join(tid, nil) }
    }
}

public enum LoopGroupError: Error, CustomStringConvertible {
    case setupFailed(String)
    public var description: String {
        switch self {
        case .setupFailed(let text): return text
        }
    }
}

/// The pthread start box. `@unchecked Sendable` is the one allowed exception (STYLE.md §5): the closure is
/// Sendable itself; the box only carries it across `pthread_create`'s untyped pointer.
private final class ThreadBox: @unchecked Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Waits until every loop reported in after setup.
private final class ReadyLatch: Sendable {
    private struct State {
        var inboxes: [LoopInbox] = []
        var errors: [String] = []
        var arrived = 0
    }
    private let state = Mutex(State())
    private let total: Int
    private let doorFD: Int32

    init(count: Int) {
        total = count
        doorFD = eventfd(0, Int32(EFD_CLOEXEC))
    }

    deinit { closeDescriptor(doorFD) }

    func arrive(inbox: LoopInbox?, error: String?) {
        state.withLock { s in
            if let inbox { s.inboxes.append(inbox) }
            if let error { s.errors.append(error) }
            s.arrived += 1
        }
        _ = eventfd_write(doorFD, 1)
    }

    func wait() -> ([LoopInbox], [String]) {
        while true {
            let done = state.withLock { $0.arrived == total }
            if done { break }
            var value: eventfd_t = 0
            _ = eventfd_read(doorFD, &value)  // blocking: woken by each arrival
        }
        return state.withLock { ($0.inboxes, $0.errors) }
    }
}

/// Plain threads for blocking work outside the loops (a supervisor's blocking probes and scrapes).
public enum Threads {
    /// Runs `body` on a new detached pthread.
    public static func detach(_ body: @escaping @Sendable () -> Void) {
        pthread_detach(start(ThreadBox(body)))
    }

    /// Starts a pthread running `box.body` (the loops' threads, joined later, and detached ones).
    fileprivate static func start(_ box: ThreadBox) -> pthread_t {
        var tid = pthread_t()
        let context = Unmanaged.passRetained(box).toOpaque()
        let rc = pthread_create(
            &tid, nil,
            { arg in
                // The box was retained for exactly this thread; take it back and run.
                Unmanaged<ThreadBox>.fromOpaque(arg!).takeRetainedValue().body()
                return nil
            }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return tid
    }
}
