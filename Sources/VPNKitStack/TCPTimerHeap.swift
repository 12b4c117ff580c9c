import NIOCore

/// The TCP connections' next deadlines as a binary min-heap, so the stack's `nextDeadline` and
/// `poll` cost O(log n) per change instead of a scan of every connection per frame. Entries are
/// never updated in place: a connection whose deadline changes gets a new entry, and entries that no
/// longer match their connection's current deadline are discarded when they reach the top (or in a
/// rebuild, when stale ones outnumber live ones).
struct TCPTimerHeap {
    private(set) var entries: [(deadline: NIODeadline, key: TCPKey)] = []

    var count: Int { entries.count }
    var top: (deadline: NIODeadline, key: TCPKey)? { entries.first }

    mutating func push(_ deadline: NIODeadline, _ key: TCPKey) {
        entries.append((deadline, key))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popTop() {
        guard !entries.isEmpty else { return }
        entries.swapAt(0, entries.count - 1)
        entries.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < entries.count, entries[left].deadline < entries[smallest].deadline { smallest = left }
            if right < entries.count, entries[right].deadline < entries[smallest].deadline { smallest = right }
            guard smallest != parent else { return }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }

    /// Replaces the contents with exactly `live` (one entry per connection with a deadline).
    mutating func rebuild(_ live: [(deadline: NIODeadline, key: TCPKey)]) {
        entries = []
        entries.reserveCapacity(live.count)
        for entry in live { push(entry.deadline, entry.key) }
    }
}
