public import NIOCore
public import VPNKitBase

/// Limits and timers of the ARP cache.
public struct ARPCacheConfiguration: Sendable, Hashable {
    /// Resolved and pending entries together; at the limit the oldest resolved entry is evicted, and a
    /// new resolution is refused when every entry is pending.
    public var maximumEntries = 1024
    /// How long a learned address is trusted.
    public var entryLifetime: TimeAmount = .seconds(60)
    /// Time between requests for an address still unresolved (at most one per second by default).
    public var retryInterval: TimeAmount = .seconds(1)
    /// Requests sent before giving up on an address.
    public var maximumAttempts = 3
    /// Packets held per unresolved address; more are dropped and counted.
    public var maximumPendingPerAddress = 16
    /// Packets held across all unresolved addresses.
    public var maximumPendingTotal = 256

    /// Creates a configuration with the default limits and timers shown on each property.
    public init() {}
}

/// What the cache asks its owner to do.
public enum ARPCacheAction: Sendable {
    /// Broadcast a request for this address.
    case sendRequest(IPv4Address)
    /// The address resolved: send these held packets to it.
    case release(IPv4Address, MACAddress, [ByteBuffer])
    /// Resolution failed: these held packets are dropped.
    case failed(IPv4Address, dropped: Int)
}

/// The ARP cache as a state machine: lookups, learning, and the queue of packets waiting for an
/// address, driven by calls carrying the current time. It does no I/O; it returns actions.
public struct ARPCache: Sendable {
    /// The limits and timers the cache was created with.
    public let configuration: ARPCacheConfiguration

    enum Entry: Sendable {
        case resolved(MACAddress, learnedAt: NIODeadline)
        case pending(firstRequest: NIODeadline, lastRequest: NIODeadline, attempts: Int, packets: [ByteBuffer])
    }

    private var entries: [IPv4Address: Entry] = [:]
    private var pendingPackets = 0
    /// Packets refused because a queue was full.
    public private(set) var queueFullDrops: UInt64 = 0
    /// Resolutions refused because the table was full of pending entries.
    public private(set) var tableFullDrops: UInt64 = 0
    /// Resolved entries evicted to make room.
    public private(set) var evictions: UInt64 = 0

    /// Creates an empty cache.
    public init(configuration: ARPCacheConfiguration = ARPCacheConfiguration()) {
        self.configuration = configuration
    }

    /// The number of entries (resolved and pending).
    public var count: Int { entries.count }

    /// The address's MAC when resolved and not expired.
    public func lookup(_ address: IPv4Address, now: NIODeadline) -> MACAddress? {
        guard case .resolved(let mac, let learnedAt)? = entries[address], now - learnedAt < configuration.entryLifetime else {
            return nil
        }
        return mac
    }

    /// A snapshot of resolved, unexpired entries.
    public func resolvedEntries(now: NIODeadline) -> [(IPv4Address, MACAddress)] {
        entries.compactMap { address, entry in
            if case .resolved(let mac, let learnedAt) = entry, now - learnedAt < configuration.entryLifetime {
                return (address, mac)
            }
            return nil
        }.sorted { $0.0 < $1.0 }
    }

    /// Records that `address` is at `mac` (RFC 826): an existing entry is updated; a new one is made
    /// only when `create` is true (the packet was addressed to us). Returns held packets to release.
    public mutating func learn(_ address: IPv4Address, is mac: MACAddress, create: Bool, now: NIODeadline) -> [ARPCacheAction] {
        switch entries[address] {
        case .pending(_, _, _, let packets):
            pendingPackets -= packets.count
            entries[address] = .resolved(mac, learnedAt: now)
            return [.release(address, mac, packets)]
        case .resolved:
            entries[address] = .resolved(mac, learnedAt: now)
            return []
        case nil:
            guard create else { return [] }
            guard makeRoom(now: now) else { return [] }
            entries[address] = .resolved(mac, learnedAt: now)
            return []
        }
    }

    /// Asks for `address` on behalf of `packet` (an IP datagram to send once resolved). When the
    /// address is known returns `.release` with the packet at once; otherwise holds the packet and
    /// may ask for a request to be sent.
    public mutating func resolve(_ address: IPv4Address, holding packet: ByteBuffer, now: NIODeadline) -> [ARPCacheAction] {
        switch entries[address] {
        case .resolved(let mac, let learnedAt) where now - learnedAt < configuration.entryLifetime:
            return [.release(address, mac, [packet])]
        case .pending(let first, let last, let attempts, var packets):
            if packets.count >= configuration.maximumPendingPerAddress || pendingPackets >= configuration.maximumPendingTotal {
                queueFullDrops &+= 1
                return []
            }
            packets.append(packet)
            pendingPackets += 1
            entries[address] = .pending(firstRequest: first, lastRequest: last, attempts: attempts, packets: packets)
            return []
        case .resolved, nil:
            if entries[address] != nil { entries[address] = nil }  // expired
            guard pendingPackets < configuration.maximumPendingTotal else {
                queueFullDrops &+= 1
                return []
            }
            guard makeRoom(now: now) else {
                tableFullDrops &+= 1
                return []
            }
            entries[address] = .pending(firstRequest: now, lastRequest: now, attempts: 1, packets: [packet])
            pendingPackets += 1
            return [.sendRequest(address)]
        }
    }

    /// Timers: retries for pending addresses (at most one per `retryInterval`), giving up after
    /// `maximumAttempts`, and forgetting expired entries.
    public mutating func poll(now: NIODeadline) -> [ARPCacheAction] {
        var actions: [ARPCacheAction] = []
        for (address, entry) in entries {
            switch entry {
            case .resolved(_, let learnedAt):
                if now - learnedAt >= configuration.entryLifetime { entries[address] = nil }
            case .pending(let first, let last, let attempts, let packets):
                guard now - last >= configuration.retryInterval else { continue }
                if attempts >= configuration.maximumAttempts {
                    entries[address] = nil
                    pendingPackets -= packets.count
                    actions.append(.failed(address, dropped: packets.count))
                } else {
                    entries[address] = .pending(firstRequest: first, lastRequest: now, attempts: attempts + 1, packets: packets)
                    actions.append(.sendRequest(address))
                }
            }
        }
        return actions.sorted { lhs, rhs in lhs.address < rhs.address }
    }

    /// When `poll` next has work.
    public var nextDeadline: NIODeadline? {
        var earliest: NIODeadline?
        for entry in entries.values {
            let due: NIODeadline
            switch entry {
            case .resolved(_, let learnedAt): due = learnedAt + configuration.entryLifetime
            case .pending(_, let last, _, _): due = last + configuration.retryInterval
            }
            if earliest == nil || due < earliest! { earliest = due }
        }
        return earliest
    }

    /// Makes room for one entry: evicts the oldest resolved entry if the table is full.
    private mutating func makeRoom(now: NIODeadline) -> Bool {
        guard entries.count >= configuration.maximumEntries else { return true }
        var oldest: (IPv4Address, NIODeadline)?
        for (address, entry) in entries {
            if case .resolved(_, let learnedAt) = entry, oldest == nil || learnedAt < oldest!.1 {
                oldest = (address, learnedAt)
            }
        }
        guard let (address, _) = oldest else { return false }
        entries[address] = nil
        evictions &+= 1
        return true
    }
}

extension ARPCacheAction {
    var address: IPv4Address {
        switch self {
        case .sendRequest(let a), .release(let a, _, _), .failed(let a, _): return a
        }
    }
}
