public import NIOCore
public import VPNKitBase
import VPNKitIPv4
import VPNKitTCP
import VPNKitUDP

/// A guest's request to open a TCP connection to an address the stack forwards (the NAT's side).
/// The stack holds the guest's SYN (absorbing retransmissions of it) until the forwarder accepts or
/// refuses the request.
public struct TCPConnectionRequest: Hashable, Sendable, CustomStringConvertible {
    /// The guest's address, the SYN's source.
    public let guestAddress: IPAddress
    /// The guest's TCP port.
    public let guestPort: UInt16
    /// The forwarded address the guest is connecting to.
    public let destination: IPAddress
    /// The TCP port the guest is connecting to.
    public let destinationPort: UInt16

    /// Creates a request from its two endpoints; the stack finds the held SYN by these four values,
    /// so a request rebuilt from them can be accepted or refused.
    public init(guestAddress: IPAddress, guestPort: UInt16, destination: IPAddress, destinationPort: UInt16) {
        self.guestAddress = guestAddress
        self.guestPort = guestPort
        self.destination = destination
        self.destinationPort = destinationPort
    }

    var key: TCPKey { TCPKey(localAddress: destination, localPort: destinationPort, remoteAddress: guestAddress, remotePort: guestPort) }

    /// `guest:port → destination:port`, for logs.
    public var description: String { "\(guestAddress):\(guestPort) → \(destination):\(destinationPort)" }
}

/// How a forwarded TCP connection request is turned down.
public enum TCPRefusal: Sendable, Hashable {
    /// A RST, as a closed port answers ("connection refused").
    case reset
    /// An ICMP destination unreachable with this code (0 net, 1 host, 3 port, 13 prohibited); to an
    /// IPv6 guest the ICMPv6 code it maps to (net 0, host 3, port 4, prohibited 1).
    case unreachable(code: UInt8)
}

/// A guest's ICMP echo request to an address the stack forwards.
public struct ICMPEchoRequest: Sendable {
    /// The guest that sent the request.
    public var guestAddress: IPAddress
    /// The forwarded address being pinged.
    public var destination: IPAddress
    /// The echo identifier, to be returned in the reply.
    public var identifier: UInt16
    /// The echo sequence number, to be returned in the reply.
    public var sequenceNumber: UInt16
    /// The echo data, a slice of the frame it arrived in.
    public var payload: ByteBuffer
    /// The IPv4 time-to-live (IPv6: hop limit) the request arrived with.
    public var timeToLive: UInt8
}

/// Takes the traffic the stack does not terminate itself: the NAT. Called synchronously on the
/// thread that drives the stack, from inside `receive`.
public protocol PacketForwarder: AnyObject {
    /// Whether traffic to `destination` is forwarded (asked for unicast destinations only). An owned
    /// address may be forwarded (the host alias): its TCP and UDP go to the forwarder, while ARP and
    /// ping are still answered by the stack.
    func forwards(_ destination: IPAddress) -> Bool
    /// A guest SYN to a forwarded address: answer later with `acceptTCPConnectionRequest` or
    /// `refuseTCPConnectionRequest` (exactly once).
    func tcpConnectionRequested(_ request: TCPConnectionRequest, now: NIODeadline)
    /// A UDP datagram to a forwarded address (one not bound by a socket on that exact address).
    func udpDatagramReceived(_ message: UDPMessage, now: NIODeadline)
    /// An ICMP (or ICMPv6) echo request to a forwarded address the stack does not own.
    func icmpEchoRequested(_ request: ICMPEchoRequest, now: NIODeadline)
}

struct PendingTCPRequest {
    var syn: TCPIncoming
    var since: NIODeadline
}

extension NetworkStack {
    /// Whether traffic to `destination` goes to the forwarder: a unicast address the forwarder takes.
    /// For IPv6 it must lie beyond the link (neither our prefix nor link-local, nor loopback) unless
    /// it is one of ours (the host alias); a stack without IPv6 forwards none.
    func isForwarded(_ destination: IPAddress) -> Bool {
        guard let forwarder else { return false }
        switch destination {
        case .v4(let v4):
            guard !v4.isMulticast, v4 != .broadcast, v4 != .any, v4 != configuration.subnet.broadcast else { return false }
        case .v6(let v6):
            guard let link = ipv6?.configuration, !v6.isMulticast, !v6.isUnspecified, !v6.isLoopback,
                ownsIPv6(v6) || !link.onLink(v6)
            else { return false }
        }
        return forwarder.forwards(destination)
    }

    /// A guest SYN with no connection: held for the forwarder. Returns false if not forwarded.
    func forwardTCPSYN(_ incoming: TCPIncoming, key: TCPKey, now: NIODeadline) -> Bool {
        guard let forwarder, isForwarded(key.localAddress) else { return false }
        if pendingTCPRequests[key] != nil {
            counters.increment(.forwardedTCPDuplicateSYNs)
            return true
        }
        if tcpConnections.count + pendingTCPRequests.count >= configuration.maximumTCPConnections { recycleOneTimeWait() }
        guard tcpConnections.count + pendingTCPRequests.count < configuration.maximumTCPConnections else {
            counters.increment(.tcpConnectionsRefused)
            return true
        }
        pendingTCPRequests[key] = PendingTCPRequest(syn: incoming, since: now)
        counters.increment(.forwardedTCPRequests)
        forwarder.tcpConnectionRequested(
            TCPConnectionRequest(guestAddress: key.remoteAddress, guestPort: key.remotePort, destination: key.localAddress, destinationPort: key.localPort),
            now: now)
        return true
    }

    /// Requests waiting for the forwarder's answer.
    public var pendingTCPConnectionRequestCount: Int { pendingTCPRequests.count }

    /// Answers the guest's held SYN with a SYN-ACK: the connection is the returned socket. Returns nil
    /// when the request is no longer pending, or when a connection with the same addresses and ports
    /// already exists (the request is then dropped unanswered). `onConnected` fires when the guest
    /// completes the handshake.
    public func acceptTCPConnectionRequest(_ request: TCPConnectionRequest, now: NIODeadline) -> TCPSocket? {
        let key = request.key
        guard let pending = pendingTCPRequests.removeValue(forKey: key), tcpConnections[key] == nil else { return nil }
        let connection = TCPConnection.accept(
            pending.syn, localPort: key.localPort, iss: initialSequenceNumber(key, now: now), configuration: tcpConfiguration(for: key.localAddress.family), now: now)
        let socket = TCPSocket(key: key, stack: self)
        tcpConnections[key] = TCPEntry(connection: connection, socket: socket)
        counters.increment(.tcpConnectionsOpened)
        finish(key, now: now)
        return tcpConnections[key] == nil ? nil : socket
    }

    /// Turns the guest's held SYN down, with a RST or an ICMP unreachable (the latter subject to the
    /// ICMP error rate limit). Does nothing when the request is no longer pending.
    public func refuseTCPConnectionRequest(_ request: TCPConnectionRequest, with refusal: TCPRefusal, now: NIODeadline) {
        let key = request.key
        guard let pending = pendingTCPRequests.removeValue(forKey: key) else { return }
        counters.increment(.forwardedTCPRefused)
        switch refusal {
        case .reset:
            counters.increment(.tcpResetsSent)
            var reset = TCPHeader(
                sourcePort: key.localPort, destinationPort: key.remotePort, sequenceNumber: SequenceNumber(0),
                acknowledgmentNumber: pending.syn.header.sequenceNumber + 1, flags: [.rst, .ack], window: 0)
            reset.options = []
            var buffer = ByteBuffer.withHeadroom(capacity: 0)
            reset.prepend(to: &buffer, source: key.localAddress, destination: key.remoteAddress)
            counters.increment(.tcpSegmentsSent)
            switch (key.localAddress, key.remoteAddress) {
            case (.v4(let local), .v4(let remote)):
                sendIPv4(payload: buffer, protocol: .tcp, from: local, to: remote, dontFragment: true, now: now)
            case (.v6(let local), .v6(let remote)):
                sendIPv6(payload: buffer, nextHeader: .tcp, from: local, to: remote, now: now)
            default:
                counters.increment(.addressFamilyNotSupported)
            }
        case .unreachable(let code):
            // Quote the SYN's IP header and first 8 bytes (ports and sequence number).
            var quote = ByteBuffer.withHeadroom(capacity: 8)
            quote.writeInteger(key.remotePort)
            quote.writeInteger(key.localPort)
            quote.writeInteger(pending.syn.header.sequenceNumber.rawValue)
            sendUnreachable(code: code, quoting: quote, protocol: .tcp, guest: key.remoteAddress, remote: key.localAddress, now: now)
        }
    }

    /// Sends a UDP datagram to the guest from any address (a forwarded reply); fragmented to the MTU.
    /// Throws `StackError.datagramTooLarge` when the payload exceeds 65,507 bytes (IPv4) or 65,527
    /// (IPv6), and `StackError.addressFamilyNotSupported` (counted) when the two addresses' families
    /// differ or IPv6 is off.
    public func sendForwardedUDP(
        _ payload: ByteBuffer, from source: IPAddress, port sourcePort: UInt16, to destination: IPAddress,
        port destinationPort: UInt16, now: NIODeadline
    ) throws(StackError) {
        if case .v6(let target) = destination {
            try sendForwardedUDPv6(payload, from: source, port: sourcePort, to: target, port: destinationPort, now: now)
            return
        }
        let origin = try requireIPv4(source)
        let target = try requireIPv4(destination)
        guard payload.readableBytes <= 65535 - 28 else { throw .datagramTooLarge(payload.readableBytes) }
        emitUDP(payload, from: origin, port: sourcePort, to: target, port: destinationPort, now: now)
    }

    /// Tells the guest that its UDP datagram from `guestPort` to `remote:remotePort` could not be
    /// delivered (ICMP destination unreachable with `code`; 3: port unreachable; over IPv6 the
    /// ICMPv6 code it maps to, see `icmpv6UnreachableCode`). Rate-limited. With addresses of two
    /// families it sends nothing and counts `addressFamilyNotSupported`.
    public func sendForwardedUDPUnreachable(
        code: UInt8, guest: IPAddress, guestPort: UInt16, remote: IPAddress, remotePort: UInt16, now: NIODeadline
    ) {
        var quote = ByteBuffer.withHeadroom(capacity: 8)
        quote.writeInteger(guestPort)
        quote.writeInteger(remotePort)
        quote.writeInteger(UInt16(8))
        quote.writeInteger(UInt16(0))
        sendUnreachable(code: code, quoting: quote, protocol: .udp, guest: guest, remote: remote, now: now)
    }

    /// ICMP destination unreachable from `remote` to `guest`, quoting an IP header guest → remote and
    /// the first bytes of the transport header; over IPv6 an ICMPv6 one with the mapped code.
    private func sendUnreachable(code: UInt8, quoting transport: ByteBuffer, protocol proto: IPProtocol, guest: IPAddress, remote: IPAddress, now: NIODeadline) {
        switch (guest, remote) {
        case (.v4(let guest), .v4(let remote)):
            guard icmpErrors.take(now: now) else {
                counters.increment(.icmpErrorsRateLimited)
                return
            }
            var body = transport
            IPv4Header(source: guest, destination: remote, protocol: proto).prepend(to: &body)
            ICMPv4Header(type: .destinationUnreachable, code: code).prepend(to: &body)
            counters.increment(.icmpErrorsSent)
            let from = owns(remote) || !isForwarded(.v4(remote)) ? configuration.gateway : remote
            sendIPv4(payload: body, protocol: .icmp, from: from, to: guest, dontFragment: false, dscp: 0xC0 >> 2, now: now)
        case (.v6(let guest), .v6(let remote)):
            sendUnreachableV6(code: Self.icmpv6UnreachableCode(code), quoting: transport, protocol: proto, guest: guest, remote: remote, now: now)
        default:
            counters.increment(.addressFamilyNotSupported)
        }
    }

    /// Sends an ICMP echo reply to the guest from `source` (a forwarded ping's answer), an ICMPv6 one
    /// between IPv6 addresses. With addresses of two families it sends nothing and counts
    /// `addressFamilyNotSupported`.
    public func sendForwardedEchoReply(
        from source: IPAddress, to destination: IPAddress, identifier: UInt16, sequenceNumber: UInt16, payload: ByteBuffer,
        now: NIODeadline
    ) {
        if case .v6(let source6) = source, case .v6(let destination6) = destination {
            sendForwardedEchoReplyV6(from: source6, to: destination6, identifier: identifier, sequenceNumber: sequenceNumber, payload: payload, now: now)
            return
        }
        guard case .v4(let source) = source, case .v4(let destination) = destination else {
            counters.increment(.addressFamilyNotSupported)
            return
        }
        var reply = ByteBuffer.withHeadroom(capacity: payload.readableBytes)
        reply.writeImmutableBuffer(payload)
        ICMPv4Header.echo(reply: true, identifier: identifier, sequenceNumber: sequenceNumber).prepend(to: &reply)
        counters.increment(.icmpEchoRepliesSent)
        sendIPv4(payload: reply, protocol: .icmp, from: source, to: destination, dontFragment: false, now: now)
    }
}
