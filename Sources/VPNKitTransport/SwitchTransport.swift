public import NIOCore
public import VPNKitBase

/// A learning Ethernet switch in front of the stack: any number of guest connections (vmnet clients,
/// qemu VMs on a listening socket) attach as ports, one after another or at once, and the stack sees
/// one link. Frames from the stack go to the port that owns the destination MAC (flooded to every
/// port when it is broadcast, multicast or not yet known); frames from a port go to the stack, and
/// also to another port when addressed to a MAC learned there (guest to guest). A port that goes
/// away takes only its own MACs with it. Confined to one thread, like every transport.
///
/// One guest cannot hurt another through the MAC table (see `SwitchConfiguration`): a MAC belongs to
/// the port it was learned on, or assigned to, until it ages out there (assigned MACs never do while
/// their port lives); a frame from another port with that source MAC, or with the stack's MAC, is
/// dropped and counted (`SwitchCounters.foreignSourceDrops`), neither learned nor delivered. Each
/// port learns a bounded number of MACs, so one port cannot take the whole table. Only
/// `assign(_:to:)`, called by whoever hands out MACs (the vmnet server, for a client that connects
/// again with its UUID), moves a live MAC to another port.
///
/// The table needs the time (for aging): it reads `clock`, injected so that tests run on a virtual
/// one; the daemon passes `NIODeadline.now`.
public final class SwitchTransport: FrameTransport {
    /// The MTU reported to the stack.
    public let mtu: Int
    /// The stack's own MAC: frames for it never go to a port, and no port may send from it.
    public let stackAddress: MACAddress
    /// The MAC table's limits and aging time.
    public let configuration: SwitchConfiguration
    /// Receives the frames from the ports that are for the stack: addressed to `stackAddress`, to a
    /// multicast or broadcast address, or to a MAC not learned on another port. Frames too short for an
    /// Ethernet header are passed on too.
    public var onFrame: ((ByteBuffer) -> Void)?
    /// Never called: the switch outlives its ports.
    public var onClose: (((any Error)?) -> Void)?
    /// Called after a port's connection ended by itself, with its transport, its error (nil for an
    /// orderly end) and the MACs it owned then (not those assigned away from it), to clean up what
    /// belonged to them. Not called for the ports `close()` closes.
    public var onPortDetached: ((any FrameTransport, (any Error)?, Set<MACAddress>) -> Void)?
    /// What accepts the connections (a listener), kept alive and closed with the switch.
    public var listener: (any SwitchListener)?

    private struct Port {
        var transport: any FrameTransport
        var addresses: Set<MACAddress> = []
        /// No learned address of this port ages out before this (a lower bound): `expire(on:)` is
        /// skipped until then.
        var nextExpiry = NIODeadline.distantFuture
    }

    private struct Entry {
        var port: ObjectIdentifier
        var lastSeen: NIODeadline
        /// Assigned (by `attach` from the transport's own MAC, or by `assign`): never ages out.
        var pinned: Bool
    }

    private let clock: () -> NIODeadline
    private var ports: [ObjectIdentifier: Port] = [:]
    private var table: [MACAddress: Entry] = [:]
    /// No learned address in the table ages out before this (a lower bound for `sweep`).
    private var nextSweep = NIODeadline.distantFuture
    private var totals = TransportStatistics()
    private var closed = false
    /// What the switch has counted so far.
    public private(set) var counters = SwitchCounters()

    /// Creates a switch with no ports. `configuration` bounds the MAC table (see
    /// `SwitchConfiguration`); `clock` gives the time for aging (the daemon: `NIODeadline.now`; a
    /// test: its virtual clock).
    public init(mtu: Int, stackAddress: MACAddress, configuration: SwitchConfiguration = .init(), clock: @escaping () -> NIODeadline) {
        precondition(configuration.maximumAddresses > 0 && configuration.maximumAddressesPerPort > 0, "the MAC table needs room")
        self.mtu = mtu
        self.stackAddress = stackAddress
        self.configuration = configuration
        self.clock = clock
    }

    /// The MAC of the only port, when exactly one is attached and it announced one.
    public var guestAddress: MACAddress? {
        ports.count == 1 ? ports.values.first?.transport.guestAddress : nil
    }

    /// The number of ports attached now.
    public var portCount: Int { ports.count }

    /// The number of MACs in the table now, aged-out ones not yet removed included.
    public var addressCount: Int { table.count }

    /// The port that owns `mac` now: it was assigned there, or learned there and has not aged out.
    public func port(of mac: MACAddress) -> (any FrameTransport)? {
        guard let entry = table[mac], isLive(entry, now: entry.pinned ? .distantPast : clock()) else { return nil }
        return ports[entry.port]?.transport
    }

    /// Adds a port and takes over its `onFrame` and `onClose`. A MAC address the transport already knows
    /// (one vmnet assigned) is the port's at once and does not age, unless another port owns it: it is
    /// then not taken (see `assign(_:to:)`). After `close()`, the transport is closed instead.
    public func attach(_ transport: any FrameTransport) {
        guard !closed else {
            transport.close()
            return
        }
        let id = ObjectIdentifier(transport)
        ports[id] = Port(transport: transport)
        counters.portsAttached &+= 1
        if let mac = transport.guestAddress, isAssignable(mac) {
            let now = clock()
            if let entry = table[mac], entry.port != id, isLive(entry, now: now) {
                // Someone else's: only `assign` moves it.
            } else {
                _ = learn(mac, on: id, pinned: true, now: now)
            }
        }
        transport.onFrame = { [weak self] frame in self?.received(frame, from: id) }
        transport.onClose = { [weak self, weak transport] error in
            guard let self, let transport else { return }
            self.detach(transport, error: error)
        }
    }

    /// Hands `mac` to `transport`'s port, taking it from any other port however recently it was seen
    /// there, and pins it (it does not age while the port lives). For whoever hands out MACs: the vmnet
    /// server, when a known UUID connects again (rootlesskit keeps its first connection open and
    /// unread while its child connects again and must get the traffic). The old port's frames from
    /// `mac` are dropped from then on. Returns false, with nothing changed, when the port is not
    /// attached, `mac` is a group address or the stack's, or a limit leaves no room (counted as for a
    /// learned MAC).
    @discardableResult
    public func assign(_ mac: MACAddress, to transport: any FrameTransport) -> Bool {
        let id = ObjectIdentifier(transport)
        guard !closed, ports[id] != nil, isAssignable(mac) else { return false }
        let now = clock()
        if let entry = table[mac], entry.port == id {
            table[mac]?.pinned = true
            return true
        }
        // Room on the new port first; a MAC moved from another port does not grow the table.
        guard hasRoom(on: id, growingTable: table[mac] == nil, now: now) else { return false }
        if let entry = table[mac] {
            ports[entry.port]?.addresses.remove(mac)
            table[mac] = nil
            counters.handovers &+= 1
        }
        return learn(mac, on: id, pinned: true, now: now)
    }

    private func detach(_ transport: any FrameTransport, error: (any Error)?) {
        let id = ObjectIdentifier(transport)
        guard let port = ports.removeValue(forKey: id) else { return }
        totals.add(port.transport.statistics)
        for mac in port.addresses where table[mac]?.port == id { table[mac] = nil }
        onPortDetached?(transport, error, port.addresses)
    }

    private func received(_ frame: ByteBuffer, from id: ObjectIdentifier) {
        guard frame.readableBytes >= 14, let bytes = frame.getBytes(at: frame.readerIndex, length: 12) else {
            // Too short to be Ethernet: the stack counts it as malformed.
            onFrame?(frame)
            return
        }
        let destination = macAddress(bytes, at: 0)
        let source = macAddress(bytes, at: 6)
        if source == stackAddress {
            // A guest posing as the gateway (to another guest, or to the stack itself).
            counters.foreignSourceDrops &+= 1
            return
        }
        if !source.isMulticast {
            if let entry = table[source] {
                if entry.port == id {
                    // Assigned MACs do not age: the hot path of a vmnet guest reads no clock.
                    if !entry.pinned { table[source]?.lastSeen = clock() }
                } else {
                    let now = clock()
                    guard !isLive(entry, now: now) else {
                        counters.foreignSourceDrops &+= 1
                        return
                    }
                    // Aged out on its old port: this port may have it.
                    ports[entry.port]?.addresses.remove(source)
                    table[source] = nil
                    counters.agedOut &+= 1
                    if hasRoom(on: id, now: now) { _ = learn(source, on: id, pinned: false, now: now) }
                }
            } else {
                let now = clock()
                if hasRoom(on: id, now: now) { _ = learn(source, on: id, pinned: false, now: now) }
            }
        }
        if destination.isMulticast {
            for (other, port) in ports where other != id { _ = port.transport.send(frame) }
            onFrame?(frame)
        } else if destination != stackAddress, let owner = table[destination]?.port, owner != id, let port = ports[owner] {
            _ = port.transport.send(frame)
        } else {
            onFrame?(frame)
        }
    }

    // MARK: The table

    private func isAssignable(_ mac: MACAddress) -> Bool { !mac.isMulticast && mac != stackAddress }

    private func isLive(_ entry: Entry, now: NIODeadline) -> Bool {
        entry.pinned || now - entry.lastSeen < configuration.agingTime
    }

    /// Whether one more MAC fits on port `id` and (when `growingTable`) in the table, after removing
    /// what aged out; counts the limit that refused it.
    private func hasRoom(on id: ObjectIdentifier, growingTable: Bool = true, now: NIODeadline) -> Bool {
        guard let port = ports[id] else { return false }
        if port.addresses.count >= configuration.maximumAddressesPerPort {
            expire(on: id, now: now)
            guard (ports[id]?.addresses.count ?? 0) < configuration.maximumAddressesPerPort else {
                counters.portFull &+= 1
                return false
            }
        }
        if growingTable, table.count >= configuration.maximumAddresses {
            sweep(now: now)
            guard table.count < configuration.maximumAddresses else {
                counters.tableFull &+= 1
                return false
            }
        }
        return true
    }

    /// Puts `mac` in the table for port `id`; the caller has removed any entry of another port and
    /// checked for room.
    private func learn(_ mac: MACAddress, on id: ObjectIdentifier, pinned: Bool, now: NIODeadline) -> Bool {
        guard ports[id] != nil else { return false }
        table[mac] = Entry(port: id, lastSeen: now, pinned: pinned)
        ports[id]!.addresses.insert(mac)
        if !pinned {
            let expiry = now + configuration.agingTime
            if expiry < nextSweep { nextSweep = expiry }
            if expiry < ports[id]!.nextExpiry { ports[id]!.nextExpiry = expiry }
        }
        return true
    }

    /// Removes the learned MACs of port `id` that aged out (at most once per aging period).
    private func expire(on id: ObjectIdentifier, now: NIODeadline) {
        guard let port = ports[id], now >= port.nextExpiry else { return }
        var next = NIODeadline.distantFuture
        for mac in port.addresses {
            guard let entry = table[mac], entry.port == id, !entry.pinned else { continue }
            if isLive(entry, now: now) {
                next = min(next, entry.lastSeen + configuration.agingTime)
            } else {
                table[mac] = nil
                ports[id]!.addresses.remove(mac)
                counters.agedOut &+= 1
            }
        }
        ports[id]!.nextExpiry = next
    }

    /// Removes every learned MAC that aged out; a full table is swept at most once per aging period
    /// (whatever a guest sends meanwhile costs no more).
    private func sweep(now: NIODeadline) {
        guard now >= nextSweep else { return }
        var next = NIODeadline.distantFuture
        for (mac, entry) in table where !entry.pinned {
            if isLive(entry, now: now) {
                next = min(next, entry.lastSeen + configuration.agingTime)
            } else {
                table[mac] = nil
                ports[entry.port]?.addresses.remove(mac)
                counters.agedOut &+= 1
            }
        }
        nextSweep = next
    }

    // MARK: To the ports

    /// A frame from the stack: sent to the port that owns its destination MAC (a MAC that aged out
    /// there still goes to it until another port takes it), or flooded to every port when the
    /// destination is multicast or unknown. Returns false, counted in `dropsWithoutPorts`, when
    /// no port is attached; a flood returns true when any port took the frame. A port whose transport
    /// cannot take a frame (its peer does not read) drops it and counts it in its own statistics; the
    /// others still get theirs.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        guard !closed, !ports.isEmpty else {
            counters.dropsWithoutPorts &+= 1
            return false
        }
        guard let bytes = frame.getBytes(at: frame.readerIndex, length: 6) else { return false }
        let destination = macAddress(bytes, at: 0)
        if !destination.isMulticast, let owner = table[destination]?.port, let port = ports[owner] {
            return port.transport.send(frame)
        }
        var sent = false
        for port in ports.values where port.transport.send(frame) { sent = true }
        return sent
    }

    /// Totals over every port, past and present, with `dropsWithoutPorts` added to `sendDrops`.
    public var statistics: TransportStatistics {
        var s = totals
        for port in ports.values { s.add(port.transport.statistics) }
        s.sendDrops &+= counters.dropsWithoutPorts
        return s
    }

    /// Closes every port and the listener.
    public func close() {
        guard !closed else { return }
        closed = true
        listener?.close()
        listener = nil
        let all = ports.values.map(\.transport)
        ports.removeAll()
        table.removeAll()
        for transport in all {
            transport.onClose = nil
            transport.close()
        }
    }
}

/// The limits of a switch's MAC table.
public struct SwitchConfiguration: Sendable, Hashable {
    /// MACs in the table at most, across all ports; default 1024. At the limit (after removing what
    /// aged out) a new source MAC is not learned (`SwitchCounters.tableFull`): its frames still pass,
    /// and frames to it are flooded.
    public var maximumAddresses = 1024
    /// MACs one port may own at most; default 16 (a VM's interface, and a few containers or bridges
    /// behind it). At the limit a new source MAC from that port is not learned
    /// (`SwitchCounters.portFull`); other ports are not affected.
    public var maximumAddressesPerPort = 16
    /// How long a learned MAC stays its port's after the last frame from it; default 300 s. Until then
    /// no other port may send from it; after, the first port to send from it takes it. MACs assigned
    /// to a port (a vmnet client's) do not age.
    public var agingTime: TimeAmount = .seconds(300)

    /// Creates the default limits shown on each property.
    public init() {}
}

/// What a switch counts.
public struct SwitchCounters: Sendable, Hashable {
    /// Ports attached so far.
    public var portsAttached: UInt64 = 0
    /// Frames from a port dropped because their source MAC belongs to another port (live there) or
    /// is the stack's own: one guest posing as another, or as the gateway.
    public var foreignSourceDrops: UInt64 = 0
    /// Source MACs not learned because their port already owned `maximumAddressesPerPort`.
    public var portFull: UInt64 = 0
    /// Source MACs not learned because the table held `maximumAddresses`.
    public var tableFull: UInt64 = 0
    /// Learned MACs that aged out (removed, or taken by another port).
    public var agedOut: UInt64 = 0
    /// MACs `assign(_:to:)` moved from one port to another.
    public var handovers: UInt64 = 0
    /// Frames from the stack with no port to take them.
    public var dropsWithoutPorts: UInt64 = 0

    /// Creates counters, all zero.
    public init() {}
}

/// Something that feeds a switch with ports (a connector that reconnects), closed with it.
/// What produces a switch's ports (a listener on a socket, a connector that reconnects).
public protocol SwitchListener: AnyObject {
    /// Stops producing ports and releases what it holds; called once when the switch closes.
    func close()
}

private func macAddress(_ bytes: [UInt8], at offset: Int) -> MACAddress {
    MACAddress(rawValue: bytes[offset..<offset + 6].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
}

extension QemuStreamListener: SwitchListener {}
extension VmnetListener: SwitchListener {}
