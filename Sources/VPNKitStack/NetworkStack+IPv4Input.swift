// IPv4 input: a packet is checked once (header, checksum, addresses), reassembled when it is a
// fragment, and handed to ICMP, UDP or TCP.

import NIOCore
import VPNKitBase
import VPNKitIPv4

extension NetworkStack {
    func receiveIPv4(_ bytes: ByteView, linkSource: MACAddress, linkBroadcast: Bool, now: NIODeadline) {
        counters.increment(.ipv4Received)
        let packet: IPv4Packet
        do { packet = try IPv4Packet(bytes) } catch {
            counters.increment(.ipv4Malformed)
            return
        }
        if !packet.isHeaderChecksumValid {
            guard packet.headerChecksum == 0, Self.isDHCPClientMessage(packet) else {
                counters.increment(.ipv4BadChecksum)
                return
            }
            counters.increment(.ipv4ZeroChecksumAccepted)
        }
        let source = packet.source
        if source.isMulticast || source == .broadcast || source == configuration.subnet.broadcast || owns(source)
            || source.isLoopback || (source != .any && source == configuration.subnet.network && configuration.subnet.prefixLength < 31)
        {
            counters.increment(.ipv4BadSource)
            return
        }
        if source != .any, source != guestIPv4Address, configuration.subnet.contains(source) { guestIPv4Address = source }
        let destination = packet.destination
        let local = owns(destination)
        let broadcast = destination == .broadcast || destination == configuration.subnet.broadcast
        // RFC 1122 §3.3.6: a unicast datagram that came as a link-layer broadcast is discarded.
        if linkBroadcast && !broadcast {
            counters.increment(.ipv4NotForUs)
            return
        }
        let forwarded = !broadcast && isForwarded(.v4(destination))
        guard local || broadcast || forwarded else {
            counters.increment(.ipv4NotForUs)
            return
        }
        // Only the guest's own subnet is carried to host sockets: a spoofed outside source would
        // make the NAT open flows whose replies go nowhere.
        if forwarded && !configuration.subnet.contains(source) {
            counters.increment(.forwardedBadSource)
            return
        }
        if packet.isFragment {
            counters.increment(.ipv4FragmentsReceived)
            switch reassembler.add(packet, now: now) {
            case .incomplete:
                return
            case .complete(let whole):
                counters.increment(.ipv4Reassembled)
                guard let complete = try? IPv4Packet(whole) else {
                    counters.increment(.ipv4Malformed)
                    return
                }
                deliver(complete, broadcast: broadcast, linkSource: linkSource, now: now)
            case .dropped(let reason):
                switch reason {
                case .overlap: counters.increment(.ipv4ReassemblyOverlap)
                case .oversized: counters.increment(.ipv4ReassemblyOversized)
                case .malformed: counters.increment(.ipv4ReassemblyMalformed)
                case .limit: counters.increment(.ipv4ReassemblyLimit)
                case .duplicate: counters.increment(.ipv4ReassemblyDuplicate)
                case .timeout: counters.increment(.ipv4ReassemblyTimeout)
                }
            }
            return
        }
        deliver(packet, broadcast: broadcast, linkSource: linkSource, now: now)
    }

    private func deliver(_ packet: IPv4Packet, broadcast: Bool, linkSource: MACAddress, now: NIODeadline) {
        switch packet.protocol {
        case .icmp: receiveICMP(packet, broadcast: broadcast, now: now)
        case .udp: receiveUDP(packet, broadcast: broadcast, linkSource: linkSource, now: now)
        case .tcp: receiveTCP(packet.payload, from: .v4(packet.source), to: .v4(packet.destination), broadcast: broadcast, now: now)
        default: counters.increment(.ipv4UnknownProtocol)
        }
    }
}
