// The forwarder's answers to an IPv6 guest: UDP from an outside address, ICMPv6 destination
// unreachable (codes mapped from ICMPv4's) and echo replies. Held TCP requests are answered by the
// family-neutral code in NetworkStack+Forwarding.swift.

import NIOCore
import VPNKitBase
import VPNKitIPv6
import VPNKitUDP

extension NetworkStack {
    /// The ICMPv6 destination unreachable code (RFC 4443 §3.1) for an ICMPv4 one: network unreachable
    /// or unknown → 0 (no route), host → 3 (address unreachable), port → 4, administratively
    /// prohibited (9, 10, 13) → 1; anything else → 0.
    public static func icmpv6UnreachableCode(_ icmpv4Code: UInt8) -> UInt8 {
        switch icmpv4Code {
        case 1, 7: return 3
        case 3: return 4
        case 9, 10, 13: return 1
        default: return 0
        }
    }

    /// `sendForwardedUDP` toward an IPv6 guest: from any IPv6 address (the remote end of a flow),
    /// fragmented to the path MTU.
    func sendForwardedUDPv6(
        _ payload: ByteBuffer, from source: IPAddress, port sourcePort: UInt16, to target: IPv6Address, port destinationPort: UInt16,
        now: NIODeadline
    ) throws(StackError) {
        guard ipv6 != nil, case .v6(let origin) = source else {
            counters.increment(.addressFamilyNotSupported)
            throw .addressFamilyNotSupported(ipv6 == nil ? .v6(target) : source)
        }
        guard payload.readableBytes <= 65535 - 8 else { throw .datagramTooLarge(payload.readableBytes) }
        emitUDPv6(payload, from: origin, port: sourcePort, to: target, port: destinationPort, now: now)
    }

    /// ICMPv6 destination unreachable with `code` from `remote` (from our gateway when `remote` is one
    /// of ours or not forwarded) to `guest`, quoting an IPv6 header guest → remote and `transport`.
    /// Rate-limited with the other ICMP errors.
    func sendUnreachableV6(
        code: UInt8, quoting transport: ByteBuffer, protocol proto: IPProtocol, guest: IPv6Address, remote: IPv6Address, now: NIODeadline
    ) {
        guard let link = ipv6?.configuration else {
            counters.increment(.addressFamilyNotSupported)
            return
        }
        guard icmpErrors.take(now: now) else {
            counters.increment(.icmpv6ErrorsRateLimited)
            return
        }
        var body = ByteBuffer.withHeadroom(capacity: 40 + transport.readableBytes)
        body.writeImmutableBuffer(transport)
        IPv6Header(source: guest, destination: remote, nextHeader: proto).prepend(to: &body)
        let from = ownsIPv6(remote) || !isForwarded(.v6(remote)) ? (guest.isLinkLocal ? link.linkLocal : link.gateway) : remote
        ICMPv6Header(type: .destinationUnreachable, code: code).prepend(to: &body, source: from, destination: guest)
        counters.increment(.icmpv6ErrorsSent)
        sendIPv6(payload: body, nextHeader: .icmpv6, from: from, to: guest, now: now)
    }

    /// An ICMPv6 echo reply from `source` to the guest (a forwarded ping's answer).
    func sendForwardedEchoReplyV6(
        from source: IPv6Address, to destination: IPv6Address, identifier: UInt16, sequenceNumber: UInt16, payload: ByteBuffer,
        now: NIODeadline
    ) {
        guard ipv6 != nil else {
            counters.increment(.addressFamilyNotSupported)
            return
        }
        var reply = ByteBuffer.withHeadroom(capacity: payload.readableBytes)
        reply.writeImmutableBuffer(payload)
        ICMPv6Header.echo(reply: true, identifier: identifier, sequenceNumber: sequenceNumber).prepend(to: &reply, source: source, destination: destination)
        counters.increment(.icmpv6EchoRepliesSent)
        sendIPv6(payload: reply, nextHeader: .icmpv6, from: source, to: destination, now: now)
    }
}
