public import NIOCore
public import VPNKitBase

/// A learning Ethernet switch in front of the stack: any number of guest connections (vmnet clients,
/// qemu VMs on a listening socket) attach as ports, one after another or at once, and the stack sees
/// one link. Frames from the stack go to the port that owns the destination MAC (flooded to every
/// port when it is broadcast, multicast or not yet known); frames from a port go to the stack, and
/// also to another port when addressed to a MAC learned there (guest to guest). A port that goes
/// away takes only its own MACs with it. Confined to one thread, like every transport.
public final class SwitchTransport: FrameTransport {
    /// The MTU reported to the stack.
    public let mtu: Int
    /// The stack's own MAC: frames for it never go to a port.
    public let stackAddress: MACAddress
    /// MACs learned at most, across all ports (a guest cannot grow the table without bound).
    public let maximumAddresses: Int
    /// Receives the frames from the ports that are for the stack: addressed to `stackAddress`, to a
    /// multicast or broadcast address, or to a MAC not learned on another port. Frames too short for an
    /// Ethernet header are passed on too.
    public var onFrame: ((ByteBuffer) -> Void)?
    /// Never called: the switch outlives its ports.
    public var onClose: (((any Error)?) -> Void)?
    /// Called after a port is attached, with its transport.
    public var onPortAttached: ((any FrameTransport) -> Void)?
    /// Called after a port's connection ended by itself, with its transport, its error (nil for an
    /// orderly end) and the MACs learned on it, to clean up what belonged to them. Not called for the
    /// ports `close()` closes.
    public var onPortDetached: ((any FrameTransport, (any Error)?, Set<MACAddress>) -> Void)?
    /// What accepts the connections (a listener), kept alive and closed with the switch.
    public var listener: AnyObject?

    private struct Port {
        var transport: any FrameTransport
        var addresses: Set<MACAddress> = []
    }

    private var ports: [ObjectIdentifier: Port] = [:]
    private var table: [MACAddress: ObjectIdentifier] = [:]
    private var totals = TransportStatistics()
    private var closed = false
    /// Frames to the stack's link with no port to take them.
    public private(set) var dropsWithoutPorts: UInt64 = 0
    /// Frames from a port whose source MAC could not be learned because the table was full.
    public private(set) var tableFullEvents: UInt64 = 0
    /// Ports attached so far.
    public private(set) var attachments = 0

    /// Creates a switch with no ports. `maximumAddresses` (default 1024) bounds the MAC table; once it is
    /// full, new source MACs are not learned and frames to them are flooded.
    public init(mtu: Int, stackAddress: MACAddress, maximumAddresses: Int = 1024) {
        self.mtu = mtu
        self.stackAddress = stackAddress
        self.maximumAddresses = maximumAddresses
    }

    /// The MAC of the only port, when exactly one is attached and it announced one.
    public var guestAddress: MACAddress? {
        ports.count == 1 ? ports.values.first?.transport.guestAddress : nil
    }

    /// The number of ports attached now.
    public var portCount: Int { ports.count }

    /// Adds a port and takes over its `onFrame` and `onClose`. A MAC address the transport already knows is
    /// learned at once, taken over from any older port. After `close()`, the transport is closed instead.
    public func attach(_ transport: any FrameTransport) {
        guard !closed else {
            transport.close()
            return
        }
        let id = ObjectIdentifier(transport)
        var port = Port(transport: transport)
        if let mac = transport.guestAddress, !mac.isMulticast, table.count < maximumAddresses {
            // The address the transport assigned is this port's, even before it speaks (a newer
            // connection with the same MAC — a reconnecting client — takes it over).
            if let previous = table[mac], previous != id { ports[previous]?.addresses.remove(mac) }
            table[mac] = id
            port.addresses.insert(mac)
        }
        ports[id] = port
        attachments += 1
        transport.onFrame = { [weak self] frame in self?.received(frame, from: id) }
        transport.onClose = { [weak self, weak transport] error in
            guard let self, let transport else { return }
            self.detach(transport, error: error)
        }
        onPortAttached?(transport)
    }

    private func detach(_ transport: any FrameTransport, error: (any Error)?) {
        let id = ObjectIdentifier(transport)
        guard let port = ports.removeValue(forKey: id) else { return }
        totals.add(port.transport.statistics)
        for mac in port.addresses where table[mac] == id { table[mac] = nil }
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
        if !source.isMulticast, source != stackAddress, table[source] != id {
            if table[source] == nil, table.count >= maximumAddresses {
                tableFullEvents &+= 1
            } else {
                if let previous = table[source] { ports[previous]?.addresses.remove(source) }
                table[source] = id
                ports[id]?.addresses.insert(source)
            }
        }
        if destination.isMulticast {
            for (other, port) in ports where other != id { _ = port.transport.send(frame) }
            onFrame?(frame)
        } else if destination != stackAddress, let owner = table[destination], owner != id, let port = ports[owner] {
            _ = port.transport.send(frame)
        } else {
            onFrame?(frame)
        }
    }

    /// A frame from the stack: sent to the port that owns its destination MAC, or flooded to every port
    /// when the destination is multicast or unknown. Returns false, counted in `dropsWithoutPorts`, when
    /// no port is attached; a flood returns true when any port took the frame.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        guard !closed, !ports.isEmpty else {
            dropsWithoutPorts &+= 1
            return false
        }
        guard let bytes = frame.getBytes(at: frame.readerIndex, length: 6) else { return false }
        let destination = macAddress(bytes, at: 0)
        if !destination.isMulticast, let owner = table[destination], let port = ports[owner] {
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
        s.sendDrops &+= dropsWithoutPorts
        return s
    }

    /// Closes every port and the listener.
    public func close() {
        guard !closed else { return }
        closed = true
        (listener as? QemuStreamListener)?.close()
        (listener as? VmnetListener)?.close()
        (listener as? any SwitchListener)?.close()
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

/// Something that feeds a switch with ports (a connector that reconnects), closed with it.
package protocol SwitchListener: AnyObject {
    /// Stops producing ports and releases what it holds; called once when the switch closes.
    func close()
}

private func macAddress(_ bytes: [UInt8], at offset: Int) -> MACAddress {
    MACAddress(rawValue: bytes[offset..<offset + 6].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
}
