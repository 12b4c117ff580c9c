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
    /// An ICMP destination unreachable with this code (0 net, 1 host, 3 port, 13 prohibited).
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
    /// The IP time-to-live the request arrived with.
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
    /// An ICMP echo request to a forwarded address the stack does not own.
    func icmpEchoRequested(_ request: ICMPEchoRequest, now: NIODeadline)
}

struct PendingTCPRequest {
    var syn: TCPIncoming
    var since: NIODeadline
}

extension NetworkStack {
    func isForwarded(_ destination: IPv4Address) -> Bool {
        guard let forwarder, !destination.isMulticast, destination != .broadcast, destination != .any,
            destination != configuration.subnet.broadcast
        else { return false }
        return forwarder.forwards(.v4(destination))
    }

    /// A guest SYN with no connection: held for the forwarder. Returns false if not forwarded.
    func forwardTCPSYN(_ incoming: TCPIncoming, key: TCPKey, now: NIODeadline) -> Bool {
        guard let forwarder, case .v4(let local) = key.localAddress, isForwarded(local) else { return false }
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
        // Pending requests are IPv4 (the stack receives nothing else yet).
        guard let (local, remote) = key.ipv4Addresses else {
            counters.increment(.addressFamilyNotSupported)
            return
        }
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
            sendIPv4(payload: buffer, protocol: .tcp, from: local, to: remote, dontFragment: true, now: now)
        case .unreachable(let code):
            // Quote the SYN's IP header and first 8 bytes (ports and sequence number).
            var quote = ByteBuffer.withHeadroom(capacity: 8)
            quote.writeInteger(key.remotePort)
            quote.writeInteger(key.localPort)
            quote.writeInteger(pending.syn.header.sequenceNumber.rawValue)
            sendUnreachable(code: code, quoting: quote, protocol: .tcp, guest: remote, remote: local, now: now)
        }
    }

    /// Sends a UDP datagram to the guest from any address (a forwarded reply); fragmented to the MTU.
    /// Throws `StackError.datagramTooLarge` when the payload exceeds 65,507 bytes, and
    /// `StackError.addressFamilyNotSupported` (counted) for an IPv6 source or destination.
    public func sendForwardedUDP(
        _ payload: ByteBuffer, from source: IPAddress, port sourcePort: UInt16, to destination: IPAddress,
        port destinationPort: UInt16, now: NIODeadline
    ) throws(StackError) {
        let origin = try requireIPv4(source)
        let target = try requireIPv4(destination)
        guard payload.readableBytes <= 65535 - 28 else { throw .datagramTooLarge(payload.readableBytes) }
        emitUDP(payload, from: origin, port: sourcePort, to: target, port: destinationPort, now: now)
    }

    /// Tells the guest that its UDP datagram from `guestPort` to `remote:remotePort` could not be
    /// delivered (ICMP destination unreachable with `code`; 3: port unreachable). Rate-limited. With an
    /// IPv6 address it sends nothing and counts `addressFamilyNotSupported`.
    public func sendForwardedUDPUnreachable(
        code: UInt8, guest: IPAddress, guestPort: UInt16, remote: IPAddress, remotePort: UInt16, now: NIODeadline
    ) {
        guard case .v4(let guest) = guest, case .v4(let remote) = remote else {
            counters.increment(.addressFamilyNotSupported)
            return
        }
        var quote = ByteBuffer.withHeadroom(capacity: 8)
        quote.writeInteger(guestPort)
        quote.writeInteger(remotePort)
        quote.writeInteger(UInt16(8))
        quote.writeInteger(UInt16(0))
        sendUnreachable(code: code, quoting: quote, protocol: .udp, guest: guest, remote: remote, now: now)
    }

    /// ICMP destination unreachable from `remote` to `guest`, quoting an IP header guest → remote and
    /// the first bytes of the transport header.
    private func sendUnreachable(code: UInt8, quoting transport: ByteBuffer, protocol proto: IPProtocol, guest: IPv4Address, remote: IPv4Address, now: NIODeadline) {
        guard icmpErrors.take(now: now) else {
            counters.increment(.icmpErrorsRateLimited)
            return
        }
        var body = transport
        IPv4Header(source: guest, destination: remote, protocol: proto).prepend(to: &body)
        ICMPv4Header(type: .destinationUnreachable, code: code).prepend(to: &body)
        counters.increment(.icmpErrorsSent)
        let from = owns(remote) || !isForwarded(remote) ? configuration.gateway : remote
        sendIPv4(payload: body, protocol: .icmp, from: from, to: guest, dontFragment: false, dscp: 0xC0 >> 2, now: now)
    }

    /// Sends an ICMP echo reply to the guest from `source` (a forwarded ping's answer). With an IPv6
    /// address it sends nothing and counts `addressFamilyNotSupported`.
    public func sendForwardedEchoReply(
        from source: IPAddress, to destination: IPAddress, identifier: UInt16, sequenceNumber: UInt16, payload: ByteBuffer,
        now: NIODeadline
    ) {
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
