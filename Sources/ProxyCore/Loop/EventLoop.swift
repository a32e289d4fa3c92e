// One thread's event loop: epoll → dispatch → timers → inbox. Everything reachable from a loop is confined to
// its thread and deliberately not Sendable; the only door in from other threads is `LoopInbox`.
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.
import CLinuxShims
import Glibc
import Synchronization

/// A descriptor registered with a loop. Subclasses (listeners, connections) override the event hooks.
///
/// Registration is once per descriptor, edge-triggered, for `IN | OUT | RDHUP` (nginx's habit): readiness
/// changes never cost an `epoll_ctl`. Subclasses keep their own "can still read/write" flags.
public class Channel: TimerEntry {
    @exclusivity(unchecked) public internal(set) var fd: Int32 = -1
    /// The loop this channel lives on (set by `register`).
    @exclusivity(unchecked) public internal(set) unowned(unsafe) var loop: EventLoop!  // the loop holds its channels
    @exclusivity(unchecked) var slot = -1

    public var isOpen: Bool { fd >= 0 }

    /// Readiness from epoll. Called only for live registrations (stale events are filtered by the loop).
    func handleEvent(_ events: UInt32) {}

    /// The loop is draining: finish what is in flight, close when idle. Default: close at once.
    func beginDrain() { close() }

    /// Closes the descriptor and leaves the loop. Idempotent.
    public func close() {
        guard fd >= 0 else { return }
        loop.unregister(self)
        closeDescriptor(fd)  // close also removes it from the epoll set (we never dup descriptors)
        fd = -1
        didClose()
    }

    /// Hook after the descriptor is gone: give buffers back, tell partners.
    func didClose() {}

    /// Called once per `EventLoop.deferFlush` at the end of the loop pass (HTTP/2 connections batch their
    /// frames into one write per pass this way).
    func deferredFlush() {}
}

/// A thread-safe queue of jobs into one loop, with an eventfd to wake it.
public final class LoopInbox: Sendable {
    private let jobs = Mutex<[@Sendable (EventLoop) -> Void]>([])
    let wakeFD: Int32

    init() throws(SysError) {
        wakeFD = try sys("eventfd") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
    }

    /// The eventfd lives as long as the inbox, not the loop: a post after the loop ended (a late `stop`) must
    /// not write into a descriptor number that something else has reused.
    deinit { closeDescriptor(wakeFD) }

    /// Queues `job` to run on the loop's thread. Wakes the loop only when the queue was empty (NIO's habit).
    public func post(_ job: @escaping @Sendable (EventLoop) -> Void) {
        let wasEmpty = jobs.withLock { queue in
            queue.append(job)
            return queue.count == 1
        }
        if wasEmpty { _ = eventfd_write(wakeFD, 1) }
    }

    func takeAll() -> [@Sendable (EventLoop) -> Void] {
        var value: eventfd_t = 0
        _ = eventfd_read(wakeFD, &value)
        return jobs.withLock { queue in
            let taken = queue
            queue.removeAll(keepingCapacity: true)
            return taken
        }
    }
}

/// The loop. Create it on the thread that runs it (`LoopGroup` does), then call `run()`.
public final class EventLoop {
    public let index: Int
    public let inbox: LoopInbox
    public let buffers = BufferPool()
    /// Where `nowMs` comes from: the monotonic clock, or a test's manual clock.
    public let clock: LoopClock
    /// The time of this loop pass (read once per `epoll_wait`, never per request).
    @exclusivity(unchecked) public private(set) var nowMs: Int64
    /// Storage any subsystem can hang per-loop state on (pools, stats), keyed by a small integer.
    @exclusivity(unchecked) public var locals: [ObjectIdentifier: AnyObject] = [:]

    private let epollFD: Int32
    private let wheel: TimerWheel
    @exclusivity(unchecked) private var channels: [Channel?] = []
    @exclusivity(unchecked) private var generations: [UInt32] = []
    @exclusivity(unchecked) private var freeSlots: [Int] = []
    @exclusivity(unchecked) private var liveCount = 0
    @exclusivity(unchecked) private var isDraining = false
    @exclusivity(unchecked) private var isStopped = false
    /// Channels that asked to write at the end of this pass (`deferFlush`).
    @exclusivity(unchecked) private var deferred: [Channel] = []
    private static let inboxToken = UInt64.max
    /// Connections and streams ended since the last trim (`noteReleased`).
    @exclusivity(unchecked) private var releasesSinceTrim = 0
    @exclusivity(unchecked) private var trimScheduled = false
    @exclusivity(unchecked) private var releasesAtSchedule = 0
    @exclusivity(unchecked) private var trimTimer: LoopTimer?

    /// - Parameters:
    ///   - index: the loop's number in its group.
    ///   - clock: the time source (tests pass `.manual` and move time with `advanceTime(byMs:)`).
    /// - Throws: `SysError` when the epoll or eventfd descriptor cannot be made.
    public init(index: Int = 0, clock: LoopClock = .monotonic) throws(SysError) {
        self.index = index
        self.clock = clock
        epollFD = try sys("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        inbox = try LoopInbox()
        nowMs = clock.nowMs()
        wheel = TimerWheel(nowMs: nowMs)
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = EventLoop.inboxToken
        _ = try sys("epoll_ctl") { epoll_ctl(epollFD, EPOLL_CTL_ADD, inbox.wakeFD, &event) }
    }

    deinit {
        closeDescriptor(epollFD)  // the inbox closes its own eventfd: others may still post to it
    }

    /// Number of registered channels (listeners and connections).
    public var channelCount: Int { liveCount }

    // MARK: - Registration

    /// Registers `channel` with descriptor `fd`, edge-triggered for reads, writes and peer half-close.
    /// On failure the descriptor is closed.
    func register(_ channel: Channel, fd: Int32, edgeTriggered: Bool = true) throws(SysError) {
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
        } else {
            slot = channels.count
            channels.append(nil)
            generations.append(0)
        }
        channels[slot] = channel
        channel.slot = slot
        channel.fd = fd
        channel.loop = self
        liveCount += 1
        var event = epoll_event()
        let base = EPOLLIN.rawValue | EPOLLRDHUP.rawValue
        event.events = edgeTriggered ? base | EPOLLOUT.rawValue | EPOLLET.rawValue : base
        // Token = generation << 32 | slot: an event queued for a slot's previous owner is recognised as stale.
        event.data.u64 = UInt64(generations[slot]) << 32 | UInt64(slot)
        do {
            _ = try sys("epoll_ctl") { epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) }
        } catch {
            channel.close()
            throw error
        }
    }

    /// Turns a level-triggered registration's read interest off or on (a listener pausing while accept fails
    /// with EMFILE: level-triggered, it would otherwise wake the loop in a busy spin).
    func setReadInterest(_ channel: Channel, _ enabled: Bool) {
        guard channel.slot >= 0 else { return }
        var event = epoll_event()
        event.events = enabled ? EPOLLIN.rawValue | EPOLLRDHUP.rawValue : 0
        event.data.u64 = UInt64(generations[channel.slot]) << 32 | UInt64(channel.slot)
        _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, channel.fd, &event)
    }

    /// Hands `old`'s descriptor and registration to `new` (a connection changing protocol: HTTP/1 → h2c).
    /// `old` is left closed-looking (no descriptor) without closing anything; its timer is cancelled.
    func replace(_ old: Channel, with new: Channel) {
        let slot = old.slot
        precondition(slot >= 0 && old.loop === self, "replace: the channel is not registered here")
        channels[slot] = new
        new.slot = slot
        new.fd = old.fd
        new.loop = self
        old.slot = -1
        old.fd = -1
        wheel.cancel(old)
    }

    func unregister(_ channel: Channel) {
        let slot = channel.slot
        guard slot >= 0 else { return }
        channels[slot] = nil
        generations[slot] &+= 1  // events still in this batch for the old owner become stale
        freeSlots.append(slot)
        channel.slot = -1
        liveCount -= 1
        wheel.cancel(channel)
        noteReleased()
    }

    // MARK: - Memory

    /// Releases (closed connections, ended streams) after which freed memory is handed back to the system.
    static let trimAfterReleases = 1_000
    /// The trim runs this long after the threshold is crossed, once at most a tenth of `trimAfterReleases` ended
    /// in that time (the burst is over); so it runs at most this often, and not under steady load above 100/s.
    static let trimDelayMs: Int64 = 1_000

    /// Counts a released connection or stream. After a burst (`trimAfterReleases` of them) the loop calls
    /// `malloc_trim(0)` a little later, off the request path: glibc keeps freed memory in its arenas otherwise,
    /// so a process that once held 10,000 streams would keep their pages for good. The pool's spare buffers go
    /// back first (down to a small reserve), so that their pages can go too.
    @inline(__always)
    func noteReleased(_ count: Int = 1) {
        releasesSinceTrim &+= count
        if releasesSinceTrim >= Self.trimAfterReleases && !trimScheduled { scheduleTrim() }
    }

    private func scheduleTrim() {
        trimScheduled = true
        releasesAtSchedule = releasesSinceTrim
        let timer = trimTimer ?? LoopTimer { [unowned self] _ in self.trim() }
        trimTimer = timer
        wheel.schedule(timer, deadlineMs: nowMs + Self.trimDelayMs)
    }

    private func trim() {
        if releasesSinceTrim - releasesAtSchedule > Self.trimAfterReleases / 10 {
            // Still busy (more than a tenth of a burst ended during the delay): the memory is in use, and trimming
            // under steady load would only cost. Look again once it calms down.
            scheduleTrim()
            return
        }
        trimScheduled = false
        releasesSinceTrim = 0
        buffers.shrink(keeping: 16)
        _ = malloc_trim(0)
    }

    // MARK: - Timers

    /// Arms (or lazily re-arms) `entry` to fire at `deadlineMs`.
    public func schedule(_ entry: TimerEntry, at deadlineMs: Int64) { wheel.schedule(entry, deadlineMs: deadlineMs) }

    public func cancel(_ entry: TimerEntry) { wheel.cancel(entry) }

    // MARK: - Running

    /// Runs until `stop()` or until a drain has closed every channel.
    public func run() {
        withUnsafeTemporaryAllocation(of: epoll_event.self, capacity: Self.eventCapacity) { events in
            while !isStopped {
                pass(events, timeoutMs: wheel.pollTimeoutMs(nowMs: nowMs))
            }
        }
        for channel in channels { channel?.close() }
    }

    private static let eventCapacity = 256

    /// One pass: wait for events (at most `timeoutMs`, -1 = no limit), read the clock once, dispatch, fire due
    /// timers, run the deferred flushes.
    private func pass(_ events: UnsafeMutableBufferPointer<epoll_event>, timeoutMs: Int32) {
        let n = epoll_wait(epollFD, events.baseAddress, Int32(events.count), timeoutMs)
        nowMs = clock.nowMs()
        if n < 0 {
            precondition(errno == EINTR, "epoll_wait failed: \(errno)")
            return
        }
        for i in 0..<Int(n) {
            let token = events[i].data.u64
            if token == EventLoop.inboxToken {
                for job in inbox.takeAll() { job(self) }
                continue
            }
            let slot = Int(token & 0xFFFF_FFFF)
            guard slot < channels.count, generations[slot] == UInt32(token >> 32),
                let channel = channels[slot]
            else { continue }  // stale: the slot's owner closed earlier in this batch
            channel.handleEvent(events[i].events)
        }
        wheel.advance(nowMs: nowMs)
        runDeferred()
        if isDraining && liveCount == 0 { isStopped = true }
    }

    // MARK: - Driving by hand (tests)

    /// Runs one pass on the calling thread without blocking: ready events, inbox jobs, due timers, deferred
    /// flushes. For tests that own the loop (no `run()` thread), as NIO's `EmbeddedEventLoop.run()`.
    func runOnce() {
        withUnsafeTemporaryAllocation(of: epoll_event.self, capacity: Self.eventCapacity) { events in
            pass(events, timeoutMs: 0)
        }
    }

    /// Moves a manual clock forward by `deltaMs` and runs one pass, so every timer due by then fires
    /// (NIO's `EmbeddedEventLoop.advanceTime(by:)`). Only for loops made with `.manual` and driven by hand.
    func advanceTime(byMs deltaMs: Int64) {
        guard case .manual(let manual) = clock else { preconditionFailure("advanceTime needs a manual clock") }
        manual.advance(byMs: deltaMs)
        runOnce()
    }

    /// The loop's poll timeout as the next pass would use it (ms; -1 when no timer is armed).
    var pollTimeoutMs: Int32 { wheel.pollTimeoutMs(nowMs: nowMs) }

    /// Asks for `channel.deferredFlush()` once every event of this pass has been handled: what the pass
    /// produced for that channel leaves in one write. The caller keeps its own "already asked" flag.
    func deferFlush(_ channel: Channel) { deferred.append(channel) }

    private func runDeferred() {
        var i = 0
        while i < deferred.count {  // a flush may ask for another (a window update for the other side)
            deferred[i].deferredFlush()
            i += 1
        }
        deferred.removeAll(keepingCapacity: true)
    }

    /// Stops the loop after the current pass, closing whatever is still open.
    public func stop() { isStopped = true }

    /// Starts a graceful drain: every channel is told (listeners close, idle connections close, busy ones
    /// finish first), and the loop ends once all have closed.
    public func beginDrain() {
        guard !isDraining else { return }
        isDraining = true
        for channel in channels { channel?.beginDrain() }
        if liveCount == 0 { isStopped = true }
    }

    public var draining: Bool { isDraining }
}
