// UDP over IPv6: datagrams to sockets bound to our IPv6 addresses (or to `::`, all of them), the
// mandatory checksum (RFC 8200 §8.1), and port unreachable for the rest.

import NIOCore
import VPNKitBase
import VPNKitIPv6
import VPNKitUDP

extension NetworkStack {
    func receiveUDP(_ bytes: ByteView, in packet: IPv6Packet, linkSource: MACAddress, now: NIODeadline) {
        let udp: UDPDatagram
        do { udp = try UDPDatagram(bytes) } catch {
            counters.increment(.udpMalformed)
            return
        }
        let source = IPAddress.v6(packet.source)
        let destination = IPAddress.v6(packet.destination)
        // Over IPv6 a zero checksum is not "none": it is invalid.
        guard receivingTrustedChecksum
            || (udp.checksum != 0
                && udp.isChecksumValid(IPPseudoHeader(source: source, destination: destination, protocol: .udp, length: bytes.count)))
        else {
            counters.increment(.udpBadChecksum)
            return
        }
        let port = udp.destinationPort
        var entry = udpSockets[UDPSocketKey(address: destination, port: port)]
        // Not bound on that exact address and forwarded (beyond the link, or the host alias): the
        // forwarder's, as over IPv4.
        if entry == nil, !packet.destination.isMulticast, let forwarder, isForwarded(destination) {
            counters.increment(.forwardedUDPDatagrams)
            forwarder.udpDatagramReceived(
                UDPMessage(
                    source: source, sourcePort: udp.sourcePort, destination: destination, destinationPort: port,
                    payload: udp.payload.buffer, receivedAt: now, linkSource: linkSource),
                now: now)
            return
        }
        if entry == nil, packet.destination.isMulticast || ownsIPv6(packet.destination) {
            entry = udpSockets[UDPSocketKey(address: .v6(.unspecified), port: port)]
        }
        guard let entry else {
            counters.increment(.udpPortUnreachable)
            if !packet.destination.isMulticast {
                sendICMPv6Error(type: .destinationUnreachable, code: 4, about: packet, now: now)
            }
            return
        }
        counters.increment(.udpDelivered)
        entry.handler(
            UDPMessage(
                source: source, sourcePort: udp.sourcePort, destination: destination, destinationPort: port,
                payload: udp.payload.buffer, receivedAt: now, linkSource: linkSource))
    }

    /// `sendUDP` for an IPv6 destination: from one of our IPv6 addresses, to a neighbour on the link
    /// (the prefix or link-local) or a multicast group.
    func sendUDP(
        _ payload: ByteBuffer, from source: IPAddress, port sourcePort: UInt16, to target: IPv6Address, port destinationPort: UInt16,
        now: NIODeadline
    ) throws(StackError) {
        guard let link = ipv6?.configuration else {
            counters.increment(.addressFamilyNotSupported)
            throw .addressFamilyNotSupported(.v6(target))
        }
        guard case .v6(let origin) = source else {
            counters.increment(.addressFamilyNotSupported)
            throw .addressFamilyNotSupported(source)
        }
        guard ownsIPv6(origin) else { throw .addressNotOwned(source) }
        guard payload.readableBytes <= 65535 - 8 else { throw .datagramTooLarge(payload.readableBytes) }
        guard target.isMulticast || link.onLink(target) else { throw .noRoute(.v6(target)) }
        emitUDPv6(payload, from: origin, port: sourcePort, to: target, port: destinationPort, now: now)
    }

    /// Puts the UDP header in front of `payload` (in its headroom, or in a copy with headroom when it
    /// has too little), counts it sent, and hands it to IPv6 output (fragmented to the path MTU).
    /// The caller has checked the addresses and that the datagram fits.
    func emitUDPv6(_ payload: ByteBuffer, from source: IPv6Address, port sourcePort: UInt16, to target: IPv6Address, port destinationPort: UInt16, now: NIODeadline) {
        var buffer: ByteBuffer
        if payload.readerIndex >= Headroom.ethernet + 48 {
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
        UDPHeader(sourcePort: sourcePort, destinationPort: destinationPort).prepend(to: &buffer, source: .v6(source), destination: .v6(target))
        counters.increment(.udpSent)
        sendIPv6(payload: buffer, nextHeader: .udp, from: source, to: target, now: now)
    }

    /// The address a socket without one sends from: the IPv4 gateway, or for an IPv6 destination
    /// our address of the same scope.
    func defaultSource(toward destination: IPAddress) -> IPAddress {
        guard case .v6(let target) = destination, let link = ipv6?.configuration else { return .v4(configuration.gateway) }
        return .v6(target.isLinkLocal ? link.linkLocal : link.gateway)
    }
}
