// IPv6 output: the header written in place, the next hop's link-layer address from the neighbour
// cache (the packet held while it resolves), and fragmentation above the link MTU.

import NIOCore
import VPNKitBase
import VPNKitEthernet
import VPNKitIPv6
import VPNKitTCP

extension NetworkStack {
    /// Builds an IPv6 packet around `payload` (which carries its upper-layer header) and sends it:
    /// to `linkDestination` when given, to the multicast MAC of a multicast destination, or to the
    /// neighbour's address, resolving it first.
    func sendIPv6(
        payload: consuming ByteBuffer, nextHeader: IPProtocol, from source: IPv6Address, to destination: IPv6Address,
        hopLimit: UInt8 = 64, linkDestination: MACAddress? = nil, offload: FrameOffload = .none, now: NIODeadline
    ) {
        IPv6Header(source: source, destination: destination, nextHeader: nextHeader, hopLimit: hopLimit).prepend(to: &payload)
        if let mac = linkDestination ?? (destination.isMulticast ? destination.multicastMAC : nil) {
            transmitIPv6(payload, to: mac, offload: offload)
            return
        }
        if let mac = ipv6?.neighbors.linkAddress(for: destination, now: now) {
            transmitIPv6(payload, to: mac, offload: offload)
            return
        }
        // A held packet leaves later as an ordinary one: its checksum is finished here (and one
        // larger than the MTU is fragmented when it goes).
        if offload.hasPartialChecksum {
            payload.completePartialChecksum(start: Int(offload.checksumStart) - 14, offset: Int(offload.checksumOffset))
        }
        handle(ipv6?.neighbors.resolve(destination, holding: payload, now: now) ?? [], now: now)
    }

    /// Carries out what the neighbour cache asks.
    func handle(_ actions: [NeighborCacheAction], now: NIODeadline) {
        for action in actions {
            switch action {
            case .solicit(let target, let mac):
                sendNeighborSolicitation(for: target, unicastTo: mac, now: now)
            case .release(_, let mac, let packets):
                for packet in packets { transmitIPv6(packet, to: mac) }
            case .failed(_, let dropped):
                counters.increment(.ndpResolutionFailed)
                counters.increment(.ndpHeldPacketsDropped, by: UInt64(dropped.count))
            }
        }
    }

    /// A neighbour solicitation for `target`: to its solicited-node group to resolve it, or to
    /// `mac` to probe it (RFC 4861 §7.2.2, §7.3.3), from our address of the same scope.
    func sendNeighborSolicitation(for target: IPv6Address, unicastTo mac: MACAddress?, now: NIODeadline) {
        guard let link = ipv6?.configuration else { return }
        let source = target.isLinkLocal ? link.linkLocal : link.gateway
        let destination = mac == nil ? target.solicitedNode : target
        var message = ByteBuffer.withHeadroom(capacity: 32)
        NDPMessage.neighborSolicitation(target: target, options: [.sourceLinkLayerAddress(macAddress)])
            .prepend(to: &message, source: source, destination: destination)
        counters.increment(.ndpSolicitationsSent)
        sendIPv6(
            payload: message, nextHeader: .icmpv6, from: source, to: destination, hopLimit: 255,
            linkDestination: mac ?? destination.multicastMAC, now: now)
    }

    /// Puts the Ethernet header on a whole IPv6 packet and queues it, in fragments (RFC 8200 §4.5)
    /// when it exceeds the MTU.
    func transmitIPv6(_ packet: consuming ByteBuffer, to mac: MACAddress, offload: FrameOffload = .none) {
        let ethernet = EthernetHeader(destination: mac, source: macAddress, etherType: .ipv6)
        if offload != .none {
            // The link finishes the checksum and cuts the segment: never fragmented here.
            ethernet.prepend(to: &packet)
            transmit(packet, offload: offload)
            return
        }
        var limit = configuration.mtu
        if let pathMTUs = ipv6?.pathMTUs, !pathMTUs.isEmpty, packet.readableBytes > 1280,
            let learned = pathMTUs[ByteView(copy packet).loadIPv6Address(at: 24)]
        {
            limit = min(limit, learned.mtu)
        }
        if packet.readableBytes > limit {
            for var piece in fragmentIPv6(packet, mtu: limit) {
                ethernet.prepend(to: &piece)
                transmit(piece)
            }
            return
        }
        ethernet.prepend(to: &packet)
        transmit(packet)
    }

    /// Splits a packet we built (a fixed header and nothing else unfragmentable) into fragments of
    /// at most `mtu` bytes (the link's, or a smaller path MTU): each a copy of the header, a fragment header, and a multiple of 8 bytes of
    /// the payload (the last one the rest).
    func fragmentIPv6(_ packet: ByteBuffer, mtu: Int) -> [ByteBuffer] {
        guard let view = try? IPv6Packet(packet) else {
            counters.increment(.ipv6Malformed)
            return []
        }
        let header = IPv6Header(parsing: view)
        let payload = view.payload
        let chunk = (mtu - 40 - 8) & ~7
        guard chunk > 0 else { return [] }
        let identification = ipv6?.nextFragmentIdentification() ?? 0
        var pieces: [ByteBuffer] = []
        var offset = 0
        while offset < payload.count {
            let length = min(chunk, payload.count - offset)
            var piece = ByteBuffer.withHeadroom(Headroom.ethernet + 48, capacity: length)
            piece.writeImmutableBuffer(payload.view(from: offset, length: length).buffer)
            IPv6FragmentHeader(
                nextHeader: header.nextHeader, offset: offset, moreFragments: offset + length < payload.count,
                identification: identification
            ).prepend(to: &piece)
            var fragmentHeader = header
            fragmentHeader.nextHeader = .ipv6Fragment
            fragmentHeader.prepend(to: &piece)
            pieces.append(piece)
            offset += length
        }
        counters.increment(.ipv6FragmentsSent, by: UInt64(pieces.count))
        return pieces
    }
}

extension NetworkStack {
    /// Sends one TCP segment of an IPv6 connection: its header (and complete checksum) written in
    /// front of the data, then the IPv6 header. With the link's offloads the checksum is left
    /// partial and a segment larger than the MSS (`segmentSize` nonzero) goes whole, for the link
    /// to cut.
    func transmitTCPv6(header: TCPHeader, payload: consuming ByteBuffer, segmentSize: Int = 0, key: TCPKey, now: NIODeadline) {
        guard case .v6(let local) = key.localAddress, case .v6(let remote) = key.remoteAddress else {
            counters.increment(.addressFamilyNotSupported)
            return
        }
        counters.increment(.tcpSegmentsSent)
        var buffer: ByteBuffer
        if payload.readableBytes == 0 {
            buffer = headerBuffer()
        } else if payload.readerIndex >= Headroom.ethernet + 40 + 60 {
            buffer = payload
        } else {
            buffer = ByteBuffer.withHeadroom(capacity: payload.readableBytes)
            buffer.writeImmutableBuffer(payload)
        }
        let partial = linkOffloads.contains(.partialChecksum)
        header.prepend(to: &buffer, source: key.localAddress, destination: key.remoteAddress, partialChecksum: partial)
        var offload = FrameOffload.none
        if partial {
            // Ethernet (14) + the IPv6 header (40): where the TCP header starts in the frame.
            offload.checksumStart = 54
            offload.checksumOffset = 16
            if segmentSize > 0, linkOffloads.contains(.tcpSegmentationIPv6) {
                offload.segmentSize = UInt16(clamping: segmentSize)
                offload.headerLength = UInt16(54 + header.headerLength)
                offload.ipv6 = true
            }
        }
        sendIPv6(payload: buffer, nextHeader: .tcp, from: local, to: remote, offload: offload, now: now)
    }
}
