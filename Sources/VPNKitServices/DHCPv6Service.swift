public import NIOCore
public import VPNKitBase
public import VPNKitStack
public import VPNKitDHCP

/// The stateless DHCPv6 server attached to a stack (RFC 8415 §6.1): it listens to
/// All_DHCP_Relay_Agents_and_Servers (ff02::1:2) and binds UDP port 547 on every IPv6 address of the
/// stack, answers INFORMATION-REQUEST from the link-local address to the client's port 546, and
/// turns on the O flag of the router advertisements so that clients ask. Confined to the thread
/// driving the stack.
public final class DHCPv6Service {
    /// The server state machine, for its configuration and counters.
    public private(set) var server: DHCPv6Server
    private weak var stack: NetworkStack?
    private var socket: UDPSocket?

    /// Joins ff02::1:2, binds UDP port 547 on `::` and sets the O flag. Datagrams are accepted from
    /// port 546 only (relay agents, port 547, are not served); others count as malformed.
    ///
    /// Throws `StackError.addressFamilyNotSupported` on a stack without IPv6, and
    /// `StackError.addressInUse` when port 547 is taken. The socket holds the service weakly: keep a
    /// reference while it should answer.
    public init(stack: NetworkStack, configuration: DHCPv6ServerConfiguration) throws(StackError) {
        self.stack = stack
        self.server = DHCPv6Server(configuration: configuration)
        self.socket = try stack.bindUDP(port: DHCPv6.serverPort, address: .v6(.unspecified)) { [weak self] message in
            self?.received(message)
        }
        stack.joinIPv6MulticastGroup(DHCPv6.allRelayAgentsAndServers)
        stack.advertisesOtherConfiguration = true
    }

    /// The server's counters.
    public var counters: DHCPv6ServerCounters { server.counters }

    private func received(_ message: UDPMessage) {
        guard message.sourcePort == DHCPv6.clientPort, case .v6(let client) = message.source,
            message.payload.readableBytes <= DHCPv6Message.maximumSize,
            let bytes = message.payload.getBytes(at: message.payload.readerIndex, length: message.payload.readableBytes)
        else {
            server.countMalformed()
            return
        }
        guard let reply = server.handle(bytes), let stack, let link = stack.configuration.ipv6 else { return }
        let encoded = reply.encoded
        var payload = ByteBuffer.withHeadroom(capacity: encoded.count)
        payload.writeBytes(encoded)
        // From our address of the client's scope: link-local to a link-local client (the usual case).
        let source = client.isLinkLocal ? link.linkLocal : link.gateway
        try? stack.sendUDP(payload, from: .v6(source), port: DHCPv6.serverPort, to: .v6(client), port: DHCPv6.clientPort, now: message.receivedAt)
    }

    /// Unbinds port 547 and clears the O flag: the service answers nothing more.
    public func close() {
        guard let socket else { return }
        socket.close()
        self.socket = nil
        stack?.advertisesOtherConfiguration = false
    }
}
