public import NIOCore
public import VPNKitBase
import VPNKitIPv4
public import VPNKitStack
public import VPNKitDHCP

/// The DHCP server attached to a stack: it binds UDP port 67 (on every address of the stack, broadcasts
/// included) and answers clients on the link. Confined to the thread driving the stack.
public final class DHCPService {
    /// The server state machine, for its configuration, leases and counters.
    public private(set) var server: DHCPServer
    private weak var stack: NetworkStack?
    private var socket: UDPSocket?

    /// Binds UDP port 67 on every address of `stack` and answers from then on. Datagrams are accepted
    /// from ports 67 (relays) and 68 (clients). Also becomes the stack's `leaseHolder`: ARP for an
    /// address this server has bound or reserved is learned only from its MAC (see
    /// `DHCPServer.holder(of:now:)`).
    ///
    /// Throws `StackError.addressInUse` when port 67 is already bound. The socket holds the service
    /// weakly: keep a reference while it should answer.
    public init(stack: NetworkStack, configuration: DHCPServerConfiguration) throws(StackError) {
        self.stack = stack
        self.server = DHCPServer(configuration: configuration)
        self.socket = try stack.bindUDP(port: BOOTP.serverPort) { [weak self] message in self?.received(message) }
        stack.leaseHolder = { [weak self] address, now in self?.server.holder(of: address, now: now) }
    }

    /// The server's counters. A datagram that is not a DHCP message, comes from a port other than 67 or
    /// 68, or is longer than `maximumMessageSize` counts as `malformed`.
    public var counters: DHCPServerCounters { server.counters }

    /// Reserves `address` for `mac` from now on.
    public func reserve(_ address: IPv4Address, for mac: MACAddress) { server.reserve(address, for: mac) }

    /// The longest DHCP message accepted, in bytes (1500); a longer datagram is dropped unparsed and
    /// counted as malformed.
    public static let maximumMessageSize = 1500

    /// The server's leases sorted by address, with expired ones shown as free; see
    /// `DHCPServer.leases(now:)`.
    public func leases(now: NIODeadline) -> [DHCPLease] { server.leases(now: now) }

    private func received(_ message: UDPMessage) {
        // A DHCP message is at most 1500 bytes here (RFC 2131 allows more only by option 57 and
        // Ethernet carries no more); anything larger is refused before parsing.
        guard message.sourcePort == BOOTP.clientPort || message.sourcePort == BOOTP.serverPort,
            message.payload.readableBytes <= Self.maximumMessageSize,
            let request = try? DHCPMessage(parsing: DHCPPacket(message.payload))
        else {
            // Counted as malformed by the server's own counter.
            _ = server.handle(DHCPMessage(op: 0, transactionID: 0, clientHardwareAddress: .zero), now: message.receivedAt)
            return
        }
        guard let reply = server.handle(request, linkSource: message.linkSource, now: message.receivedAt) else { return }
        var payload = ByteBuffer.withHeadroom(capacity: reply.message.encodedLength)
        reply.message.write(to: &payload)
        try? stack?.sendUDP(
            payload, from: .v4(server.configuration.serverAddress), port: BOOTP.serverPort, to: .v4(reply.destination),
            port: reply.destinationPort, linkDestination: reply.linkDestination, now: message.receivedAt)
    }

    /// Unbinds port 67 and stops vouching for leases to the stack's ARP: the service answers nothing
    /// more. Leases are kept in `server`.
    public func close() {
        if socket != nil { stack?.leaseHolder = nil }
        socket?.close()
        socket = nil
    }
}
