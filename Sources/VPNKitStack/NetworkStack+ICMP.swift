import NIOCore
import VPNKitBase
import VPNKitIPv4

extension NetworkStack {
    func receiveICMP(_ packet: IPv4Packet, broadcast: Bool, now: NIODeadline) {
        let icmp: ICMPv4Packet
        do { icmp = try ICMPv4Packet(packet.payload) } catch {
            counters.increment(.icmpMalformed)
            return
        }
        guard icmp.isChecksumValid else {
            counters.increment(.icmpBadChecksum)
            return
        }
        guard icmp.type == .echoRequest, icmp.code == 0 else {
            counters.increment(.icmpOtherReceived)
            return
        }
        counters.increment(.icmpEchoRequestsReceived)
        if !broadcast, !owns(packet.destination) {
            guard let forwarder, isForwarded(.v4(packet.destination)) else { return }
            counters.increment(.forwardedICMPEchoRequests)
            forwarder.icmpEchoRequested(
                ICMPEchoRequest(
                    guestAddress: .v4(packet.source), destination: .v4(packet.destination), identifier: icmp.identifier,
                    sequenceNumber: icmp.sequenceNumber, payload: icmp.payload.buffer, timeToLive: packet.timeToLive),
                now: now)
            return
        }
        // Echo for broadcast addresses is not answered (RFC 1122 allows silence; it avoids smurfing).
        guard !broadcast else { return }
        var reply = ByteBuffer.withHeadroom(capacity: icmp.payload.count)
        reply.writeImmutableBuffer(icmp.payload.buffer)
        ICMPv4Header.echo(reply: true, identifier: icmp.identifier, sequenceNumber: icmp.sequenceNumber).prepend(to: &reply)
        counters.increment(.icmpEchoRepliesSent)
        // Like Linux: echo replies go without DF (fragmented when they exceed the MTU).
        sendIPv4(payload: reply, protocol: .icmp, from: packet.destination, to: packet.source, dontFragment: false, now: now)
    }

    /// Sends an ICMP error about `packet` back to its source (RFC 1122 §3.2.2, RFC 1812 §4.3.2.3):
    /// never about an ICMP error, a broadcast or multicast, a non-initial fragment or an invalid
    /// source; rate-limited. Quotes the IP header and as much of the payload as keeps the error
    /// within 576 bytes.
    func sendICMPError(type: ICMPv4Type, code: UInt8, restOfHeader: UInt32 = 0, about packet: IPv4Packet, now: NIODeadline) {
        let source = packet.source
        let destination = packet.destination
        if source == .any || source.isMulticast || source == .broadcast || source == configuration.subnet.broadcast
            || destination.isMulticast || destination == .broadcast || destination == configuration.subnet.broadcast
            || packet.fragmentOffset != 0
        {
            counters.increment(.icmpErrorsSuppressed)
            return
        }
        if packet.protocol == .icmp {
            let quotedType = ICMPv4Type(rawValue: packet.payload.loadU8(at: 0))
            // Never an error about an error (or about anything that is not a query/reply).
            if packet.payload.count < 1 || quotedType.isError || !quotedType.hasIdentifierAndSequence {
                counters.increment(.icmpErrorsSuppressed)
                return
            }
        }
        guard icmpErrors.take(now: now) else {
            counters.increment(.icmpErrorsRateLimited)
            return
        }
        let quoted = min(packet.totalLength, 576 - 20 - 8)
        var body = ByteBuffer.withHeadroom(capacity: quoted)
        body.writeImmutableBuffer(packet.bytes.view(from: 0, length: quoted).buffer)
        ICMPv4Header(type: type, code: code, restOfHeader: restOfHeader).prepend(to: &body)
        counters.increment(.icmpErrorsSent)
        let from = owns(destination) ? destination : configuration.gateway
        // Precedence 6, "internetwork control" (RFC 1812 §4.3.2.5), as Linux sends its errors.
        sendIPv4(payload: body, protocol: .icmp, from: from, to: source, dontFragment: false, dscp: 0xC0 >> 2, now: now)
    }
}
