// ICMPv6 (RFC 4443): echo for our addresses, neighbour discovery handed on, and the errors we
// send, within RFC 4443 §2.4's rules and the shared rate limit.

import NIOCore
import VPNKitBase
import VPNKitIPv6

extension NetworkStack {
    func receiveICMPv6(_ bytes: ByteView, in packet: IPv6Packet, linkSource: MACAddress, now: NIODeadline) {
        let icmp: ICMPv6Packet
        do { icmp = try ICMPv6Packet(bytes) } catch {
            counters.increment(.icmpv6Malformed)
            return
        }
        guard receivingTrustedChecksum || icmp.isChecksumValid(source: packet.source, destination: packet.destination) else {
            counters.increment(.icmpv6BadChecksum)
            return
        }
        switch icmp.type {
        case .echoRequest where icmp.code == 0:
            counters.increment(.icmpv6EchoRequestsReceived)
            // Pings to a group (all nodes) are not answered: one guest could make us answer for all.
            guard !packet.destination.isMulticast, !packet.source.isUnspecified else { return }
            // One not for us reached here because it is forwarded: the forwarder pings.
            if !ownsIPv6(packet.destination) {
                guard let forwarder else { return }
                counters.increment(.forwardedICMPEchoRequests)
                forwarder.icmpEchoRequested(
                    ICMPEchoRequest(
                        guestAddress: .v6(packet.source), destination: .v6(packet.destination), identifier: icmp.identifier,
                        sequenceNumber: icmp.sequenceNumber, payload: icmp.body.buffer, timeToLive: packet.hopLimit),
                    now: now)
                return
            }
            var reply = ByteBuffer.withHeadroom(capacity: icmp.body.count)
            reply.writeImmutableBuffer(icmp.body.buffer)
            ICMPv6Header.echo(reply: true, identifier: icmp.identifier, sequenceNumber: icmp.sequenceNumber)
                .prepend(to: &reply, source: packet.destination, destination: packet.source)
            counters.increment(.icmpv6EchoRepliesSent)
            sendIPv6(payload: reply, nextHeader: .icmpv6, from: packet.destination, to: packet.source, now: now)
        case .neighborSolicitation, .neighborAdvertisement, .routerSolicitation:
            receiveNeighborDiscovery(icmp, in: packet, linkSource: linkSource, now: now)
        case .packetTooBig:
            receivePacketTooBig(icmp, now: now)
        default:
            // Errors about what we sent, MLD reports, redirects, a guest's router advertisements.
            counters.increment(.icmpv6OtherReceived)
        }
    }

    /// A packet too big message (RFC 8201): when it quotes a packet of ours, packets to the quoted
    /// destination are cut to the MTU it names from then on (never below IPv6's minimum, 1280, nor
    /// above the link's), for ten minutes.
    private func receivePacketTooBig(_ icmp: ICMPv6Packet, now: NIODeadline) {
        counters.increment(.icmpv6OtherReceived)
        let quoted = icmp.body
        guard quoted.count >= 40, quoted.loadU8(at: 0) >> 4 == 6, ownsIPv6(quoted.loadIPv6Address(at: 8)) else { return }
        let mtu = max(1280, min(Int(icmp.restOfHeader), configuration.mtu))
        guard mtu < configuration.mtu else { return }
        counters.increment(.ipv6PathMTUReduced)
        ipv6?.learnPathMTU(mtu, to: quoted.loadIPv6Address(at: 24), now: now)
    }

    /// Sends an ICMPv6 error about `packet` to its source (RFC 4443 §2.4): never about an ICMPv6
    /// error, nor about a packet from an unspecified or multicast source, nor (except packet too big
    /// and an unrecognized option) about one to a multicast address; rate-limited with ICMPv4's
    /// errors. Quotes as much of the packet as keeps the error within the minimum MTU, 1280 bytes.
    func sendICMPv6Error(type: ICMPv6Type, code: UInt8, restOfHeader: UInt32 = 0, about packet: IPv6Packet, now: NIODeadline) {
        guard let link = ipv6?.configuration else { return }
        let source = packet.source
        let destination = packet.destination
        let multicastAllowed = type == .packetTooBig || (type == .parameterProblem && code == 2)
        if source.isUnspecified || source.isMulticast || (destination.isMulticast && !multicastAllowed) || isICMPv6Error(packet) {
            counters.increment(.icmpv6ErrorsSuppressed)
            return
        }
        guard icmpErrors.take(now: now) else {
            counters.increment(.icmpv6ErrorsRateLimited)
            return
        }
        let quoted = min(40 + packet.payloadLength, 1280 - 40 - 8)
        var body = ByteBuffer.withHeadroom(capacity: quoted)
        body.writeImmutableBuffer(packet.bytes.view(from: 0, length: quoted).buffer)
        let from = ownsIPv6(destination) ? destination : (source.isLinkLocal ? link.linkLocal : link.gateway)
        ICMPv6Header(type: type, code: code, restOfHeader: restOfHeader).prepend(to: &body, source: from, destination: source)
        counters.increment(.icmpv6ErrorsSent)
        sendIPv6(payload: body, nextHeader: .icmpv6, from: from, to: source, now: now)
    }

    /// Whether `packet` carries an ICMPv6 error message (which is never answered with an error).
    private func isICMPv6Error(_ packet: IPv6Packet) -> Bool {
        guard let chain = try? packet.headerChain(), chain.upperLayer == .icmpv6, chain.fragment?.offset ?? 0 == 0 else { return false }
        return packet.bytes.loadU8(at: chain.upperLayerOffset) < 128 && chain.upperLayerOffset < 40 + packet.payloadLength
    }
}
