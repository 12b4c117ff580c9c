// The neighbour cache of RFC 4861 §7.3: each neighbour's link-layer address and how sure we are of
// it (INCOMPLETE, REACHABLE, STALE, DELAY, PROBE), the packets waiting for an address to resolve,
// and neighbour unreachability detection. A state machine driven by calls carrying the time; it
// does no I/O and returns actions.

public import NIOCore
public import VPNKitBase

/// Limits and timers of the neighbour cache (RFC 4861 §10 names the constants).
public struct NeighborCacheConfiguration: Sendable, Hashable {
    /// Entries of every state together. At the limit the least recently used entry that is not
    /// INCOMPLETE makes room; when every entry is INCOMPLETE a new resolution is refused.
    public var maximumEntries = 1024
    /// How long a confirmation keeps an entry REACHABLE (ReachableTime; 30 s).
    public var reachableTime: TimeAmount = .seconds(30)
    /// Between solicitations for one address (RetransTimer; 1 s).
    public var retransmitTimer: TimeAmount = .seconds(1)
    /// Multicast solicitations before an INCOMPLETE address is given up (MAX_MULTICAST_SOLICIT; 3).
    public var maximumMulticastSolicitations = 3
    /// Unicast probes before a PROBE entry is deleted (MAX_UNICAST_SOLICIT; 3).
    public var maximumUnicastSolicitations = 3
    /// How long a DELAY entry waits for an upper-layer confirmation before probing
    /// (DELAY_FIRST_PROBE_TIME; 5 s).
    public var delayFirstProbeTime: TimeAmount = .seconds(5)
    /// How long an unused STALE entry is kept before it is forgotten (10 minutes).
    public var staleLifetime: TimeAmount = .minutes(10)
    /// Packets held per INCOMPLETE address; more are dropped and counted.
    public var maximumPendingPerAddress = 16
    /// Packets held across all INCOMPLETE addresses.
    public var maximumPendingTotal = 256

    /// The defaults shown on each property.
    public init() {}
}

/// What the neighbour cache asks its owner to do.
public enum NeighborCacheAction: Sendable {
    /// Send a neighbour solicitation for the address: to its solicited-node multicast address
    /// when `unicastTo` is nil (resolution), else to that link-layer address (a probe).
    case solicit(IPv6Address, unicastTo: MACAddress?)
    /// The address resolved: send these held packets to it.
    case release(IPv6Address, MACAddress, [ByteBuffer])
    /// Resolution failed: these held packets are dropped (RFC 4861 §7.2.2 answers each with an
    /// ICMPv6 address unreachable).
    case failed(IPv6Address, dropped: [ByteBuffer])
}

/// A neighbour's state (RFC 4861 §7.3.2), as the cache reports it.
public enum NeighborState: String, Sendable, Hashable {
    /// Resolution is in progress: solicitations sent, no answer yet.
    case incomplete = "INCOMPLETE"
    /// Confirmed recently.
    case reachable = "REACHABLE"
    /// Not confirmed lately; used as is, verified when traffic goes to it.
    case stale = "STALE"
    /// Traffic went to a STALE neighbour; waiting briefly for an upper layer to confirm it.
    case delay = "DELAY"
    /// Being probed with unicast solicitations.
    case probe = "PROBE"
}

/// The neighbour cache as a state machine.
public struct NeighborCache: Sendable {
    /// The limits and timers the cache was created with.
    public let configuration: NeighborCacheConfiguration

    struct Entry: Sendable {
        var state: NeighborState
        /// The link-layer address; nil only while INCOMPLETE.
        var mac: MACAddress?
        /// When the state was entered (REACHABLE: the confirmation; STALE: last use or change).
        var since: NIODeadline
        /// Solicitations sent in INCOMPLETE or PROBE, and when the last left.
        var solicitations = 0
        var lastSolicitation: NIODeadline
        /// Packets waiting while INCOMPLETE.
        var packets: [ByteBuffer] = []
    }

    private var entries: [IPv6Address: Entry] = [:]
    private var pendingPackets = 0
    /// Packets refused because a queue was full.
    public private(set) var queueFullDrops: UInt64 = 0
    /// Resolutions refused because the table was full of INCOMPLETE entries.
    public private(set) var tableFullDrops: UInt64 = 0
    /// Entries evicted to make room.
    public private(set) var evictions: UInt64 = 0

    /// Creates an empty cache.
    public init(configuration: NeighborCacheConfiguration = NeighborCacheConfiguration()) {
        self.configuration = configuration
    }

    /// The number of entries in every state.
    public var count: Int { entries.count }

    /// The state and link-layer address of `address`, if it has an entry.
    public func entry(_ address: IPv6Address) -> (state: NeighborState, mac: MACAddress?)? {
        entries[address].map { ($0.state, $0.mac) }
    }

    /// Every entry, ordered by address (for diagnostics).
    public var allEntries: [(address: IPv6Address, state: NeighborState, mac: MACAddress?)] {
        entries.map { ($0.key, $0.value.state, $0.value.mac) }.sorted { $0.address < $1.address }
    }

    // MARK: Sending

    /// Asks for `address` on behalf of `packet` (an IPv6 packet to send once resolved, RFC 4861
    /// §7.2.2 and §7.3.3). A known address releases the packet at once (a STALE one enters DELAY);
    /// an unknown one holds it and asks for a multicast solicitation.
    public mutating func resolve(_ address: IPv6Address, holding packet: ByteBuffer, now: NIODeadline) -> [NeighborCacheAction] {
        guard var entry = entries[address] else {
            guard pendingPackets < configuration.maximumPendingTotal else {
                queueFullDrops &+= 1
                return []
            }
            guard makeRoom() else {
                tableFullDrops &+= 1
                return []
            }
            entries[address] = Entry(state: .incomplete, mac: nil, since: now, solicitations: 1, lastSolicitation: now, packets: [packet])
            pendingPackets += 1
            return [.solicit(address, unicastTo: nil)]
        }
        guard let mac = entry.mac else {
            if entry.packets.count >= configuration.maximumPendingPerAddress || pendingPackets >= configuration.maximumPendingTotal {
                queueFullDrops &+= 1
                return []
            }
            entry.packets.append(packet)
            pendingPackets += 1
            entries[address] = entry
            return []
        }
        if entry.state == .stale {
            entry.state = .delay
            entry.since = now
            entries[address] = entry
        } else if entry.state == .reachable && now - entry.since >= configuration.reachableTime {
            // Its timer ran out between polls: it is STALE, and this packet moves it to DELAY.
            entry.state = .delay
            entry.since = now
            entries[address] = entry
        }
        return [.release(address, mac, [packet])]
    }

    /// The link-layer address to send to `address` now, without holding anything: nil when it is
    /// unknown (then call `resolve`). Using a STALE entry starts DELAY, as `resolve` does.
    public mutating func linkAddress(for address: IPv6Address, now: NIODeadline) -> MACAddress? {
        guard var entry = entries[address], let mac = entry.mac else { return nil }
        if entry.state == .stale || (entry.state == .reachable && now - entry.since >= configuration.reachableTime) {
            entry.state = .delay
            entry.since = now
            entries[address] = entry
        }
        return mac
    }

    /// An upper layer saw forward progress with `address` (RFC 4861 §7.3.1: new data acknowledged,
    /// say): the entry becomes REACHABLE if it has an address.
    public mutating func confirm(_ address: IPv6Address, now: NIODeadline) {
        guard var entry = entries[address], entry.mac != nil else { return }
        entry.state = .reachable
        entry.since = now
        entry.solicitations = 0
        entries[address] = entry
    }

    // MARK: Receiving

    /// A solicitation, router solicitation or router advertisement from `address` carried its
    /// source link-layer address (RFC 4861 §7.2.3, §6.2.6, §6.3.4): a new entry is made STALE; a
    /// changed address is recorded and made STALE; an INCOMPLETE entry resolves. The caller must
    /// not call this for a solicitation from the unspecified address (DAD).
    public mutating func learnedFromSolicitation(_ address: IPv6Address, is mac: MACAddress, now: NIODeadline) -> [NeighborCacheAction] {
        guard var entry = entries[address] else {
            guard makeRoom() else {
                tableFullDrops &+= 1
                return []
            }
            entries[address] = Entry(state: .stale, mac: mac, since: now, lastSolicitation: now)
            return []
        }
        guard entry.mac != mac else { return [] }
        let packets = entry.packets
        pendingPackets -= packets.count
        entry.packets = []
        entry.mac = mac
        entry.state = .stale
        entry.since = now
        entry.solicitations = 0
        entries[address] = entry
        return packets.isEmpty ? [] : [.release(address, mac, packets)]
    }

    /// A neighbour advertisement for `target` (RFC 4861 §7.2.5). An advertisement for an address
    /// without an entry is ignored (none is made). `mac` is its target link-layer address option.
    public mutating func advertised(
        _ target: IPv6Address, mac: MACAddress?, solicited: Bool, override: Bool, now: NIODeadline
    ) -> [NeighborCacheAction] {
        guard var entry = entries[target] else { return [] }
        guard let cached = entry.mac else {
            // INCOMPLETE: without an address the advertisement says nothing.
            guard let mac else { return [] }
            let packets = entry.packets
            pendingPackets -= packets.count
            entries[target] = Entry(state: solicited ? .reachable : .stale, mac: mac, since: now, lastSolicitation: entry.lastSolicitation)
            return packets.isEmpty ? [] : [.release(target, mac, packets)]
        }
        let differs = mac.map { $0 != cached } ?? false
        if !override && differs {
            // Not allowed to replace the address: a REACHABLE entry loses its certainty, nothing else.
            if entry.state == .reachable {
                entry.state = .stale
                entry.since = now
                entries[target] = entry
            }
            return []
        }
        if let mac, differs { entry.mac = mac }
        if solicited {
            entry.state = .reachable
            entry.since = now
            entry.solicitations = 0
        } else if differs {
            entry.state = .stale
            entry.since = now
        }
        entries[target] = entry
        return []
    }

    /// Forgets `address` (a guest left), dropping any packets held for it.
    public mutating func remove(_ address: IPv6Address) {
        if let entry = entries.removeValue(forKey: address) { pendingPackets -= entry.packets.count }
    }

    // MARK: Timers

    /// Timers: solicitations resent every `retransmitTimer` (INCOMPLETE, then given up; PROBE, then
    /// deleted), REACHABLE entries turning STALE, DELAY entries starting to probe, unused STALE
    /// entries forgotten.
    public mutating func poll(now: NIODeadline) -> [NeighborCacheAction] {
        var actions: [NeighborCacheAction] = []
        for address in entries.keys.sorted() {
            guard var entry = entries[address] else { continue }
            switch entry.state {
            case .incomplete:
                guard now - entry.lastSolicitation >= configuration.retransmitTimer else { continue }
                if entry.solicitations >= configuration.maximumMulticastSolicitations {
                    entries[address] = nil
                    pendingPackets -= entry.packets.count
                    actions.append(.failed(address, dropped: entry.packets))
                    continue
                }
                entry.solicitations += 1
                entry.lastSolicitation = now
                actions.append(.solicit(address, unicastTo: nil))
            case .reachable:
                guard now - entry.since >= configuration.reachableTime else { continue }
                entry.state = .stale
                entry.since = now
            case .stale:
                guard now - entry.since >= configuration.staleLifetime else { continue }
                entries[address] = nil
                continue
            case .delay:
                guard now - entry.since >= configuration.delayFirstProbeTime else { continue }
                entry.state = .probe
                entry.solicitations = 1
                entry.lastSolicitation = now
                actions.append(.solicit(address, unicastTo: entry.mac))
            case .probe:
                guard now - entry.lastSolicitation >= configuration.retransmitTimer else { continue }
                if entry.solicitations >= configuration.maximumUnicastSolicitations {
                    entries[address] = nil
                    continue
                }
                entry.solicitations += 1
                entry.lastSolicitation = now
                actions.append(.solicit(address, unicastTo: entry.mac))
            }
            entries[address] = entry
        }
        return actions
    }

    /// When `poll` next has work, if ever.
    public var nextDeadline: NIODeadline? {
        var earliest: NIODeadline?
        for entry in entries.values {
            let due: NIODeadline
            switch entry.state {
            case .incomplete, .probe: due = entry.lastSolicitation + configuration.retransmitTimer
            case .reachable: due = entry.since + configuration.reachableTime
            case .stale: due = entry.since + configuration.staleLifetime
            case .delay: due = entry.since + configuration.delayFirstProbeTime
            }
            if earliest.map({ due < $0 }) ?? true { earliest = due }
        }
        return earliest
    }

    /// Makes room for one entry: at the limit, evicts the entry with an address that changed
    /// state longest ago.
    private mutating func makeRoom() -> Bool {
        guard entries.count >= configuration.maximumEntries else { return true }
        var oldest: (IPv6Address, NIODeadline)?
        for (address, entry) in entries where entry.mac != nil {
            if oldest.map({ entry.since < $0.1 }) ?? true { oldest = (address, entry.since) }
        }
        guard let (address, _) = oldest else { return false }
        entries[address] = nil
        evictions &+= 1
        return true
    }
}
