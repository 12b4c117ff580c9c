/// Decides, one wakeup at a time, whether a reader should read past the first item the event loop
/// woke it for (a frame from a TAP device, a datagram from a host socket).
///
/// Bulk traffic leaves more items queued behind the first, and reading them in the same wakeup saves
/// trips through the loop. A request and its answer (a ping, a DNS query, a short connection) leave
/// nothing behind: the extra read only finds the queue empty (EAGAIN) and costs a system call. So
/// once `quietWakeupsBeforeSkipping` wakeups in a row found nothing past their first item, only every
/// `probeInterval`-th wakeup reads past it; the first that finds more turns batching back on.
///
/// Skipping the extra read never leaves an item unread: the descriptor stays readable, and the loop
/// comes back to it at once.
public struct ReadBatching: Sendable {
    /// Wakeups in a row that must find nothing past their first item before reads stop batching.
    public static let quietWakeupsBeforeSkipping = 4
    /// While skipping, every this many wakeups reads past the first item to see whether items queue.
    public static let probeInterval = 8

    /// Wakeups in a row that read past their first item and found nothing, up to the threshold.
    private var quietWakeups = 0
    /// Wakeups since skipping began (wraps harmlessly).
    private var skippedWakeups: UInt = 0

    /// A policy that starts out batching.
    public init() {}

    /// Whether reads are currently batched (not skipping the extra read).
    public var isBatching: Bool { quietWakeups < Self.quietWakeupsBeforeSkipping }

    /// Asked once per wakeup: whether this wakeup should read past its first item. When it answers
    /// true, tell `record(foundMore:)` what that read found.
    public mutating func shouldReadPastFirst() -> Bool {
        guard !isBatching else { return true }
        skippedWakeups &+= 1
        return skippedWakeups % UInt(Self.probeInterval) == 0
    }

    /// What reading past the first item found in this wakeup.
    public mutating func record(foundMore: Bool) {
        if foundMore {
            quietWakeups = 0
            skippedWakeups = 0
        } else if quietWakeups < Self.quietWakeupsBeforeSkipping {
            quietWakeups += 1
        }
    }
}
