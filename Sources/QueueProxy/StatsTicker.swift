// Closes the autoscaler stats window every second on loop 0.
import KnativeWire
import ProxyCore
import QueueProxyCore

final class StatsTicker {
    private let timer: LoopTimer

    init(loop: EventLoop, shared: QueueProxyShared, podName: String) {
        var tick: ((Int64) -> Void)!
        let timer = LoopTimer { nowMs in tick(nowMs) }
        self.timer = timer
        tick = { [unowned loop, unowned timer] nowMs in
            shared.reportWindow(nowMs: nowMs, podName: podName)
            loop.schedule(timer, at: nowMs + 1000)
        }
        loop.schedule(timer, at: loop.nowMs + 1000)
    }
}
