// Timers on a reactor: a binary heap of deadlines. A `ReactorTimer` is made once and armed again and
// again; arming pushes an entry (no allocation once the heap has grown) and makes the timer's earlier
// entries stale, so re-arming costs no search and cancelling costs nothing at all.

#if os(Linux)
public import NIOCore
import VPNKitBase

/// What a timer made with a target tells it.
public protocol ReactorTimerTarget: AnyObject {
    /// `timer` fired (it is disarmed now).
    func timerFired(_ timer: ReactorTimer)
}

/// A re-armable timer on one reactor; use it only on the reactor's thread.
public final class ReactorTimer {
    unowned let reactor: Reactor
    private let action: (() -> Void)?
    /// Not retained (the target owns the timer); a target must cancel its armed timer before it
    /// goes (in its deinit, say): a cancelled timer never reaches it.
    private unowned let target: (any ReactorTimerTarget)?
    /// When it fires next; nil when not armed.
    public private(set) var deadline: NIODeadline?
    fileprivate var generation: UInt64 = 0

    /// A timer that runs `action` on `reactor` each time it fires (it is then disarmed).
    public init(reactor: Reactor, _ action: @escaping () -> Void) {
        self.reactor = reactor
        self.action = action
        self.target = nil
    }

    /// A timer that tells `target` each time it fires: no closure (and no allocation beside the
    /// timer) for an owner that has a timer of its own.
    public init(reactor: Reactor, target: any ReactorTimerTarget) {
        self.reactor = reactor
        self.action = nil
        self.target = target
    }

    /// Fires at `deadline` (replacing an earlier arming).
    public func arm(at deadline: NIODeadline) {
        generation &+= 1
        self.deadline = deadline
        reactor.timers.push(deadline, generation: generation, timer: self)
    }

    /// Does not fire (until armed again).
    public func cancel() {
        generation &+= 1
        deadline = nil
    }

    func fire(_ generation: UInt64) {
        guard generation == self.generation, deadline != nil else { return }
        deadline = nil
        if let action { action() } else { target?.timerFired(self) }
    }
}

/// The reactor's timers by deadline (`DeadlineHeap`, shared with the stack's TCP timers); stale
/// entries (a timer armed again, or cancelled) are dropped when they reach the top.
struct TimerHeap {
    struct Entry {
        let generation: UInt64
        let timer: ReactorTimer
        var live: Bool { timer.generation == generation && timer.deadline != nil }
    }
    private var heap = DeadlineHeap<Entry>()
    private var compactAt = 1024

    /// The earliest live deadline (stale entries on top are dropped first).
    var nextDeadline: NIODeadline? {
        mutating get {
            while let top = heap.top, !top.element.live { heap.popTop() }
            return heap.top?.deadline
        }
    }

    /// Entries in the heap, stale ones included.
    var count: Int { heap.count }

    mutating func push(_ deadline: NIODeadline, generation: UInt64, timer: ReactorTimer) {
        heap.push(deadline, Entry(generation: generation, timer: timer))
        // Many re-armings of few timers leave stale entries behind: drop them when the heap has
        // doubled since the last time (amortised O(1) per push).
        if heap.count > compactAt {
            heap.removeAll { !$0.element.live }
            compactAt = max(1024, 2 * heap.count)
        }
    }

    /// The earliest entry due at `now`, taken out of the heap (stale or not: firing a stale one
    /// does nothing). The caller fires it outside this mutation, since its action may arm timers.
    mutating func popDue(now: NIODeadline) -> Entry? {
        guard let top = heap.top, top.deadline <= now else { return nil }
        heap.popTop()
        return top.element
    }
}

extension ReactorTimer {
    func fire(entry: TimerHeap.Entry) { fire(entry.generation) }
}
#endif
