public import NIOCore
public import VPNKitBase
import VPNKitIPv4
public import VPNKitStack

/// The DHCP server attached to a stack: it binds UDP port 67 on the gateway and answers clients on
/// the link. Confined to the thread driving the stack.
public final class DHCPService {
    public private(set) var server: DHCPServer
    private weak var stack: NetworkStack?
    private var socket: UDPSocket?

    public init(stack: NetworkStack, configuration: DHCPServerConfiguration) throws(StackError) {
        self.stack = stack
        self.server = DHCPServer(configuration: configuration)
        self.socket = try stack.bindUDP(port: BOOTP.serverPort) { [weak self] message in self?.received(message) }
    }

    public var counters: DHCPServerCounters { server.counters }

    /// Reserves `address` for `mac` from now on.
    public func reserve(_ address: IPv4Address, for mac: MACAddress) { server.reserve(address, for: mac) }

    /// The largest DHCP message accepted.
    public static let maximumMessageSize = 1500

    /// The leases, for listing.
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
        guard let reply = server.handle(request, now: message.receivedAt) else { return }
        var payload = ByteBuffer.withHeadroom(capacity: reply.message.encodedLength)
        reply.message.write(to: &payload)
        try? stack?.sendUDP(
            payload, from: server.configuration.serverAddress, port: BOOTP.serverPort, to: reply.destination,
            port: reply.destinationPort, linkDestination: reply.linkDestination, now: message.receivedAt)
    }

    public func close() {
        socket?.close()
        socket = nil
    }
}
