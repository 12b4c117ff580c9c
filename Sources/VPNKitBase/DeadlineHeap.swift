public import NIOCore

/// Deadlines as a binary min-heap, each with what it is for: the stack's TCP connections (so its
/// `nextDeadline` and `poll` cost O(log n) per change instead of a scan of every connection) and the
/// reactor's timers. Entries are never updated in place: whatever's deadline changes gets a new
/// entry, and its owner discards entries that no longer match when they reach the top (or rebuilds
/// from the live ones when stale ones pile up).
public struct DeadlineHeap<Element> {
    @usableFromInline var storage: [(deadline: NIODeadline, element: Element)] = []

    /// An empty heap.
    public init() {}

    /// Entries, stale ones included.
    @inlinable public var count: Int { storage.count }

    /// The earliest entry.
    @inlinable public var top: (deadline: NIODeadline, element: Element)? { storage.first }

    /// Adds `element` due at `deadline`.
    @inlinable public mutating func push(_ deadline: NIODeadline, _ element: Element) {
        storage.append((deadline, element))
        var child = storage.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard storage[child].deadline < storage[parent].deadline else { break }
            storage.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes the earliest entry (nothing when empty).
    @inlinable public mutating func popTop() {
        guard !storage.isEmpty else { return }
        storage.swapAt(0, storage.count - 1)
        storage.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < storage.count, storage[left].deadline < storage[smallest].deadline { smallest = left }
            if right < storage.count, storage[right].deadline < storage[smallest].deadline { smallest = right }
            guard smallest != parent else { return }
            storage.swapAt(parent, smallest)
            parent = smallest
        }
    }

    /// Replaces the contents with exactly `live`.
    @inlinable public mutating func rebuild(_ live: [(deadline: NIODeadline, element: Element)]) {
        storage = []
        storage.reserveCapacity(live.count)
        for entry in live { push(entry.deadline, entry.element) }
    }

    /// Drops the entries `isStale` picks out and makes a heap of the rest (its storage kept).
    @inlinable public mutating func removeAll(where isStale: ((deadline: NIODeadline, element: Element)) -> Bool) {
        let live = storage.filter { !isStale($0) }
        storage.removeAll(keepingCapacity: true)
        for entry in live { push(entry.deadline, entry.element) }
    }
}
