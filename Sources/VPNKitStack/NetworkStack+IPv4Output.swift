// IPv4 output: identification, the next hop and its link address (through ARP), fragmentation
// above the link MTU, and the IPv4 header written in place in front of the payload.

public import NIOCore
public import VPNKitBase
import VPNKitIPv4
import VPNKitEthernet

extension NetworkStack {
    /// A fresh IP identification.
    func makeIdentification() -> UInt16 {
        defer { nextIdentification &+= 1 }
        return nextIdentification
    }

    /// Sends an IPv4 datagram (a buffer whose readable bytes are the whole datagram, ideally with
    /// headroom for the Ethernet header) to its destination on the link: straight to
    /// `linkDestination` when given, otherwise to the next hop (the destination on the subnet, else
    /// the default router) resolved with ARP, holding the datagram whole meanwhile. It is fragmented
    /// when it exceeds the MTU and DF is clear; with DF set it is dropped, and "fragmentation needed"
    /// goes back to its source unless that is one of the stack's addresses. A datagram that does not
    /// parse, or has no route, is dropped and counted.
    public func sendIPv4(_ datagram: consuming ByteBuffer, linkDestination: MACAddress? = nil, now: NIODeadline) {
        sendIPv4(datagram, offload: .none, linkDestination: linkDestination, now: now)
    }

    /// `sendIPv4(_:linkDestination:now:)` for a datagram with offloads (a TCP segment larger than the
    /// MTU, a partial checksum), which only `linkOffloads` allows. Offsets in `offload` count from the
    /// start of the Ethernet frame.
    func sendIPv4(_ datagram: consuming ByteBuffer, offload: FrameOffload, linkDestination: MACAddress? = nil, now: NIODeadline) {
        // What routing needs is read from a view that ends before the datagram moves on: a live view
        // shares the storage, and the Ethernet header written later would then copy the whole
        // datagram.
        let destination: IPv4Address
        do {
            guard let packet = try? IPv4Packet(copy datagram) else {
                counters.increment(.ipv4Malformed)
                return
            }
            if packet.totalLength > configuration.mtu && packet.dontFragment && offload.segmentSize == 0 {
                counters.increment(.ipv4FragmentationNeeded)
                if !owns(packet.source) {
                    sendICMPError(
                        type: .destinationUnreachable, code: 4,
                        restOfHeader: UInt32(UInt16(clamping: configuration.mtu)), about: packet, now: now)
                }
                return
            }
            destination = packet.destination
        }
        if let linkDestination {
            transmitIPv4(datagram, to: linkDestination, offload: offload)
            return
        }
        if destination == .broadcast || destination == configuration.subnet.broadcast {
            transmitIPv4(datagram, to: .broadcast, offload: offload)
            return
        }
        guard let nextHop = nextHop(for: destination) else {
            counters.increment(.ipv4NoRoute)
            return
        }
        // Sent at once when resolved (the datagram moves straight on); otherwise held (or refused and
        // counted) by the cache.
        if let mac = arpCache.lookup(nextHop, now: now) {
            transmitIPv4(datagram, to: mac, offload: offload)
            return
        }
        // A held datagram leaves later as an ordinary one: its checksum is finished here (and one
        // larger than the MTU is fragmented when it goes).
        if offload.hasPartialChecksum {
            datagram.completePartialChecksum(start: Int(offload.checksumStart) - 14, offset: Int(offload.checksumOffset))
        }
        for action in arpCache.resolve(nextHop, holding: datagram, now: now) { handle(action, now: now) }
    }

    /// The address to resolve for `destination`: itself on the subnet, otherwise the default router;
    /// nil when there is no route.
    func nextHop(for destination: IPv4Address) -> IPv4Address? {
        guard !configuration.subnet.contains(destination) || configuration.addresses.isEmpty else { return destination }
        guard let router = configuration.defaultRouter, configuration.subnet.contains(router) else { return nil }
        return router
    }

    /// Frames a datagram for `mac`, fragmenting it to the MTU first when needed. The datagram is
    /// consumed: the Ethernet header goes into its headroom without copying it.
    func transmitIPv4(_ datagram: consuming ByteBuffer, to mac: MACAddress, offload: FrameOffload = .none) {
        let ethernet = EthernetHeader(destination: mac, source: macAddress, etherType: .ipv4)
        if offload != .none {
            ethernet.prepend(to: &datagram)
            transmit(datagram, offload: offload)
            return
        }
        if datagram.readableBytes > configuration.mtu, let packet = try? IPv4Packet(copy datagram), packet.totalLength > configuration.mtu {
            let pieces = fragment(packet, mtu: configuration.mtu)
            counters.increment(.ipv4FragmentsSent, by: UInt64(pieces.count))
            for var piece in pieces {
                ethernet.prepend(to: &piece)
                transmit(piece)
            }
            return
        }
        ethernet.prepend(to: &datagram)
        transmit(datagram)
    }

    /// Builds and sends a datagram from a transport payload that already has its transport header.
    func sendIPv4(
        payload: consuming ByteBuffer, protocol proto: IPProtocol, from source: IPv4Address, to destination: IPv4Address,
        dontFragment: Bool, dscp: UInt8 = 0, linkDestination: MACAddress? = nil, offload: FrameOffload = .none, now: NIODeadline
    ) {
        var header = IPv4Header(source: source, destination: destination, protocol: proto, timeToLive: 64)
        header.identification = makeIdentification()
        header.dontFragment = dontFragment
        header.dscp = dscp
        header.prepend(to: &payload)
        sendIPv4(consume payload, offload: offload, linkDestination: linkDestination, now: now)
    }
}
