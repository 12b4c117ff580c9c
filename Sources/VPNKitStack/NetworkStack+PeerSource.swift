// Speaking for an outside peer: a TCP connection or a UDP socket toward the guest whose source is
// not one of the stack's addresses but that of a client beyond the gateway (a published port's
// host client, so the guest sees who really connected). The guest answers such a peer through its
// default route, so its replies come back to the stack as traffic to a forwarded address, where the
// connection's four-tuple (or the socket's exact address and port) finds them before the forwarder
// does. Nothing here lets a guest reach an outside address: the guest cannot create these
// connections or sockets, and traffic that matches none of them goes to the forwarder as before.

public import NIOCore
public import VPNKitBase

extension NetworkStack {
    /// Whether the stack may speak for `peer` toward `guest`: the two of one family; `guest` on the
    /// guest's link (the IPv4 subnet or the IPv6 prefix) and not the stack's; `peer` not the stack's,
    /// not on the guest's link, and an address the forwarder takes (so the guest's replies to it,
    /// sent to the gateway, reach the stack's TCP and UDP input rather than being dropped as not for
    /// us). Loopback, multicast, broadcast and unspecified peers are never spoken for.
    public func canSpeak(for peer: IPAddress, toward guest: IPAddress) -> Bool {
        guard peer.family == guest.family, !owns(peer), !owns(guest) else { return false }
        switch (peer, guest) {
        case (.v4(let peer), .v4(let guest)):
            guard configuration.subnet.contains(guest), guest != configuration.subnet.broadcast, guest != configuration.subnet.network,
                !configuration.subnet.contains(peer), !peer.isLoopback
            else { return false }
        case (.v6(let peer), .v6(let guest)):
            guard let link = ipv6?.configuration, link.onLink(guest), !guest.isMulticast, !link.onLink(peer) else { return false }
        default:
            return false
        }
        // `isForwarded` rules out multicast, broadcast, unspecified and (IPv6) loopback itself.
        return isForwarded(peer)
    }

    /// Opens a connection to the guest at `remote:port` whose SYN comes from `peer:peerPort`, an
    /// outside client's address and port (see `canSpeak(for:toward:)`): the guest's segments back to
    /// that address and port belong to it. Throws `addressNotOwned(peer)` when the stack may not
    /// speak for `peer`, `addressInUse` when that four-tuple is taken (a connection, or a guest SYN
    /// waiting for the forwarder), `tooManyConnections` at `maximumTCPConnections`.
    public func connectTCP(to remote: IPAddress, port: UInt16, onBehalfOf peer: IPAddress, peerPort: UInt16, now: NIODeadline) throws(StackError) -> TCPSocket {
        guard peerPort != 0, canSpeak(for: peer, toward: remote) else { throw .addressNotOwned(peer) }
        let key = TCPKey(localAddress: peer, localPort: peerPort, remoteAddress: remote, remotePort: port)
        guard pendingTCPRequests[key] == nil, tcpConnections[key] == nil else { throw .addressInUse(peer, peerPort) }
        return try openConnection(from: peer, port: peerPort, to: remote, port: port, now: now)
    }

    /// Binds `peer:port`, an outside client's address and port (see `canSpeak(for:toward:)`), so
    /// that datagrams the guest at `guest` sends there are handed to `handler` instead of the
    /// forwarder; the socket sends from `peer:port`, to the guest's link only. Throws
    /// `addressNotOwned(peer)` when the stack may not speak for `peer`, `addressInUse` when that
    /// address and port are bound already.
    public func bindUDP(port: UInt16, onBehalfOf peer: IPAddress, toward guest: IPAddress, handler: @escaping (UDPMessage) -> Void) throws(StackError) -> UDPSocket {
        guard port != 0, canSpeak(for: peer, toward: guest) else { throw .addressNotOwned(peer) }
        // Only the exact address matters: a socket bound on every address gets datagrams to owned
        // addresses, and `peer` is not one.
        let key = UDPSocketKey(address: peer, port: port)
        guard udpSockets[key] == nil else { throw .addressInUse(peer, port) }
        udpSockets[key] = UDPSocketEntry(handler: handler)
        return UDPSocket(stack: self, address: peer, port: port, speaksForPeer: true)
    }

    /// A datagram from a socket bound on behalf of `peer`: to a guest on the link only (`noRoute`
    /// otherwise: never out through the gateway's side of things, never broadcast or multicast).
    func sendUDP(_ payload: ByteBuffer, onBehalfOf peer: IPAddress, port sourcePort: UInt16, to destination: IPAddress, port destinationPort: UInt16, now: NIODeadline) throws(StackError) {
        guard canSpeak(for: peer, toward: destination) else { throw .noRoute(destination) }
        switch (peer, destination) {
        case (.v4(let source), .v4(let target)):
            guard payload.readableBytes <= 65535 - 28 else { throw .datagramTooLarge(payload.readableBytes) }
            emitUDP(payload, from: source, port: sourcePort, to: target, port: destinationPort, now: now)
        case (.v6(let source), .v6(let target)):
            guard payload.readableBytes <= 65535 - 8 else { throw .datagramTooLarge(payload.readableBytes) }
            emitUDPv6(payload, from: source, port: sourcePort, to: target, port: destinationPort, now: now)
        default:
            counters.increment(.addressFamilyNotSupported)
            throw .addressFamilyNotSupported(destination)
        }
    }
}
