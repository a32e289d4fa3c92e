// Writes the state file off the controller's loop: the write is synced (fsync), which takes milliseconds on a real
// disk, and the loop is on the cold-start path (a pod's readiness is handled there). Only the newest text matters.
import Glibc
import ProxyCore
import Synchronization

/// A single writer of the state file on a short-lived thread of its own.
///
/// | state         | submit                               | the thread                                  |
/// |---------------|--------------------------------------|---------------------------------------------|
/// | idle          | pending = text; start a thread       | —                                           |
/// | writing       | pending = text (replaces older text) | writes pending until none is left, then idle |
///
/// Texts are whole snapshots, so one that is replaced before it was written is not lost: the newer text holds
/// everything it held.
public final class StateWriter: Sendable {
    private struct Queue {
        var pending: (text: String, path: String)?
        var isWriting = false
        var isFailing = false
    }

    private let queue = Mutex(Queue())
    private let events: EventLog

    public init(events: EventLog) { self.events = events }

    /// Queues `text` to replace the file at `path`; returns at once.
    func submit(_ text: String, to path: String) {
        let startsThread = queue.withLock { q in
            q.pending = (text, path)
            guard !q.isWriting else { return false }
            q.isWriting = true
            return true
        }
        if startsThread { Threads.detach { [self] in drain() } }
    }

    /// Writes until nothing is pending. A failure is reported once per streak (a full disk would otherwise print
    /// one event per change), and so is the recovery.
    private func drain() {
        while true {
            let job = queue.withLock { q -> (text: String, path: String)? in
                guard let job = q.pending else {
                    q.isWriting = false
                    return nil
                }
                q.pending = nil
                return job
            }
            guard let job else { return }
            var failure: String?
            do { try StateFile.write(job.text, to: job.path) } catch { failure = error.description }
            let wasFailing = queue.withLock { q in
                defer { q.isFailing = failure != nil }
                return q.isFailing
            }
            if let failure, !wasFailing {
                let text = "cannot save state: \(failure); changes live in memory only until a save works"
                events.emit(text)
                Log.writeStderr("kn-local serve: \(text)\n")
            } else if failure == nil && wasFailing {
                events.emit("state saved to \(job.path) again")
            }
        }
    }

    /// Waits until everything submitted is written, at most `timeoutMs` (at exit, so the last change is kept).
    public func flush(timeoutMs: Int64 = 5_000) {
        let deadline = monotonicMs() + timeoutMs
        while queue.withLock({ $0.isWriting }) && monotonicMs() < deadline { usleep(1_000) }
    }
}
