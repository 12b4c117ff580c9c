public import NIOCore
public import VPNKitBase
import VPNKitIPv4
import VPNKitUDP

struct UDPSocketKey: Hashable {
    /// nil: every owned IPv4 address (and broadcasts); `::`: every owned IPv6 address.
    var address: IPAddress?
    var port: UInt16
}

struct UDPSocketEntry {
    var handler: (UDPMessage) -> Void
}

/// A bound UDP port on the stack. Closing it (or releasing the last reference to it) unbinds.
public final class UDPSocket {
    /// The address bound, or nil for every owned address and broadcasts.
    public let address: IPAddress?
    /// The UDP port bound.
    public let port: UInt16
    private weak var stack: NetworkStack?
    /// Whether `close()` has been called: the socket receives nothing more, and its sends do nothing.
    public private(set) var isClosed = false
    /// Bound to an outside peer's address by `bindUDP(port:onBehalfOf:toward:handler:)`: it sends from that
    /// address, to the guest's link only.
    let speaksForPeer: Bool

    init(stack: NetworkStack, address: IPAddress?, port: UInt16, speaksForPeer: Bool = false) {
        self.stack = stack
        self.address = address
        self.port = port
        self.speaksForPeer = speaksForPeer
    }

    /// Sends `payload` from this socket to `destination:port` (from `source`, which must be owned;
    /// by default the socket's address or the gateway). Throws as `NetworkStack.sendUDP` does
    /// (`addressFamilyNotSupported` for an IPv6 destination or source); does nothing once the socket
    /// is closed or its stack is gone. A socket bound on behalf of a peer sends from the peer's
    /// address whatever `source` says, and only to the guest's link (else `noRoute`).
    public func send(_ payload: ByteBuffer, to destination: IPAddress, port destinationPort: UInt16, from source: IPAddress? = nil, now: NIODeadline) throws(StackError) {
        guard let stack, !isClosed else { return }
        if speaksForPeer, let address {
            try stack.sendUDP(payload, onBehalfOf: address, port: port, to: destination, port: destinationPort, now: now)
            return
        }
        let from = source ?? address.flatMap { $0 == .v6(.unspecified) ? nil : $0 } ?? stack.defaultSource(toward: destination)
        try stack.sendUDP(payload, from: from, port: port, to: destination, port: destinationPort, now: now)
    }

    /// Unbinds the port, so that it can be bound again and datagrams to it are treated as to any
    /// unbound port. Later calls do nothing.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        stack?.udpSockets[UDPSocketKey(address: address, port: port)] = nil
    }

    deinit {
        if !isClosed { stack?.udpSockets[UDPSocketKey(address: address, port: port)] = nil }
    }
}

extension NetworkStack {
    /// Binds `port` on `address`: an owned address, nil for every IPv4 address and broadcasts, or
    /// `::` for every IPv6 address (on a stack with IPv6). Each datagram is handed to `handler`
    /// synchronously, on the thread driving the stack. Throws `StackError.addressNotOwned` for an
    /// address the stack does not own, `StackError.addressInUse` when the port is bound on that
    /// address or on every address of its family (or, for a bind on every address, on any one of
    /// that family), and `StackError.addressFamilyNotSupported` (counted) for an IPv6 address on a
    /// stack without IPv6.
    public func bindUDP(port: UInt16, address: IPAddress? = nil, handler: @escaping (UDPMessage) -> Void) throws(StackError) -> UDPSocket {
        if let address, address != .v6(.unspecified) || ipv6 == nil {
            if case .v4 = address { try requireSupportedFamily(address) }
            if case .v6 = address, ipv6 == nil {
                counters.increment(.addressFamilyNotSupported)
                throw .addressFamilyNotSupported(address)
            }
            guard owns(address) else { throw .addressNotOwned(address) }
        }
        let key = UDPSocketKey(address: address, port: port)
        // nil binds every IPv4 address, `::` every IPv6 one: each conflicts only with its own family.
        let isIPv6 = address?.family == .v6
        let wildcard = UDPSocketKey(address: isIPv6 ? .v6(.unspecified) : nil, port: port)
        let isWildcard = address == nil || address == .v6(.unspecified)
        guard udpSockets[key] == nil, udpSockets[wildcard] == nil,
            !isWildcard || !udpSockets.keys.contains(where: { $0.port == port && ($0.address?.family == .v6) == isIPv6 })
        else { throw .addressInUse(address, port) }
        udpSockets[key] = UDPSocketEntry(handler: handler)
        return UDPSocket(stack: self, address: address, port: port)
    }

    /// Sends a UDP datagram from an owned address (or from 0.0.0.0, as a DHCP client must). With
    /// `linkDestination` the frame goes to that MAC without ARP (a DHCP server answering a client that
    /// has no address yet). Throws `StackError.addressNotOwned`, `StackError.datagramTooLarge` (over
    /// 65,507 bytes), `StackError.noRoute` when the destination is off the subnet and there is no
    /// default router, or `StackError.addressFamilyNotSupported` (counted) for an IPv6 source or
    /// destination.
    public func sendUDP(
        _ payload: ByteBuffer, from source: IPAddress, port sourcePort: UInt16, to destination: IPAddress,
        port destinationPort: UInt16, linkDestination: MACAddress? = nil, now: NIODeadline
    ) throws(StackError) {
        if case .v6(let target) = destination {
            try sendUDP(payload, from: source, port: sourcePort, to: target, port: destinationPort, now: now)
            return
        }
        let target = try requireIPv4(destination)
        let origin = try requireIPv4(source)
        guard owns(origin) || origin == .any else { throw .addressNotOwned(source) }
        guard payload.readableBytes <= 65535 - 28 else { throw .datagramTooLarge(payload.readableBytes) }
        let broadcast = target == .broadcast || target == configuration.subnet.broadcast
        guard broadcast || linkDestination != nil || configuration.subnet.contains(target) || configuration.defaultRouter != nil
        else { throw .noRoute(destination) }
        emitUDP(payload, from: origin, port: sourcePort, to: target, port: destinationPort, linkDestination: linkDestination, now: now)
    }

    /// Writes the UDP header in front of `payload` (in its headroom when it has some, else in a
    /// copy) and sends the datagram, fragmented to the MTU when needed.
    func emitUDP(
        _ payload: ByteBuffer, from source: IPv4Address, port sourcePort: UInt16, to destination: IPv4Address,
        port destinationPort: UInt16, linkDestination: MACAddress? = nil, now: NIODeadline
    ) {
        var buffer: ByteBuffer
        if payload.readerIndex >= Headroom.ethernet + 28 {
            buffer = payload
        } else if Headroom.maximum + payload.readableBytes <= Self.headerBufferCapacity {
            // A small datagram (a DNS answer, a game's update): copied into a recycled header buffer,
            // no allocation once the pool has one.
            buffer = headerBuffer()
            buffer.writeImmutableBuffer(payload)
        } else {
            buffer = ByteBuffer.withHeadroom(capacity: payload.readableBytes)
            buffer.writeImmutableBuffer(payload)
        }
        UDPHeader(sourcePort: sourcePort, destinationPort: destinationPort).prepend(to: &buffer, source: .v4(source), destination: .v4(destination))
        counters.increment(.udpSent)
        sendIPv4(payload: consume buffer, protocol: .udp, from: source, to: destination, dontFragment: false, linkDestination: linkDestination, now: now)
    }

    func receiveUDP(_ packet: IPv4Packet, broadcast: Bool, linkSource: MACAddress, now: NIODeadline) {
        let udp: UDPDatagram
        do { udp = try UDPDatagram(packet.payload) } catch {
            counters.increment(.udpMalformed)
            return
        }
        guard receivingTrustedChecksum || udp.isChecksumValid(packet.pseudoHeader) else {
            counters.increment(.udpBadChecksum)
            return
        }
        let port = udp.destinationPort
        let source = IPAddress.v4(packet.source)
        let destination = IPAddress.v4(packet.destination)
        var entry = udpSockets[UDPSocketKey(address: destination, port: port)]
        if entry == nil, !broadcast, let forwarder, isForwarded(.v4(packet.destination)) {
            counters.increment(.forwardedUDPDatagrams)
            forwarder.udpDatagramReceived(
                UDPMessage(
                    source: source, sourcePort: udp.sourcePort, destination: destination, destinationPort: port,
                    payload: udp.payload.buffer, receivedAt: now, linkSource: linkSource),
                now: now)
            return
        }
        if entry == nil, broadcast || owns(packet.destination) { entry = udpSockets[UDPSocketKey(address: nil, port: port)] }
        guard let entry else {
            counters.increment(.udpPortUnreachable)
            if !broadcast {
                sendICMPError(type: .destinationUnreachable, code: 3, about: packet, now: now)
            }
            return
        }
        counters.increment(.udpDelivered)
        entry.handler(
            UDPMessage(
                source: source, sourcePort: udp.sourcePort, destination: destination, destinationPort: port,
                payload: udp.payload.buffer, receivedAt: now, linkSource: linkSource))
    }
}

extension NetworkStack {
    /// Whether `packet` is an unfragmented UDP datagram from port 68 to port 67: a DHCP client's
    /// message, the one kind whose zero header checksum is tolerated (see `ipv4ZeroChecksumAccepted`).
    static func isDHCPClientMessage(_ packet: IPv4Packet) -> Bool {
        guard packet.protocol == .udp, !packet.isFragment, packet.payloadLength >= 8 else { return false }
        let udp = packet.payload
        return udp.loadU16(at: 0) == 68 && udp.loadU16(at: 2) == 67
    }
}
