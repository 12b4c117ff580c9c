// Timers on a reactor: a binary heap of deadlines. A `ReactorTimer` is made once and armed again and
// again; arming pushes an entry (no allocation once the heap has grown) and makes the timer's earlier
// entries stale, so re-arming costs no search and cancelling costs nothing at all.

#if os(Linux)
public import NIOCore

/// A re-armable timer on one reactor; use it only on the reactor's thread.
public final class ReactorTimer {
    unowned let reactor: Reactor
    let action: () -> Void
    /// When it fires next; nil when not armed.
    public private(set) var deadline: NIODeadline?
    fileprivate var generation: UInt64 = 0

    /// A timer that runs `action` on `reactor` each time it fires (it is then disarmed).
    public init(reactor: Reactor, _ action: @escaping () -> Void) {
        self.reactor = reactor
        self.action = action
    }

    /// Fires at `deadline` (replacing an earlier arming).
    public func arm(at deadline: NIODeadline) {
        generation &+= 1
        self.deadline = deadline
        reactor.timers.push(.init(deadline: deadline, generation: generation, timer: self))
    }

    /// Does not fire (until armed again).
    public func cancel() {
        generation &+= 1
        deadline = nil
    }

    func fire(_ generation: UInt64) {
        guard generation == self.generation, deadline != nil else { return }
        deadline = nil
        action()
    }
}

/// The heap: entries ordered by deadline; stale ones are dropped when they reach the top.
struct TimerHeap {
    struct Entry {
        let deadline: NIODeadline
        let generation: UInt64
        let timer: ReactorTimer
        var live: Bool { timer.generation == generation && timer.deadline != nil }
    }
    private var entries: [Entry] = []

    /// The earliest live deadline (stale entries on top are dropped first).
    var nextDeadline: NIODeadline? {
        mutating get {
            while let top = entries.first, !top.live { popTop() }
            return entries.first?.deadline
        }
    }

    /// Entries in the heap, stale ones included.
    var count: Int { entries.count }

    mutating func push(_ entry: Entry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            child = parent
        }
        // Many re-armings of few timers leave stale entries behind: compact when they dominate.
        // (amortised: the next compaction waits until the heap has doubled again).
        if entries.count > compactAt {
            compactAt = .max
            compact()
            compactAt = max(1024, 2 * entries.count)
        }
    }

    private var compactAt = 1024

    private mutating func compact() {
        let live = entries.filter(\.live)
        entries.removeAll(keepingCapacity: true)
        for entry in live { push(entry) }
    }

    private mutating func popTop() {
        let last = entries.removeLast()
        guard !entries.isEmpty else { return }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < entries.count else { break }
            var child = left
            if left + 1 < entries.count, entries[left + 1].deadline < entries[left].deadline { child = left + 1 }
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            parent = child
        }
    }

    /// The earliest entry due at `now`, taken out of the heap (stale or not: firing a stale one
    /// does nothing). The caller fires it outside this mutation, since its action may arm timers.
    mutating func popDue(now: NIODeadline) -> Entry? {
        guard let top = entries.first, top.deadline <= now else { return nil }
        popTop()
        return top
    }
}

extension ReactorTimer {
    func fire(entry: TimerHeap.Entry) { fire(entry.generation) }
}
#endif
