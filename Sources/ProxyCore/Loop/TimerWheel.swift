// A hashed timer wheel with intrusive entries: arming, re-arming and cancelling are O(1) and allocate nothing.
// Deadlines are re-armed lazily: moving a deadline later only rewrites a field; the entry is re-filed when
// its old slot comes round (h2o's timerwheel and HAProxy's lazy requeue, STYLE.md §1).
// Exclusivity: stored properties here are marked `@exclusivity(unchecked)`. They are confined to one loop thread
// and only ever touched by short, non-overlapping reads and writes, so the dynamic check (a TLS lookup and an
// access-set insert per access, ~8 % of the proxy's CPU when measured) buys nothing. STYLE.md forbids the
// module-wide `-enforce-exclusivity=unchecked`; this per-property exception is the documented alternative.

/// Something the wheel can fire. Channels inherit from it; `LoopTimer` is the stand-alone kind.
public class TimerEntry {
    /// Absolute monotonic deadline in ms; `Int64.max` when disarmed.
    @exclusivity(unchecked) public internal(set) var deadlineMs: Int64 = .max
    @exclusivity(unchecked) var wheelNext: TimerEntry?
    // the previous entry holds us strongly; a back pointer must not
    @exclusivity(unchecked) unowned(unsafe) var wheelPrev: TimerEntry?
    @exclusivity(unchecked) var wheelSlot = -1
    /// Due and waiting in the wheel's firing list; `cancel`/`schedule` clear it so a callback that cancels
    /// or moves another due entry is honoured.
    @exclusivity(unchecked) var isFiring = false

    public init() {}

    /// Called on the loop thread when the deadline has passed. Subclasses override.
    func timerFired(nowMs: Int64) {}
}

/// The wheel: `slotCount` slots of `tickMs` each. Entries further than one turn away are visited once per turn
/// and re-filed, which costs one check per entry per turn (8 s at the defaults).
final class TimerWheel {
    static let tickMs: Int64 = 8
    static let slotCount = 1024
    @exclusivity(unchecked) private var slots: [TimerEntry?]
    /// The tick of the slot that `advance` visits next.
    @exclusivity(unchecked) private var nextTick: Int64
    /// A lower bound of the earliest tick holding an entry (`Int64.max` when empty): the loop's poll timeout.
    @exclusivity(unchecked) private(set) var earliestTick: Int64 = .max
    @exclusivity(unchecked) private(set) var count = 0
    /// Entries found due during `advance`, fired only after the walk: a callback never sees a half-walked chain.
    @exclusivity(unchecked) private var firing: [TimerEntry] = []

    init(nowMs: Int64) {
        slots = Array(repeating: nil, count: TimerWheel.slotCount)
        nextTick = nowMs / TimerWheel.tickMs
    }

    /// Arms `entry` for `deadlineMs`. A later deadline on an armed entry is recorded without moving it.
    func schedule(_ entry: TimerEntry, deadlineMs: Int64) {
        entry.isFiring = false
        if entry.wheelSlot >= 0 {
            if deadlineMs >= entry.deadlineMs {
                entry.deadlineMs = deadlineMs  // lazy: re-filed when the old slot fires
                return
            }
            unlink(entry)
        }
        entry.deadlineMs = deadlineMs
        file(entry)
    }

    func cancel(_ entry: TimerEntry) {
        entry.isFiring = false
        if entry.wheelSlot >= 0 { unlink(entry) }
        entry.deadlineMs = .max
    }

    private func file(_ entry: TimerEntry) {
        // Never file into the past: an overdue entry goes into the next slot visited.
        let tick = max(entry.deadlineMs / TimerWheel.tickMs, nextTick)
        let slot = Int(tick % Int64(TimerWheel.slotCount))
        entry.wheelSlot = slot
        entry.wheelPrev = nil
        entry.wheelNext = slots[slot]
        slots[slot]?.wheelPrev = entry
        slots[slot] = entry
        count += 1
        // An entry beyond one turn is visited when its slot next comes round, which is within one turn.
        let turn = Int64(TimerWheel.slotCount)
        let visitTick = tick < nextTick + turn ? tick : nextTick + (tick - nextTick) % turn
        earliestTick = min(earliestTick, visitTick)
    }

    private func unlink(_ entry: TimerEntry) {
        if let prev = entry.wheelPrev {
            prev.wheelNext = entry.wheelNext
        } else {
            slots[entry.wheelSlot] = entry.wheelNext
        }
        entry.wheelNext?.wheelPrev = entry.wheelPrev
        entry.wheelNext = nil
        entry.wheelPrev = nil
        entry.wheelSlot = -1
        count -= 1
    }

    /// Milliseconds the loop may sleep before the next slot with an entry is due (-1: no timers).
    func pollTimeoutMs(nowMs: Int64) -> Int32 {
        if count == 0 { return -1 }
        let due = earliestTick * TimerWheel.tickMs + TimerWheel.tickMs
        return Int32(clamping: max(0, due - nowMs))
    }

    /// Fires every entry whose deadline is at or before `nowMs`.
    func advance(nowMs: Int64) {
        let nowTick = nowMs / TimerWheel.tickMs
        guard count > 0, earliestTick <= nowTick else {
            if count == 0 {
                nextTick = nowTick
                earliestTick = .max
            }
            return
        }
        // Skip whole turns at once: a long sleep must not make us walk the wheel more than once.
        var tick = max(nextTick, earliestTick)
        let lastTick = min(nowTick, tick + Int64(TimerWheel.slotCount) - 1)
        earliestTick = .max
        while tick <= lastTick {
            let slot = Int(tick % Int64(TimerWheel.slotCount))
            var entry = slots[slot]
            slots[slot] = nil
            // An entry re-filed for later in this same tick goes back into this slot (already detached from
            // `entry`), which the next `advance` visits again.
            nextTick = tick
            while let current = entry {
                entry = current.wheelNext
                current.wheelNext = nil
                current.wheelPrev = nil
                current.wheelSlot = -1
                count -= 1
                if current.deadlineMs <= nowMs {
                    current.isFiring = true
                    firing.append(current)
                } else {
                    file(current)
                }
            }
            tick += 1
        }
        // Fire after the walk. Callbacks may cancel, re-arm or close any entry, including ones still in this
        // list (their `isFiring` is then cleared) — the walk above is already over.
        var index = 0
        while index < firing.count {
            let entry = firing[index]
            index += 1
            guard entry.isFiring else { continue }
            entry.isFiring = false
            entry.deadlineMs = .max
            entry.timerFired(nowMs: nowMs)
        }
        firing.removeAll(keepingCapacity: true)
        // The current tick's slot is visited again next time: an entry re-filed into it during this walk
        // (deadline later in this same tick) must not wait a whole turn.
        nextTick = nowTick
        if count > 0 { recomputeEarliest() }
    }

    /// Finds the first non-empty slot from `nextTick`; only runs after slots fired, never per request.
    private func recomputeEarliest() {
        var tick = nextTick
        let end = nextTick + Int64(TimerWheel.slotCount)
        while tick < end {
            if slots[Int(tick % Int64(TimerWheel.slotCount))] != nil {
                earliestTick = tick
                return
            }
            tick += 1
        }
        earliestTick = .max
    }
}

/// A stand-alone timer owned by loop code (statistics ticks, drain timers). Fires `action` on the loop thread.
public final class LoopTimer: TimerEntry {
    private let action: (Int64) -> Void

    public init(_ action: @escaping (Int64) -> Void) {
        self.action = action
    }

    override func timerFired(nowMs: Int64) { action(nowMs) }
}
